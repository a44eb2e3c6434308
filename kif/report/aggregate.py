"""Statistics over seeds for ``kif report`` (a sweep: methods × orders × seeds).

For each method and task order: mean ± sample standard deviation (n − 1) of AP, FWT and
BWT (eq. 18-20) over seeds; the paper's mean over orders (the mean of the per-order seed
means); a paired comparison of every method with SeqLoRA and with KIFLoRA on the same
(order, seed): mean difference and its 95 % Student t-interval (n − 1 degrees of freedom);
and the score of the sequence's first task after each task (paper Figure 5) with a
min-max band over seeds, one figure per order.

Works on the dicts :func:`kif.report.tables.load_run` returns (results.json plus ``run_dir``).
A run's seed is ``results["seed"]`` when present, else the ``seed`` of its ``config.yaml``.
Only finished runs are aggregated. Runs of one method whose configs differ in other keys
than seed / order / tasks / data_dir (e.g. a learning-rate axis) are separate arms, named
by the keys that differ.
"""
from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from statistics import fmean, stdev
from typing import Sequence

from .tables import fmt, is_joint

METRIC_KEYS = ("AP", "FWT", "BWT")
REFERENCES = ("seqlora", "kiflora")
FIGURE_PATTERN = "seeds_trajectory_*.png"
_SAMPLE_KEYS = {"seed", "order", "tasks", "data_dir"}  # what varies between the samples of one arm


# ---- Student t quantile (no scipy) ---------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz; Numerical Recipes §6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (e.g. t(0.975, 2) = 4.302653); bisection on :func:`t_cdf`."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile: need 0 < p < 1 and df > 0 (got p={p}, df={df})")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def summarize(values: Sequence[float | None]) -> dict:
    """Mean, sample standard deviation (n − 1; None for n < 2) and n; None entries (a metric
    a run does not have, e.g. FWT of a joint run) are left out."""
    vals = [float(v) for v in values if v is not None]
    return {"mean": fmean(vals) if vals else None, "sd": stdev(vals) if len(vals) >= 2 else None, "n": len(vals)}


def t_interval(diffs: Sequence[float], level: float = 0.95) -> dict:
    """Mean of paired differences with its Student t-interval: mean ± t((1+level)/2, n−1)·sd/√n.
    Keys mean, sd, n, half (None for n < 2), low, high."""
    s = summarize(diffs)
    half = None
    if s["n"] >= 2:
        half = t_quantile(0.5 + level / 2.0, s["n"] - 1) * s["sd"] / math.sqrt(s["n"])
    return {**s, "half": half, "low": None if half is None else s["mean"] - half,
            "high": None if half is None else s["mean"] + half}


# ---- grouping runs into arms × orders × seeds ----------------------------------------------------

def is_complete(run: dict) -> bool:
    return is_joint(run) or run.get("tasks_completed", len(run["matrix"])) >= len(run["tasks"])


