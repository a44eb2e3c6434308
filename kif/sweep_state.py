"""What a sweep knows of its cells (below :mod:`kif.sweep` and :mod:`kif.sweep_jobs`, which run
them): each cell's status, read from its run folder's validated checkpoint, the time the rest
will take, and ``OUT/sweep.json``, the summary of them all (the cells' folders are the record)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from .checkpoint import checkpoint_to_resume
from .config import RunConfig
from .errors import KifError
from .io import atomic_write_json, read_json
from .metrics import CL_NAMES
from .rundir import RunDir

STATUSES = ("finished", "partial", "running", "pending", "failed", "interrupted")


@dataclass
class Cell:
    name: str  # also the directory under OUT
    values: dict[str, Any]  # grid key -> value
    labels: dict[str, str]  # grid key -> label used in the name
    config: RunConfig
    status: str = "pending"  # pending | partial | running | finished | failed | interrupted
    seconds: float | None = None  # time spent on it by this invocation
    metrics: dict = field(default_factory=dict)
    run_seconds: float | None = None  # a finished run's own timings.total (all its resumes together)
    tasks: list[str] = field(default_factory=list)  # its task sequence, once its benchmark was read


@dataclass
class Sweep:
    path: Path
    out: Path
    grid: dict[str, dict[str, Any]]  # key -> {label: value}
    cells: list[Cell]


# ---- a cell's status -----------------------------------------------------------------------------

def cell_status(cell_dir: Path, cfg: RunConfig, tasks: list[str], accept_config_change: bool = False,
                repair: bool = False) -> tuple[str, dict, float | None]:
    """(status, metrics, run seconds) of a cell's directory, from its newest checkpoint checked
    as ``kif run`` checks it before a resume (:func:`kif.checkpoint.checkpoint_to_resume`; a
    damaged or foreign one is a KifError naming the file): ``finished``, ``partial`` (a task
    boundary committed), or ``pending``. The checkpoint is the record: results.json does not
    decide the status (``repair``: a finished cell's is rewritten, under the cell's own lock,
    when it differs, so that ``kif report`` reads the true numbers)."""
    if not cell_dir.is_dir():
        return "pending", {}, None
    run_dir = RunDir(cell_dir)
    checkpoint = checkpoint_to_resume(run_dir, cfg, overwrite=False, accept_config_change=accept_config_change,
                                      tasks=tasks)
    if checkpoint is None:
        return "pending", {}, None
    if checkpoint[2].finished and repair:
        run_dir.restore_results(checkpoint[2], lock="cell folder")
    return run_record(checkpoint[2].to_dict())


def run_record(results: Any) -> tuple[str, dict, float | None]:
    """What sweep.json keeps of a run's results: its status, AP / FWT / BWT, and its own
    ``timings.total`` (all resumes together; None if not recorded). ``finished`` only when the
    record says ``true``."""
    results = results if isinstance(results, dict) else {}
    timings = results.get("timings")
    total = timings.get("total") if isinstance(timings, dict) else None
    plausible = isinstance(total, (int, float)) and not isinstance(total, bool) and 0 < total < 1e10
    return (("finished" if results.get("finished") is True else "partial"),
            {k: results.get(k) for k in CL_NAMES},
            float(total) if plausible else None)


def remaining_seconds(cells: list[Cell]) -> float | None:
    """Estimated time for the cells not finished: each costs the median run time of the finished
    cells of its method (methods differ: MTL trains once, EWC computes a Fisher), or of all
    finished cells while its method has none. The median, so that a cell slowed by another job
    on the machine does not skew the rest. None before any cell has finished. Run times are the
    runs' own totals, so cells finished by an earlier invocation count too."""
    done: dict[str, list[float]] = {}
    for c in cells:
        if c.status == "finished" and c.run_seconds:
            done.setdefault(_method_label(c), []).append(c.run_seconds)
    if not done:
        return None
    overall = [t for ts in done.values() for t in ts]
    return sum(median(done.get(_method_label(c)) or overall) for c in cells if c.status != "finished")


def _method_label(cell: Cell) -> str:
    return cell.labels["method"] if "method" in cell.labels else str(cell.config.method)


# ---- OUT/sweep.json ------------------------------------------------------------------------------

def _grid_record(sweep: Sweep) -> dict:
    return json.loads(json.dumps({k: {lbl: v for lbl, v in vals.items()} for k, vals in sweep.grid.items()}))


def write_state(sweep: Sweep) -> None:
    atomic_write_json(sweep.out / "sweep.json", {
        "sweep_file": str(sweep.path),
        "sweep_path": str(sweep.path.resolve()),
        "grid": _grid_record(sweep),
        "cells": [{"name": c.name, "dir": c.name, "values": c.values, "status": c.status,
                   "seconds": None if c.seconds is None else round(c.seconds, 3),
                   "run_seconds": None if c.run_seconds is None else round(c.run_seconds, 3), **c.metrics}
                  for c in sweep.cells],
        "counts": {s: sum(c.status == s for c in sweep.cells) for s in STATUSES},
    })


def check_owner(sweep: Sweep) -> None:
    """One sweep per output folder: ``OUT/sweep.json`` of another sweep file (another path and
    name, and another grid) is not silently replaced. The same file edited (a seed added), or
    moved or copied with its folder (same name or same grid), is the same sweep; a cell that two
    sweeps configure differently is refused by :func:`kif.sweep.check_cells` anyway."""
    state_file = sweep.out / "sweep.json"
    if not state_file.exists():
        return
    note = "; it is only the sweep's summary (the cells' folders are the record): move it away and run again"
    old = read_json(state_file, "sweep summary", note=note, error=KifError, mapping=True)
    if "grid" not in old:
        raise KifError(f"{state_file}: no 'grid'{note}")
    old_file = str(old.get("sweep_file"))
    same_file = old.get("sweep_path") == str(sweep.path.resolve()) or Path(old_file).name == sweep.path.name
    if not same_file and old["grid"] != _grid_record(sweep):
        raise KifError(f"{state_file}: this folder holds the sweep of {old_file} (another grid); running "
                       f"{sweep.path} here would replace its record: choose another -o, or move "
                       f"{state_file} away to let this sweep file take the folder over")


# ---- display -------------------------------------------------------------------------------------

def duration(s: float) -> str:
    """``12m05s``, ``3h07m``: a cell's time or the ETA in a progress line."""
    s = int(round(min(s, 1e9)))  # a bound, not a claim: 30 years
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"

