"""The data side of ``kif report``: read run directories, compute the tables.

Nothing here draws; :mod:`kif.report.plots` draws from what these functions return.
All numbers are the values of ``results.json`` (or plain means of them); rounding to
2 decimals happens only in :func:`fmt`, when a table is rendered.
"""
from __future__ import annotations

import copy
import functools
import math
import re
from pathlib import Path
from statistics import median
from typing import Any, Sequence

from ..errors import ArtifactError, KifError
from ..metrics import CL_NAMES
from ..results import load_results
from ..rundir import RunDir
from ..stats import mean_or_none



# ---- runs --------------------------------------------------------------------------------

def sanitize(name: str) -> str:
    """A file-name-safe form of a run directory name (letters, digits, ``._-``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "run"


def load_run(run_dir: str | Path) -> dict:
    """Read ``RUN_DIR/results.json`` (validated by :mod:`kif.results`); return its dict plus
    ``run_dir`` and ``run_name``. A missing, unreadable or malformed file is a
    :class:`~kif.errors.KifError` (ArtifactError) whose one-line message names the file.
    """
    run_dir = Path(run_dir)
    out = load_results(run_dir).to_dict()
    rescored = run_dir.is_file()  # a results file written by `kif rescore`, beside its run
    out["run_dir"] = str(run_dir.parent if rescored else run_dir)
    out["run_name"] = sanitize(f"{run_dir.resolve().parent.name}-{run_dir.name.removesuffix('.json')}" if rescored
                               else run_dir.resolve().name)
    return out


def is_joint(run: dict) -> bool:
    """A run whose single matrix row is "after training on all tasks at once"."""
    return bool(run.get("joint"))


def row_positions(run: dict) -> list[int]:
    """x position (1-based "after task j") of each matrix row; a joint run's one row sits at K."""
    return [len(run["tasks"])] if is_joint(run) else list(range(1, len(run["matrix"]) + 1))


def task_series(run: dict, i: int) -> list[tuple[int, "float | None"]]:
    """Task i's score at each point of the run: (0, zero-shot) when there is one, then
    (:func:`row_positions`, score) per matrix row."""
    zero_shot = [(0, run["zero_shot"][i])] if run.get("zero_shot") is not None else []
    return zero_shot + [(x, row[i]) for x, row in zip(row_positions(run), run["matrix"])]


def row_labels(run: dict) -> list[str]:
    if is_joint(run):
        return ["joint (all tasks)"]
    return [f"after {j + 1}: {run['tasks'][j]}" for j in range(len(run["matrix"]))]


def sort_key(run: dict) -> tuple:
    return (str(run.get("benchmark") or ""), str(run.get("model")), str(run.get("method")),
            str(run.get("order") or ""), run.get("run_dir", ""))


def sort_runs(runs: Sequence[dict]) -> list[dict]:
    """Deterministic order (benchmark, model, method, order, directory), unique run names."""
    runs = [dict(r) for r in sorted(runs, key=sort_key)]
    bases = [r.get("run_name") or sanitize(Path(r.get("run_dir", "run")).name) for r in runs]
    reserved, taken = set(bases), set()
    for r, base in zip(runs, bases):
        name, n = base, 1
        while name in taken or (n > 1 and name in reserved):  # "x", "x-2", ... never another run's own name
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        r["run_name"] = name
    return runs  # names unique, so a second call (comparison_rows) keeps them


# ---- comparison table ----------------------------------------------------------------------

COLUMNS = [  # (key, header)
    ("run", "run"), ("method", "method"), ("model", "model"), ("benchmark", "benchmark"),
    ("order", "order"), ("completed", "tasks"), *((m, m) for m in CL_NAMES),
    ("adapter_mb", "storage (MB)"), ("wall_s", "wall time (s)"),
]


def run_row(run: dict) -> dict:
    """One comparison row: the run's metrics exactly as in results.json."""
    k = len(run["tasks"])
    done = run.get("tasks_completed", len(run["matrix"]))
    return {
        "kind": "run", "run": run.get("run_name", ""), "method": run.get("method"),
        "model": run.get("model"), "benchmark": run.get("benchmark"), "order": run.get("order"),
        "completed": f"{done}/{k}", "complete": done >= k or is_joint(run),
        **{m: run.get(m) for m in CL_NAMES},
        "adapter_mb": None if run.get("adapter_bytes") is None else run["adapter_bytes"] / 1e6,
        "wall_s": (run.get("timings") or {}).get("total"), "n_runs": 1,
    }


