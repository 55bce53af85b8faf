r"""Training samples the physics gives for free: the symmetries of the ocean's equations.

An augmentation turns each training sample into ``copies`` versions (the first is the sample
itself) that are just as much samples of the ocean the model learns. The QG equations the
simulated ocean obeys (`pipekit_cycle.ssh.qg`, on a :math:`\beta`-plane),

.. math::
    \partial_t q_i + J(\psi_i, q_i) + \beta\, \partial_x \psi_i = F_i, \qquad
    J(a, b) = \partial_x a\, \partial_y b - \partial_y a\, \partial_x b,

are unchanged by the north-south mirror with the sign of the streamfunction changed,
:math:`\psi'(x, y) = -\psi(x, -y)`: :math:`J` changes sign once under :math:`y \to -y` and once
more with :math:`\psi`, :math:`q` and :math:`\partial_x\psi` change sign, so every term changes
sign together (an eastward jet stays eastward, mirrored; eddies keep drifting west, and a
cyclone becomes an anticyclone). The sea-surface height :math:`\eta = f_0 \psi / g` changes
sign with it, and so does its departure from an optimal interpolation, which is linear in the
observations and has a kernel symmetric in :math:`y`. The east-west mirror is no symmetry:
it would make eddies drift east, against :math:`\beta`; nor are rotations by 90 degrees.

On a real ocean the mirror holds as far as the QG approximation does (a constant Coriolis
parameter and :math:`\beta`), and coasts mirror with the data (land is NaN in both). Every
augmentation here works on the standardised fields the solver trains on
(`pipekit_cycle.ssh.Standardiser`, :math:`z = (d - m)/s`), where :math:`d \to -d` reads
:math:`z \to -z - 2m/s`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import numpy as np

from .mapping import Standardiser

__all__ = ["AUGMENTATIONS", "AbstractAugmentation", "MeridionalFlip", "NoAugmentation"]

# Standardised samples (sample, time, lat, lon); plain numpy: this package needs no jaxtyping.
Samples = np.ndarray


class AbstractAugmentation(abc.ABC):
    """``copies`` versions of every training sample; `version` makes version ``index`` of a
    batch of standardised samples (version 0 is the batch itself)."""

    copies: ClassVar[int]

    @abc.abstractmethod
    def version(self, index: int, samples: Samples, scale: Standardiser) -> Samples:
        """Version ``index`` (``0 <= index < copies``) of ``samples`` ``(n, time, lat, lon)``,
        standardised by ``scale``; a new array, the input is left as it was."""


@dataclasses.dataclass(frozen=True)
class NoAugmentation(AbstractAugmentation):
    """The samples as they are: one version."""

    copies: ClassVar[int] = 1

    def version(self, index: int, samples: Samples, scale: Standardiser) -> Samples:
        del index, scale
        return samples.copy()


@dataclasses.dataclass(frozen=True)
class MeridionalFlip(AbstractAugmentation):
    r"""Two versions: the sample, and its north-south mirror with the SSH's sign changed,
    :math:`d'(t, y, x) = -d(t, -y, x)` (module docstring: a symmetry of the :math:`\beta`-plane
    QG equations).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle import ssh

    departures = np.random.default_rng(0).normal(0.1, 0.3, size=(2, 3, 4, 5))
    scale = ssh.Standardiser.fit(departures)
    flip = ssh.MeridionalFlip()
    mirrored = scale.inverse(flip.version(1, scale.forward(departures), scale))
    assert np.allclose(mirrored, -departures[:, :, ::-1, :])  # y -> -y, sign changed
    assert np.allclose(flip.version(1, flip.version(1, departures, scale), scale), departures)  # an involution
    ```
    """

    copies: ClassVar[int] = 2

    def version(self, index: int, samples: Samples, scale: Standardiser) -> Samples:
        if index == 0:
            return samples.copy()
        return -samples[..., ::-1, :] - 2.0 * scale.mean / scale.std


# The ``--augment`` vocabulary of the experiment driver, each chosen once when the data are prepared.
AUGMENTATIONS: dict[str, AbstractAugmentation] = {"none": NoAugmentation(), "flip-y": MeridionalFlip()}
