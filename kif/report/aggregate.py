"""Statistics over seeds for ``kif report`` (a sweep: methods × orders × seeds).

For each arm (:mod:`kif.report.grouping`) and task order: mean ± sample standard deviation
(n − 1) over seeds of each continual-learning metric (:data:`kif.metrics.CL_METRICS`); the
paper's mean over orders (the mean of the per-order seed means); a paired comparison of
every arm with SeqLoRA and with KIFLoRA with the task order as the unit (per order the mean
difference over its seeds, then a 95 % Student t-interval over orders, n_orders − 1 degrees
of freedom; :mod:`kif.stats`) and Holm's family-wise adjustment over the arms compared with
one reference on one metric; and the score of the sequence's first task after each task
(paper Figure 5) with a min-max band over seeds, one figure per order. Every function takes
the runs or their :class:`~kif.report.grouping.Grouping`.
"""
from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Sequence, Union

from ..metrics import CL_METRICS, CL_NAMES
from ..stats import holm, mean_over_units, mirror, sequence_paired, summarize
from .grouping import Arm, Grouping, group_runs, paired_by_order, reference_arms, sample_names
from .plots import plot_seed_trajectories
from .tables import is_joint, paired_table, seed_table, summary_table, task_series

REFERENCES = ("seqlora", "kiflora")
RANK_BY = CL_METRICS[0]  # the summary's order: best AP first
FIGURE_PATTERN = "seeds_trajectory_*.png"
Runs = Union[Sequence[dict], Grouping]


def _grouped(runs: Runs) -> Grouping:
    return runs if isinstance(runs, Grouping) else group_runs(runs)


def seed_rows(runs: Runs) -> list[dict]:
    """Per arm: one ``kind="order"`` row per order (mean, sd, n over seeds of each metric), then,
    with ≥ 2 orders, a ``kind="mean"`` row: :func:`kif.stats.mean_over_units` of each metric, the
    orders as units and the seeds as replicates."""
    g, rows = _grouped(runs), []
    for arm, orders in g.runs.items():
        base = {"arm": g.labels[arm], "benchmark": arm.benchmark, "model": arm.model, "method": arm.method}
        for order, seeds in orders.items():
            rows.append({**base, "kind": "order", "order": g.order_labels[order], "seeds": sample_names(seeds),
                         **{m: summarize([r.get(m) for r in seeds.values()]) for m in CL_NAMES}})
        if len(orders) >= 2:
            common = set.intersection(*(set(s) for s in orders.values()))
            rows.append({**base, "kind": "mean", "order": f"mean of {len(orders)} orders", "seeds": sample_names(common),
                         **{m: mean_over_units({o: {s: r.get(m) for s, r in seeds.items()} for o, seeds in orders.items()})
                            for m in CL_NAMES}})
    return rows


def paired_diffs(pairs: Sequence[tuple[dict, dict]], metric: str) -> list[float]:
    """a − b of ``metric`` over the pairs where both runs have it."""
    return [a[metric] - b[metric] for a, b in pairs if a.get(metric) is not None and b.get(metric) is not None]


def sequence_diff(g: Grouping, arm: Arm, ref: Arm, metric: str, level: float = 0.95) -> dict:
    """arm − ref on ``metric`` with the task sequence (order) as the unit: the mean of each
    order's paired differences over its seeds, then a Student t-interval over the orders
    (:func:`kif.stats.sequence_paired`; keys mean, sd, n = orders, pairs, half, low, high, p)."""
    by_order = {g.order_labels[o]: paired_diffs(pairs, metric) for o, pairs in paired_by_order(g, arm, ref).items()}
    return sequence_paired(by_order, level)


def paired_rows(runs: Runs, references: Sequence[str] = REFERENCES, level: float = 0.95) -> list[dict]:
    """Every arm against every arm of a reference method (same benchmark and model): the
    differences arm − reference over the (order, seed) pairs both finished, per metric a
    :func:`sequence_diff` (the order as the unit, seeds nested in it), with ``p_holm``: Holm's
    adjustment over the family of all arms compared with that reference arm on that metric.
    The mirror of a pair of references (seqlora − kiflora when kiflora − seqlora is there) is
    left out."""
    g, rows = _grouped(runs), []
    for i, ref_name in enumerate(references):
        for ref in [a for a in g.runs if a.method == ref_name]:
            family = []
            for arm in g.runs:
                # an earlier reference against this one is already there, with the opposite sign
                if arm == ref or arm.where != ref.where or arm.method in references[:i]:
                    continue
                by_order = paired_by_order(g, arm, ref)
                family.append({"arm": g.labels[arm], "reference": g.labels[ref],
                               "pairs": sum(len(p) for p in by_order.values()), "orders": len(by_order),
                               **{m: sequence_diff(g, arm, ref, m, level) for m in CL_NAMES}})
            for m in CL_NAMES:  # the family: every arm against this reference arm, on m
                for r, p in zip(family, holm([r[m]["p"] for r in family])):
                    r[m]["p_holm"] = p
            rows.extend(family)
    return rows


