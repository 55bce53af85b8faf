"""Bad input raises ValueError with the same words in both backends."""

from __future__ import annotations

import numpy as np
import pytest

from vardax_jax import dynamics as jd
from vardax_torch import dynamics as td

XB = np.array([1.0, 2.0, 20.0])
OBS = np.full((5, 3), np.nan)
OBS[::2] = 1.0


def model(backend, **options):
    return backend.make_forward_model("lorenz63", 0.01, **options)


def fourdvar(backend, background_cov=None, obs_var=1.0, **options):
    background_cov = np.ones(3) if background_cov is None else background_cov
    return backend.StrongFourDVar(model(backend), background_cov, obs_var, **options)


# (case id, action on a backend module, words the message must contain)
CASES = [
    (
        "state-last-axis",
        lambda b: model(b).rollout(np.ones((2, 4)), 3),
        "state must have shape (..., N) with the state dimension N=3 last, got shape (2, 4)",
    ),
    ("state-scalar", lambda b: model(b).step(np.float64(1.0)), "got shape ()"),
    ("dt-zero", lambda b: model(b).step(XB, 0.0), "dt must be a finite number > 0, got 0.0"),
    ("dt-negative", lambda b: b.make_forward_model("lorenz63", -0.1), "got -0.1"),
    ("dt-nan", lambda b: b.make_forward_model("lorenz63", float("nan")), "got nan"),
    ("dt-text", lambda b: b.make_forward_model("lorenz63", "fast"), "got 'fast'"),
    ("n-steps", lambda b: model(b).rollout(XB, -1), "n_steps must be an int >= 0, got -1"),
    ("n-steps-float", lambda b: model(b).rollout(XB, 2.5), "got 2.5"),
    ("solver", lambda b: model(b, solver="euler"), "solver must be one of 'rk4', 'dopri5', got 'euler'"),
    ("substeps", lambda b: model(b, substeps=0), "substeps must be an int >= 1, got 0"),
    ("rtol", lambda b: model(b, rtol=-1.0), "rtol must be a finite number > 0, got -1.0"),
    ("system", lambda b: b.make_forward_model("lorenz84", 0.01), "system must be one of"),
    ("parameter-name", lambda b: b.make_forward_model("lorenz63", 0.01, parameters={"F": 8.0}), "got ['F']"),
    ("wrong-layer", lambda b: model(b).with_adjoint("implicit"), "belongs to the 'inner_solve' layer"),
    ("xb-shape", lambda b: fourdvar(b)(np.ones(4), OBS), "xb must have shape (..., N)"),
    ("obs-shape", lambda b: fourdvar(b)(XB, np.ones((2, 5, 3))), "obs must have shape ('T', 3)"),
    ("obs-times", lambda b: fourdvar(b, n_steps=3)(XB, OBS), "obs must have n_steps + 1 = 4 times on axis -2, got 5"),
    ("cov-not-spd", lambda b: fourdvar(b, background_cov=-np.eye(3)), "not positive definite"),
    ("cov-shape", lambda b: fourdvar(b, background_cov=np.ones(2)), "got shape (2,)"),
    ("obs-var", lambda b: fourdvar(b, obs_var=np.zeros(3)), "obs_var must be a variance > 0"),
]


@pytest.mark.parametrize(("action", "words"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_raises_the_same_value_error_in_both_backends(action, words):
    messages = []
    for backend in (jd, td):
        with pytest.raises(ValueError) as error:
            action(backend)
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert words in messages[0], messages[0]