def comparison_rows(runs: Sequence[dict]) -> list[dict]:
    """One row per run (in :func:`sort_runs` order), and after each (method, model, benchmark)
    group that has finished runs on ≥ 2 distinct task orders, a ``kind="mean"`` row: the mean
    over orders (runs repeated on one order are averaged first, so each order weighs the same),
    as the paper reports the mean of two orders. Partial runs and runs with an explicit task
    list (order null) are not averaged."""
    runs = sort_runs(runs)
    rows: list[dict] = []
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r.get("method"), r.get("model"), r.get("benchmark")), []).append(run_row(r))
    for (method, model, bench), grp in groups.items():
        rows.extend(grp)
        by_order: dict[str, list[dict]] = {}
        for row in grp:
            if row["order"] is not None and row["complete"]:
                by_order.setdefault(str(row["order"]), []).append(row)
        if len(by_order) < 2:
            continue
        mean = {"kind": "mean", "run": "mean", "method": method, "model": model, "benchmark": bench,
                "order": "mean of " + ", ".join(sorted(by_order)), "complete": True,
                "completed": grp[0]["completed"], "n_runs": sum(len(v) for v in by_order.values())}
        for key in (*CL_NAMES, "adapter_mb", "wall_s"):
            per_order = [mean_or_none([r[key] for r in rs]) for rs in by_order.values()]
            mean[key] = mean_or_none(per_order)
        rows.append(mean)
    return rows


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(x, digits: int = 2) -> str:
    """Display form of a number: fixed ``digits`` decimals; None/NaN -> "-"."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if _is_num(x):
        return f"{x:.{digits}f}"
    return str(x)


def comparison_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    body = [[fmt(r.get(k)) if k not in ("run", "order", "completed") else ("-" if r.get(k) is None else str(r[k]))
             for k, _ in COLUMNS] for r in rows]
    return [h for _, h in COLUMNS], body


def cost_rows(runs: Sequence[dict]) -> list[dict]:
    """What the runs cost, from results.json ``timings.total`` (seconds, all resumes together):
    per method (by name) the number of runs that record it, the median, shortest and longest
    run and the sum; then, with ≥ 2 methods, the same over all runs (``method="all"``)."""
    by: dict[str, list[float]] = {}
    for r in runs:
        t = (r.get("timings") or {}).get("total")
        if _is_num(t):
            by.setdefault(str(r.get("method")), []).append(float(t))
    if len(by) > 1:
        by["all"] = [t for ts in by.values() for t in ts]
    return [{"method": m, "runs": len(ts), "median_s": median(ts), "min_s": min(ts), "max_s": max(ts),
             "total_s": sum(ts)} for m, ts in by.items()]


def cost_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "runs", "median run (min)", "shortest - longest (min)", "total (h)"]
    return header, [[r["method"], str(r["runs"]), fmt(r["median_s"] / 60, 1),
                     f"{fmt(r['min_s'] / 60, 1)} - {fmt(r['max_s'] / 60, 1)}", fmt(r["total_s"] / 3600, 2)]
                    for r in rows]


def matrix_table(run: dict) -> tuple[list[str], list[list[str]]]:
    """The score matrix (zero-shot row first) as header + rows of 2-decimal strings."""
    header = ["after \\ task"] + [f"{i + 1}: {t}" for i, t in enumerate(run["tasks"])]
    body = []
    if run.get("zero_shot") is not None:
        body.append(["zero-shot"] + [fmt(v) for v in run["zero_shot"]])
    for label, row in zip(row_labels(run), run["matrix"]):
        body.append([label] + [fmt(v) for v in row])
    return header, body


def run_config(run_dir: str | Path | None) -> dict:
    """The run's config.yaml as a dict ({} when absent or unreadable: a report never fails on
    an odd config.yaml; :func:`check_run_config` checks the values a report reads)."""
    path = Path(run_dir or "") / "config.yaml"
    if not run_dir or not path.is_file():
        return {}
    stat = path.stat()
    return copy.deepcopy(_read_config(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=1024)
def _read_config(path: str, mtime_ns: int, size: int) -> dict:
    # A report reads a run's config several times (seed, paired, summary and trajectory
    # sections, importance); parse each config.yaml once. The key includes mtime and size so
    # that a rewritten file is read again.
    try:
        return RunDir(Path(path).parent).read_config() or {}
    except KifError:  # an odd config.yaml: the run then has no seed, its fractions the defaults
        return {}


def check_run_config(run_dir: str | Path) -> None:
    """The values of ``RUN_DIR/config.yaml`` that a report reads (``seed``, ``tasks``,
    ``method_args.top_fraction`` / ``threshold``), checked before anything is written: a
    hand-edited file with a list seed or an out-of-range fraction is a one-line
    ArtifactError naming the file and the field. A run without config.yaml is fine (its
    seed is unknown, its fractions the defaults)."""
    run = RunDir(run_dir)
    path, cfg = run.config_file, run.read_config()
    if cfg is None:
        return

    def bad(field: str, what: str) -> ArtifactError:
        return ArtifactError(f"{path}: '{field}' must be {what}, got {_short_repr(_get(cfg, field))}")

    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise bad("seed", "a whole number >= 0")
    tasks = cfg.get("tasks")
    if tasks is not None and not (isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)):
        raise bad("tasks", "a list of task names")
    order = cfg.get("order")
    if order is not None and (isinstance(order, bool) or not isinstance(order, (str, int))):
        raise bad("order", "an order name")
    args = cfg.get("method_args")
    if args is None:
        return
    if not isinstance(args, dict):
        raise bad("method_args", "a mapping")
    frac = args.get("top_fraction")
    if frac is not None and (isinstance(frac, bool) or not isinstance(frac, (int, float))
                             or not 0 <= frac <= 1):
        raise bad("method_args.top_fraction", "a number in [0, 1]")
    rule = args.get("threshold")
    if rule is not None and rule not in ("percentile", "rank"):
        raise bad("method_args.threshold", "'percentile' or 'rank'")


def _get(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def _short_repr(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def fractions_table(fracs: Sequence[dict], per_task: Sequence[dict] | None = None
                    ) -> tuple[list[str], list[list[str]]]:
    """Shares in percent (2 decimals); plus the mean fusion weight on the past when recorded."""
    weights = {}
    for st in per_task or []:
        if isinstance(st, dict) and "mean_weight_on_past" in st:
            weights[st.get("task")] = st["mean_weight_on_past"]
    header = ["task", "units", "shared (+/+) %", "specific new (−/+) %", "specific old (+/−) %"]
    if weights:
        header.append("mean weight on past")
    body = []
    for i, f in enumerate(fracs):
        cells = [f"{i + 1}: {f['task']}", str(f["units"])] + [
            "-" if f[k] is None else fmt(100 * f[k]) for k in ("shared", "specific_new", "specific_old")]
        if weights:
            cells.append(fmt(weights.get(f["task"]), 3))
        body.append(cells)
    return header, body


# ---- over seeds (kif.report.aggregate) -----------------------------------------------------

# which paired differences the summary shows: (reference, metric)
SUMMARY_DIFFS = (("seqlora", "AP"), ("seqlora", "BWT"), ("kiflora", "AP"), ("kiflora", "BWT"))


def _pm(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    return fmt(s["mean"]) + ("" if s["sd"] is None else f" ± {fmt(s['sd'])}")


def _signed(x) -> str:
    return "-" if x is None else f"{x:+.2f}"


def ci(s: dict) -> str:
    """A difference with its 95 % interval: ``+3.00 [-9.71, +15.71]`` (the mean alone without one)."""
    if s["mean"] is None:
        return "-"
    return _signed(s["mean"]) + ("" if s["half"] is None else f" [{_signed(s['low'])}, {_signed(s['high'])}]")


def _ci_holm(s: dict, alpha: float = 0.05) -> str:
    """:func:`ci`, with " *" when the difference also stands family-wise (Holm p ≤ ``alpha``)."""
    p = s.get("p_holm")
    return ci(s) + (" *" if p is not None and p <= alpha else "")


def _p(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def seed_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "order", "seeds", *(f"{m} (mean ± sd)" for m in CL_NAMES)]
    body = [[r["arm"], r["order"], str(len(r["seeds"])), *(_pm(r[m]) for m in CL_NAMES)] for r in rows]
    return header, body


def paired_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "vs", "orders (pairs)", *(h for m in CL_NAMES for h in (f"Δ{m} [95 % CI]", f"Holm p ({m})"))]
    body = [[r["arm"], r["reference"], f"{r['orders']} ({r['pairs']})",
             *(c for m in CL_NAMES for c in (ci(r[m]), _p(r[m].get("p_holm"))))] for r in rows]
    return header, body


def summary_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "runs (orders)", *(f"{m} (mean ± sd)" for m in CL_NAMES),
              *(f"Δ{m} vs {ref} [95 % CI]" for ref, m in SUMMARY_DIFFS)]
    body = [[r["arm"], f"{r['runs']} ({r['orders']})", *(_pm(r[m]) for m in CL_NAMES),
             *("-" if r["vs"].get(ref) is None else _ci_holm(r["vs"][ref][m]) for ref, m in SUMMARY_DIFFS)]
            for r in rows]
    return header, body


def jsonable(x: Any) -> Any:
    """NaN -> None, for writing rows as JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x
