"""Several processes (``accelerate launch``): who writes, and where processes wait for each other.

Under a launcher (``WORLD_SIZE`` > 1) every process runs the whole sequence (training is
DDP through the Trainer; evaluation batches are dealt round-robin to the processes and the
results gathered, so every process ends with all of them), but only the main process
(global rank 0) writes files. A plain ``kif run`` is one process, the main one, and never
touches ``torch.distributed``.
"""
from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _state():
    import torch
    from accelerate import PartialState

    if not torch.cuda.is_available():
        # processes launched on a machine without a GPU (``accelerate launch --multi_gpu`` or
        # torchrun): DDP over gloo. The Trainer's arguments read the same variable.
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=cpu)  # a singleton: sets up the process group once


def is_main() -> bool:
    return world_size() <= 1 or _state().is_main_process


def barrier() -> None:
    if world_size() > 1:
        _state().wait_for_everyone()


def device():
    """This process's accelerator (``cuda:LOCAL_RANK`` under a launcher)."""
    return _state().device if world_size() > 1 else "cuda"


def rank_world() -> tuple[int, int]:
    """(this process's global rank, number of processes); (0, 1) without a launcher."""
    if world_size() <= 1:
        return 0, 1
    s = _state()
    return s.process_index, s.num_processes


def my_share(items: list) -> list:
    """This process's share of ``items``, dealt round-robin (items sorted by cost stay balanced)."""
    rank, world = rank_world()
    return items[rank::world]


def merge_from_all(part: dict) -> dict:
    """The union of every process's ``part`` (every process must call it, in the same order)."""
    if world_size() <= 1:
        return part
    import torch.distributed as td

    parts: list = [None] * td.get_world_size()
    td.all_gather_object(parts, part)
    merged: dict = {}
    for p in parts:
        merged.update(p)
    return merged
