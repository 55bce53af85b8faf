"""Dynamics adjoints own their integration (DESIGN 5): a user's own adjoint plugs in, the shared
checkpoint schedule is applied by the mapped adjoint, no adjoint changes the forward value, and
checkpointing lowers memory."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchdiffeq
from torch.utils.checkpoint import checkpoint

import pipekit_cycle as pc
from pipekit_cycle.adjoints import checkpoint_schedule
from vardax_jax import dynamics as jd
from vardax_torch import dynamics as td

X63 = np.array([[1.0, 2.0, 20.0], [-5.0, -6.0, 22.0]])
X96 = 8.0 + np.array([0.1, -0.3, 0.2, 0.5, -0.4, 0.0])
DOPRI5 = {"solver": "dopri5", "rtol": 1e-9, "atol": 1e-9}


def grad_rel(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest relative error over the named gradients (norm of the difference / norm of b)."""
    assert a.keys() == b.keys()
    return max(float(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(b[k])) for k in b)


def target(x0: np.ndarray, n_steps: int) -> np.ndarray:
    shape = (*x0.shape[:-1], n_steps + 1, x0.shape[-1])
    return 0.1 * np.cos(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape)


# --------------------------------------------------------------------------------------------
# A user's own adjoint
# --------------------------------------------------------------------------------------------


