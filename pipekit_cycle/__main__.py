"""``python -m pipekit_cycle``: the adjoint specs, the layers they apply to, and the backends."""

from __future__ import annotations

from .adjoints import FIXED_POINT, INNER_SOLVE, LAYERS, SOLVERS, SPEC_TYPES, check_solver_adjoint
from .backends import available_backends


def _mark(cls: type, layer: str) -> str:
    if layer not in cls.layers:
        return "no"
    if layer != INNER_SOLVE:
        return "yes"
    solvers = []
    for solver in SOLVERS:
        try:
            check_solver_adjoint(solver, cls())
            solvers.append(solver)
        except ValueError:
            pass
    return "yes" if len(solvers) == len(SOLVERS) else f'yes, solver="{FIXED_POINT}" only'


def spec_table() -> str:
    """A markdown table: each spec, its text form, and the layers (and inner solvers) it applies to."""
    rows = ["| spec | text | " + " | ".join(LAYERS) + " |", "|---|---|" + "---|" * len(LAYERS)]
    for cls in SPEC_TYPES:
        spec = cls()
        marks = " | ".join(_mark(cls, layer) for layer in LAYERS)
        rows.append(f"| {cls.__name__} | `{spec}` | {marks} |")
    return "\n".join(rows)


def main() -> None:
    print(spec_table())
    print()
    print("installed backends:", ", ".join(available_backends()) or "none")


if __name__ == "__main__":
    main()