def _config(run: dict) -> dict:
    """The run's config.yaml as a dict ({} when absent or unreadable)."""
    path = Path(run.get("run_dir") or "") / "config.yaml"
    if not run.get("run_dir") or not path.is_file():
        return {}
    stat = path.stat()
    return copy.deepcopy(_read_config(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=1024)
def _read_config(path: str, mtime_ns: int, size: int) -> dict:
    # A report groups the same runs several times (seed, paired, summary and trajectory
    # sections); parse each config.yaml once. The key includes mtime and size so that a
    # rewritten file is read again.
    try:
        import yaml

        cfg = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except Exception:  # a report never fails on an odd config.yaml; the run then has no seed
        cfg = None
    return cfg if isinstance(cfg, dict) else {}


def run_seed(run: dict, config: dict | None = None):
    """The run's seed: results.json's ``seed`` if it has one, else config.yaml's (None if neither)."""
    return run["seed"] if run.get("seed") is not None else (_config(run) if config is None else config).get("seed")


def _flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def order_label(run: dict) -> str:
    return str(run["order"]) if run.get("order") is not None else "→".join(run["tasks"])


def group_runs(runs: Sequence[dict]) -> dict:
    """Finished runs as ``{arm: {order key: {seed: run}}}`` plus labels and what was left out.

    arm = (benchmark, model, method, variant); variant = the config keys (other than seed,
    order, tasks, data_dir) that differ between runs of one method, as ``key=value``.
    Order key = the task sequence. Returns ``{"arms": ..., "arm_labels": {arm: str},
    "arm_config": {arm: its first run's flattened config (the variant's keys are the same in
    all its runs)}, "order_labels": {order key: str},
    "skipped": [(run_name, why)]}``.
    """
    done = [r for r in runs if is_complete(r)]
    skipped = [(r.get("run_name", r.get("run_dir")), "unfinished") for r in runs if not is_complete(r)]
    by_method: dict[tuple, list[dict]] = {}
    for r in done:
        by_method.setdefault((r.get("benchmark"), r.get("model"), r.get("method")), []).append(r)
    arms: dict[tuple, dict] = {}
    arm_config: dict[tuple, dict] = {}
    order_labels: dict[tuple, str] = {}
    for key, rs in by_method.items():
        configs = [_config(r) for r in rs]
        flats = [{k: v for k, v in _flat(c).items() if k.split(".")[0] not in _SAMPLE_KEYS} for c in configs]
        varying = sorted(k for k in set().union(*flats) if len({repr(f.get(k)) for f in flats}) > 1)
        for r, c, f in zip(rs, configs, flats):
            variant = ", ".join(f"{k}={f.get(k)}" for k in varying)
            order = tuple(r["tasks"])
            if r.get("order") is not None or order not in order_labels:
                order_labels[order] = order_label(r)
            seed = run_seed(r, c)  # unknown: the run stands alone (no pairs), keyed by its name
            sample = seed if seed is not None else ("run", r.get("run_name", r.get("run_dir")))
            arm_config.setdefault((*key, variant), f)
            cell = arms.setdefault((*key, variant), {}).setdefault(order, {})
            if sample in cell:
                skipped.append((r.get("run_name", r.get("run_dir")),
                                f"same seed as {cell[sample].get('run_name')} (kept that one)"))
                continue
            cell[sample] = r
    several_models = len({a[1] for a in arms}) > 1
    several_benchmarks = len({a[0] for a in arms}) > 1
    labels = {}
    for a in arms:
        label = str(a[2]) + (f" [{a[3]}]" if a[3] else "")
        extra = [str(x) for x, several in ((a[1], several_models), (a[0], several_benchmarks)) if several]
        labels[a] = label + (f" ({', '.join(extra)})" if extra else "")
    return {"arms": arms, "arm_labels": labels, "arm_config": arm_config,
            "order_labels": order_labels, "skipped": skipped}


@functools.lru_cache(maxsize=None)
def _options_class(method: str):
    """The registered method's Options class (None for a method kif cannot import here)."""
    from ..errors import KifError
    from ..methods.registry import get_method

    try:
        return get_method(method).Options
    except (KifError, ImportError):
        return None


def _is_default(method: str, opts: dict) -> bool:
    """Whether ``opts`` (method_args keys -> values as config.yaml has them) are the method's
    defaults, compared after validation (YAML's 1.0 is the default 1) in JSON form."""
    options = _options_class(method)
    if options is None or not opts:
        return False
    try:
        given = options.model_validate(opts).model_dump(mode="json")
    except ValueError:  # not valid for this method: not its default either
        return False
    defaults = options().model_dump(mode="json")
    return all(k in defaults and given.get(k) == defaults[k] for k in opts)


def reference_arm(g: dict, method: str, where: tuple | None = None) -> tuple | None:
    """The arm that stands for ``method`` (on ``where`` = (benchmark, model), if given): its only
    arm; else the one arm whose varying ``method_args`` are the method's defaults (e.g. KIFLoRA's
    adaptive fusion next to a static-fusion ablation); else None."""
    arms = [a for a in g["arms"] if a[2] == method and (where is None or a[:2] == tuple(where))]
    if len(arms) <= 1:
        return arms[0] if arms else None
    configs = [g["arm_config"][a] for a in arms]
    varying = {k for c in configs for k in c if k.startswith("method_args.")
               and len({repr(c2.get(k)) for c2 in configs}) > 1}

    def is_default(arm) -> bool:  # a varying option the config leaves out is at its default
        opts = {k.split(".", 1)[1]: v for k, v in g["arm_config"][arm].items() if k in varying}
        return bool(varying) and (not opts or _is_default(method, opts))

    found = [a for a in arms if is_default(a)]
    return found[0] if len(found) == 1 else None


def has_seeds(runs: Sequence[dict]) -> bool:
    """Whether some method was run with ≥ 2 seeds on one order (then the report aggregates)."""
    g = group_runs(runs)
    return any(len(seeds) >= 2 for orders in g["arms"].values() for seeds in orders.values())


# ---- tables --------------------------------------------------------------------------------------

def seed_rows(runs: Sequence[dict]) -> list[dict]:
    """Per arm: one ``kind="order"`` row per order (mean, sd, n over seeds of each metric), then,
    with ≥ 2 orders, a ``kind="mean"`` row: the mean over orders of the per-order means; its sd
    is over the seeds run on every order, of each seed's mean over orders (n = those seeds)."""
    return _seed_rows(group_runs(runs))


def _seed_rows(g: dict) -> list[dict]:
    rows = []
    for arm, orders in g["arms"].items():
        base = {"arm": g["arm_labels"][arm], "benchmark": arm[0], "model": arm[1], "method": arm[2]}
        for order, seeds in orders.items():
            row = {**base, "kind": "order", "order": g["order_labels"][order], "seeds": _seed_names(seeds)}
            for m in METRIC_KEYS:
                row[m] = summarize([r.get(m) for r in seeds.values()])
            rows.append(row)
        if len(orders) < 2:
            continue
        common = set.intersection(*(set(s) for s in orders.values()))
        row = {**base, "kind": "mean", "order": f"mean of {len(orders)} orders",
               "seeds": _seed_names(common)}
        for m in METRIC_KEYS:
            per_order = [summarize([r.get(m) for r in s.values()])["mean"] for s in orders.values()]
            per_seed = [None if any(s[seed].get(m) is None for s in orders.values())
                        else fmean(s[seed][m] for s in orders.values()) for seed in common]
            spread = summarize(per_seed)
            row[m] = {"mean": None if any(v is None for v in per_order) else fmean(per_order),
                      "sd": spread["sd"], "n": spread["n"]}
        rows.append(row)
    return rows


def _seed_names(samples) -> list[str]:
    return [s[1] if isinstance(s, tuple) else str(s) for s in sorted(samples, key=lambda s: (isinstance(s, tuple), str(s)))]


def paired_runs(g: dict, arm: tuple, ref: tuple) -> list[tuple[dict, dict]]:
    """(run of ``arm``, run of ``ref``) for every (order, seed) both finished (a run without a
    known seed pairs with nothing)."""
    theirs = g["arms"][ref]
    return [(seeds[s], theirs[o][s]) for o, seeds in g["arms"][arm].items() if o in theirs
            for s in seeds if s in theirs[o] and not isinstance(s, tuple)]


def paired_diffs(pairs: Sequence[tuple[dict, dict]], metric: str) -> list[float]:
    """a − b of ``metric`` over the pairs where both runs have it."""
    return [a[metric] - b[metric] for a, b in pairs if a.get(metric) is not None and b.get(metric) is not None]


def paired_rows(runs: Sequence[dict], references: Sequence[str] = REFERENCES, level: float = 0.95) -> list[dict]:
    """Every arm against every arm of a reference method (same benchmark and model): the
    differences arm − reference over the (order, seed) pairs both finished, per metric a
    :func:`t_interval`. The mirror of a pair of references (seqlora − kiflora when kiflora −
    seqlora is there) is left out."""
    return _paired(group_runs(runs), references, level)


def _paired(g: dict, references: Sequence[str] = REFERENCES, level: float = 0.95) -> list[dict]:
    rows = []
    for i, ref_name in enumerate(references):
        refs = [a for a in g["arms"] if a[2] == ref_name]
        for ref in refs:
            for arm in g["arms"]:
                # an earlier reference against this one is already there, with the opposite sign
                if arm == ref or arm[:2] != ref[:2] or arm[2] in references[:i]:
                    continue
                pairs = paired_runs(g, arm, ref)
                row = {"arm": g["arm_labels"][arm], "reference": g["arm_labels"][ref], "pairs": len(pairs)}
                for m in METRIC_KEYS:
                    row[m] = t_interval(paired_diffs(pairs, m), level)
                rows.append(row)
    return rows


def _pm(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    return fmt(s["mean"]) + ("" if s["sd"] is None else f" ± {fmt(s['sd'])}")


def _signed(x) -> str:
    return "-" if x is None else f"{x:+.2f}"


def _ci(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    return _signed(s["mean"]) + ("" if s["half"] is None else f" [{_signed(s['low'])}, {_signed(s['high'])}]")


def seed_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "order", "seeds", *(f"{m} (mean ± sd)" for m in METRIC_KEYS)]
    body = [[r["arm"], r["order"], str(len(r["seeds"])), *(_pm(r[m]) for m in METRIC_KEYS)] for r in rows]
    return header, body


def paired_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "vs", "pairs", *(f"Δ{m} [95 % CI]" for m in METRIC_KEYS)]
    body = [[r["arm"], r["reference"], str(r["pairs"]), *(_ci(r[m]) for m in METRIC_KEYS)] for r in rows]
    return header, body


def _mirror(s: dict) -> dict:
    """reference − arm from arm − reference: the same interval, negated (0.0 − x: no "-0.00")."""
    neg = lambda x: None if x is None else 0.0 - x
    return {**s, "mean": neg(s["mean"]), "low": neg(s.get("high")), "high": neg(s.get("low"))}


def summary_rows(runs: Sequence[dict], references: Sequence[str] = REFERENCES) -> list[dict]:
    """One row per arm, best AP first: its mean over orders (the ``mean`` row of
    :func:`seed_rows`, or its one order), how many finished runs and orders are behind it, and
    its paired difference with each reference method's :func:`reference_arm` on the same
    benchmark and model (``vs[reference][metric]``, a :func:`t_interval` from
    :func:`paired_rows`, mirrored when the pair is only there the other way round; None for
    the reference itself, without pairs, or when no arm stands for the reference)."""
    g = group_runs(runs)
    return _summary(g, _seed_rows(g), _paired(g, references), _reference_arms(g, references))


def _reference_arms(g: dict, references: Sequence[str]) -> dict[tuple, tuple | None]:
    """{((benchmark, model), reference method): its :func:`reference_arm` there}."""
    return {(where, m): reference_arm(g, m, where) for where in {a[:2] for a in g["arms"]} for m in references}


def _summary(g: dict, rows: Sequence[dict], paired: Sequence[dict], refs: dict) -> list[dict]:
    by_pair = {(p["arm"], p["reference"]): p for p in paired}
    references = list(dict.fromkeys(m for _, m in refs))  # the reference methods, in their given order
    out = []
    for arm, orders in g["arms"].items():
        label = g["arm_labels"][arm]
        mine = [r for r in rows if r["arm"] == label]
        top = next((r for r in mine if r["kind"] == "mean"), mine[0])
        vs = {}
        for m in references:
            ref = refs[arm[:2], m]
            ref = None if ref is None else g["arm_labels"][ref]
            p, mirror = by_pair.get((label, ref)), by_pair.get((ref, label))
            vs[m] = (None if ref is None or ref == label else
                     {k: p[k] for k in METRIC_KEYS} if p else
                     {k: _mirror(mirror[k]) for k in METRIC_KEYS} if mirror else None)
        out.append({"arm": label, "method": arm[2], "runs": sum(len(s) for s in orders.values()),
                    "orders": len(orders), **{k: top[k] for k in METRIC_KEYS}, "vs": vs})
    return sorted(out, key=lambda r: (r["AP"]["mean"] is None, -(r["AP"]["mean"] or 0.0)))


# which paired differences the summary shows: (reference, metric)
SUMMARY_DIFFS = (("seqlora", "AP"), ("seqlora", "BWT"), ("kiflora", "AP"), ("kiflora", "BWT"))


def summary_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "runs (orders)", *(f"{m} (mean ± sd)" for m in METRIC_KEYS),
              *(f"Δ{m} vs {ref} [95 % CI]" for ref, m in SUMMARY_DIFFS)]
    body = [[r["arm"], f"{r['runs']} ({r['orders']})", *(_pm(r[m]) for m in METRIC_KEYS),
             *("-" if r["vs"].get(ref) is None else _ci(r["vs"][ref][m]) for ref, m in SUMMARY_DIFFS)]
            for r in rows]
    return header, body