class EverySaveTimeCheckpointed(td.AbstractOdeintAdjoint):
    """A user's own torch adjoint, defined outside the package, with its own checkpointing rule:
    one stored state per save time (CheckpointedOdeint stores ceil(log2 n)), each interval
    re-integrated on the backward. It logs what the forward model hands it."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, int]] = []

    def integrate(self, func, y0, t, *, params, solver):
        self.calls.append((len(t), solver["method"], len(params)))
        states = [y0]
        for i in range(len(t) - 1):
            def interval(y: torch.Tensor, i: int = i) -> torch.Tensor:
                return torchdiffeq.odeint(func, y, t[i : i + 2], **solver)[-1]

            states.append(checkpoint(interval, states[-1], use_reentrant=False))
        return torch.stack(states)


@pytest.mark.parametrize(
    ("system", "x0", "dt", "n_steps"),
    [("lorenz63", X63, 0.01, 40), ("lorenz96", X96, 0.05, 12)],
)
def test_a_users_own_torch_adjoint_plugs_in_and_is_exact(system, x0, dt, n_steps):
    mine = EverySaveTimeCheckpointed()
    assert td.to_dynamics_adjoint(mine) is mine
    assert td.make_forward_model(system, dt, state_dim=x0.shape[-1], adjoint=mine).adjoint is mine
    goal = target(x0, n_steps)
    loss, grads = td.trajectory_loss_and_grads(system, x0, n_steps, dt, target=goal, adjoint=mine, substeps=2)
    direct_loss, direct = td.trajectory_loss_and_grads(
        system, x0, n_steps, dt, target=goal, adjoint="direct", substeps=2
    )
    n_parameters = len(td.make_vector_field(system, state_dim=x0.shape[-1]).parameter_names)
    assert mine.calls == [(n_steps + 1, "rk4", n_parameters)]  # one integration, of the whole window
    assert loss == direct_loss  # split at save times, rk4 takes the very same steps: bit for bit
    # float64. Measured: 6.1e-16 (Lorenz-63) and 9.3e-16 (Lorenz-96) relative.
    assert grad_rel(grads, direct) < 1e-12, grad_rel(grads, direct)


class LoggedDirect(diffrax.AbstractAdjoint):
    """A user's own diffrax adjoint: DirectAdjoint's loop, noting each loop it runs (at trace time)."""

    def loop(self, **kwargs):
        LOOPS.append(type(self))
        return diffrax.DirectAdjoint().loop(**kwargs)


LOOPS: list[type] = []


def test_a_users_own_diffrax_adjoint_reaches_diffeqsolve_unchanged():
    mine = LoggedDirect()
    assert jd.to_dynamics_adjoint(mine) is mine
    assert jd.make_forward_model("lorenz63", 0.01, adjoint=mine).adjoint is mine
    goal = target(X63, 40)
    LOOPS.clear()
    loss, grads = jd.trajectory_loss_and_grads("lorenz63", X63, 40, 0.01, target=goal, adjoint=mine, substeps=2)
    direct_loss, direct = jd.trajectory_loss_and_grads(
        "lorenz63", X63, 40, 0.01, target=goal, adjoint="direct", substeps=2
    )
    assert LOOPS == [LoggedDirect]
    assert loss == direct_loss
    assert grad_rel(grads, direct) < 1e-12, grad_rel(grads, direct)  # measured 0 (the same loop)


# --------------------------------------------------------------------------------------------
# The shared checkpoint schedule, applied by the mapped adjoint
# --------------------------------------------------------------------------------------------


def test_the_mapped_checkpoint_adjoint_stores_the_shared_schedule(monkeypatch):
    seen = []
    original = diffrax.RecursiveCheckpointAdjoint.loop

    def spy(self, *, max_steps, **kwargs):
        seen.append((self.checkpoints, max_steps))
        return original(self, max_steps=max_steps, **kwargs)

    monkeypatch.setattr(diffrax.RecursiveCheckpointAdjoint, "loop", spy)
    eqx.clear_caches()  # diffeqsolve is traced again, so the loop runs (and is seen) again
    x0 = np.full((7, 3), 1.0)  # a batch shape of its own
    cases = [
        # (adjoint, options, what the loop is handed)
        ("checkpoint", {"substeps": 2}, (checkpoint_schedule(81, None), 81)),  # 40 x 2 steps, + 1
        ("checkpoint:3", {"substeps": 2}, (3, 81)),
        ("checkpoint", DOPRI5, (checkpoint_schedule(jd.DEFAULT_MAX_STEPS, None), jd.DEFAULT_MAX_STEPS)),
        (diffrax.RecursiveCheckpointAdjoint(), {"substeps": 2}, (None, 81)),  # a native one: diffrax's rule
    ]
    for adjoint, options, expected in cases:
        seen.clear()
        jd.make_forward_model("lorenz63", 0.01, adjoint=adjoint, **options).rollout(x0, 40)
        assert seen == [expected], (adjoint, options)
    assert checkpoint_schedule(81, None) == 7 and checkpoint_schedule(jd.DEFAULT_MAX_STEPS, None) == 12


# --------------------------------------------------------------------------------------------
# No adjoint changes the forward value
# --------------------------------------------------------------------------------------------


def _rollout(backend, adjoint, options) -> np.ndarray:
    model = backend.make_forward_model("lorenz63", 0.01, adjoint=adjoint, **options)
    trajectory = model.rollout(X63, 30)  # with the graph, as a gradient would see it
    return trajectory.detach().numpy() if isinstance(trajectory, torch.Tensor) else np.asarray(trajectory)


@pytest.mark.parametrize("backend", [jd, td], ids=["jax", "torch"])
def test_no_adjoint_changes_the_forward_value(backend):
    backsolve_tolerances = pc.BacksolveAdjoint(rtol=1e-7, atol=1e-9)
    adjoints = ["direct", "checkpoint", "checkpoint:2", "backsolve", backsolve_tolerances]
    for options in ({"substeps": 2}, DOPRI5):
        values = {str(a): _rollout(backend, a, options) for a in adjoints}
        for name, value in values.items():
            if backend is td and name.startswith("checkpoint") and options is DOPRI5:
                # torchdiffeq keeps no solver state between calls: each segment restarts dopri5's
                # step-size control, so the values agree to the solver's tolerance (measured 1.7e-9).
                assert np.max(np.abs(value - values["direct"])) < 1e-7 * np.max(np.abs(values["direct"]))
            else:
                np.testing.assert_array_equal(value, values["direct"], err_msg=f"{name}, {options}")


@pytest.mark.parametrize("backend", [jd, td], ids=["jax", "torch"])
def test_backsolve_tolerances_apply_only_after_an_adaptive_forward(backend):
    """After rk4 the adjoint steps backwards on the forward's grid (a PID controller on a solver
    without an error estimate would only grow its steps); after dopri5 the spec's tolerances
    drive the backward solve."""
    loose = pc.BacksolveAdjoint(rtol=1e-4, atol=1e-4)
    goal = target(X63, 20)

    def grads(adjoint, options):
        return backend.trajectory_loss_and_grads("lorenz63", X63, 20, 0.01, target=goal, adjoint=adjoint, **options)[1]

    fixed = {"substeps": 2}
    assert grad_rel(grads(loose, fixed), grads("backsolve", fixed)) == 0.0
    # Measured: 1.6e-9 (jax) and 3.0e-9 (torch) relative: the loose backward solve of each 0.01 interval.
    assert grad_rel(grads(loose, DOPRI5), grads("backsolve", DOPRI5)) > 1e-12


# --------------------------------------------------------------------------------------------
# Checkpointing lowers memory
# --------------------------------------------------------------------------------------------


def _torch_saved_bytes(adjoint, n_steps: int) -> int:
    """Bytes autograd holds between the forward and the backward pass (its saved tensors)."""
    model = td.make_forward_model("lorenz96", 0.05, adjoint=adjoint)
    x0 = torch.as_tensor(8.0 + np.sin(np.arange(40.0)) * np.ones((8, 1))).requires_grad_(True)
    saved = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        trajectory = model.rollout(x0, n_steps)
    trajectory.square().sum().backward()
    return saved[0]


def test_torch_checkpointing_memory_is_sublinear_in_the_steps():
    saved = {(a, n): _torch_saved_bytes(a, n) for a in ("direct", "checkpoint") for n in (8, 64)}
    print("torch saved bytes (8, 64 steps):", saved)
    # Measured: direct 246016 -> 1968128 (8x), checkpoint 7768 -> 15920 (3 -> 6 stored states).
    assert saved["direct", 64] > 7 * saved["direct", 8]
    assert saved["checkpoint", 64] <= 3 * saved["checkpoint", 8]
    assert saved["checkpoint", 64] < saved["direct", 64] / 20


def _jax_temp_bytes(adjoint, substeps: int) -> int:
    """Compiled scratch memory of the gradient of one step of ``substeps`` solver steps (one
    save, so the output does not grow with the steps)."""
    model = jd.make_forward_model("lorenz96", 0.05 * substeps, substeps=substeps, adjoint=adjoint)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    x0 = jnp.asarray(8.0 + np.sin(np.arange(40.0)) * np.ones((16, 1)))

    def loss(p, x):
        return jnp.sum(eqx.combine(p, static).step(x) ** 2)

    return jax.jit(jax.grad(loss)).lower(params, x0).compile().memory_analysis().temp_size_in_bytes


def test_jax_checkpointing_memory_is_sublinear_in_the_steps():
    temp = {(a, n): _jax_temp_bytes(a, n) for a in ("direct", "checkpoint") for n in (15, 255)}
    print("jax compiled temp bytes (15, 255 steps):", temp)
    # Measured: checkpoint 138912 -> 159392 (4 -> 8 stored states); direct 770360 -> 855920
    # (diffrax's DirectAdjoint reserves nested blocks of 16 steps).
    assert temp["checkpoint", 255] <= 1.3 * temp["checkpoint", 15]
    assert all(temp["checkpoint", n] < temp["direct", n] / 3 for n in (15, 255))
