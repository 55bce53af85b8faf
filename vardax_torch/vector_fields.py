r"""ODE vector fields of the dynamics layer: :math:`f_\theta` in :math:`\dot x = f_\theta(x)`.

Each field is an ``nn.Module`` mapping states ``(..., N)`` to tendencies ``(..., N)``; its
parameters (named by ``parameter_names``, `pipekit_cycle.dynamics.FIELD_PARAMETERS`) are
``nn.Parameter`` s, so `vardax_torch.dynamics.TorchDiffEqForwardModel` differentiates them like
any other. Re-exported by `vardax_torch.dynamics` and at the package top level.

Examples
--------
```python
import torch
import vardax_torch as vd

field = vd.Lorenz96(state_dim=8)
assert tuple(field(torch.zeros(2, 8, dtype=field.forcing.dtype)).shape) == (2, 8)
```
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from pipekit_cycle import dynamics as shared
from pipekit_cycle.dynamics import FIELD_PARAMETERS
from pipekit_cycle.problems import L63_BETA, L63_RHO, L63_SIGMA, L96_FORCING

__all__ = ["LinearField", "Lorenz63", "Lorenz96", "field_parameters"]


def _scalar_parameter(
    value: float | Tensor | npt.ArrayLike, dtype: torch.dtype | None, device: torch.device | str | None = None
) -> nn.Parameter:
    """``value`` as a parameter in ``dtype`` (``None``: torch's default) on ``device`` (``None``:
    the CPU; a ``torch.device`` or its name)."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return nn.Parameter(torch.as_tensor(value, dtype=dtype).clone().to(device))


class Lorenz63(nn.Module):
    r"""Lorenz-63: :math:`\dot x = \sigma (y - x),\ \dot y = x (\rho - z) - y,\ \dot z = x y - \beta z`.

    ``sigma``, ``rho``, ``beta`` are 0-d ``nn.Parameter`` s, so gradients w.r.t. them are taken
    like any other parameter. ``forward(state)`` maps ``(..., 3)`` to tendencies ``(..., 3)``.

    Examples
    --------
    ```python
    import numpy as np
    import torch
    import vardax_torch as vd

    field = vd.Lorenz63()  # sigma=10, rho=28, beta=8/3, as nn.Parameters
    x = torch.tensor([1.0, 1.0, 1.0], dtype=field.rho.dtype)
    tendency = field(x)
    assert np.allclose(vd.to_numpy(tendency), [0.0, 26.0, 1.0 - 8.0 / 3.0])
    tendency.sum().backward()
    assert float(field.rho.grad) == 1.0  # d/d rho of x (rho - z) is x = 1
    ```
    """

    state_dim: ClassVar[int] = 3
    parameter_names: ClassVar[tuple[str, ...]] = FIELD_PARAMETERS["lorenz63"]

    def __init__(
        self, sigma: float | Tensor = L63_SIGMA, rho: float | Tensor = L63_RHO, beta: float | Tensor = L63_BETA, *,
        dtype: torch.dtype | None = None, device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.sigma = _scalar_parameter(sigma, dtype, device)
        self.rho = _scalar_parameter(rho, dtype, device)
        self.beta = _scalar_parameter(beta, dtype, device)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        x, y, z = state[..., 0], state[..., 1], state[..., 2]
        return torch.stack([self.sigma * (y - x), x * (self.rho - z) - y, x * y - self.beta * z], dim=-1)


class Lorenz96(nn.Module):
    r"""Lorenz-96: :math:`\dot x_i = (x_{i+1} - x_{i-2})\, x_{i-1} - x_i + F`, periodic in ``i``.

    ``forcing`` (:math:`F`) is a 0-d ``nn.Parameter``; ``state_dim`` (``N >= 4``) is fixed.

    Examples
    --------
    ```python
    import numpy as np
    import torch
    import vardax_torch as vd

    field = vd.Lorenz96(state_dim=8, forcing=8.0)
    x = torch.full((8,), 8.0, dtype=field.forcing.dtype)
    assert np.allclose(vd.to_numpy(field(x)), 0.0)  # x_i = F for every i is a fixed point
    assert tuple(field(torch.ones(3, 8, dtype=x.dtype)).shape) == (3, 8)  # any leading axes
    ```
    """

    parameter_names: ClassVar[tuple[str, ...]] = FIELD_PARAMETERS["lorenz96"]

    def __init__(
        self, state_dim: int = shared.L96_STATE_DIM, forcing: float | Tensor = L96_FORCING, *,
        dtype: torch.dtype | None = None, device: torch.device | str | None = None,
    ) -> None:
        state_dim = shared.check_l96_state_dim(state_dim)
        super().__init__()
        self.state_dim = state_dim
        self.forcing = _scalar_parameter(forcing, dtype, device)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        ahead = torch.roll(state, -1, dims=-1)  # x_{i+1}
        behind2 = torch.roll(state, 2, dims=-1)  # x_{i-2}
        behind = torch.roll(state, 1, dims=-1)  # x_{i-1}
        return (ahead - behind2) * behind - state + self.forcing


class LinearField(nn.Module):
    r"""The linear ODE :math:`\dot x = A x` (``matrix`` :math:`A`, ``(N, N)``).

    Its rollout is linear in the initial state, which makes 4D-Var a quadratic problem with a
    closed-form solution (the linear-Gaussian check).

    Examples
    --------
    ```python
    import numpy as np
    import torch
    import vardax_torch as vd

    field = vd.LinearField(np.array([[0.0, 1.0], [-1.0, 0.0]]))  # a rotation
    assert field.state_dim == 2
    x = torch.tensor([1.0, 0.0], dtype=field.matrix.dtype)
    assert np.allclose(vd.to_numpy(field(x)), [0.0, -1.0])  # A x
    ```
    """

    parameter_names: ClassVar[tuple[str, ...]] = FIELD_PARAMETERS["linear"]

    def __init__(
        self, matrix: npt.ArrayLike, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> None:
        shared.check_square_matrix(matrix)
        super().__init__()
        self.matrix = _scalar_parameter(np.asarray(matrix), dtype, device)

    @property
    def state_dim(self) -> int:
        return self.matrix.shape[0]

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return state @ self.matrix.T


def field_parameters(field: nn.Module) -> dict[str, np.ndarray]:
    """The vector field's parameters by name (``field.parameter_names``), as numpy arrays."""
    return {name: getattr(field, name).detach().cpu().numpy() for name in field.parameter_names}
