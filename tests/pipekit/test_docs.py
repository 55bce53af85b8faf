"""The API reference pages: one per public module, complete, and the two backends side by side;
and every ``Examples`` code block of the docstrings they show runs.

Each package has a folder, ``docs/api/<package>/``: an ``index.md`` (what the package is, and a
table of its modules with the top-level names each defines), then one page per module that
declares an ``__all__`` (a subpackage gets a folder of its own, its ``index.md`` rendering its
docstring). A module page renders the module with an explicit ``members:`` list (its classes
and functions), then, under ``##`` sections, single members (``::: module.name``): the names
one backend alone has under ``Only in <backend>``, the constants (ALL_CAPS) under ``Constants``,
last. A name of the module's ``__all__`` that is not rendered there (a re-export, documented on
the page of the module that defines it, or a name griffe cannot see) is named on the page in
backticks. The nav of ``mkdocs.yml`` lists the pages in alphabetical order: in each backend the
modules both have, then those only it has; so the two backends' pages come in the same order and
list the names both have in the same order.

The docstrings are read as the docs build reads them (griffe, with the build's extensions in
``docs/_griffe/``); each ```python block of a docstring shown on a page runs in a child process
with only that page's framework importable (``run_snippet``, this folder's conftest.py): on a
``pipekit_cycle`` page neither, unless the block imports a backend (the methods of
``pipekit_cycle.dynamics.DynamicsApi`` are the backends' dynamics API, their examples run one).
"""

from __future__ import annotations

import ast
import re
import textwrap
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
API = DOCS / "api"
BACKENDS = ("vardax_jax", "vardax_torch")
PACKAGES = ("pipekit_cycle", *BACKENDS)
ONLY = "Only in "
CONSTANTS = "Constants"
SECTION = re.compile(r"^## (?P<title>.+?)\s*$")
DIRECTIVE = re.compile(r"^::: (?P<path>\S+)\s*$")
CONSTANT = re.compile(r"^[A-Z][A-Z0-9_]*$")
EXAMPLE = re.compile(r"^```python\n(?P<code>.*?)^```", re.M | re.S)
EXTENSIONS = ("rest_math.py:RestMath", "runtime_callables.py:RuntimeCallables")
IMPORTS_BACKEND = re.compile(r"^\s*import (?P<backend>vardax_jax|vardax_torch)\b", re.M)
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


# ---------------------------------------------------------------- the sources, read without importing them


def source_of(module: str) -> Path:
    path = ROOT / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@cache
def tree_of(module: str) -> ast.Module:
    return ast.parse(source_of(module).read_text())


def public_names(module: str) -> list[str] | None:
    """``module.__all__``, read from its source; ``None`` when it declares none."""
    for node in tree_of(module).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return None


def imported_from(module: str) -> dict[str, str]:
    """``{name: the module it is imported from}`` for the top-level ``from ... import`` of ``module``."""
    package = module if source_of(module).name == "__init__.py" else module.rsplit(".", 1)[0]
    found = {}
    for node in tree_of(module).body:
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            origin = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                found[alias.asname or alias.name] = origin if node.module else f"{origin}.{alias.name}"
    return found


def defined_by_def(module: str) -> set[str]:
    return {node.name for node in tree_of(module).body
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)}


def is_constant(module: str, name: str) -> bool:
    return bool(CONSTANT.match(name)) and name not in defined_by_def(module)


