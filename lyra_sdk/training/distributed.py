"""The same training code on one process or under ``torchrun``: process group, device, wrapping, reductions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..devices import resolve_device
from ..errors import LyraError


@dataclass
class DistContext:
    """Rank, world size and device of this process; ``owns_group`` when this module created the process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """True under torchrun with more than one process."""
        return self.world_size > 1


def setup(device: str = "auto") -> DistContext:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and start the process group if needed:
    NCCL on CUDA, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    ctx = DistContext(rank, world, local, dev)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
        ctx.owns_group = True
    return ctx


def wrap(module: nn.Module, ctx: DistContext, strategy: str) -> nn.Module:
    """DDP (default when distributed) or FSDP (CUDA only); the module itself on one process."""
    if not ctx.distributed:
        return module
    if strategy == "fsdp":
        if ctx.device.type != "cuda":
            raise LyraError("strategy fsdp needs CUDA devices; use ddp on the CPU")
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(module, device_id=ctx.device, use_orig_params=True)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def all_reduce_int(value: int, ctx: DistContext) -> int:
    """Sum an integer over all processes."""
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.long, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    torch.distributed.all_reduce(t)
    return int(t.item())


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op on one process)."""
    if ctx.distributed:
        torch.distributed.barrier()


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if ctx.owns_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
