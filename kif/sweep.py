"""Sweeps: a grid of ordinary ``kif run`` cells (methods × task orders × seeds × ...), run one
after another in this process, or up to N at once in their own processes (``--jobs N``,
:mod:`kif.sweep_jobs`); running the same sweep again skips finished cells and resumes an
interrupted one (``kif.runner.run`` resumes by itself from its output directory).

A sweep file (paths relative to the sweep file)::

    base: ../quickstart.yaml          # the config every cell starts from (omitted: defaults)
    set: {train.epochs: 2}            # common overrides: dotted keys or nested mappings
    grid:                             # config key -> values; the cells are the product
      method: [seqlora, kiflora]
      order: [std1, std2]             # or tasks: {a: [cb, copa], b: [copa, cb]} (mapping: label -> value)
      seed: [1, 2]
    methods:                          # optional per-method overrides; config: replaces base
      olora: {config: ../table1/olora.yaml, method_args: {lambda_1: 0.5}}

Layers, later wins: base (or the method's config) → set → methods[<method>] → the cell's
grid values. With ``grid.method`` a mapping (label: method), ``methods`` may also be keyed by
a label: a cell takes ``methods[<its label>]`` when there is one, else ``methods[<its method>]``
(so ``{lfpt5: lfpt5, lfpt5-noreplay: lfpt5}`` can give the second arm its own ``method_args``).
A layer that sets ``order`` and not ``tasks`` clears ``tasks`` (and the
reverse), so a grid over orders works on a base with a task list. Cells run in grid order,
the last key varying fastest; each writes ``OUT/<cell>/`` named from its values in a
fixed order (method, order / tasks, other keys, seed), e.g. ``OUT/seqlora_std1_seed1``, so
``kif report OUT`` reads them all. ``OUT/sweep.json`` records the grid and each cell's
directory and status (read from the cell's validated checkpoint). Every cell's config (keys,
method, method_args, benchmark and task order, and the config of a cell already started) is
checked before any cell runs.
"""
from __future__ import annotations

import gc
import itertools
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Callable

import yaml

from .config import RunConfig, load_config, set_key, validate_config
from .errors import ConfigError, KifError, OutputError
from .io import atomic_write_json
from .lock import check_utf8_path
from .names import check_path_component

log = logging.getLogger("kif")

SWEEP_KEYS = ("base", "set", "grid", "methods")
_NAME_FIRST = ("method", "order", "tasks")  # directory name: these first, then other keys, seed last


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


@dataclass
class Sweep:
    path: Path
    out: Path
    grid: dict[str, dict[str, Any]]  # key -> {label: value}
    cells: list[Cell]


# ---- reading the sweep file ----------------------------------------------------------------------

def _read_yaml(path: Path, what: str) -> dict:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {what}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    return raw


def _flatten(overrides: dict, prefix: str = "") -> dict:
    """``{train: {epochs: 2}, "data.test_samples": 8}`` -> ``{"train.epochs": 2, "data.test_samples": 8}``;
    lists (a task list) and empty mappings are values."""
    out = {}
    for k, v in overrides.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _apply(raw: dict, overrides: dict, source: str) -> dict:
    """Set dotted keys; ``order`` without ``tasks`` clears ``tasks`` and the reverse."""
    flat = _flatten(overrides)
    if "order" in flat and "tasks" not in flat:
        raw["tasks"] = None
    if "tasks" in flat and "order" not in flat:
        raw["order"] = None
    for k, v in flat.items():
        set_key(raw, k, v, source)
    return raw


def _label(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "-".join(_label(v) for v in value)
    text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


def _grid(raw: Any, source: str) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source}: grid: must map config keys to lists of values, e.g. grid: {{seed: [1, 2]}}")
    grid = {}
    for key, values in raw.items():
        if isinstance(values, dict):
            if not values:
                raise ConfigError(f"{source}: grid.{key}: no values")
            labelled = {_label(check_path_component(str(lbl), f"{source}: grid.{key} label")): v
                        for lbl, v in values.items()}
            if len(labelled) < len(values):
                raise ConfigError(f"{source}: grid.{key}: two labels give the same folder name")
            grid[str(key)] = labelled
        elif isinstance(values, list) and values:
            labelled = {_label(v): v for v in values}
            if len(labelled) < len(values):
                raise ConfigError(f"{source}: grid.{key}: two values with the same name; "
                                  "give a mapping label: value")
            grid[str(key)] = labelled
        else:
            raise ConfigError(f"{source}: grid.{key}: must be a non-empty list (or a mapping label: value)")
    return grid


