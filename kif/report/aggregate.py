"""Statistics over seeds for ``kif report`` (a sweep: methods × orders × seeds).

For each method and task order: mean ± sample standard deviation (n − 1) of AP, FWT and
BWT (eq. 18-20) over seeds; the paper's mean over orders (the mean of the per-order seed
means); a paired comparison of every method with SeqLoRA and with KIFLoRA with the task
order as the unit (per order the mean difference over its seeds, then a 95 % Student
t-interval over orders, n_orders − 1 degrees of freedom; :mod:`kif.stats`) and Holm's
family-wise adjustment over the methods compared with one reference on one metric;
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
from pathlib import Path
from statistics import fmean
from typing import Sequence

from ..stats import betainc, holm, sequence_paired, summarize, t_cdf, t_interval, t_quantile  # noqa: F401
from .tables import fmt, is_joint

METRIC_KEYS = ("AP", "FWT", "BWT")
REFERENCES = ("seqlora", "kiflora")
FIGURE_PATTERN = "seeds_trajectory_*.png"
_SAMPLE_KEYS = {"seed", "order", "tasks", "data_dir"}  # what varies between the samples of one arm


# The statistics (Student t, the sequence as the unit, Holm) are pure functions in kif.stats;
# re-exported here for callers of kif.report.aggregate.


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
    return [pair for pairs in paired_by_order(g, arm, ref).values() for pair in pairs]


def paired_by_order(g: dict, arm: tuple, ref: tuple) -> dict[tuple, list[tuple[dict, dict]]]:
    """{order key: [(run of ``arm``, run of ``ref``) for each seed both finished on it]}; orders
    without a pair are left out."""
    theirs = g["arms"][ref]
    out = {}
    for o, seeds in g["arms"][arm].items():
        pairs = [(seeds[s], theirs[o][s]) for s in seeds
                 if o in theirs and s in theirs[o] and not isinstance(s, tuple)]
        if pairs:
            out[o] = pairs
    return out


def paired_diffs(pairs: Sequence[tuple[dict, dict]], metric: str) -> list[float]:
    """a − b of ``metric`` over the pairs where both runs have it."""
    return [a[metric] - b[metric] for a, b in pairs if a.get(metric) is not None and b.get(metric) is not None]


def sequence_diff(g: dict, arm: tuple, ref: tuple, metric: str, level: float = 0.95) -> dict:
    """arm − ref on ``metric`` with the task sequence (order) as the unit: the mean of each
    order's paired differences over its seeds, then a Student t-interval over the orders
    (:func:`kif.stats.sequence_paired`; keys mean, sd, n = orders, pairs, half, low, high, p)."""
    by_order = {g["order_labels"][o]: paired_diffs(pairs, metric) for o, pairs in paired_by_order(g, arm, ref).items()}
    return sequence_paired(by_order, level)


def paired_rows(runs: Sequence[dict], references: Sequence[str] = REFERENCES, level: float = 0.95) -> list[dict]:
    """Every arm against every arm of a reference method (same benchmark and model): the
    differences arm − reference over the (order, seed) pairs both finished, per metric a
    :func:`sequence_diff` (the order as the unit, seeds nested in it), with ``p_holm``: Holm's
    adjustment over the family of all arms compared with that reference arm on that metric.
    The mirror of a pair of references (seqlora − kiflora when kiflora − seqlora is there) is
    left out."""
    return _paired(group_runs(runs), references, level)


def _paired(g: dict, references: Sequence[str] = REFERENCES, level: float = 0.95) -> list[dict]:
    rows = []
    for i, ref_name in enumerate(references):
        refs = [a for a in g["arms"] if a[2] == ref_name]
        for ref in refs:
            family = []
            for arm in g["arms"]:
                # an earlier reference against this one is already there, with the opposite sign
                if arm == ref or arm[:2] != ref[:2] or arm[2] in references[:i]:
                    continue
                by_order = paired_by_order(g, arm, ref)
                row = {"arm": g["arm_labels"][arm], "reference": g["arm_labels"][ref],
                       "pairs": sum(len(p) for p in by_order.values()), "orders": len(by_order)}
                for m in METRIC_KEYS:
                    row[m] = sequence_diff(g, arm, ref, m, level)
                family.append(row)
            for m in METRIC_KEYS:  # the family: every arm against this reference arm, on m
                for r, p in zip(family, holm([r[m]["p"] for r in family])):
                    r[m]["p_holm"] = p
            rows.extend(family)
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


def _ci_holm(s: dict, alpha: float = 0.05) -> str:
    """:func:`_ci`, with " *" when the difference also stands family-wise (Holm p ≤ ``alpha``)."""
    p = s.get("p_holm")
    return _ci(s) + (" *" if p is not None and p <= alpha else "")


def _p(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def seed_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "order", "seeds", *(f"{m} (mean ± sd)" for m in METRIC_KEYS)]
    body = [[r["arm"], r["order"], str(len(r["seeds"])), *(_pm(r[m]) for m in METRIC_KEYS)] for r in rows]
    return header, body


def paired_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "vs", "orders (pairs)",
              *(h for m in METRIC_KEYS for h in (f"Δ{m} [95 % CI]", f"Holm p ({m})"))]
    body = [[r["arm"], r["reference"], f"{r['orders']} ({r['pairs']})",
             *(c for m in METRIC_KEYS for c in (_ci(r[m]), _p(r[m].get("p_holm"))))] for r in rows]
    return header, body


def _mirror(s: dict) -> dict:
    """reference − arm from arm − reference: the same interval, negated (0.0 − x: no "-0.00")."""
    neg = lambda x: None if x is None else 0.0 - x
    out = {**s, "mean": neg(s["mean"]), "low": neg(s.get("high")), "high": neg(s.get("low"))}
    if "unit_means" in s:
        out["unit_means"] = {k: neg(v) for k, v in s["unit_means"].items()}
    return out


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
             *("-" if r["vs"].get(ref) is None else _ci_holm(r["vs"][ref][m]) for ref, m in SUMMARY_DIFFS)]
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
          "difference with SeqLoRA and with KIFLoRA with the task order as the unit ('Paired "
          "differences': mean, 95 % Student t-interval over orders; '-' for the reference itself or "
          "without pairs). * marks a difference that also stands family-wise: Holm-adjusted p ≤ 0.05 "
          "over every method compared with that reference on that metric.")
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
        doc.p("Method − reference, with the task order (sequence) as the unit and seeds nested in it: "
              "the differences on the same order and seed (each pair one finished run of both) are "
              "averaged over the seeds of each order, and the mean over orders gets a 95 % Student "
              "t-interval, mean ± t(0.975, n−1)·sd/√n over the n orders (n − 1 degrees of freedom; with "
              "one seed per order this is the plain paired t). Seeds of one order share its tasks and "
              "their order, so they are not independent replicates. Holm p: the two-sided p of the same "
              "t-test, Holm-adjusted over the family of every method compared with that reference on "
              "that metric; ≤ 0.05 is a family-wise difference. An interval that contains 0 is not resolved.")
        doc.table(*paired_table(paired))
        if any(r["orders"] == 1 and r["pairs"] >= 2 for r in paired):
            doc.p("A comparison on one task order has no interval, however many seeds it has: the seeds "
                  "of one order tell the seed noise on that order, not how the difference varies over "
                  "sequences. Run two or more orders for an interval.")
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
