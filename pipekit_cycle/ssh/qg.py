r"""A two-layer quasi-geostrophic model in numpy: pyqg's ``QGModel`` equations.

Two layers of thickness :math:`H_1` (upper) and :math:`H_2` on a doubly periodic
:math:`L_x \times L_y` box on a :math:`\beta`-plane, each carried by an imposed uniform zonal
flow :math:`U_1`, :math:`U_2`. The potential-vorticity anomalies are

.. math::
    q_1 = \nabla^2 \psi_1 + F_1 (\psi_2 - \psi_1), \qquad
    q_2 = \nabla^2 \psi_2 + F_2 (\psi_1 - \psi_2), \qquad
    F_1 = \frac{1}{L_d^2 (1 + \delta)}, \quad F_2 = \delta F_1, \quad \delta = H_1 / H_2,

with :math:`L_d` the first baroclinic deformation radius, and they evolve as

.. math::
    \partial_t q_n + J(\psi_n, q_n) + U_n \partial_x q_n + Q_{y,n}\, \partial_x \psi_n
        = -\delta_{n2}\, r\, \nabla^2 \psi_2,
    \qquad Q_{y,1} = \beta + F_1 (U_1 - U_2), \quad Q_{y,2} = \beta - F_2 (U_1 - U_2),

:math:`J(\psi, q) = \psi_x q_y - \psi_y q_x`, :math:`r` a linear bottom drag on the lower layer.
The vertical shear :math:`U_1 - U_2` tilts the interface: its mean PV gradient
:math:`Q_{y,n}` feeds baroclinic instability when :math:`U_1 - U_2 > \beta / F_2` (Phillips),
the eddies grow on the available potential energy of the mean flow and the bottom drag and the
small-scale filter take the energy out, so the flow reaches a statistically steady state with
no other forcing.

Numerics, pyqg's: pseudo-spectral on ``numpy.fft.rfft2`` (wavenumbers
:math:`k = 2\pi\,` ``rfftfreq(nx, dx)``, :math:`l = 2\pi\,` ``fftfreq(ny, dy)``); the
inversion :math:`\hat q \to \hat\psi` solved per wavenumber in closed form,

.. math::
    \hat\psi_1 = -\frac{(\kappa^2 + F_2)\, \hat q_1 + F_1 \hat q_2}{\kappa^2 (\kappa^2 + F_1 + F_2)},
    \qquad
    \hat\psi_2 = -\frac{F_2 \hat q_1 + (\kappa^2 + F_1)\, \hat q_2}{\kappa^2 (\kappa^2 + F_1 + F_2)},

(:math:`\hat\psi = 0` at :math:`\kappa = 0`); the advection in flux form,
:math:`\partial_x\big((u_n + U_n) q_n\big) + \partial_y (v_n q_n)` with
:math:`(u, v) = (-\psi_y, \psi_x)`, products formed on the grid with no dealiasing in the
tendency itself; the tendency stepped by third-order Adams--Bashforth (forward Euler, then
second order, for the first two steps), and after every step the state multiplied by the
spectral exponential filter

.. math::
    \phi(\kappa^*) = \exp\!\big(-a\, (\kappa^* - \kappa_c)^4\big) \text{ for } \kappa^* > \kappa_c,
    \quad 1 \text{ otherwise}, \qquad
    \kappa^* = \sqrt{(k\,\Delta x)^2 + (l\,\Delta y)^2}, \quad \kappa_c = 0.65\pi,

(``filter_strength`` :math:`a`, 23.6 by default): it removes the enstrophy that cascades to
the grid scale and the aliased products with it. `TwoLayerQG.tendency` is the right-hand side
:math:`\partial_t \hat q` alone; the filter belongs to the stepper (`TwoLayerQG.integrate`).

A jet (`JetRelaxation`, optional): the upper layer's zonal-mean PV is relaxed toward that of a
Gaussian eastward jet over a lower layer at rest,

.. math::
    \partial_t q_1 \mathrel{+}= -\frac{\overline{q_1} - Q^*}{\tau}, \qquad
    Q^* = \partial_{yy} \Psi^* - F_1 \Psi^*, \qquad
    -\partial_y \Psi^* = U^*(y) = U_0\, e^{-(y - y_j)^2 / L^2} - \big\langle U_0\, e^{-(y - y_j)^2 / L^2} \big\rangle_y,

:math:`\overline{\,\cdot\,}` the zonal mean (the ``k = 0`` column of the spectra). The mean is
taken out of :math:`U^*` so that :math:`\Psi^*` is periodic: the jet's transport returns as a
weak westward flow over the rest of the box. The relaxation restores the jet's vertical shear
as its baroclinic (and barotropic) instability spends it, so the jet meanders and sheds eddies
and the flow settles to a steady state between this forcing, the bottom drag and the filter.
With ``jet=None`` the tendency is pyqg's ``QGModel``'s.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["JetRelaxation", "TwoLayerQG"]

_FILTER_CUTOFF = 0.65 * math.pi
_SECONDS_PER_DAY = 86400.0


@dataclasses.dataclass(frozen=True)
class JetRelaxation:
    r"""Relax the upper layer's zonal-mean PV toward a Gaussian eastward jet (module docstring):
    peak speed ``speed`` (:math:`U_0`, m/s), e-folding half-width ``width_m`` (:math:`L`),
    axis at ``position`` (:math:`y_j` as a fraction of the box's meridional extent, from its
    first row) and relaxation time ``timescale_s`` (:math:`\tau`, s).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import JetRelaxation, TwoLayerQG

    jet = JetRelaxation(speed=1.0, width_m=30e3, position=0.25, timescale_s=20 * 86400.0)
    model = TwoLayerQG(ny=64, nx=16, dx_m=8e3, dy_m=8e3, beta=1.8e-11, deformation_m=20e3,
                       delta=0.25, u1=0.0, u2=0.0, bottom_drag=4e-7, jet=jet)
    u = jet.velocity(model.ny, model.dy_m)
    assert u.argmax() == 16 and abs(u.mean()) < 1e-12 and u.max() < 1.0  # the mean taken out
    ```
    """

    speed: float
    width_m: float
    position: float
    timescale_s: float

    def __post_init__(self) -> None:
        for name in ("width_m", "timescale_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if isinstance(self.speed, bool) or not (isinstance(self.speed, (int, float)) and math.isfinite(self.speed)):
            raise ValueError(f"speed must be a finite number (m/s), got {self.speed!r}")
        if isinstance(self.position, bool) or not (isinstance(self.position, (int, float)) and 0 <= self.position < 1):
            raise ValueError(f"position must be a fraction of the box in [0, 1), got {self.position!r}")

    def velocity(self, ny: int, dy_m: float) -> np.ndarray:
        r""":math:`U^*(y)` on the ``ny`` rows ``dy_m`` apart (m/s), its mean taken out. The
        Gaussian is not wrapped around the periodic box: the jet is meant to be narrow against
        it (the default, 30 km in a 1112 km box, is under 1e-30 of its peak at the edges)."""
        y = dy_m * np.arange(ny)
        profile = self.speed * np.exp(-(((y - self.position * ny * dy_m) / self.width_m) ** 2))
        return profile - profile.mean()

    def streamfunction(self, ny: int, dy_m: float) -> np.ndarray:
        r""":math:`\Psi^*(y)` (m²/s), zero-mean: :math:`\hat\Psi^* = i \hat U^* / l`
        (:math:`-\partial_y` in spectral space inverted; 0 at :math:`l = 0`)."""
        l = 2.0 * np.pi * np.fft.fftfreq(ny, d=dy_m)  # noqa: E741 (the wavenumber's usual name)
        velocity = np.fft.fft(self.velocity(ny, dy_m))
        psi = np.zeros(ny, dtype=complex)
        psi[1:] = 1j * velocity[1:] / l[1:]
        return np.fft.ifft(psi).real

    def target(self, ny: int, nx: int, dy_m: float, f1: float) -> np.ndarray:
        r"""The ``k = 0`` column of the ``rfft2`` spectrum of :math:`Q^*`, ``(ny,)`` complex:
        :math:`\hat Q^* = -(l^2 + F_1)\, \hat\Psi^*`, times ``nx`` (the zonal sum of a field
        that does not vary along :math:`x`)."""
        l = 2.0 * np.pi * np.fft.fftfreq(ny, d=dy_m)  # noqa: E741 (the wavenumber's usual name)
        return nx * -(l**2 + f1) * np.fft.fft(self.streamfunction(ny, dy_m))


@dataclasses.dataclass(frozen=True)
class TwoLayerQG:
    r"""The two-layer model on an ``(ny, nx)`` grid of spacings ``dx_m`` (zonal) and ``dy_m``
    (meridional), in SI units: ``beta`` (m⁻¹ s⁻¹), ``deformation_m`` (:math:`L_d`),
    ``delta`` (:math:`H_1 / H_2`), ``u1``, ``u2`` (m/s), ``bottom_drag`` (:math:`r`, s⁻¹),
    ``filter_strength`` (:math:`a`) and an optional ``jet`` (`JetRelaxation`). States are
    ``rfft2`` spectra of the potential vorticity, ``(2, ny, nx // 2 + 1)`` complex; see the module
    docstring for the equations.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import TwoLayerQG

    model = TwoLayerQG(ny=16, nx=16, dx_m=10e3, dy_m=10e3, beta=1.6e-11, deformation_m=20e3,
                       delta=0.25, u1=0.1, u2=0.0, bottom_drag=1e-7)
    qh = np.fft.rfft2(1e-6 * np.random.default_rng(0).standard_normal((2, 16, 16)))
    psi = np.fft.irfft2(model.invert(qh), s=(16, 16))
    laplacian = np.fft.irfft2(-model.k2 * model.invert(qh), s=(16, 16))
    f1 = 1 / (20e3**2 * 1.25)
    q1 = laplacian[0] + f1 * (psi[1] - psi[0])  # the definition of q_1 holds
    assert np.allclose(q1 - q1.mean(), np.fft.irfft2(qh, s=(16, 16))[0] - np.fft.irfft2(qh, s=(16, 16))[0].mean())
    assert model.tendency(qh).shape == qh.shape == (2, 16, 9)
    ```
    """

    ny: int
    nx: int
    dx_m: float
    dy_m: float
    beta: float
    deformation_m: float
    delta: float
    u1: float
    u2: float
    bottom_drag: float
    filter_strength: float = 23.6
    jet: JetRelaxation | None = None

    def __post_init__(self) -> None:
        for name in ("ny", "nx"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 4:
                raise ValueError(f"{name} must be an integer >= 4, got {value!r}")
        for name in ("dx_m", "dy_m", "deformation_m", "delta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        for name in ("beta", "bottom_drag", "filter_strength"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")

    # The spectral operators, built once per model and precision.

    @functools.cached_property
    def k(self) -> np.ndarray:
        """Zonal wavenumbers (rad/m), ``(1, nx // 2 + 1)``."""
        return 2.0 * np.pi * np.fft.rfftfreq(self.nx, d=self.dx_m)[None, :]

    @functools.cached_property
    def l(self) -> np.ndarray:  # noqa: E743 (the wavenumber's usual name)
        """Meridional wavenumbers (rad/m), ``(ny, 1)``."""
        return 2.0 * np.pi * np.fft.fftfreq(self.ny, d=self.dy_m)[:, None]

    @functools.cached_property
    def k2(self) -> np.ndarray:
        r""":math:`\kappa^2 = k^2 + l^2`, ``(ny, nx // 2 + 1)``."""
        return self.k**2 + self.l**2

    @property
    def f1(self) -> float:
        """:math:`F_1` (m⁻²)."""
        return 1.0 / (self.deformation_m**2 * (1.0 + self.delta))

    @property
    def f2(self) -> float:
        r""":math:`F_2 = \delta F_1` (m⁻²)."""
        return self.delta * self.f1

    @property
    def qy(self) -> tuple[float, float]:
        """The mean PV gradients of the two layers (m⁻¹ s⁻¹)."""
        shear = self.u1 - self.u2
        return self.beta + self.f1 * shear, self.beta - self.f2 * shear

    @functools.cached_property
    def spectral_filter(self) -> np.ndarray:
        """The exponential filter applied after each step, ``(ny, nx // 2 + 1)``."""
        scaled = np.sqrt((self.k * self.dx_m) ** 2 + (self.l * self.dy_m) ** 2)
        return np.where(scaled <= _FILTER_CUTOFF, 1.0, np.exp(-self.filter_strength * (scaled - _FILTER_CUTOFF) ** 4))

    @functools.cached_property
    def _operators(self) -> dict[object, tuple[np.ndarray, ...]]:
        return {}

    def _ops(self, dtype: np.dtype) -> tuple[np.ndarray, ...]:
        """``(ik, il, k2, inverse, filter)`` in the real ``dtype``'s precision, so that a float32
        state stays float32 (a float64 operator would promote it)."""
        key = np.dtype(dtype).type
        if key not in self._operators:
            k2, f1, f2 = self.k2, self.f1, self.f2
            det = k2 * (k2 + f1 + f2)
            scale = np.zeros_like(det)
            np.divide(-1.0, det, out=scale, where=det > 0)
            inverse = np.array([[(k2 + f2) * scale, f1 * scale], [f2 * scale, (k2 + f1) * scale]])
            complex_type = np.result_type(key, np.complex64)
            self._operators[key] = (
                (1j * self.k).astype(complex_type), (1j * self.l).astype(complex_type), k2.astype(key),
                inverse.astype(key), self.spectral_filter.astype(key),
            )
        return self._operators[key]

    # The equations.

    def invert(self, qh: np.ndarray) -> np.ndarray:
        r"""The streamfunction spectra :math:`\hat\psi_n` of the PV spectra ``qh``."""
        ph = np.empty_like(qh)
        self._invert_into(qh, ph, np.empty_like(qh[0]))
        return ph

    def _invert_into(self, qh: np.ndarray, ph: np.ndarray, scratch: np.ndarray) -> None:
        inverse = self._ops(qh.real.dtype)[3]
        for n in range(2):
            np.multiply(inverse[n, 0], qh[0], out=ph[n])
            np.multiply(inverse[n, 1], qh[1], out=scratch)
            ph[n] += scratch

    def tendency(self, qh: np.ndarray) -> np.ndarray:
        r""":math:`\partial_t \hat q` of the PV spectra ``qh`` ``(2, ny, nx // 2 + 1)``: advection by
        the eddies and the mean flow, the mean PV gradients, the bottom drag and the jet's
        relaxation if there is one (no filter). Computed in the precision of ``qh`` (complex128 or
        complex64)."""
        out = np.empty_like(qh)
        self._tendency_into(qh, out)
        return out

    def _tendency_into(self, qh: np.ndarray, out: np.ndarray) -> None:
        # Every intermediate lives in a buffer kept on the model: at these sizes fresh arrays cost
        # more in page faults than the FFTs. rfft2 is an rfft along x, then an fft along y.
        ik, il, k2, _, _ = self._ops(qh.real.dtype)
        spectra, half, grid, products, forward, ph, scratch = self._workspace(qh.real.dtype)
        self._invert_into(qh, ph, scratch[0])
        np.multiply(ph, -il, out=spectra[0:2])
        np.multiply(ph, ik, out=spectra[2:4])
        spectra[4:6] = qh
        np.fft.ifft(spectra, axis=-2, out=half)
        np.fft.irfft(half, n=self.nx, axis=-1, out=grid)
        u, v, q = grid[0:2], grid[2:4], grid[4:6]
        np.add(u, np.array([self.u1, self.u2], dtype=grid.dtype)[:, None, None], out=products[0:2])
        np.multiply(products[0:2], q, out=products[0:2])
        np.multiply(v, q, out=products[2:4])
        np.fft.rfft(products, axis=-1, out=half[0:4])
        np.fft.fft(half[0:4], axis=-2, out=forward)
        np.multiply(forward[0:2], ik, out=out)
        np.multiply(forward[2:4], il, out=scratch)
        out += scratch
        for n, qy in enumerate(self.qy):
            np.multiply(ph[n], qy * ik, out=scratch[n])
        out += scratch
        np.negative(out, out=out)
        np.multiply(ph[1], self.bottom_drag * k2, out=scratch[1])
        out[1] += scratch[1]
        if self.jet is not None:
            out[0, :, 0] -= (qh[0, :, 0] - self._jet_target(qh.dtype)) / self.jet.timescale_s

    def _jet_target(self, dtype: np.dtype) -> np.ndarray:
        key = ("jet", np.dtype(dtype).type)
        if key not in self._operators:
            self._operators[key] = self.jet.target(self.ny, self.nx, self.dy_m, self.f1).astype(dtype)
        return self._operators[key]

    def _workspace(self, dtype: np.dtype) -> tuple[np.ndarray, ...]:
        """Scratch arrays for `tendency`, per precision (so a model is not thread-safe)."""
        key = ("workspace", np.dtype(dtype).type)
        if key not in self._operators:
            real = np.dtype(dtype)
            complex_type = np.result_type(real, np.complex64)
            nk = self.nx // 2 + 1
            self._operators[key] = (
                np.empty((6, self.ny, nk), complex_type), np.empty((6, self.ny, nk), complex_type),
                np.empty((6, self.ny, self.nx), real), np.empty((4, self.ny, self.nx), real),
                np.empty((4, self.ny, nk), complex_type), np.empty((2, self.ny, nk), complex_type),
                np.empty((2, self.ny, nk), complex_type),
            )
        return self._operators[key]

    def integrate(
        self,
        qh: np.ndarray,
        *,
        dt: float,
        n_steps: int,
        every: int = 1,
        save: Callable[[np.ndarray], Any] | None = None,
    ) -> tuple[np.ndarray, list[Any]]:
        """Step ``qh`` ``n_steps`` times by ``dt`` seconds (Adams--Bashforth 3, started by forward
        Euler and AB2, the filter after each step); return the final state and ``save(state)``
        every ``every`` steps (copies of the states when ``save`` is None; ``save`` gets the
        stepper's own array, to be read, not kept).

        Examples
        --------
        ```python
        import numpy as np
        from pipekit_cycle.ssh import TwoLayerQG

        model = TwoLayerQG(ny=16, nx=16, dx_m=10e3, dy_m=10e3, beta=1.6e-11, deformation_m=20e3,
                           delta=0.25, u1=0.1, u2=0.0, bottom_drag=1e-7)
        qh = np.fft.rfft2(1e-6 * np.random.default_rng(0).standard_normal((2, 16, 16)))
        final, saved = model.integrate(qh, dt=3600.0, n_steps=6, every=2)
        assert len(saved) == 3 and np.array_equal(saved[-1], final) and np.isfinite(final).all()
        ```
        """
        if n_steps < 0 or every < 1:
            raise ValueError(f"n_steps must be >= 0 and every >= 1, got {n_steps}, {every}")
        stepper = _AdamsBashforth3(self, qh)
        saved = []
        for _ in range(n_steps // every):
            stepper.run(dt, every)
            saved.append(stepper.qh.copy() if save is None else save(stepper.qh))
        stepper.run(dt, n_steps % every)
        return stepper.qh, saved

    def advective_rate(self, qh: np.ndarray) -> float:
        r"""The largest :math:`(|u_n + U_n| / \Delta x + |v_n| / \Delta y)\, \kappa_c` over the
        grid and the layers (s⁻¹): the fastest advective phase change of the resolved modes."""
        ik, il, _, _, _ = self._ops(qh.real.dtype)
        ph = self.invert(qh)
        u1, u2, v1, v2 = np.fft.irfft2(np.concatenate([-il * ph, ik * ph]), s=(self.ny, self.nx))
        rate = max(
            float((np.abs(u1 + self.u1) / self.dx_m + np.abs(v1) / self.dy_m).max()),
            float((np.abs(u2 + self.u2) / self.dx_m + np.abs(v2) / self.dy_m).max()),
        )
        return rate * _FILTER_CUTOFF

    def run_days(
        self,
        qh: np.ndarray,
        *,
        n_days: int,
        cfl: float = 0.6,
        min_steps: int = 8,
        save: Callable[[np.ndarray], Any] | None = None,
    ) -> tuple[np.ndarray, list[Any], list[int]]:
        r"""Run ``n_days`` days with a step chosen each day from the CFL condition
        :math:`\Delta t \cdot` `advective_rate` :math:`\le` ``cfl`` (Adams--Bashforth 3 is
        stable up to 0.72 on the imaginary axis; the filter damps the modes past
        :math:`\kappa_c`), a whole number of steps a day, at least ``min_steps``, rounded up to a
        multiple of 4 so that it seldom changes; the scheme restarts (Euler, AB2) only when it
        does. Returns the final state, ``save(state)`` at the end of each day (copies of the
        states when ``save`` is None; ``save`` gets the stepper's own array, to be read, not
        kept) and the steps taken each day.

        Examples
        --------
        ```python
        import numpy as np
        from pipekit_cycle.ssh import TwoLayerQG

        model = TwoLayerQG(ny=16, nx=16, dx_m=10e3, dy_m=10e3, beta=1.6e-11, deformation_m=20e3,
                           delta=0.25, u1=0.1, u2=0.0, bottom_drag=1e-7)
        qh = np.fft.rfft2(1e-6 * np.random.default_rng(0).standard_normal((2, 16, 16)))
        final, days, steps = model.run_days(qh, n_days=2, save=model.energy)
        assert len(days) == 2 and min(steps) >= 8 and steps[0] % 4 == 0
        ```
        """
        if n_days < 0 or not cfl > 0 or min_steps < 1:
            raise ValueError(f"n_days must be >= 0, cfl > 0 and min_steps >= 1, got {n_days}, {cfl}, {min_steps}")
        stepper = _AdamsBashforth3(self, qh)
        saved, steps = [], []
        n_steps = 0
        for day in range(n_days):
            needed = max(min_steps, math.ceil(_SECONDS_PER_DAY * self.advective_rate(stepper.qh) / cfl))
            needed = 4 * math.ceil(needed / 4)
            # Fewer steps only when far fewer are needed: each change restarts the scheme.
            if needed > n_steps or needed < 0.75 * n_steps:
                n_steps = needed
                stepper.restart()
            stepper.run(_SECONDS_PER_DAY / n_steps, n_steps)
            if not np.isfinite(stepper.qh).all():
                raise FloatingPointError(f"the two-layer model blew up on day {day}; lower the shear or the cfl")
            saved.append(stepper.qh.copy() if save is None else save(stepper.qh))
            steps.append(n_steps)
        qh = stepper.qh
        return qh, saved, steps

    def energy(self, qh: np.ndarray) -> float:
        r"""The domain-mean energy per unit mass (m² s⁻²), the layers weighted by their thickness:
        the kinetic :math:`\tfrac{1}{H}\sum_n H_n \tfrac12\langle|\nabla\psi_n|^2\rangle` plus the
        available potential :math:`\tfrac{H_1}{H}\tfrac{F_1}{2}\langle(\psi_1 - \psi_2)^2\rangle`."""
        ph = self.invert(qh)
        weight = np.full(self.k.shape, 2.0)  # the rfft half-plane stands for both halves
        weight[0, 0] = 1.0
        if self.nx % 2 == 0:
            weight[0, -1] = 1.0
        norm = (self.nx * self.ny) ** 2
        kinetic = [0.5 * float((weight * self.k2 * np.abs(p) ** 2).sum()) / norm for p in ph]
        potential = 0.5 * self.f1 * float((weight * np.abs(ph[0] - ph[1]) ** 2).sum()) / norm
        h1 = self.delta / (1.0 + self.delta)
        return h1 * (kinetic[0] + potential) + (1.0 - h1) * kinetic[1]


class _AdamsBashforth3:
    """Third-order Adams--Bashforth on a `TwoLayerQG`, in place: the state ``qh`` (a copy of the
    one given) and the last two tendencies in buffers it owns; forward Euler, then AB2, after
    each (re)start; the model's filter after every step."""

    def __init__(self, model: TwoLayerQG, qh: np.ndarray) -> None:
        self.model = model
        self.qh = np.array(qh, copy=True)
        self.filter = model._ops(self.qh.real.dtype)[4]
        self.slots = [np.empty_like(self.qh) for _ in range(3)]  # newest tendency first
        self.increment = np.empty_like(self.qh)
        self.stored = 0

    def restart(self) -> None:
        self.stored = 0

    def run(self, dt: float, n_steps: int) -> None:
        now, previous, oldest = self.slots
        for _ in range(n_steps):
            self.model._tendency_into(self.qh, now)
            if self.stored >= 2:
                coefficients = ((23.0 / 12.0, now), (-16.0 / 12.0, previous), (5.0 / 12.0, oldest))
            elif self.stored == 1:
                coefficients = ((1.5, now), (-0.5, previous))
            else:
                coefficients = ((1.0, now),)
            for weight, tendency in coefficients:
                np.multiply(tendency, weight * dt, out=self.increment)
                self.qh += self.increment
            self.qh *= self.filter
            self.stored = min(self.stored + 1, 2)
            now, previous, oldest = oldest, now, previous
        self.slots = [now, previous, oldest]