def _cell_name(labels: dict[str, str]) -> str:
    keys = [k for k in _NAME_FIRST if k in labels]
    keys += [k for k in labels if k not in _NAME_FIRST and k != "seed"]
    keys += ["seed"] if "seed" in labels else []
    parts = []
    for k in keys:
        if k in _NAME_FIRST:
            parts.append(labels[k])
        elif k == "seed":
            parts.append(f"seed{labels[k]}")
        else:
            parts.append(f"{k.split('.')[-1]}-{labels[k]}")
    return "_".join(parts)


def load_sweep(path: str | Path, out: str | Path) -> Sweep:
    """Read a sweep file and build every cell's validated config (a KifError naming the file,
    the cell and the key on the first bad one). Nothing is run or written."""
    path = Path(path)
    raw = _read_yaml(path, "sweep file")
    src = str(path)
    unknown = [k for k in raw if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(f"{src}: {unknown[0]}: unknown key (a sweep file has {', '.join(SWEEP_KEYS)})")
    grid = _grid(raw.get("grid"), src)
    common = raw.get("set") or {}
    methods = raw.get("methods") or {}
    if not isinstance(common, dict):
        raise ConfigError(f"{src}: set: must be a mapping of config keys")
    if not isinstance(methods, dict) or not all(isinstance(v, dict) for v in methods.values()):
        raise ConfigError(f"{src}: methods: must map method names to mappings of config keys")

    bases: dict[str | None, dict] = {}

    def base_for(method_raw: dict | None) -> dict:
        rel = (method_raw or {}).get("config", raw.get("base"))
        if rel not in bases:  # validated once: a bad base names its own file
            bases[rel] = load_config(path.parent / rel).model_dump(mode="json") if rel else \
                RunConfig().model_dump(mode="json")
        return json.loads(json.dumps(bases[rel]))

    keys = list(grid)
    cells, names = [], {}
    for combo in itertools.product(*(grid[k].items() for k in keys)):
        labels = {k: lbl for k, (lbl, _) in zip(keys, combo)}
        values = {k: v for k, (_, v) in zip(keys, combo)}
        name = check_path_component(_cell_name(labels), f"{src}: cell {values}: folder name")
        if name in names:
            raise ConfigError(f"{src}: cells {names[name]} and {values} get the same directory name {name!r}")
        names[name] = values
        source = f"{src} (cell {name})"
        cfg_raw = _apply(base_for(None), common, source)
        method = values.get("method", cfg_raw.get("method"))
        per_method = methods.get(labels.get("method"), methods.get(method))  # a method label's entry first
        if per_method is not None:
            cfg_raw = _apply(base_for(per_method), common, source)
            cfg_raw = _apply(cfg_raw, {k: v for k, v in per_method.items() if k != "config"}, source)
        cfg_raw = _apply(cfg_raw, values, source)
        try:  # the keys, the method and its method_args
            cfg = validate_config(cfg_raw, source)
        except KifError as exc:
            raise _named(exc, source) from None
        cells.append(Cell(name, values, labels, cfg))
    unused = [m for m in methods if all(m not in (c.config.method, c.labels.get("method")) for c in cells)]
    if unused:
        raise ConfigError(f"{src}: methods.{unused[0]}: no cell runs this method")
    return Sweep(path, Path(out), grid, cells)


# ---- checks before running -----------------------------------------------------------------------

def _named(exc: KifError, source: str) -> KifError:
    """The same error with the sweep file and cell in front (once)."""
    return exc if str(exc).startswith(source) else type(exc)(f"{source}: {exc}")


def check_output(out: Path) -> None:
    """``-o`` before anything is read or created: UTF-8, and a folder if it exists (a file
    there fails at once, not after every cell's data was read)."""
    check_utf8_path(out, "sweep output folder")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another sweep output folder (-o)")


def check_owner(sweep: Sweep) -> None:
    """One sweep per output folder: ``OUT/sweep.json`` of another sweep file (another path and
    name, and another grid) is not silently replaced. The same file edited (a seed added), or
    moved or copied with its folder (same name or same grid), is the same sweep; a cell that two
    sweeps configure differently is refused by :func:`check_cells` anyway."""
    state_file = sweep.out / "sweep.json"
    if not state_file.exists():
        return
    try:
        old = json.loads(state_file.read_text(encoding="utf-8"))
        old_path, old_grid = old.get("sweep_path"), old["grid"]
        old_file = str(old.get("sweep_file"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, AttributeError, KeyError, TypeError):
        raise KifError(f"{state_file}: unreadable; it is only the sweep's summary (the cells' folders are the "
                       "record): move it away and run again") from None
    same_file = old_path == str(sweep.path.resolve()) or Path(old_file).name == sweep.path.name
    if not same_file and old_grid != _grid_record(sweep):
        raise KifError(f"{state_file}: this folder holds the sweep of {old_file} (another grid); running "
                       f"{sweep.path} here would replace its record: choose another -o, or move "
                       f"{state_file} away to let this sweep file take the folder over")


def check_cells(sweep: Sweep, accept_config_change: bool = False, repair: bool = True) -> None:
    """What :func:`load_sweep` cannot check without the data folder: the benchmark and task
    sequence of every cell; for a cell already started, that its stored config is the cell's
    (a changed sweep file would otherwise fail halfway through the grid) and its status, read
    from its validated checkpoint as ``kif run`` reads it. ``repair``: rewrite a finished cell's
    results.json that does not match its checkpoint (off for a dry run, which writes nothing)."""
    from .data import get_benchmark, resolve_sequence
    from .config import config_changes

    benches = {}
    for cell in sweep.cells:
        cfg = cell.config
        source = f"{sweep.path} (cell {cell.name})"
        try:
            key = (cfg.benchmark, cfg.data_dir)
            if key not in benches:
                benches[key] = get_benchmark(cfg.benchmark, cfg.data_dir)
            tasks = resolve_sequence(benches[key], cfg.order, cfg.tasks)
        except KifError as exc:
            raise _named(exc, source) from None
        cell_dir = sweep.out / cell.name
        stored = cell_dir / "config.yaml"
        if stored.is_file():
            try:
                old = yaml.safe_load(stored.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError):
                raise KifError(f"{stored}: unreadable; cannot check the cell to resume") from None
            changed = config_changes(old, cfg)
            if changed and not accept_config_change:
                raise KifError(f"{stored}: cell {cell.name} ran with another config ({', '.join(changed[:5])}); "
                               "restore the sweep file, pass --accept-config-change to continue the cell with "
                               "the new one, or move that directory away to run the cell afresh")
            if changed:
                log.info("sweep: cell %s continues with a changed config (%s)", cell.name, ", ".join(changed[:5]))
        try:
            cell.status, cell.metrics, cell.run_seconds = cell_status(cell_dir, cfg, tasks, accept_config_change,
                                                                      repair)
        except KifError as exc:  # kif run's advice (--overwrite) has no sweep flag: say what a sweep needs
            raise type(exc)(f"{exc} (sweep cell {cell.name}: to run it afresh, move {cell_dir} away)") from None


def cell_status(cell_dir: Path, cfg: RunConfig, tasks: list[str], accept_config_change: bool = False,
                repair: bool = False) -> tuple[str, dict, float | None]:
    """(status, metrics, run seconds) of a cell's directory, from its newest checkpoint checked
    as ``kif run`` checks it before a resume (:func:`kif.runner.prepare_output_dir`; a damaged
    or foreign one is a KifError naming the file): ``finished``, ``partial`` (a task boundary
    committed), or ``pending``. The checkpoint is the record: results.json does not decide the
    status (``repair``: a finished cell's is rewritten when it differs)."""
    if not cell_dir.is_dir():
        return "pending", {}, None
    from .runner import prepare_output_dir

    checkpoint = prepare_output_dir(cell_dir, cfg, overwrite=False, accept_config_change=accept_config_change,
                                    tasks=tasks)
    if checkpoint is None:
        return "pending", {}, None
    record = checkpoint[2].to_dict()
    if checkpoint[2].finished and repair:
        _restore_results(cell_dir, record)
    return _record(record)


def _restore_results(cell_dir: Path, record: dict) -> None:
    """A finished cell's results.json is what its checkpoint holds: a missing, broken or
    hand-edited one (a list, ``"finished": "no"``, timings of 1e308) is rewritten from the
    checkpoint, under the cell's own lock, so that ``kif report`` reads the true numbers."""
    path = cell_dir / "results.json"
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        current = None
    if current == record:
        return
    from .lock import OutputLock
    from .results import Results

    with OutputLock(cell_dir, "cell folder"):
        Results.from_dict(record, str(path)).write(path)
    log.info("sweep: %s did not match the cell's checkpoint; rewritten from it", path)


def _record(results: Any) -> tuple[str, dict, float | None]:
    """What sweep.json keeps of a run's results: its status, AP / FWT / BWT, and its own
    ``timings.total`` (all resumes together; None if not recorded). ``finished`` only when the
    record says ``true``."""
    results = results if isinstance(results, dict) else {}
    timings = results.get("timings")
    total = timings.get("total") if isinstance(timings, dict) else None
    plausible = isinstance(total, (int, float)) and not isinstance(total, bool) and 0 < total < 1e10
    return (("finished" if results.get("finished") is True else "partial"),
            {k: results.get(k) for k in ("AP", "FWT", "BWT")},
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


# ---- running -------------------------------------------------------------------------------------

def _grid_record(sweep: Sweep) -> dict:
    return json.loads(json.dumps({k: {lbl: v for lbl, v in vals.items()} for k, vals in sweep.grid.items()}))


STATUSES = ("finished", "partial", "running", "pending", "failed", "interrupted")


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


def _duration(s: float) -> str:
    s = int(round(min(s, 1e9)))  # a bound, not a claim: 30 years
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_sweep(path: str | Path, out: str | Path, dry_run: bool = False, show_progress: bool = True,
              run_fn: Callable | None = None, jobs: int = 1, devices: list[str] | None = None,
              accept_config_change: bool = False) -> Sweep:
    """Run (or continue) every unfinished cell of a sweep. ``jobs`` 1: in grid order in this
    process; a failing cell stops the sweep with its error (finished cells stay; the failed one
    resumes on the next call). ``jobs`` N > 1: up to N cells at once, each ``kif run`` in its
    own process (:mod:`kif.sweep_jobs`); a failing cell does not stop the others, and the sweep
    ends with a KifError naming every failed cell. ``OUT`` is locked for the sweep's lifetime
    (one sweep per folder); each cell's run locks its own folder. ``dry_run``: check every cell
    and return without running or writing. ``run_fn`` (jobs 1): the function that runs one cell
    (default :func:`kif.runner.run`). ``accept_config_change``: a started cell whose config
    differs from the sweep file's continues with the new one (as ``kif run --accept-config-change``)."""
    out = Path(out)
    check_output(out)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs: must be a whole number of at least 1, got {jobs!r}")
    sweep = load_sweep(path, out)
    if dry_run:
        check_cells(sweep, accept_config_change, repair=False)
        _log_start(sweep)
        return sweep
    from .lock import OutputLock

    with OutputLock(out, "sweep output folder"):
        check_owner(sweep)
        check_cells(sweep, accept_config_change)
        _log_start(sweep)
        write_state(sweep)  # every invocation: corrects a cell left 'running' by a kill
        if jobs > 1:
            from .sweep_jobs import run_parallel

            run_parallel(sweep, jobs, devices, accept_config_change, show_progress)
        else:
            _run_in_process(sweep, run_fn, show_progress, accept_config_change)
    return sweep


def _log_start(sweep: Sweep) -> None:
    todo = [c for c in sweep.cells if c.status != "finished"]
    n = len(sweep.cells)
    log.info("sweep %s: %d cells, %d finished, %d to run%s", sweep.path, n, n - len(todo), len(todo),
             " (partial ones resume)" if any(c.status == "partial" for c in todo) else "")


def _run_in_process(sweep: Sweep, run_fn: Callable | None, show_progress: bool, accept_config_change: bool) -> None:
    if run_fn is None:
        from .runner import run as run_fn
    extra = {"accept_config_change": True} if accept_config_change else {}
    todo = [c for c in sweep.cells if c.status != "finished"]
    n = len(sweep.cells)
    for i, cell in enumerate(todo):
        left = len(todo) - i
        estimate = remaining_seconds(sweep.cells)
        eta = "" if estimate is None else f", ETA {_duration(estimate)}"
        log.info("sweep: cell %s (%d/%d done, %d left%s)%s", cell.name, n - left, n, left, eta,
                 ": resuming" if cell.status == "partial" else "")
        cell.status = "running"  # what a reader of sweep.json sees meanwhile (and after a kill)
        write_state(sweep)
        t0 = time.perf_counter()
        try:
            results = run_fn(cell.config, sweep.out / cell.name, show_progress=show_progress, **extra)
        except BaseException as exc:
            cell.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            cell.seconds = time.perf_counter() - t0
            cell.metrics = {"error": f"{type(exc).__name__}: {exc}"}
            write_state(sweep)
            if isinstance(exc, KifError):
                raise type(exc)(f"sweep cell {cell.name}: {exc}") from None
            raise
        finally:
            gc.collect()  # the cell's model and optimizer go before the next one loads
        cell.seconds = time.perf_counter() - t0
        cell.status, cell.metrics, run_seconds = _record(results)
        cell.run_seconds = run_seconds or cell.seconds
        write_state(sweep)
        log.info("sweep: cell %s %s in %s  AP=%s FWT=%s BWT=%s", cell.name, cell.status, _duration(cell.seconds),
                 *(_fmt(v) for v in cell.metrics.values()))
    log.info("sweep: all %d cells finished; %s", n, sweep.out / "sweep.json")


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"
