"""``--device`` and ``--devices`` on torch: one process per device, ``torch.distributed``."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from pipekit_cycle.placement import Placement, check_devices

__all__ = ["placement"]


def placement(device: str | None = None, devices: int | None = None) -> Placement:
    """``device`` (a ``torch.device`` name: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``;
    ``None``: the CPU) for the model and every batch. Under ``torchrun`` (``WORLD_SIZE`` > 1
    in the environment) the process group is initialised here (gloo on the CPU, nccl on CUDA;
    ``"cuda"`` becomes this rank's ``cuda:LOCAL_RANK``), this rank takes its slice of every
    training batch and `train_step` averages gradients over the ranks. ``devices``, if given,
    must be torchrun's process count: torch starts one process per device, so
    ``--devices N`` without ``torchrun --nproc-per-node N`` is a ``ValueError`` saying so, as
    is a device this machine lacks.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd
    import torch
    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)

    where = vd.placement("cpu")  # one process on the CPU (no torchrun)
    assert where.n_devices == 1 and where.writes  # one device; this process writes the run's files
    assert where.model_kwargs == {"device": torch.device("cpu")}
    model = vd.build_model(cfg, seed=0, **where.model_kwargs)
    batch = vd.make_batch(problem.obs, target=problem.truth, **where.train_batch_kwargs)
    assert batch.input.device == model.device and tuple(model(batch).shape) == (4, 5, 16)
    try:
        vd.placement("cpu", devices=4096)  # torch needs torchrun --nproc-per-node 4096 for that
    except ValueError as error:
        assert "4096" in str(error)
    else:
        raise AssertionError("more devices than the processes torchrun started must be refused")
    ```
    """
    n_ranks = int(os.environ.get("WORLD_SIZE", "1"))
    if devices is not None and check_devices(devices) != n_ranks:
        if n_ranks == 1:
            raise ValueError(
                f"--devices {devices}: torch runs one process per device; start the run with "
                f"torchrun --nproc-per-node {devices} -m vardax_torch train ..."
            )
        raise ValueError(f"--devices {devices} but torchrun started {n_ranks} processes; pass the same number")
    try:
        torch_device = torch.device(device or "cpu")
    except RuntimeError:
        raise ValueError(f"--device {device}: not a torch device name (cpu, cuda, cuda:1, mps)") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device here")
    if n_ranks == 1:
        return Placement(description=f"1 process on {torch_device}", model_kwargs={"device": torch_device},
                         batch_kwargs={"device": torch_device}, train_batch_kwargs={"device": torch_device})
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch_device.type == "cuda":
        if torch_device.index is None:
            torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
    return Placement(
        description=f"{n_ranks} torchrun processes on {torch_device.type}, gradients averaged by all_reduce",
        model_kwargs={"device": torch_device},
        batch_kwargs={"device": torch_device},
        train_batch_kwargs={"device": torch_device},
        n_devices=n_ranks,
        rank=dist.get_rank(),
        n_ranks=n_ranks,
        barrier=dist.barrier,
        close=dist.destroy_process_group,
    )