# ---- task-1 trajectory over seeds ------------------------------------------------------------------

def _task1_series(run: dict) -> dict[int, float]:
    """x (0 = zero-shot, j = after task j) -> score of the sequence's first task."""
    out = {}
    if run.get("zero_shot") is not None and run["zero_shot"][0] is not None:
        out[0] = float(run["zero_shot"][0])
    positions = [len(run["tasks"])] if is_joint(run) else range(1, len(run["matrix"]) + 1)
    for x, row in zip(positions, run["matrix"]):
        if row[0] is not None:
            out[x] = float(row[0])
    return out


def trajectory_bands(runs: Sequence[dict]) -> dict:
    """Per order key: ``{arm label: {"x": [...], "mean": [...], "min": [...], "max": [...], "n": [...]}}``
    of the first task's score over the seeds that evaluated it (eval.mode minimal leaves gaps)."""
    return _bands(group_runs(runs))


def _bands(g: dict) -> dict:
    out: dict[tuple, dict] = {}
    for arm, orders in g["arms"].items():
        for order, seeds in orders.items():
            series = [_task1_series(r) for r in seeds.values()]
            xs = sorted(set().union(*series))
            vals = [[s[x] for s in series if x in s] for x in xs]
            out.setdefault(order, {})[g["arm_labels"][arm]] = {
                "x": xs, "mean": [fmean(v) for v in vals], "min": [min(v) for v in vals],
                "max": [max(v) for v in vals], "n": [len(v) for v in vals], "joint": is_joint(next(iter(seeds.values())))}
    return out


