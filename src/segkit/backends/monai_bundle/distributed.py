"""This process's place in a ``torchrun`` job: joining the process group, barriers and the rank's device.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the network is wrapped in DistributedDataParallel, every rank
draws its own batches through a DistributedSampler, validation is sharded and its Dice sums all-reduced,
and only rank 0 writes files or reports progress. torch is imported inside the functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a ``torchrun`` job (world size 1 without one)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """Whether DistributedDataParallel is used."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the only one that writes files and reports progress."""
        return self.rank == 0


def distributed_info(device: str) -> DistInfo:
    """Join the ``torchrun`` process group described by ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device == "cuda":
        torch.cuda.set_device(local)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
        owns = True
    return DistInfo(world, rank, local, owns)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def device_for(request_device: str, info: DistInfo) -> str:
    """The device of this rank: ``cuda:<local rank>`` under a CUDA ``torchrun``, else the requested one."""
    if request_device == "cuda" and info.enabled:
        return f"cuda:{info.local_rank}"
    return request_device


def leave_group(info: DistInfo) -> None:
    """Destroy the process group this process joined (a group joined by the caller is left alone)."""
    if info.owns_group:
        import torch.distributed as dist

        dist.destroy_process_group()


def all_reduce(info: DistInfo, *tensors: Any) -> None:
    """Sum each tensor over the ranks in place (nothing to do without DDP)."""
    if info.enabled:
        import torch.distributed as dist

        for tensor in tensors:
            dist.all_reduce(tensor)
