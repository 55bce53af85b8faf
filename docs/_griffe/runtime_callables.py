"""A griffe extension: public module attributes that are callables at run time, shown as functions.

griffe reads the sources without running them, so a name bound by an assignment looks like a
plain attribute, with no signature: ``train_step = make_train_step(train_loss_fn)``,
``make_vector_field = _API.make_vector_field``, ``to_torch_adjoint = to_native_adjoint``.
For each public attribute of a module whose value, once the module is imported, is a function,
a bound method or a callable instance (not a class), this puts a function in its place, with
the signature ``inspect.signature`` gives and the attribute's own docstring (the string under
the assignment) or else the callable's, read as Markdown like every other docstring
(``rest_math.markdown_of``). A module that cannot be imported (its framework is not installed)
is left as griffe read it. The sources are not changed.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

import griffe

_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: griffe.ParameterKind.positional_only,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: griffe.ParameterKind.positional_or_keyword,
    inspect.Parameter.VAR_POSITIONAL: griffe.ParameterKind.var_positional,
    inspect.Parameter.KEYWORD_ONLY: griffe.ParameterKind.keyword_only,
    inspect.Parameter.VAR_KEYWORD: griffe.ParameterKind.var_keyword,
}


def _markdown_of() -> Any:
    spec = importlib.util.spec_from_file_location("_rest_math", Path(__file__).with_name("rest_math.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.markdown_of


def _annotation(value: Any) -> str | None:
    if value is inspect.Parameter.empty or value is inspect.Signature.empty:
        return None
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _function(attribute: griffe.Attribute, value: Any, markdown_of: Any) -> griffe.Function | None:
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        return None
    parameters = griffe.Parameters(*(
        griffe.Parameter(
            p.name, annotation=_annotation(p.annotation), kind=_KINDS[p.kind],
            default=None if p.default is inspect.Parameter.empty else repr(p.default),
        )
        for p in signature.parameters.values()
    ))
    if attribute.docstring is not None:
        docstring = attribute.docstring.value
    else:
        text = inspect.getdoc(value) or ""
        docstring = markdown_of(text) if text else None
    function = griffe.Function(
        attribute.name, parameters=parameters, returns=_annotation(signature.return_annotation),
        lineno=attribute.lineno, endlineno=attribute.endlineno,
    )
    if docstring is not None:
        function.docstring = griffe.Docstring(docstring, parser="numpy", parent=function)
    return function


def _callable(value: Any) -> bool:
    return not inspect.isclass(value) and not inspect.ismodule(value) and callable(value)


class RuntimeCallables(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        markdown_of = _markdown_of()
        stack = [pkg]
        while stack:
            module = stack.pop()
            stack.extend(m for m in module.modules.values() if not m.is_alias)
            try:
                runtime = importlib.import_module(module.path)
            except ImportError:
                continue
            for name, member in list(module.members.items()):
                if member.is_alias or not member.is_attribute or name.startswith("_"):
                    continue
                value = getattr(runtime, name, None)
                if _callable(value):
                    function = _function(member, value, markdown_of)
                    if function is not None:
                        module.set_member(name, function)
