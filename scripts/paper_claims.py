"""The paper's claims, tested on a sweep: each claim "A beats B" as the paired difference
A − B on the same (order, seed), mean with its 95 % Student t-interval, and a verdict.

    python scripts/paper_claims.py docs/results/evidence docs/results/evidence-ablations

Verdicts: "holds" (the interval is above 0), "reversed" (below 0), "not resolved" (it
contains 0: the seeds cannot tell). For "A ≥ B", an interval containing 0 is "holds (tie)".
"KIFLoRA's BWT near 0" is KIFLoRA's BWT itself over (order, seed), with its interval.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kif.report.aggregate import group_runs, t_interval  # noqa: E402
from kif.report.build import find_runs  # noqa: E402
from kif.report.tables import load_run  # noqa: E402

# (A, B, metric, relation); an arm is "method" or "method [key=value]" as the report labels it,
# and the grid's KIFLoRA is the one without fusion=static
CLAIMS = (
    ("kiflora", "kif", "AP", "≥"), ("kif", "olora", "AP", ">"), ("olora", "inclora", "AP", ">"),
    ("inclora", "ewc", "AP", ">"), ("ewc", "seqlora", "AP", ">"),
    ("kiflora", "seqlora", "BWT", ">"),
    ("kiflora", "kiflora fusion=static", "AP", ">"), ("kiflora", "weight-ensemble", "AP", ">"),
)


def _arm(arms: dict, spec: str):
    """The arm named by ``spec``: its method, and a ``key=value`` its variant must (or, when
    ``spec`` is a bare method, must not) mention as fusion=static."""
    method, _, want = spec.partition(" ")
    found = [a for a in arms if a[2] == method and ((want in a[3]) if want else "fusion=static" not in a[3])]
    return found[0] if len(found) == 1 else None


def _verdict(ci: dict, relation: str) -> str:
    if ci["half"] is None:
        return "one pair: no interval"
    if ci["low"] > 0:
        return "holds"
    if ci["high"] < 0:
        return "reversed"
    return "holds (tie)" if relation == "≥" else "not resolved"


def claims(runs: list[dict]) -> list[dict]:
    g = group_runs(runs)
    arms = g["arms"]
    out = []
    for a_spec, b_spec, metric, relation in CLAIMS:
        a, b = _arm(arms, a_spec), _arm(arms, b_spec)
        row = {"claim": f"{a_spec} {relation} {b_spec} on {metric}", "pairs": 0, "diff": None, "verdict": "no runs"}
        if a is not None and b is not None:
            diffs = [arms[a][o][s][metric] - arms[b][o][s][metric] for o in arms[a] if o in arms[b]
                     for s in arms[a][o] if s in arms[b][o] and not isinstance(s, tuple)
                     and arms[a][o][s].get(metric) is not None and arms[b][o][s].get(metric) is not None]
            if diffs:
                ci = t_interval(diffs)
                row.update(pairs=len(diffs), diff=ci, verdict=_verdict(ci, relation))
        out.append(row)
    k = _arm(arms, "kiflora")
    if k is not None:
        bwt = [r["BWT"] for seeds in arms[k].values() for r in seeds.values() if r.get("BWT") is not None]
        ci = t_interval(bwt) if bwt else None
        out.append({"claim": "kiflora BWT near 0 (value, not a difference)", "pairs": len(bwt), "diff": ci,
                    "verdict": "-" if ci is None or ci["half"] is None else
                    ("contains 0" if ci["low"] <= 0 <= ci["high"] else "excludes 0")})
    return out


def table(rows: list[dict]) -> str:
    def ci(s):
        if s is None:
            return "-"
        return f"{s['mean']:+.2f}" + ("" if s["half"] is None else f" [{s['low']:+.2f}, {s['high']:+.2f}]")
    lines = ["| claim (paper) | pairs | mean [95 % CI] | verdict |", "|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['pairs']} | {ci(r['diff'])} | {r['verdict']} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(claims([load_run(d) for d in find_runs(sys.argv[1:])])))
