"""``python -m pipekit_cycle``: the adjoint specs, the layers they apply to, and the backends."""

from __future__ import annotations

from .adjoints import LAYERS, SPEC_TYPES
from .backends import available_backends


def spec_table() -> str:
    """A markdown table: each spec, its text form, and the layers it applies to."""
    rows = ["| spec | text | " + " | ".join(LAYERS) + " |", "|---|---|" + "---|" * len(LAYERS)]
    for cls in SPEC_TYPES:
        spec = cls()
        marks = " | ".join("yes" if layer in cls.layers else "no" for layer in LAYERS)
        rows.append(f"| {cls.__name__} | `{spec}` | {marks} |")
    return "\n".join(rows)


def main() -> None:
    print(spec_table())
    print()
    print("installed backends:", ", ".join(available_backends()) or "none")


if __name__ == "__main__":
    main()