def plot_seed_trajectories(order: tuple, bands: dict, path: str | Path, title: str | None = None) -> Path:
    """Score of task 1 after each task: one line per method (mean over seeds) with a min-max band."""
    from .plots import _mpl, _new_figure, _save, _short

    matplotlib, _, _ = _mpl()
    k = len(order)
    fig = _new_figure((max(8.0, round(4.5 + 0.55 * k, 2)), 4.8))
    ax = fig.subplots()
    cycle = matplotlib.colormaps["tab10"]
    for i, (label, b) in enumerate(bands.items()):
        color = cycle(i % 10)
        if b["joint"]:
            ax.errorbar(b["x"], b["mean"], yerr=[[m - lo for m, lo in zip(b["mean"], b["min"])],
                                                 [hi - m for m, hi in zip(b["mean"], b["max"])]],
                        fmt="D", color=color, capsize=4, label=f"{label} (joint)")
            continue
        ax.plot(b["x"], b["mean"], marker="osD^v<>p*h"[i % 10], linestyle=("-", "--", "-.", ":")[i % 4],
                color=color, linewidth=2, markersize=6, label=f"{label} (n={max(b['n'])})")
        ax.fill_between(b["x"], b["min"], b["max"], color=color, alpha=0.15, linewidth=0)
    first = 0 if any(0 in b["x"] for b in bands.values()) else 1  # no zero-shot column without zero-shot scores
    labels = ["zero-shot"] + [f"{j + 1}: {_short(t, 14)}" for j, t in enumerate(order)]
    ax.set_xticks(list(range(first, k + 1)), labels[first:],
                  rotation=0 if k <= 4 else 30, ha="right" if k > 4 else "center", fontsize=8)
    ax.set_xlim(first - 0.3, k + 0.3)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("after task j")
    ax.set_ylabel(f"score on task 1 ({_short(order[0], 24)})")
    ax.set_title(title or "Task 1 along the sequence: mean over seeds, band = min-max", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="method", title_fontsize=8)
    return _save(fig, path)