def summary_rows(runs: Runs, references: Sequence[str] = REFERENCES) -> list[dict]:
    """One row per arm, best AP first: its mean over orders (the ``mean`` row of
    :func:`seed_rows`, or its one order), how many finished runs and orders are behind it, and
    its paired difference with each reference method's :func:`~kif.report.grouping.reference_arm`
    on the same benchmark and model (``vs[reference][metric]``, a :func:`kif.stats.t_interval`
    from :func:`paired_rows`, mirrored when the pair is only there the other way round; None for
    the reference itself, without pairs, or when no arm stands for the reference)."""
    g = _grouped(runs)
    return _summary(g, seed_rows(g), paired_rows(g, references), reference_arms(g, references))


def _summary(g: Grouping, rows: Sequence[dict], paired: Sequence[dict], refs: dict) -> list[dict]:
    by_pair = {(p["arm"], p["reference"]): p for p in paired}
    references = list(dict.fromkeys(m for _, m in refs))  # the reference methods, in their given order
    out = []
    for arm, orders in g.runs.items():
        label = g.labels[arm]
        mine = [r for r in rows if r["arm"] == label]
        top = next((r for r in mine if r["kind"] == "mean"), mine[0])
        vs = {}
        for m in references:
            ref = refs[arm.where, m]
            ref = None if ref is None else g.labels[ref]
            p, back = by_pair.get((label, ref)), by_pair.get((ref, label))
            vs[m] = (None if ref is None or ref == label else {k: p[k] for k in CL_NAMES} if p else
                     {k: mirror(back[k]) for k in CL_NAMES} if back else None)
        out.append({"arm": label, "method": arm.method, "runs": sum(len(s) for s in orders.values()),
                    "orders": len(orders), **{k: top[k] for k in CL_NAMES}, "vs": vs})
    sign = -1.0 if RANK_BY.higher_is_better else 1.0
    return sorted(out, key=lambda r: (r[RANK_BY.name]["mean"] is None, sign * (r[RANK_BY.name]["mean"] or 0.0)))


def trajectory_bands(runs: Runs) -> dict:
    """Per order: ``{arm label: {"x": [...], "mean": [...], "min": [...], "max": [...], "n": [...]}}``
    of the first task's score over the seeds that evaluated it (eval.mode minimal leaves gaps)."""
    g, out = _grouped(runs), {}
    for arm, orders in g.runs.items():
        for order, seeds in orders.items():
            series = [{x: float(v) for x, v in task_series(r, 0) if v is not None} for r in seeds.values()]
            xs = sorted(set().union(*series))
            vals = [[s[x] for s in series if x in s] for x in xs]
            out.setdefault(order, {})[g.labels[arm]] = {
                "x": xs, "mean": [fmean(v) for v in vals], "min": [min(v) for v in vals],
                "max": [max(v) for v in vals], "n": [len(v) for v in vals], "joint": is_joint(next(iter(seeds.values())))}
    return out


def add_seed_section(doc, runs: Sequence[dict], out: Path) -> dict | None:
    """Append "Over seeds" to a ``kif.report.build._Doc`` and draw its figures into ``out``;
    returns the exact numbers (for ``aggregate.json``), or None when no method has ≥ 2 seeds
    on one order (nothing is added)."""
    g = group_runs(runs)
    if not g.has_seeds():
        return None
    rows, paired, refs = seed_rows(g), paired_rows(g), reference_arms(g, REFERENCES)
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
        mine = [a for a in g.runs if a.method == m]
        chosen = {refs[where, m] for where in {a.where for a in mine}}
        if len(mine) > 1 and None in chosen:
            notes.append(f"no arm stands for {m} (several arms, none with its default options): its columns are '-'")
        elif len(mine) > 1:
            notes.append(f"{m} is " + ", ".join(sorted(g.labels[a] for a in chosen))
                         + " (the arm with the method's default options)")
    if notes:
        doc.p("Reference arms: " + "; ".join(notes) + ".")
    doc.h(3, "Per order")
    doc.p("Rows 'mean of N orders' (bold) are the paper's mean over orders: the mean of the "
          "per-order means; their sd is over the seeds run on every order, of each seed's mean "
          "over orders.")
    doc.table(*seed_table(rows), bold_rows=[i for i, r in enumerate(rows) if r["kind"] == "mean"])
    if g.skipped:
        doc.p("Left out: " + "; ".join(f"{n} ({why})" for n, why in g.skipped) + ".")
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
    for i, (order, bands) in enumerate(trajectory_bands(g).items(), start=1):
        name = FIGURE_PATTERN.replace("*", str(i))
        label = g.order_labels[order]
        plot_seed_trajectories(order, bands, out / name,
                               title=f"Order {label}: task 1 ({order[0]}), mean over seeds, band = min-max")
        doc.p((f"Order {label}: " if label != "→".join(order) else "Order: ") + " → ".join(order))
        doc.img(name, f"task 1 over seeds, order {label}")
        figures.append(name)
    return {"summary": summary, "seeds": rows, "paired": paired, "skipped": g.skipped, "figures": figures}
