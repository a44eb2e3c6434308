"""The data side of ``kif report``: read run directories, compute the tables.

Nothing here draws; :mod:`kif.report.plots` draws from what these functions return.
All numbers are the values of ``results.json`` (or plain means of them); rounding to
2 decimals happens only in :func:`fmt`, when a table is rendered.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from statistics import fmean, median
from typing import Any, Sequence

from ..errors import ArtifactError, KifError
from ..io import load_tensors
from ..results import load_results
from ..rundir import RunDir

KIF_METHODS = ("kif", "kiflora", "kif-m", "kiflora-m")
DEFAULT_TOP_FRACTION = 0.2  # docs/method.md §4: "+" = top 20 % of a task's unit scores


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
    ("order", "order"), ("completed", "tasks"), ("AP", "AP"), ("FWT", "FWT"), ("BWT", "BWT"),
    ("adapter_mb", "storage (MB)"), ("wall_s", "wall time (s)"),
]


def _mb(b) -> float | None:
    return None if b is None else b / 1e6


def run_row(run: dict) -> dict:
    """One comparison row: the run's metrics exactly as in results.json."""
    k = len(run["tasks"])
    done = run.get("tasks_completed", len(run["matrix"]))
    return {
        "kind": "run", "run": run.get("run_name", ""), "method": run.get("method"),
        "model": run.get("model"), "benchmark": run.get("benchmark"), "order": run.get("order"),
        "completed": f"{done}/{k}", "complete": done >= k or is_joint(run),
        "AP": run.get("AP"), "FWT": run.get("FWT"), "BWT": run.get("BWT"),
        "adapter_mb": _mb(run.get("adapter_bytes")),
        "wall_s": (run.get("timings") or {}).get("total"), "n_runs": 1,
    }


def _mean_or_none(values: list) -> float | None:
    return None if not values or any(v is None for v in values) else fmean(values)


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
        for key in ("AP", "FWT", "BWT", "adapter_mb", "wall_s"):
            per_order = [_mean_or_none([r[key] for r in rs]) for rs in by_order.values()]
            mean[key] = _mean_or_none(per_order)
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
    header = [h for _, h in COLUMNS]
    body = []
    for r in rows:
        cells = [fmt(r.get(k)) if k not in ("run", "order", "completed") else ("-" if r.get(k) is None else str(r[k]))
                 for k, _ in COLUMNS]
        body.append(cells)
    return header, body


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


# ---- importance (KIF runs) ------------------------------------------------------------------

def has_importance(run_dir: str | Path) -> bool:
    return any((d / "scores_current.safetensors").is_file() for _, d in RunDir(run_dir).task_dirs())


def _load_scores(path: Path) -> dict[str, float]:
    d = load_tensors(path)  # the run path's guarded loader: header size and entry caps
    try:
        return {k: float(v.float().reshape(-1)[0]) if v.numel() == 1 else float(v.float().mean())
                for k, v in d.items()}
    except (RuntimeError, IndexError) as e:
        raise ArtifactError(f"{path}: unexpected tensor in unit scores ({e})") from None


def check_run_config(run_dir: str | Path) -> None:
    """The values of ``RUN_DIR/config.yaml`` that a report reads (``seed``, ``tasks``,
    ``method_args.top_fraction`` / ``threshold``), checked before anything is written: a
    hand-edited file with a list seed or an out-of-range fraction is a one-line
    ArtifactError naming the file and the field. A run without config.yaml is fine (its
    seed is unknown, its fractions the defaults)."""
    path = RunDir(run_dir).config_file
    cfg = RunDir(run_dir).read_config()
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


def _method_arg(run_dir: str | Path, key: str):
    """``method_args.<key>`` of the run's config.yaml, or None (absent or unreadable)."""
    try:
        args = (RunDir(run_dir).read_config() or {}).get("method_args")
    except KifError:  # a report never fails on an odd config
        return None
    return args.get(key) if isinstance(args, dict) else None


def top_fraction(run_dir: str | Path) -> float:
    """The run's ``method_args.top_fraction`` (config.yaml), else 0.2 (docs/method.md §4)."""
    val = _method_arg(run_dir, "top_fraction")
    try:
        return float(val) if val is not None else DEFAULT_TOP_FRACTION
    except (TypeError, ValueError):
        return DEFAULT_TOP_FRACTION


def threshold_rule(run_dir: str | Path) -> str:
    """The "+" rule the run used (``method_args.threshold``). Config files that do not name
    one come from kif versions whose only rule was ``rank``."""
    val = _method_arg(run_dir, "threshold")
    return val if val in ("percentile", "rank") else "rank"


_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|block|blocks|h)\.(\d+)\.")
_RANK = re.compile(r"\.lora#(\d+)$")
_MATRIX = re.compile(r"\.(lora_[AB])\.weight$")


