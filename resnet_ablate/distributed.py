"""One run on several GPUs (``train.gpus=N``), as the paper trained ResNet-1001: DistributedDataParallel, the
batch split across processes, BatchNorm per process (``train.sync_bn=true`` synchronises it). Rank 0 evaluates
and writes the records; checkpoints hold every rank's RNG states, so resume is as exact as a single process's.
``train`` spawns the processes itself, on one machine."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


def resolve_device(name: str, rank: int = 0) -> torch.device:
    """``auto``: the GPU of this rank when there is one, else the CPU. A name that is not a device here is a
    one-line ValueError."""
    if name not in ("auto", "cpu") and not name.startswith("cuda"):
        raise ValueError(f"train.device={name} is not a device; valid: auto, cuda, cuda:N, cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name} but no CUDA device is visible; use train.device=cpu or auto")
    if name in ("auto", "cuda"):
        return torch.device(f"cuda:{rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass(frozen=True)
class Group:
    """This process's place in the run; every method is a no-op for a single process."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (the same list on every rank)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def current() -> Group:
    """The group of a process started by ``spawn`` (RANK and WORLD_SIZE set), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Group()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return Group(dist.get_rank(), dist.get_world_size())


def _worker(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    if not torch.cuda.is_available():  # CPU ranks share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(world: int, fn, *args) -> None:
    """Run ``fn(*args)`` in ``world`` processes of one group on this machine (GPU i for rank i)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(world, port, fn, args), nprocs=world, join=True)
