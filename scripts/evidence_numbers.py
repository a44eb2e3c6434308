"""The numbers the README's Evidence section reads in its text, computed from the committed
results.json files of the CPU evidence grid (so that none of them is typed by hand):

    python scripts/evidence_numbers.py docs/results/evidence docs/results/evidence-ablations \
        docs/results/evidence-replay-before-fix > docs/results/evidence/numbers.md

Arguments: the grid folder, the ablations folder, the folder of withdrawn runs (counted in
the compute only). Paired comparisons use the task order as the unit (kif.stats): per order
the mean of the differences over its seeds, then a Student t-interval over orders (df 2);
beside it, for contrast, the naive interval that takes the 6 (order, seed) pairs as
independent. Holm's adjustment is over the comparisons of this table (the ones the README
reads). "Right after learning" is a_jj, the score of task j just after it is learned (after
fusion for KIF, KIFLoRA and the weight ensemble), for tasks 2 and 3 of each run.
"""
from __future__ import annotations

import sys
from pathlib import Path
from statistics import fmean, median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_claims import KIF, KIFLORA, _arm  # noqa: E402

from kif.errors import KifError  # noqa: E402
from kif.report.aggregate import paired_diffs, sequence_diff  # noqa: E402
from kif.report.build import find_runs  # noqa: E402
from kif.report.grouping import Grouping, group_runs, paired_by_order  # noqa: E402
from kif.report.tables import load_run  # noqa: E402
from kif.stats import holm, sequence_paired, t_interval, t_quantile  # noqa: E402

STATIC = "kiflora fusion=static"
METHODS = ("seqlora", KIFLORA, STATIC, KIF, "weight-ensemble", "ewc", "olora", "inclora", "replay", "mtl")
# (A, B, metric): the differences the README's text reads
COMPARISONS = (
    (KIFLORA, "seqlora", "BWT"), (KIF, "seqlora", "BWT"), (STATIC, "seqlora", "BWT"),
    ("weight-ensemble", "seqlora", "BWT"), ("ewc", "seqlora", "BWT"), ("olora", "seqlora", "BWT"),
    (KIFLORA, "seqlora", "AP"), ("olora", "inclora", "AP"), (KIFLORA, STATIC, "AP"),
    ("weight-ensemble", KIFLORA, "AP"), ("weight-ensemble", KIFLORA, "BWT"),
    (KIF, "weight-ensemble", "AP"), (KIF, "weight-ensemble", "BWT"),
)


def f1(x) -> str:
    """One decimal, a true minus sign's ASCII form, and no "-0.0"."""
    return "-" if x is None else f"{0.0 + round(x, 1):+.1f}"


def u1(x) -> str:
    return "-" if x is None else f"{round(x, 1) + 0.0:.1f}"


def ci1(s: dict) -> str:
    return f"{f1(s['mean'])} [{f1(s['low'])}, {f1(s['high'])}]" if s.get("half") is not None else f1(s["mean"])


def compute_table(folders: list[str]) -> list[str]:
    out = ["| runs in | runs | compute (h) | median run (min) | shortest - longest (min) |", "|---|---|---|---|---|"]
    every = []
    for folder in folders:
        ts = [load_run(d)["timings"]["total"] for d in find_runs([folder])]
        every += ts
        out.append(f"| {folder} | {len(ts)} | {u1(sum(ts) / 3600)} | {u1(median(ts) / 60)} | "
                   f"{u1(min(ts) / 60)} - {u1(max(ts) / 60)} |")
    out.append(f"| all | {len(every)} | {u1(sum(every) / 3600)} | {u1(median(every) / 60)} | "
               f"{u1(min(every) / 60)} - {u1(max(every) / 60)} |")
    return out


def method_table(g: Grouping) -> list[str]:
    out = ["| method | runs | AP | FWT | BWT | BWT per order (1 / 2 / 3) | right after learning (tasks 2-3) "
           "| AP of its runs (min - max) | task 1 on order 1, after tasks 1 / 2 / 3 |", "|---|---|---|---|---|---|---|---|---|"]
    for spec in METHODS:
        arm, why = _arm(g, spec)
        if arm is None:
            out.append(f"| {spec} | 0 | {why} |  |  |  |  |  |  |")
            continue
        # orders as the cell folders name them (*_o1_*, *_o2_*, *_o3_*): results.json has the task list only
        orders = dict(sorted(g.runs[arm].items(), key=lambda kv: min(r["run_name"] for r in kv[1].values())))
        runs = [r for seeds in orders.values() for r in seeds.values()]

        def over_orders(metric):
            per = [fmean(r[metric] for r in s.values()) for s in orders.values()
                   if all(r.get(metric) is not None for r in s.values())]
            return fmean(per) if len(per) == len(orders) else None
        bwt = [None if any(r.get("BWT") is None for r in s.values()) else fmean(r["BWT"] for r in s.values())
               for s in orders.values()]
        diag = [r["matrix"][j][j] for r in runs if not r.get("joint") for j in (1, 2)]
        first = next(iter(orders.values()))  # order 1: task 1's score after each task, mean over seeds
        traj = [] if any(r.get("joint") for r in runs) else [
            fmean(r["matrix"][j][0] for r in first.values()) for j in range(len(next(iter(first.values()))["matrix"]))]
        aps = [r["AP"] for r in runs]
        out.append(f"| {spec} | {len(runs)} | {u1(over_orders('AP'))} | {f1(over_orders('FWT'))} | "
                   f"{f1(over_orders('BWT'))} | {' / '.join(f1(b) for b in bwt) if None not in bwt else '-'} | "
                   f"{u1(fmean(diag)) if diag else '-'} | {u1(min(aps))} - {u1(max(aps))} | "
                   f"{' / '.join(u1(x) for x in traj) or '-'} |")
    return out


