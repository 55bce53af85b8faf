"""``--device`` and ``--devices`` on XLA: one process, a batch split over devices by sharding."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pipekit_cycle.placement import Placement, check_devices

__all__ = ["placement"]


def placement(device: str | None = None, devices: int | None = None) -> Placement:
    """The first ``devices`` (default 1) devices of the platform ``device`` (``"cpu"``,
    ``"gpu"``, ``"cuda"``, ``"tpu"``; ``None``: JAX's default platform) as one mesh with a
    ``"batch"`` axis: training batches split along it (`make_batch`'s ``sharding=``),
    evaluation batches and the model replicated over it. ``ValueError`` naming what this
    machine has when the platform is missing or has fewer devices. Several hosts: start every
    host with ``jax.distributed.initialize()`` first, and ``jax.devices()`` holds them all
    (not tested here).

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)

    where = vd.placement("cpu")  # the first CPU device
    assert where.n_devices == 1 and where.writes  # one device; this process writes the run's files
    model = vd.build_model(cfg, seed=0, **where.model_kwargs)
    batch = vd.make_batch(problem.obs, target=problem.truth, **where.train_batch_kwargs)  # split over the mesh
    assert vd.to_numpy(model(batch)).shape == (4, 5, 16)
    try:
        vd.placement("cpu", devices=4096)
    except ValueError as error:  # names what this machine has
        assert "4096" in str(error)
    else:
        raise AssertionError("more devices than the machine has must be refused")
    ```
    """
    n_devices = check_devices(devices)
    try:
        found = jax.devices(device) if device else jax.devices()
    except RuntimeError:
        raise ValueError(
            f"--device {device}: JAX has no such platform here; it has {jax.default_backend()!r}"
        ) from None
    if n_devices > len(found):
        hint = (f"; on the CPU, XLA_FLAGS=--xla_force_host_platform_device_count={n_devices} gives that many"
                if found[0].platform == "cpu" else "")
        raise ValueError(f"--devices {n_devices}: JAX sees {len(found)} {found[0].platform} device(s){hint}")
    mesh = Mesh(np.array(found[:n_devices]), ("batch",))
    return Placement(
        description=f"{n_devices} {found[0].platform} device(s), batch split by XLA sharding",
        batch_kwargs={"sharding": NamedSharding(mesh, PartitionSpec())},
        train_batch_kwargs={"sharding": NamedSharding(mesh, PartitionSpec("batch"))},
        n_devices=n_devices,
    )
