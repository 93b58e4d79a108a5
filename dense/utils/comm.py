"""Helpers for multi-process (DDP) runs. Every function also works in a single process."""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "get_world_size", "get_rank", "get_local_rank", "get_local_size", "is_main_process",
    "synchronize", "all_gather", "gather", "reduce_dict", "broadcast_buffers", "shared_random_seed", "unwrap_model",
]

def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (the model itself otherwise)."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


_LOCAL_PROCESS_GROUP = None
_LOCAL_RANK = 0
_LOCAL_SIZE = 1


def set_local(rank: int, size: int, group=None) -> None:
    """Record this process's rank and the number of processes on its machine (set by launch)."""
    global _LOCAL_RANK, _LOCAL_SIZE, _LOCAL_PROCESS_GROUP
    _LOCAL_RANK, _LOCAL_SIZE, _LOCAL_PROCESS_GROUP = rank, size, group


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_local_rank() -> int:
    return _LOCAL_RANK if get_world_size() > 1 else 0


def get_local_size() -> int:
    return _LOCAL_SIZE if get_world_size() > 1 else 1


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes (no-op in a single process)."""
    if get_world_size() > 1:
        dist.barrier()


@functools.lru_cache
def _object_group():
    """A gloo group for pickled-object collectives (NCCL cannot move CPU objects)."""
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(data: Any) -> list[Any]:
    """Gather a picklable object from every process; returns the list ordered by rank."""
    if get_world_size() == 1:
        return [data]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, data, group=_object_group())
    return out


def gather(data: Any, dst: int = 0) -> list[Any]:
    """Gather a picklable object on rank ``dst``; other ranks get an empty list."""
    if get_world_size() == 1:
        return [data]
    group = _object_group()
    if get_rank() == dst:
        out: list[Any] = [None] * get_world_size()
        dist.gather_object(data, out, dst=dst, group=group)
        return out
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def reduce_dict(values: dict[str, torch.Tensor], average: bool = True) -> dict[str, torch.Tensor]:
    """Sum (or average) a dict of scalar tensors over processes; result valid on every rank."""
    if get_world_size() == 1:
        return values
    with torch.no_grad():
        names = sorted(values)
        stacked = torch.stack([values[k].detach().float() for k in names])
        dist.all_reduce(stacked)
        if average:
            stacked /= get_world_size()
        return dict(zip(names, stacked))


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every buffer (e.g. BatchNorm running statistics) of ``module`` from rank ``src`` to all ranks."""
    if get_world_size() == 1:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src)


def shared_random_seed() -> int:
    """A random seed that is the same on every process."""
    seed = int(torch.randint(2**31, (1,)).item())
    return all_gather(seed)[0]