def public_modules(package: str) -> list[str]:
    """Every module of ``package`` that declares an ``__all__`` (subpackages included), sorted."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module != package and public_names(module) is not None:
            found.append(module)
    return sorted(found)


def is_package(module: str) -> bool:
    return source_of(module).name == "__init__.py"


def page_of(module: str) -> Path:
    return API / (module.replace(".", "/") + ("/index.md" if is_package(module) else ".md"))


# ---------------------------------------------------------------- the pages


def directives(page: Path) -> list[tuple[str, str, dict, int]]:
    """``(section, path, options, line)`` of every ``::: path`` of ``page``, in order."""
    lines, section, found = page.read_text().splitlines(), "", []
    for number, line in enumerate(lines):
        if heading := SECTION.match(line):
            section = heading["title"]
        elif directive := DIRECTIVE.match(line):
            block = []
            for following in lines[number + 1 :]:
                if following and not following.startswith("    "):
                    break
                block.append(following)
            options = (yaml.safe_load(textwrap.dedent("\n".join(block))) or {}).get("options", {})
            found.append((section, directive["path"], options, number + 1))
    return found


def layout(module: str) -> list[tuple[str, str]]:
    """``(section, name)`` of every member the module's page renders, in page order (section ``""``:
    the module's own ``members:`` list)."""
    page = page_of(module)
    entries = directives(page)
    assert entries and entries[0][1] == module, f"{page.relative_to(ROOT)} must start with '::: {module}'"
    _, _, options, _ = entries[0]
    assert options.get("heading_level") == 1, f"{page.relative_to(ROOT)}: the module is the page title"
    members = options.get("members") or []
    found = [("", name) for name in members]
    for section, path, _, line in entries[1:]:
        assert path.startswith(f"{module}.") and "." not in path[len(module) + 1 :], (
            f"{page.relative_to(ROOT)}:{line}: {path} is not a member of {module}"
        )
        found.append((section, path[len(module) + 1 :]))
    return found