def comparison_table(g: Grouping) -> list[str]:
    rows = []
    for a_spec, b_spec, metric in COMPARISONS:
        (a, _), (b, _) = _arm(g, a_spec), _arm(g, b_spec)
        if a is None or b is None:
            continue
        seq = sequence_diff(g, a, b, metric)
        by_order = [paired_diffs(pairs, metric) for pairs in paired_by_order(g, a, b).values()]
        diffs = [d for ds in by_order for d in ds]
        pairs = " / ".join(" ".join(f"{d:+.2f}" for d in ds) for ds in by_order)
        rows.append((f"{a_spec} − {b_spec} on {metric}", seq,
                     {**t_interval(diffs), "above": sum(d > 0 for d in diffs), "below": sum(d < 0 for d in diffs),
                      "pairs": pairs}))
    adjusted = holm([s["p"] for _, s, _ in rows])
    out = ["| comparison | orders (pairs) | pairs, per order | per-order means | order as unit: mean [95 % CI] | p "
           "| Holm p | pairs as independent: [95 % CI] | pairs above / below 0 |", "|---|---|---|---|---|---|---|---|---|"]
    for (name, s, naive), p_holm in zip(rows, adjusted):
        means = " / ".join(f1(v) for v in s["unit_means"].values())  # in the folders' order, o1 / o2 / o3
        out.append(f"| {name} | {s['n']} ({s['pairs']}) | {naive['pairs']} | {means} | {ci1(s)} | {s['p']:.3f} | "
                   f"{p_holm:.3f} | [{f1(naive['low'])}, {f1(naive['high'])}] | {naive['above']} / {naive['below']} |")
    return out


def spread(g: Grouping) -> list[str]:
    """The 95 % half-widths of the paired AP differences with SeqLoRA (order as the unit), the t
    quantile behind them, and KIFLoRA's BWT itself over orders."""
    (ref, _) = _arm(g, "seqlora")
    diffs = [sequence_diff(g, a, ref, "AP") for a in g.runs if a != ref]
    halves = [d["half"] for d in diffs if d["half"] is not None]
    df = max(d["n"] for d in diffs) - 1
    (k, _) = _arm(g, KIFLORA)
    bwt = sequence_paired({o: [r["BWT"] for r in s.values()] for o, s in g.runs[k].items()})
    return ["| what | value |", "|---|---|",
            f"| half-width of ΔAP vs seqlora [95 %], order as unit, over the methods (min - max) "
            f"| {u1(min(halves))} - {u1(max(halves))} |",
            f"| t(0.975, {df}), the half-width in standard errors of the order means | {t_quantile(0.975, df):.2f} |",
            f"| {KIFLORA} BWT itself, order as unit: mean [95 % CI] | {ci1(bwt)} |"]


def main(grid: str, ablations: str, withdrawn: str) -> str:
    g = group_runs([load_run(d) for d in find_runs([grid, ablations])])
    parts = ["# The numbers the README's Evidence section reads",
             "Made by `python scripts/evidence_numbers.py " + " ".join((grid, ablations, withdrawn))
             + "` from the committed results.json files; one decimal. Means over orders are means of the "
             "per-order means over seeds.",
             "## Compute (timings.total of each run)", "\n".join(compute_table([grid, ablations, withdrawn])),
             "## Per method", "\n".join(method_table(g)),
             "## Paired comparisons, the task order as the unit",
             "Per order, the mean of the differences over its two seeds; then mean and 95 % Student "
             "t-interval over the 3 orders (2 degrees of freedom). p: two-sided, of the same t-test. Holm p: "
             "adjusted over this table's comparisons. The naive interval (6 pairs as independent, 5 degrees "
             "of freedom) is shown only to show what the unit changes.",
             "\n".join(comparison_table(g)), "## Noise", "\n".join(spread(g))]
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: python scripts/evidence_numbers.py GRID_DIR ABLATIONS_DIR WITHDRAWN_DIR", file=sys.stderr)
        sys.exit(2)
    try:
        sys.stdout.write(main(*sys.argv[1:]))
    except KifError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
