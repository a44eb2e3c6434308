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
from pathlib import Path
from typing import Any, Callable

from . import data
from .config import RunConfig
from .configure import load_config, set_key, validate_config
from .errors import ConfigError, KifError, OutputError
from .io import read_yaml
from .lock import OutputLock, check_utf8_path
from .metrics import cl_line
from .names import check_path_component
from .rundir import RunDir
from .sweep_jobs import run_parallel
from .sweep_state import (Cell, Sweep, cell_status, check_owner, duration, remaining_seconds, run_record,
                          write_state)

log = logging.getLogger("kif")

SWEEP_KEYS = ("base", "set", "grid", "methods")
_NAME_FIRST = ("method", "order", "tasks")  # directory name: these first, then other keys, seed last


# ---- reading the sweep file ----------------------------------------------------------------------

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
    raw = read_yaml(path, "sweep file", error=ConfigError, mapping=True) or {}
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


def check_cells(sweep: Sweep, accept_config_change: bool = False, repair: bool = True) -> None:
    """What :func:`load_sweep` cannot check without the data folder: the benchmark and task
    sequence of every cell; for a cell already started, that its stored config is the cell's
    (a changed sweep file would otherwise fail halfway through the grid) and its status, read
    from its validated checkpoint as ``kif run`` reads it. ``repair``: rewrite a finished cell's
    results.json that does not match its checkpoint (off for a dry run, which writes nothing)."""
    benches = {}
    for cell in sweep.cells:
        cfg = cell.config
        source = f"{sweep.path} (cell {cell.name})"
        try:
            key = (cfg.benchmark, cfg.data_dir)
            if key not in benches:
                benches[key] = data.get_benchmark(cfg.benchmark, cfg.data_dir)
            cell.tasks = data.resolve_sequence(benches[key], cfg.order, cfg.tasks)
        except KifError as exc:
            raise _named(exc, source) from None
        cell_dir = sweep.out / cell.name
        run_dir = RunDir(cell_dir)
        if run_dir.config_file.is_file():
            changed = run_dir.check_config(cfg, accept_config_change, f"cell {cell.name} ran with",
                                           "restore the sweep file, pass --accept-config-change to continue the "
                                           "cell with the new one, or move that directory away to run the cell "
                                           "afresh")
            if changed:
                log.info("sweep: cell %s continues with a changed config (%s)", cell.name, ", ".join(changed[:5]))
        try:
            cell.status, cell.metrics, cell.run_seconds = cell_status(cell_dir, cfg, cell.tasks, accept_config_change,
                                                                      repair)
        except KifError as exc:  # kif run's advice (--overwrite) has no sweep flag: say what a sweep needs
            raise type(exc)(f"{exc} (sweep cell {cell.name}: to run it afresh, move {cell_dir} away)") from None


# ---- running -------------------------------------------------------------------------------------

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
    (:func:`kif.runner.run`; the CLI passes it, so that the models are imported only once every cell
    is known good). ``accept_config_change``: a started cell whose config
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
    with OutputLock(out, "sweep output folder"):
        check_owner(sweep)
        check_cells(sweep, accept_config_change)
        _log_start(sweep)
        write_state(sweep)  # every invocation: corrects a cell left 'running' by a kill
        if jobs > 1:
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
        raise TypeError("run_sweep: pass run_fn (kif.runner.run) to run the cells in this process (jobs 1)")
    extra = {"accept_config_change": True} if accept_config_change else {}
    todo = [c for c in sweep.cells if c.status != "finished"]
    n = len(sweep.cells)
    for i, cell in enumerate(todo):
        left = len(todo) - i
        estimate = remaining_seconds(sweep.cells)
        eta = "" if estimate is None else f", ETA {duration(estimate)}"
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
        cell.status, cell.metrics, run_seconds = run_record(results)
        cell.run_seconds = run_seconds or cell.seconds
        write_state(sweep)
        log.info("sweep: cell %s %s in %s  %s", cell.name, cell.status, duration(cell.seconds), cl_line(cell.metrics))
    log.info("sweep: all %d cells finished; %s", n, sweep.out / "sweep.json")