def nav_pages(package: str) -> list[str]:
    """The API pages of ``package`` in nav order, as paths relative to ``docs/``."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    (reference,) = [entry["API reference"] for entry in config["nav"] if isinstance(entry, dict)
                    and "API reference" in entry]
    (section,) = [entry[package] for entry in reference if package in entry]

    def flatten(items):
        for item in items:
            if isinstance(item, str):
                yield item
            else:
                (value,) = item.values()
                yield from (flatten(value) if isinstance(value, list) else [value])

    return list(flatten(section))


def module_of_page(page: str) -> str:
    parts = Path(page).with_suffix("").parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "index" else parts)


def counterpart(module: str) -> str:
    backend, rest = module.split(".", 1)
    return f"{BACKENDS[1 - BACKENDS.index(backend)]}.{rest}"


# ---------------------------------------------------------------- the layout


@pytest.mark.parametrize("package", PACKAGES)
def test_the_nav_lists_a_page_per_public_module_in_alphabetical_order(package):
    pages = nav_pages(package)
    assert pages[0] == f"api/{package}/index.md", f"the nav's {package} section must open on its index"
    modules = [module_of_page(page) for page in pages[1:]]
    expected_modules = public_modules(package)
    assert sorted(modules) == expected_modules, (
        f"the nav's {package} pages must be its modules that declare an __all__: missing "
        f"{sorted(set(expected_modules) - set(modules))}, extra {sorted(set(modules) - set(expected_modules))}"
    )
    for page in pages:
        assert (DOCS / page).is_file(), f"the nav names {page}, which does not exist"
    on_disk = sorted(str(p.relative_to(DOCS)) for p in (API / package).rglob("*.md"))
    assert on_disk == sorted(pages), f"pages of docs/api/{package} not in the nav: {sorted(set(on_disk) - set(pages))}"
    if package in BACKENDS:
        other = {m.split(".", 1)[1] for m in public_modules(BACKENDS[1 - BACKENDS.index(package)])}
        short = [m.split(".", 1)[1] for m in modules]
        expected = sorted(s for s in short if s in other) + sorted(s for s in short if s not in other)
    else:  # the modules, then each subpackage: its index, then its modules
        top = sorted(m for m in modules if m.count(".") == 1 and not is_package(m))
        expected = [*top]
        for sub in sorted(m for m in modules if is_package(m)):
            expected += [sub, *sorted(m for m in modules if m.startswith(f"{sub}."))]
        short = modules
    assert short == expected, f"the {package} pages are not in the documented order: {short}"


def test_the_backends_module_pages_come_in_the_same_order():
    shared = [[module_of_page(p).split(".", 1)[1] for p in nav_pages(b)[1:]] for b in BACKENDS]
    both = [[m for m in order if m in shared[0] and m in shared[1]] for order in shared]
    assert both[0] == both[1], f"the modules both backends have come in another order: {both}"


@pytest.mark.parametrize("module", [m for p in PACKAGES for m in public_modules(p)])
def test_a_module_page_shows_exactly_its_public_names(module):
    page, public = page_of(module), public_names(module)
    text = page.read_text()
    where = page.relative_to(ROOT)
    if is_package(module):  # a subpackage's index: its docstring, and a table of its modules
        assert layout(module) == [], f"{where}: a subpackage's index renders its docstring only"
        unnamed = [name for name in public if f"`{name}`" not in text]
        assert not unnamed, f"{where} does not name these names of {module}.__all__: {unnamed}"
        return
    entries = layout(module)
    names = [name for _, name in entries]
    twice = sorted({name for name in names if names.count(name) > 1})
    assert not twice, f"{where} shows these names more than once: {twice}"
    extra = [name for name in names if name not in public]
    assert not extra, f"{where} shows names that are not in {module}.__all__: {extra}"
    unnamed = [name for name in public if name not in names and f"`{name}`" not in text]
    assert not unnamed, f"{where} neither shows nor names these names of {module}.__all__: {unnamed}"
    imports = imported_from(module)
    for name in names:  # a re-export is shown where it is defined, not again here
        origin = imports.get(name)
        if origin and origin.split(".")[0] in PACKAGES and public_names(origin) and name in public_names(origin):
            raise AssertionError(f"{where} shows {name}, which {origin}'s page shows: name it with a link instead")
    sections = list(dict.fromkeys(section for section, _ in entries))
    for section, name in entries:
        constant = is_constant(module, name)
        assert constant == (section == CONSTANTS), (
            f"{where}: {name} must be under '## {CONSTANTS}'" if constant
            else f"{where}: {name} is not a constant, so not under '## {CONSTANTS}'"
        )
    if CONSTANTS in sections:
        assert sections[-1] == CONSTANTS, f"{where}: '## {CONSTANTS}' must be the last section"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_names_one_backend_alone_has_stand_under_only_in(backend):
    other = BACKENDS[1 - BACKENDS.index(backend)]
    for module in public_modules(backend):
        where = page_of(module).relative_to(ROOT)
        entries = layout(module)
        sections = [section for section, _ in entries]
        assert not [s for s in sections if s.startswith(ONLY) and s != ONLY + backend], (
            f"{where}: an 'Only in' section names another backend"
        )
        theirs = set(public_names(counterpart(module)) or ()) if source_of(counterpart(module)).is_file() else None
        text = page_of(module).read_text()
        if theirs is None:  # a module only this backend has
            assert f"## {ONLY}{backend}" in text, f"{where}: a module only {backend} has says so ('## {ONLY}{backend}')"
        for section, name in entries:
            if section == CONSTANTS:
                continue
            mine_only = theirs is None or name not in theirs
            assert mine_only == (section == ONLY + backend), (
                f"{where}: {name} " + (f"is only in {backend}: put it under '## {ONLY}{backend}'" if mine_only
                                       else f"is in {other} too: it is not under '## {ONLY}{backend}'")
            )
        if any(section == ONLY + backend for section in sections):
            first = sections.index(ONLY + backend)
            assert set(sections[first:]) <= {ONLY + backend, CONSTANTS}, (
                f"{where}: '{ONLY}{backend}' comes after the shared names"
            )
        constants_only = [name for section, name in entries
                          if section == CONSTANTS and (theirs is None or name not in theirs)]
        if constants_only:
            assert f"## {ONLY}{backend}" in text, (
                f"{where}: {constants_only} are only in {backend}: say so under '## {ONLY}{backend}'"
            )


def test_the_backend_pages_read_side_by_side():
    for module in public_modules("vardax_jax"):
        twin = counterpart(module)
        if not source_of(twin).is_file():
            continue
        jax_names = [(s, n) for s, n in layout(module) if not s.startswith(ONLY)]
        torch_names = [(s, n) for s, n in layout(twin) if not s.startswith(ONLY)]
        shared = set(n for _, n in jax_names) & set(n for _, n in torch_names)
        jax_shared, torch_shared = ([e for e in entries if e[1] in shared] for entries in (jax_names, torch_names))
        assert jax_shared == torch_shared, (
            f"{module} and {twin}: the names both show come in another order or section:\n{jax_shared}\n{torch_shared}"
        )
        lonely = sorted({n for _, n in jax_names} ^ {n for _, n in torch_names})
        assert not [n for n in lonely if not CONSTANT.match(n)], (
            f"{module} / {twin}: shared names one page lacks: {lonely}"
        )


@pytest.mark.parametrize("package", [*PACKAGES, "pipekit_cycle.ssh", "pipekit_cycle.experiment"])
def test_an_index_links_each_top_level_name_to_its_page(package):
    page = API / package.replace(".", "/") / "index.md"
    text = page.read_text()
    names = [name for name in public_names(package) if not (ROOT / package.replace(".", "/") / name).is_dir()
             and not (ROOT / package.replace(".", "/") / f"{name}.py").is_file()]
    unlinked = [name for name in names if f"[`{name}`](" not in text]
    assert not unlinked, f"{page.relative_to(ROOT)}: no link to these names of {package}.__all__: {unlinked}"
    for module in public_modules(package.split(".")[0]):
        if module.rsplit(".", 1)[0] == package:
            link = str(page_of(module).relative_to(page.parent))
            assert f"]({link})" in text, f"{page.relative_to(ROOT)}: no link to the page of {module} ({link})"


# ---------------------------------------------------------------- the docstrings' examples


def _load(package: str):
    import griffe  # the docs extra's, as mkdocstrings-python's

    extensions = griffe.load_extensions(*(f"{ROOT / 'docs' / '_griffe' / e}" for e in EXTENSIONS))
    return griffe.load(package, search_paths=[str(ROOT)], extensions=extensions, docstring_parser="numpy")


def _walk(obj):
    """``obj`` and what its entry renders below it: a class's members."""
    yield obj
    if not obj.is_class:
        return
    for name, member in obj.members.items():
        if name.startswith("_") or member.is_alias:
            continue
        if not member.is_module:
            yield from _walk(member)


