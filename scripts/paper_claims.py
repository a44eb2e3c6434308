"""The paper's claims, tested on a sweep: each claim "A beats B" as the paired difference
A − B with the task order (sequence) as the unit, seeds nested in it: per order the mean of
the differences on its seeds, then the mean over orders with its 95 % Student t-interval
(n_orders − 1 degrees of freedom; :func:`kif.stats.sequence_paired`). With one seed per
order this is the plain paired t.

    python scripts/paper_claims.py runs/evidence runs/evidence-ablations

(or the published copies under docs/results/). Two verdicts side by side:
- per comparison, from its 95 % interval: "holds" (above 0), "reversed" (below 0), "not
  resolved" (it contains 0: the orders cannot tell, whichever the relation);
- family-wise: the same words from Holm's adjustment of the two-sided p-values over the
  family of all the claims that are differences (α = 0.05).
"KIFLoRA's BWT near 0" is KIFLoRA's BWT itself, per order the mean over its seeds, with its
interval over orders (not in the Holm family). An arm is named by its method and, where the claim depends on it, its fusion
("kiflora fusion=adaptive" is the paper's KIFLoRA wherever it ran: the setting is read from
each run's config.yaml); a bare method name is the arm that stands for it (`reference_arm`).
One benchmark and model at a time.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kif.errors import KifError  # noqa: E402
from kif.report.aggregate import sequence_diff  # noqa: E402
from kif.report.build import find_runs  # noqa: E402
from kif.report.grouping import Grouping, group_runs, reference_arm  # noqa: E402
from kif.report.tables import load_run  # noqa: E402
from kif.stats import holm, holm_word, interval_word, sequence_paired  # noqa: E402

# (A, B, metric, relation)
KIFLORA, KIF = "kiflora fusion=adaptive", "kif fusion=static"
CLAIMS = (
    (KIFLORA, KIF, "AP", "≥"), (KIF, "olora", "AP", ">"), ("olora", "inclora", "AP", ">"),
    ("inclora", "ewc", "AP", ">"), ("ewc", "seqlora", "AP", ">"),
    (KIFLORA, "seqlora", "BWT", ">"),
    (KIFLORA, "kiflora fusion=static", "AP", ">"), (KIFLORA, "weight-ensemble", "AP", ">"),
)


def _arm(g: Grouping, spec: str):
    """(arm, why not): the arm ``spec`` names, "method" (its reference arm) or "method
    key=value" (the one arm of that method whose config key ``key``, or ``….key``, has that
    value), or (None, "no runs" / "ambiguous arm")."""
    method, _, setting = spec.partition(" ")
    mine = [a for a in g.runs if a.method == method]
    if not mine:
        return None, "no runs"
    if not setting:
        ref = reference_arm(g, method)
        return (ref, None) if ref is not None else (None, "ambiguous arm")
    key, _, want = setting.partition("=")
    found = [a for a in mine if any((k == key or k.endswith("." + key)) and str(v) == want
                                    for k, v in g.config[a].items())]
    if len(found) == 1:
        return found[0], None
    return None, "ambiguous arm" if found else "no runs"


WORDS = {"above": "holds", "below": "reversed"}


def _verdict(ci: dict) -> str:
    if ci["half"] is None:
        return "one order: no interval"
    return interval_word(ci, WORDS["above"], WORDS["below"])


def claims(runs: list[dict]) -> list[dict]:
    g = group_runs(runs)
    arms = g.runs
    if len({a.where for a in arms}) > 1:
        raise KifError("runs of several benchmarks or models: give the claims one of them at a time")
    out = []
    for a_spec, b_spec, metric, relation in CLAIMS:
        (a, why_a), (b, why_b) = _arm(g, a_spec), _arm(g, b_spec)
        row = {"claim": f"{a_spec} {relation} {b_spec} on {metric}", "orders": 0, "pairs": 0, "diff": None,
               "verdict": why_a or why_b, "holm": "-"}
        if a is not None and b is not None:
            row["verdict"] = "no pairs"
            ci = sequence_diff(g, a, b, metric)
            if ci["pairs"]:
                row.update(orders=ci["n"], pairs=ci["pairs"], diff=ci, verdict=_verdict(ci))
        out.append(row)
    family = [r for r in out if r["diff"] is not None]  # the claims that are differences
    for r, p in zip(family, holm([r["diff"]["p"] for r in family])):
        r["diff"]["p_holm"] = p
        r["holm"] = holm_word(p, r["diff"]["mean"], 0.05, WORDS["above"], WORDS["below"])
    k, _ = _arm(g, KIFLORA)
    if k is not None:
        by_order = {g.order_labels[o]: [r["BWT"] for r in seeds.values() if r.get("BWT") is not None]
                    for o, seeds in arms[k].items()}
        ci = sequence_paired(by_order) if any(by_order.values()) else None
        out.append({"claim": f"{KIFLORA} BWT near 0 (value, not a difference)",
                    "orders": 0 if ci is None else ci["n"], "pairs": 0 if ci is None else ci["pairs"], "diff": ci,
                    "verdict": "-" if ci is None or ci["half"] is None else
                    ("contains 0" if ci["low"] <= 0 <= ci["high"] else "excludes 0"), "holm": "-"})
    return out


def table(rows: list[dict]) -> str:
    def ci(s):
        if s is None:
            return "-"
        return f"{s['mean']:+.2f}" + ("" if s["half"] is None else f" [{s['low']:+.2f}, {s['high']:+.2f}]")

    def p(s, key):
        return "-" if s is None or s.get(key) is None else f"{s[key]:.3f}"
    lines = ["| claim (paper) | orders (pairs) | mean [95 % CI] | p | verdict | Holm p | verdict, family-wise (Holm) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['orders']} ({r['pairs']}) | {ci(r['diff'])} | {p(r['diff'], 'p')} | {r['verdict']} "
              f"| {p(r['diff'], 'p_holm')} | {r['holm']} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python scripts/paper_claims.py RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        sys.exit(2)
    try:
        print(table(claims([load_run(d) for d in find_runs(sys.argv[1:])])))
    except KifError as exc:  # a missing or malformed results.json: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
