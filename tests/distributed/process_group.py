"""Start W gloo processes on this machine (torch.multiprocessing spawn, a free TCP port) and run
a module-level function in each: ``target(rank, world, *args)``."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _entry(rank: int, world: int, port: int, target: Callable[..., Any],
           args: tuple[Any, ...]) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # W processes share 2 cores
    os.environ.pop("WORLD_SIZE", None)  # the trainer uses the group initialised here
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    target(rank, world, *args)
    dist.barrier()  # no rank tears down while a peer still communicates (gloo aborts then)
    dist.destroy_process_group()


def start_group(world: int, target: Callable[..., Any], *args: Any):
    """Start the processes without waiting; ``.join()`` the returned context (it re-raises a
    worker's exception with its traceback)."""
    import torch.multiprocessing as mp

    return mp.start_processes(_entry, args=(world, free_port(), target, args), nprocs=world,
                              join=False, start_method="spawn")


def join(context: Any) -> None:
    while not context.join():
        pass