def shown(package: str) -> list:
    """Every object whose docstring the pages of ``package`` show, once each, in page order."""
    root, found = _load(package), {}
    for page in nav_pages(package)[1:]:
        module = module_of_page(page)
        obj = root[module.removeprefix(package).removeprefix(".")]
        found.setdefault(obj.path, obj)
        if is_package(module):  # a subpackage's index shows its docstring only
            continue
        for _, name in layout(module):
            if name not in obj.members:  # not the module's: the layout tests say so
                continue
            member = obj[name]
            member = member.final_target if member.is_alias else member
            for item in _walk(member):
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
    for package in PACKAGES:
        for obj in shown(package):
            text = obj.docstring.value if obj.docstring is not None else ""
            blocks = [m["code"] for m in EXAMPLE.finditer(text)]
            if re.search(r"^>>> ", text, re.M):
                module = obj.module.path
                attributes = obj.path[len(module) + 1 :].split(".") if obj.path != module else []
                blocks.append(DOCTEST.format(module=module, attributes=attributes, path=obj.path))
            label = obj.path if obj.path.startswith(package) else f"{package}:{obj.path}"
            for i, code in enumerate(blocks):
                kind = package
                if package == "pipekit_cycle" and (imported := IMPORTS_BACKEND.search(code)):
                    kind = imported["backend"]
                found.append((label + (f"-{i + 1}" if len(blocks) > 1 else ""), kind, code))
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
