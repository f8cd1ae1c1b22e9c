"""torch.distributed in a few calls (rank, shard, gather, broadcast, barrier) that are no-ops in one process."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = [
    "is_launch_rank_zero",
    "is_distributed",
    "rank_and_world_size",
    "shard_names",
    "all_gather_objects",
    "broadcast_object",
    "barrier",
]


#: environment variables a DDP launcher (Lightning, torchrun, srun) sets to a process's rank
LAUNCH_RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")


def is_launch_rank_zero() -> bool:
    """False in the extra processes a DDP launcher starts (before any process group exists):
    they must not create data, stamp a run or decide a job's outputs."""
    import os

    return all(int(os.environ.get(k, "0") or 0) == 0 for k in LAUNCH_RANK_VARIABLES)


def is_distributed() -> bool:
    """True inside an initialized process group (e.g. a Lightning DDP run)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if not is_distributed():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def shard_names(names: Iterable[str], rank: int, world_size: int) -> list[str]:
    """The names handled by ``rank``: sorted names dealt round-robin (rank 0 gets the first).

    Every name goes to exactly one rank, and a rank's share does not depend on the order the
    names were given in.
    """
    if int(world_size) != world_size or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return sorted(names)[int(rank) :: int(world_size)]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in one process."""
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable) on every rank; ``obj`` itself in one process.

    Every rank must call it; the others' ``obj`` is ignored (pass None).
    """
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait until every rank gets here; returns at once in one process."""
    if rank_and_world_size()[1] > 1:
        torch.distributed.barrier()
