"""The API reference pages: complete, and the two backends side by side; and every ``Examples``
code block of the docstrings they show runs.

``docs/api/vardax_jax.md`` and ``docs/api/vardax_torch.md`` list their members one by one
(``::: vardax_jax.build_model``) under ``##`` sections. The shared names must stand in the
same sections in the same order on both pages, the names one backend alone has in a last
section ``Only in <backend>``, and each page must hold exactly its backend's ``__all__``.
``docs/api/pipekit_cycle.md`` renders its package whole (its ``__all__``), then modules the top
level does not re-export.

The docstrings are read as the docs build reads them (griffe, with the build's extensions in
``docs/_griffe/``); each ```python block of a docstring shown on a backend's page runs in a
child process with only that backend's framework importable (``run_snippet``, this folder's
conftest.py).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "docs" / "api"
BACKENDS = ("vardax_jax", "vardax_torch")
FRAMEWORK = {"vardax_jax": "jax", "vardax_torch": "torch"}
ONLY = "Only in "
SECTION = re.compile(r"^## (?P<title>.+?)\s*$")
DIRECTIVE = re.compile(r"^::: (?P<path>\S+)\s*$")
EXAMPLE = re.compile(r"^```python\n(?P<code>.*?)^```", re.M | re.S)
EXTENSIONS = ("rest_math.py:RestMath", "runtime_callables.py:RuntimeCallables")
# The main modelling names: each has a runnable example in both backends.
MAIN_NAMES = (
    "build_model", "make_batch", "make_optimizer", "train_step", "make_train_step", "eval_step", "predict",
    "export_params", "import_params", "to_native_adjoint", "AbstractAdjoint", "RecursiveCheckpointAdjoint",
    "KStepAdjoint", "OneStepAdjoint", "ImplicitAdjoint", "solve_4dvarnet",
    "to_numpy", "Batch1D", "Batch2D", "FourDVarNet1D", "FourDVarNet2D",
    "BilinAEPrior1D", "BilinAEPrior2D", "ConvLSTMGradMod1D", "ConvLSTMGradMod2D", "LSTMState1D", "LSTMState2D",
    "train_loss_fn", "reconstruction_loss", "loss_and_grads",
    "solve_4dvarnet_checkpointed", "solve_4dvarnet_kstep", "solve_4dvarnet_unrolled", "fixedpoint_unrolled",
    "variational_cost", "assert_adjoint_calibrated",
    "Lorenz63", "Lorenz96", "LinearField", "make_vector_field", "make_forward_model", "to_dynamics_adjoint",
    "rollout_numpy", "trajectory_loss_and_grads", "StrongFourDVar", "strong_4dvar_numpy",
    "export_optimizer_state", "import_optimizer_state", "placement",
    "build_amortized", "AmortizedPosterior", "EncoderMLP", "RegressionHead", "FlowHead", "AffineCoupling",
    "amortized_nll_loss_fn", "amortized_train_step", "amortized_loss_and_grads", "coverage",
    "export_amortized_params", "import_amortized_params",
)


def public_names(package: str) -> list[str]:
    """``package.__all__``, read from its ``__init__.py`` without importing it."""
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{package}/__init__.py has no __all__")


def layout(package: str) -> list[tuple[str, str]]:
    """``(section, name)`` for every ``::: package.name`` of the package's page, in order."""
    section, found = "", []
    for number, line in enumerate((API / f"{package}.md").read_text().splitlines(), start=1):
        if heading := SECTION.match(line):
            section = heading["title"]
        elif directive := DIRECTIVE.match(line):
            path = directive["path"]
            assert path == package or path.startswith(f"{package}."), f"{package}.md:{number}: {path} is foreign"
            found.append((section, path.removeprefix(package).removeprefix(".")))
    return found


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_backend_page_shows_exactly_its_public_names(backend):
    names = [name for _, name in layout(backend)]
    public = public_names(backend)
    twice = sorted({name for name in names if names.count(name) > 1})
    assert not twice, f"docs/api/{backend}.md shows these names more than once: {twice}"
    missing = [name for name in public if name not in names]
    assert not missing, f"{backend}.__all__ names missing from docs/api/{backend}.md: {missing}"
    extra = [name for name in names if name not in public]
    assert not extra, f"docs/api/{backend}.md shows names that are not in {backend}.__all__: {extra}"


def test_the_backend_pages_read_side_by_side():
    pages = {backend: layout(backend) for backend in BACKENDS}
    shared = {backend: [(s, n) for s, n in entries if not s.startswith(ONLY)] for backend, entries in pages.items()}
    sections = {backend: list(dict.fromkeys(s for s, _ in entries)) for backend, entries in shared.items()}
    assert sections["vardax_jax"] == sections["vardax_torch"], "the shared sections differ in name or order"
    jax_names, torch_names = ([n for _, n in shared[b]] for b in BACKENDS)
    assert set(jax_names) == set(torch_names), (
        f"shared sections list names the other page lacks: {sorted(set(jax_names) ^ set(torch_names))}"
    )
    for position, (jax_entry, torch_entry) in enumerate(zip(shared["vardax_jax"], shared["vardax_torch"],
                                                            strict=True)):
        assert jax_entry == torch_entry, f"entry {position + 1} differs: {jax_entry} (JAX) vs {torch_entry} (torch)"
    for backend, other in (BACKENDS, BACKENDS[::-1]):
        only = [(s, n) for s, n in pages[backend] if s.startswith(ONLY)]
        assert {s for s, _ in only} <= {ONLY + backend}, f"{backend}.md: an 'Only in' section names another backend"
        if only:
            assert pages[backend][-len(only):] == only, f"{backend}.md: 'Only in {backend}' is not the last section"
        expected = [name for name in public_names(backend) if name not in public_names(other)]
        assert sorted(n for _, n in only) == sorted(expected), (
            f"{backend}.md: the 'Only in {backend}' section must hold exactly {sorted(expected)}"
        )


