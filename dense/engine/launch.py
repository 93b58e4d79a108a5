"""Starting one or several training processes (Detectron2's launch, plus torchrun's env://)."""
from __future__ import annotations

import logging
import os
import socket
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..utils import comm

__all__ = ["launch", "default_backend"]

logger = logging.getLogger(__name__)


def default_backend() -> str:
    """nccl with GPUs, gloo on CPU."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup_process(local_rank: int, local_size: int) -> None:
    comm.set_local(local_rank, local_size)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    else:  # share the CPU cores between the processes of this machine
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    comm.synchronize()


def launch(main_func: Callable[..., Any], num_gpus_per_machine: int = 1, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str | None = "auto", args: tuple = ()) -> None:
    """Run ``main_func(*args)`` in ``num_machines * num_gpus_per_machine`` processes.

    - Started by torchrun (``WORLD_SIZE`` > 1 in the environment): join its group via env:// in this process.
    - ``num_gpus_per_machine * num_machines > 1``: spawn one process per GPU of this machine (on a machine
      without GPUs, ``--num-gpus N`` starts N CPU processes with the gloo backend), rendezvous at ``dist_url``
      ("auto" = a free local port, single machine only).
    - Otherwise call ``main_func`` directly.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend=default_backend(), init_method="env://")
        _setup_process(int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        try:
            main_func(*args)
        finally:
            dist.destroy_process_group()
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on one machine; give tcp://HOST:PORT of machine 0")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} GPUs are visible")
    mp.start_processes(_worker, nprocs=num_gpus_per_machine, start_method="spawn", daemon=False,
                       args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args))


def _worker(local_rank: int, main_func, world_size: int, per_machine: int, machine_rank: int, dist_url: str,
            args: tuple) -> None:
    rank = machine_rank * per_machine + local_rank
    dist.init_process_group(backend=default_backend(), init_method=dist_url, world_size=world_size, rank=rank)
    _setup_process(local_rank, per_machine)
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
