import pytest

import pipekit_cycle
from pipekit_cycle import backends, protocols


def test_both_backends_are_registered_and_available():
    assert {"vardax_jax", "vardax_torch"} <= set(backends._entry_points())
    assert {"vardax_jax", "vardax_torch"} <= set(pipekit_cycle.available_backends())


def test_load_backend_returns_the_module():
    module = pipekit_cycle.load_backend("vardax_torch")
    assert module.__name__ == "vardax_torch"


def test_missing_framework_names_the_extra(monkeypatch):
    real = backends._is_installed
    monkeypatch.setattr(backends, "_is_installed", lambda name: name != "jax" and real(name))
    with pytest.raises(pipekit_cycle.BackendNotInstalledError, match=r"pipekit-cycle\[jax\]"):
        pipekit_cycle.load_backend("vardax_jax")
    assert "vardax_jax" not in pipekit_cycle.available_backends()


def test_unknown_backend():
    with pytest.raises(pipekit_cycle.BackendNotInstalledError, match="no backend 'nope'.*registered: "):
        pipekit_cycle.load_backend("nope")


def test_protocols_are_runtime_checkable():
    class Modulator:
        def init_carry(self, state):
            return 0

        def __call__(self, grad, state, carry):
            return grad, carry

    class Model:
        dt = 0.1
        adjoint = None

        def step(self, state, dt):
            return state

        def with_adjoint(self, spec):
            return self

    assert isinstance(Modulator(), protocols.GradModulator)
    assert isinstance(Model(), protocols.ForwardModel)
    assert not isinstance(object(), protocols.GradModulator)
    assert isinstance(lambda x: x, protocols.Prior)


def test_a_broken_backend_is_not_reported_as_missing(tmp_path, monkeypatch):
    (tmp_path / "broken_backend_module.py").write_text("from pipekit_cycle.validation import NO_SUCH_NAME\n")
    (tmp_path / "needs_missing_dep.py").write_text("import a_framework_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="NO_SUCH_NAME") as info:
        pipekit_cycle.load_backend("broken_backend_module")
    assert not isinstance(info.value, pipekit_cycle.BackendNotInstalledError)
    with pytest.raises(pipekit_cycle.BackendNotInstalledError, match="'a_framework_that_is_not_installed'"):
        pipekit_cycle.load_backend("needs_missing_dep")