# ---- the report section ----------------------------------------------------------------------------

def add_seed_section(doc, runs: Sequence[dict], out: Path) -> dict | None:
    """Append "Over seeds" to a ``kif.report.build._Doc`` and draw its figures into ``out``;
    returns the exact numbers (for ``aggregate.json``), or None when no method has ≥ 2 seeds
    on one order (nothing is added)."""
    if not has_seeds(runs):
        return None
    g = group_runs(runs)
    rows, paired, refs = _seed_rows(g), _paired(g), _reference_arms(g, REFERENCES)
    doc.h(2, "Over seeds")
    doc.p("Finished runs grouped by method, task order and seed (config.yaml). mean ± sd: mean "
          "and sample standard deviation (n − 1) over seeds.")
    summary = _summary(g, rows, paired, refs)
    doc.h(3, "Summary")
    doc.p("One row per method, best AP first: the finished runs (and task orders) behind it, its "
          "mean over orders ('Per order', bold rows; the order itself when it has one), and its paired "
          "difference with SeqLoRA and with KIFLoRA on the same order and seed (mean, 95 % Student "
          "t-interval; '-' for the reference itself or without pairs).")
    doc.table(*summary_table(summary))
    notes = []
    for m in REFERENCES:
        mine = [a for a in g["arms"] if a[2] == m]
        chosen = {refs[where, m] for where in {a[:2] for a in mine}}
        if len(mine) > 1 and None in chosen:
            notes.append(f"no arm stands for {m} (several arms, none with its default options): its columns are '-'")
        elif len(mine) > 1:
            notes.append(f"{m} is " + ", ".join(sorted(g["arm_labels"][a] for a in chosen))
                         + " (the arm with the method's default options)")
    if notes:
        doc.p("Reference arms: " + "; ".join(notes) + ".")
    doc.h(3, "Per order")
    doc.p("Rows 'mean of N orders' (bold) are the paper's mean over orders: the mean of the "
          "per-order means; their sd is over the seeds run on every order, of each seed's mean "
          "over orders.")
    doc.table(*seed_table(rows), bold_rows=[i for i, r in enumerate(rows) if r["kind"] == "mean"])
    if g["skipped"]:
        doc.p("Left out: " + "; ".join(f"{n} ({why})" for n, why in g["skipped"]) + ".")
    if paired:
        doc.h(3, "Paired differences")
        doc.p("Method − reference on the same order and seed (each pair one finished run of both): "
              "mean difference and its 95 % Student t-interval, mean ± t(0.975, n−1)·sd/√n over the "
              "n pairs (orders × seeds). An interval that excludes 0 is a difference the seeds do not explain.")
        doc.table(*paired_table(paired))
    doc.h(3, "Task 1 over seeds")
    figures = []
    for i, (order, bands) in enumerate(_bands(g).items(), start=1):
        name = FIGURE_PATTERN.replace("*", str(i))
        label = g["order_labels"][order]
        plot_seed_trajectories(order, bands, out / name,
                               title=f"Order {label}: task 1 ({order[0]}), mean over seeds, band = min-max")
        doc.p((f"Order {label}: " if label != "→".join(order) else "Order: ") + " → ".join(order))
        doc.img(name, f"task 1 over seeds, order {label}")
        figures.append(name)
    return {"summary": summary, "seeds": rows, "paired": paired, "skipped": g["skipped"], "figures": figures}