def _natural(s: str) -> list:
    parts = re.split(r"(\d+)", s)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)]


def parse_unit(name: str) -> dict:
    """Split a unit name into stack (encoder/decoder/""), layer, module and part.

    ``model.layers.3.self_attn.q_proj.lora#5`` -> ("", 3, "self_attn.q_proj", "#5");
    ``decoder.block.1.layer.1.EncDecAttention.v.lora_B.weight`` -> ("decoder", 1, "EncDecAttention.v", "lora_B").
    """
    base, part, rank = name, "", -1
    if m := _RANK.search(name):
        base, part, rank = name[:m.start()], f"#{m[1]}", int(m[1])
    elif m := _MATRIX.search(name):
        base, part, rank = name[:m.start()], m[1], 0 if m[1] == "lora_A" else 1
    elif name.endswith(".weight") or name.endswith(".bias"):
        base, part = name.rsplit(".", 1)
    stack = "encoder" if ".encoder." in f".{base}." else "decoder" if ".decoder." in f".{base}." else ""
    stack_rank = {"encoder": 0, "": 0, "decoder": 1}[stack]
    m = _LAYER.search(base)
    if m:
        layer, path = int(m[1]), base[m.end():]
        module = re.sub(r"^layer\.\d+\.", "", path)  # T5: block.N.layer.M.SelfAttention.q
    else:
        layer, path = None, base
        module = path
    return {"name": name, "stack": stack, "stack_rank": stack_rank, "layer": layer,
            "module": module, "path": path, "part": part, "rank": rank}


def unit_sort_key(name: str) -> tuple:
    """(stack, layer index, module, rank): encoder before decoder, units outside layers last;
    the module is compared with its sub-layer (T5 ``layer.0.SelfAttention`` before
    ``layer.1.EncDecAttention``), numbers numerically."""
    u = parse_unit(name)
    return (u["stack_rank"], u["layer"] is None, u["layer"] if u["layer"] is not None else 0,
            _natural(u["path"]), u["rank"], _natural(u["part"]), name)


def load_importance(run_dir: str | Path) -> dict:
    """Per-task unit scores of a KIF run.

    Returns ``{"tasks": [...], "units": [...] (sorted by :func:`unit_sort_key`),
    "current": [[score per unit] per task], "accumulated": [[...] per task]}``; a unit
    absent from one task's file is NaN there. Raises ArtifactError if no task has scores.
    """
    tasks, cur, acc = [], [], []
    for task, d in RunDir(run_dir).task_dirs():
        p = d / "scores_current.safetensors"
        if not p.is_file():
            continue
        tasks.append(task)
        cur.append(_load_scores(p))
        pa = d / "scores_accumulated.safetensors"
        acc.append(_load_scores(pa) if pa.is_file() else None)
    if not tasks:
        raise ArtifactError(f"{Path(run_dir) / 'tasks'}: no scores_current.safetensors (not a KIF run?)")
    units = sorted(set().union(*cur), key=unit_sort_key)
    nan = float("nan")
    return {"tasks": tasks, "units": units,
            "current": [[c.get(u, nan) for u in units] for c in cur],
            "accumulated": [None if a is None else [a.get(u, nan) for u in units] for a in acc]}


def unit_fractions(run_dir: str | Path, fraction: float | None = None) -> list[dict]:
    """Per task k: share of units that are "+" (top ``fraction``, docs/method.md §4) for
    the past I(Û_{k-1}) and/or the current task I(U_k).

    ``scores_accumulated`` of task dir k is I(Û_k) (it already includes task k), so the
    past of task k is the accumulated file of task k-1 -- exactly the pair eq. 15 fuses
    with. Task 1 has no past: its shares are None. Keys: task, units, shared
    (+ for both), specific_new (+ only now), specific_old (+ only for the past).
    """
    import torch

    from ..core.fusion import top_fraction_mask

    imp = load_importance(run_dir)
    if fraction is None:
        fraction = top_fraction(run_dir)
    rule = threshold_rule(run_dir)
    out = []
    prev_acc = None
    for t, cur, acc in zip(imp["tasks"], imp["current"], imp["accumulated"]):
        row = {"task": t, "units": len(imp["units"]), "shared": None, "specific_new": None,
               "specific_old": None}
        if prev_acc is not None:
            c, p = (top_fraction_mask(torch.nan_to_num(torch.tensor(v, dtype=torch.float32), nan=-math.inf),
                                      fraction, rule) for v in (cur, prev_acc))
            n = c.numel()
            row.update(shared=float((c & p).sum()) / n, specific_new=float((c & ~p).sum()) / n,
                       specific_old=float((~c & p).sum()) / n)
        out.append(row)
        prev_acc = acc
    return out


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


def jsonable(x: Any) -> Any:
    """NaN -> None, for writing rows as JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x
