"""Spec -> optimistix mapping, and KStepAdjoint as the adjoint= of optimistix solves."""

import dataclasses

import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx
import pytest

import pipekit_cycle as pk
import vardax_jax as vd


def test_every_spec_maps():
    assert vd.to_optimistix_adjoint is vd.to_native_adjoint
    assert vd.to_native_adjoint(pk.TruncatedAdjoint(3)) == vd.KStepAdjoint(k=3)
    assert vd.OneStepAdjoint() == vd.KStepAdjoint(1) == vd.to_native_adjoint("truncated")
    checkpoint = vd.to_native_adjoint(pk.RecursiveCheckpointAdjoint(8))
    assert type(checkpoint) is optx.RecursiveCheckpointAdjoint and checkpoint.checkpoints == 8
    assert vd.RecursiveCheckpointAdjoint is optx.RecursiveCheckpointAdjoint
    implicit = vd.to_native_adjoint(pk.ImplicitAdjoint("neumann", rtol=1e-8, atol=1e-9, max_steps=40))
    assert isinstance(implicit, optx.ImplicitAdjoint) and isinstance(implicit, vd.ImplicitAdjoint)
    fields = (implicit.linear_solver_name, implicit.rtol, implicit.atol, implicit.max_steps)
    assert fields == ("neumann", 1e-8, 1e-9, 40)
    assert isinstance(implicit.linear_solver.solver, vd.FixedPointNeumann)  # inside WarnIfStoppedShort
    assert isinstance(vd.to_native_adjoint(pk.ImplicitAdjoint("dense")).linear_solver, lx.LU)


@pytest.mark.parametrize("spec", [pk.DirectAdjoint(), pk.BacksolveAdjoint()])
def test_dynamics_only_specs_are_refused(spec):
    with pytest.raises(ValueError, match="belongs to the 'dynamics' layer") as info:
        vd.to_native_adjoint(spec)
    with pytest.raises(ValueError) as shared:
        pk.check_layer(spec, "inner_solve")
    assert str(info.value) == str(shared.value)


def test_native_passes_through_and_foreign_specs_map():
    for native in (optx.ImplicitAdjoint(), optx.RecursiveCheckpointAdjoint(3), vd.KStepAdjoint(2)):
        assert vd.to_native_adjoint(native) is native

    @dataclasses.dataclass(frozen=True)
    class TruncatedAdjoint:  # same name and fields, another library
        k: int = 5

    assert vd.to_native_adjoint(TruncatedAdjoint()) == vd.KStepAdjoint(5)
    with pytest.raises(TypeError):
        vd.to_native_adjoint(object())
    with pytest.raises(ValueError, match="KStepAdjoint.k"):
        vd.KStepAdjoint(0)


def _root(y, theta):
    return y**3 + y - theta


def _minimise(y, theta):
    return jnp.sum((y - theta) ** 2) + 0.1 * jnp.sum(y**4)


def _fixed(y, theta):
    return 0.5 * jnp.tanh(y) + theta


def _objective(kind, adjoint):
    y0 = jnp.zeros(3)

    def f(theta):
        if kind == "root_find":
            sol = optx.root_find(_root, optx.Newton(rtol=1e-10, atol=1e-10), y0, theta, adjoint=adjoint, max_steps=32)
        elif kind == "minimise":
            sol = optx.minimise(_minimise, optx.BFGS(rtol=1e-10, atol=1e-10), y0, theta, adjoint=adjoint, max_steps=64)
        else:
            solver = optx.FixedPointIteration(rtol=1e-10, atol=1e-10)
            sol = optx.fixed_point(_fixed, solver, y0, theta, adjoint=adjoint, max_steps=64)
        return jnp.sum(jnp.sin(sol.value)), sol.stats["num_steps"]

    return jax.jit(jax.value_and_grad(f, has_aux=True))


THETA = jnp.array([0.3, -0.7, 1.2])


@pytest.mark.parametrize("kind", ["root_find", "minimise", "fixed_point"])
def test_kstep_in_optimistix_with_k_covering_all_steps_is_unrolled(kind):
    (value, n_steps), exact = _objective(kind, optx.RecursiveCheckpointAdjoint())(THETA)
    n_steps = int(n_steps)
    assert n_steps > 2
    (value_k, steps_k), grad_k = _objective(kind, vd.KStepAdjoint(n_steps))(THETA)
    assert float(value_k) == float(value) and int(steps_k) == n_steps
    assert float(jnp.max(jnp.abs(grad_k - exact))) <= 1e-12 * float(jnp.max(jnp.abs(exact)))
    if kind == "fixed_point":  # a linearly convergent solver: k = 2 < n is biased
        (value_2, steps_2), grad_2 = _objective(kind, vd.KStepAdjoint(2))(THETA)
        assert abs(float(value_2) - float(value)) < 1e-8 and int(steps_2) == n_steps
        assert float(jnp.max(jnp.abs(grad_2 - exact))) > 1e-2


def test_one_step_newton_equals_implicit():
    """Bolte, Pauwels & Vaiter (2023): one Newton step from the converged root is the IFT."""
    (_, n_steps), implicit = _objective("root_find", optx.ImplicitAdjoint())(THETA)
    assert int(n_steps) > 1
    (_, _), one_step = _objective("root_find", vd.OneStepAdjoint())(THETA)
    assert float(jnp.max(jnp.abs(one_step - implicit))) <= 1e-12