def test_the_pipekit_cycle_page_renders_the_package_whole():
    whole, *modules = [name for _, name in layout("pipekit_cycle")]
    assert whole == "", "docs/api/pipekit_cycle.md must start with '::: pipekit_cycle'"
    where = ROOT / "pipekit_cycle"
    missing = [name for name in modules if not (where / f"{name.replace('.', '/')}.py").is_file()
               and not (where / name.replace(".", "/") / "__init__.py").is_file()]
    assert not missing, f"docs/api/pipekit_cycle.md shows modules that do not exist: {missing}"
    assert not set(modules) & set(public_names("pipekit_cycle")), "a re-exported module is shown twice"


def _load(package: str):
    import griffe  # the docs extra's, as mkdocstrings-python's

    extensions = griffe.load_extensions(*(f"{ROOT / 'docs' / '_griffe' / e}" for e in EXTENSIONS))
    return griffe.load(package, search_paths=[str(ROOT)], extensions=extensions, docstring_parser="numpy")


def _walk(obj, with_members: bool):
    """``obj`` and what its entry renders below it: a class's members; a module's own members and
    the names its ``__all__`` re-exports (not its submodules) when ``with_members``."""
    yield obj
    if not (obj.is_class or (obj.is_module and with_members)):
        return
    for name, member in obj.members.items():
        if name.startswith("_"):
            continue
        if member.is_alias:
            if not (obj.is_module and name in (obj.exports or ())):
                continue
            try:
                member = member.final_target
            except Exception:  # an alias to another package (optimistix's class): nothing of ours below
                continue
        if not member.is_module:
            yield from _walk(member, False)


def shown(package: str) -> list:
    """Every object whose docstring ``docs/api/<package>.md`` shows, once each, in page order."""
    root, found = _load(package), {}
    for section, name in layout(package):
        if name and name not in root.members:  # not the package's: the completeness test says so
            continue
        obj = root if not name else root[name]
        obj = obj.final_target if obj.is_alias else obj
        with_members = package == "pipekit_cycle" or section != "Modules"
        for item in _walk(obj, with_members):
            found.setdefault(item.path, item)
    return list(found.values())


# One doctest (``>>>`` lines) of one object, in a child process.
DOCTEST = """
import doctest, importlib, sys
module = importlib.import_module({module!r})
obj = module
for part in {attributes!r}:
    obj = getattr(obj, part)
tests = doctest.DocTestFinder(recurse=False).find(obj, {path!r}, module=False, globs=vars(module).copy())
runner = doctest.DocTestRunner()
for test in tests:
    runner.run(test)
sys.exit(1 if runner.failures or not runner.tries else 0)
"""


def _examples() -> list[tuple[str, str, str]]:
    """``(test id, kind, code)``: each ```python block, and each docstring's doctest, of the pages."""
    found = []
    for package in (*BACKENDS, "pipekit_cycle"):
        for obj in shown(package):
            text = obj.docstring.value if obj.docstring is not None else ""
            blocks = [m["code"] for m in EXAMPLE.finditer(text)]
            if re.search(r"^>>> ", text, re.M):
                module = obj.module.path
                attributes = obj.path[len(module) + 1 :].split(".") if obj.path != module else []
                blocks.append(DOCTEST.format(module=module, attributes=attributes, path=obj.path))
            label = obj.path if obj.path.startswith(package) else f"{package}:{obj.path}"
            found += [(label + (f"-{i + 1}" if len(blocks) > 1 else ""), package, code)
                      for i, code in enumerate(blocks)]
    return found


EXAMPLES = _examples()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_main_names_have_examples(backend):
    with_examples = {identifier.split(".")[-1].split("-")[0] for identifier, kind, _ in EXAMPLES if kind == backend}
    assert not set(MAIN_NAMES) - with_examples, f"no Examples block: {sorted(set(MAIN_NAMES) - with_examples)}"


@pytest.mark.parametrize(("kind", "code"), [e[1:] for e in EXAMPLES], ids=[e[0] for e in EXAMPLES])
def test_docstring_example_runs_with_only_its_framework(kind, code, run_snippet):
    result = run_snippet(code, kind)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_the_cite_block_names_the_packages_version():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    cite = (ROOT / "docs" / "index.md").read_text().split("## Cite", 1)[1]
    assert re.search(r"version = \{(.*?)\}", cite).group(1) == version
