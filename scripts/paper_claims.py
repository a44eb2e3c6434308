"""The paper's claims, tested on a sweep: each claim "A beats B" as the paired difference
A − B on the same (order, seed), mean with its 95 % Student t-interval, and a verdict.

    python scripts/paper_claims.py runs/evidence runs/evidence-ablations

(or the published copies under docs/results/). Verdicts: "holds" (the interval is above 0),
"reversed" (below 0), "not resolved" (it contains 0: the seeds cannot tell, whichever the
relation). "KIFLoRA's BWT near 0" is KIFLoRA's BWT itself over (order, seed), with its
interval. An arm is named by its method and, where the claim depends on it, its fusion
("kiflora fusion=adaptive" is the paper's KIFLoRA wherever it ran: the setting is read from
each run's config.yaml); a bare method name is the arm that stands for it (`reference_arm`).
One benchmark and model at a time.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kif.errors import KifError  # noqa: E402
from kif.report.aggregate import group_runs, paired_diffs, paired_runs, reference_arm, t_interval  # noqa: E402
from kif.report.build import find_runs  # noqa: E402
from kif.report.tables import load_run  # noqa: E402

# (A, B, metric, relation)
KIFLORA, KIF = "kiflora fusion=adaptive", "kif fusion=static"
CLAIMS = (
    (KIFLORA, KIF, "AP", "≥"), (KIF, "olora", "AP", ">"), ("olora", "inclora", "AP", ">"),
    ("inclora", "ewc", "AP", ">"), ("ewc", "seqlora", "AP", ">"),
    (KIFLORA, "seqlora", "BWT", ">"),
    (KIFLORA, "kiflora fusion=static", "AP", ">"), (KIFLORA, "weight-ensemble", "AP", ">"),
)


def _arm(g: dict, spec: str):
    """(arm, why not): the arm ``spec`` names, "method" (its reference arm) or "method
    key=value" (the one arm of that method whose config key ``key``, or ``….key``, has that
    value), or (None, "no runs" / "ambiguous arm")."""
    method, _, setting = spec.partition(" ")
    mine = [a for a in g["arms"] if a[2] == method]
    if not mine:
        return None, "no runs"
    if not setting:
        ref = reference_arm(g, method)
        return (ref, None) if ref is not None else (None, "ambiguous arm")
    key, _, want = setting.partition("=")
    found = [a for a in mine if any((k == key or k.endswith("." + key)) and str(v) == want
                                    for k, v in g["arm_config"][a].items())]
    if len(found) == 1:
        return found[0], None
    return None, "ambiguous arm" if found else "no runs"


def _verdict(ci: dict) -> str:
    if ci["half"] is None:
        return "one pair: no interval"
    if ci["low"] > 0:
        return "holds"
    if ci["high"] < 0:
        return "reversed"
    return "not resolved"


def claims(runs: list[dict]) -> list[dict]:
    g = group_runs(runs)
    arms = g["arms"]
    if len({a[:2] for a in arms}) > 1:
        raise KifError("runs of several benchmarks or models: give the claims one of them at a time")
    out = []
    for a_spec, b_spec, metric, relation in CLAIMS:
        (a, why_a), (b, why_b) = _arm(g, a_spec), _arm(g, b_spec)
        row = {"claim": f"{a_spec} {relation} {b_spec} on {metric}", "pairs": 0, "diff": None,
               "verdict": why_a or why_b}
        if a is not None and b is not None:
            row["verdict"] = "no pairs"
            diffs = paired_diffs(paired_runs(g, a, b), metric)
            if diffs:
                ci = t_interval(diffs)
                row.update(pairs=len(diffs), diff=ci, verdict=_verdict(ci))
        out.append(row)
    k, _ = _arm(g, KIFLORA)
    if k is not None:
        bwt = [r["BWT"] for seeds in arms[k].values() for r in seeds.values() if r.get("BWT") is not None]
        ci = t_interval(bwt) if bwt else None
        out.append({"claim": f"{KIFLORA} BWT near 0 (value, not a difference)", "pairs": len(bwt), "diff": ci,
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
    if len(sys.argv) < 2:
        print("usage: python scripts/paper_claims.py RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        sys.exit(2)
    try:
        print(table(claims([load_run(d) for d in find_runs(sys.argv[1:])])))
    except KifError as exc:  # a missing or malformed results.json: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
