"""The pre-registered analysis of evidence v2 (docs/results/evidence-v2/PLAN.md), as code.

    python scripts/evidence_v2.py docs/results/evidence-v2            # verdicts (markdown)
    python scripts/evidence_v2.py docs/results/evidence-v2 docs/results/evidence-v2-ablations
                                                    # with the static-fusion arm, once it has run
    python scripts/evidence_v2.py --design                             # the plan's power numbers

The unit is the task sequence: one run per method and sequence (one seed), so each
comparison is a paired difference per sequence, d_s = M_A(s) - M_B(s). For every comparison:
mean, sd, 95 % Student t-interval (df = n - 1), two-sided p; Holm's step-down adjustment within
each family (primary: 2 comparisons; secondary: the rest); the exact Wilcoxon signed-rank p as
a robustness check; and for the comparisons with an equivalence margin, TOST (two one-sided
t-tests at 0.05, i.e. the 90 % interval inside the margin). Only sequences that are complete
for every method of the plan count. Verdict words (fixed in the plan):
  Holm-adjusted p < 0.05          "A > B" / "A < B"
  90 % interval inside ±margin    "as good as (within ±margin)"   (margins: primary AP only)
  otherwise                       "not resolved"
Where the t-test's p and the Wilcoxon p fall on different sides of 0.05, the verdict says so; a
verdict over fewer than the plan's 14 sequences is labelled "interim, n = k of 14"; a primary
comparison not resolved at 14 sequences names the difference the design detects with 80 % power
(the plan's MDE). The table shows each difference's sd (the plan reports it) and, for the
comparisons with a margin, the 90 % interval the equivalence verdict reads. Sequences left out for
a missing or unfinished cell, and comparisons without two sequences (the static arm before its
sweep ran), are named under the tables.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path
from statistics import fmean, stdev

from kif.stats import holm, t_cdf, t_quantile

METHODS = ["seqlora", "kiflora", "kif", "weight-ensemble", "ewc"]
PLANNED_SEQUENCES = 14  # PLAN.md; configs/evidence-v2/sweep.yaml (a test checks the two agree)
# (A, B, metric, equivalence margin or None)
PRIMARY = [("kif", "weight-ensemble", "AP", 2.0), ("kiflora", "seqlora", "AP", 2.0)]
SECONDARY = [
    ("kif", "weight-ensemble", "BWT", None), ("kiflora", "seqlora", "BWT", None),
    ("kif", "weight-ensemble", "plasticity", None), ("kiflora", "seqlora", "plasticity", None),
    ("kiflora", "kif", "AP", None), ("kiflora", "weight-ensemble", "AP", None),
    ("kif", "seqlora", "AP", None), ("ewc", "seqlora", "AP", None),
    ("kiflora", "kiflora-static", "AP", None),  # adaptive vs static: the ablation sweep, if it ran
]


ASSUMED_SD = {("kif", "weight-ensemble"): 2.0, ("kiflora", "seqlora"): 6.0}  # PLAN.md, "What the design can detect"


def plasticity(run: dict) -> float:
    """Mean score on each task right after learning it: mean_k a[k][k]."""
    m = run["matrix"]
    return fmean(m[k][k] for k in range(len(run["tasks"])))


def metric(run: dict, name: str) -> float:
    return plasticity(run) if name == "plasticity" else float(run[name])


def load(folders: list[Path]) -> dict[tuple[str, str], dict]:
    """(method, sequence) -> results.json of every finished cell named <method>_<seq>_seed1 (the
    plan's one seed); a cell found twice (two folders holding the same cell) is an error, not a
    silent choice."""
    runs, where = {}, {}
    for folder in folders:
        for res in sorted(folder.glob("*_s*_seed1/results.json")):
            r = json.loads(res.read_text())
            if not r.get("finished"):
                continue
            method, seq, _ = res.parent.name.rsplit("_", 2)
            if (method, seq) in runs:
                raise SystemExit(f"evidence_v2: {res.parent} and {where[(method, seq)]} are the same cell")
            runs[(method, seq)], where[(method, seq)] = r, res.parent
    return runs


def complete_sequences(runs: dict) -> list[str]:
    seqs = sorted({s for _, s in runs})
    return [s for s in seqs if all((m, s) in runs for m in METHODS)]


def wilcoxon_exact(d: list[float]) -> float | None:
    """Two-sided exact signed-rank p (zeros dropped, tied |d| get average ranks)."""
    d = [x for x in d if x != 0]
    n = len(d)
    if n == 0:
        return None
    order = sorted(range(n), key=lambda i: abs(d[i]))
    ranks = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and abs(d[order[j + 1]]) == abs(d[order[i]]):
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    w = sum(r for r, x in zip(ranks, d) if x > 0)
    centre = sum(ranks) / 2
    extreme = sum(1 for signs in itertools.product((0, 1), repeat=n)
                  if abs(sum(r for r, s in zip(ranks, signs) if s) - centre) >= abs(w - centre) - 1e-9)
    return extreme / 2 ** n


def compare(d: list[float], margin: float | None) -> dict:
    n, mean = len(d), fmean(d)
    sd = stdev(d) if n > 1 else float("nan")
    se = sd / math.sqrt(n)
    t95, t90 = t_quantile(0.975, n - 1), t_quantile(0.95, n - 1)
    p = 2 * (1 - t_cdf(abs(mean) / se, n - 1)) if se > 0 else (0.0 if mean else 1.0)
    out = {"n": n, "mean": mean, "sd": sd, "low": mean - t95 * se, "high": mean + t95 * se,
           "p": p, "wilcoxon_p": wilcoxon_exact(d), "margin": margin}
    if margin is not None:
        out["low90"], out["high90"] = mean - t90 * se, mean + t90 * se
        out["equivalent"] = -margin < out["low90"] and out["high90"] < margin
    return out


def verdict(c: dict, a: str, b: str, n: int) -> str:
    """The plan's verdict words for one comparison over n sequences (interim while n < 14), and,
    for a primary comparison not resolved at the end, the design's minimum detectable difference
    (PLAN.md: "the report will say that this design could not detect it")."""
    if c["p_holm"] < 0.05:
        word = f"{a} {'>' if c['mean'] > 0 else '<'} {b}"
    elif c.get("equivalent"):
        word = f"as good as (within ±{c['margin']:g})"
    else:
        word = "not resolved"
    w = c["wilcoxon_p"]
    if w is not None and (c["p"] < 0.05) != (w < 0.05):  # the plan: say so next to the verdict
        word += f" (t p {'<' if c['p'] < 0.05 else '≥'} 0.05, Wilcoxon p {'<' if w < 0.05 else '≥'} 0.05)"
    if word.startswith("not resolved") and c.get("margin") is not None and n >= PLANNED_SEQUENCES:
        word += (f"; at its {PLANNED_SEQUENCES} sequences this design has 80 % power (α 0.025) only for a true "
                 f"difference of {mde(ASSUMED_SD[(a, b)], 0.025):.2f} points or more")
    if n < PLANNED_SEQUENCES:
        word = f"interim, n = {n} of {PLANNED_SEQUENCES}: {word}"
    return word


def analyse(runs: dict) -> dict:
    seqs = complete_sequences(runs)
    families, skipped = {}, []
    for family, rows in (("primary", PRIMARY), ("secondary", SECONDARY)):
        done = []
        for a, b, name, margin in rows:
            pairs = [s for s in seqs if (a, s) in runs and (b, s) in runs]
            if len(pairs) < 2:  # e.g. the static-fusion arm before its sweep ran: named, not computed
                skipped.append(f"{a} − {b} ({name}), {len(pairs)} sequence(s) with both")
                continue
            d = [metric(runs[(a, s)], name) - metric(runs[(b, s)], name) for s in pairs]
            done.append({"a": a, "b": b, "metric": name, **compare(d, margin)})
        for c, adj in zip(done, holm([c["p"] for c in done])):
            c["p_holm"] = adj
            c["verdict"] = verdict(c, c["a"], c["b"], c["n"])
        families[family] = done
    missing = {s: [m for m in METHODS if (m, s) not in runs] for s in sorted({s for _, s in runs}) if s not in seqs}
    return {"sequences": seqs, "families": families, "skipped": skipped, "incomplete": missing}


def markdown(result: dict) -> str:
    seqs = result["sequences"]
    lines = [f"Sequences complete for all {len(METHODS)} methods: {len(seqs)} ({', '.join(seqs)}).", ""]
    if result["incomplete"]:
        lines += ["Left out, not complete (missing or unfinished cells): "
                  + "; ".join(f"{s} ({', '.join(m)})" for s, m in result["incomplete"].items()) + ".", ""]
    for family, rows in result["families"].items():
        tost = any(c["margin"] is not None for c in rows)  # the equivalence test's 90 % interval
        lines += [f"### {family.capitalize()}", "",
                  "| comparison | metric | n | mean diff | sd | 95 % interval | "
                  + ("90 % interval (margin) | " if tost else "") + "p | Holm p | Wilcoxon p | verdict |",
                  "|---|---|---|---|---|---|" + ("---|" if tost else "") + "---|---|---|---|"]
        for c in rows:
            w = "-" if c["wilcoxon_p"] is None else f"{c['wilcoxon_p']:.3f}"
            ninety = (f"[{c['low90']:+.2f}, {c['high90']:+.2f}] (±{c['margin']:g}) | " if c["margin"] is not None
                      else "- | ") if tost else ""
            lines.append(f"| {c['a']} − {c['b']} | {c['metric']} | {c['n']} | {c['mean']:+.2f} | {c['sd']:.2f} | "
                         f"[{c['low']:+.2f}, {c['high']:+.2f}] | {ninety}{c['p']:.3f} | {c['p_holm']:.3f} | {w} | "
                         f"{c['verdict']} |")
        lines.append("")
    if result["skipped"]:  # the static-fusion arm's cells are read from the ablation sweep's folder
        lines += ["Not computed: " + "; ".join(result["skipped"]) + ".", ""]
    return "\n".join(lines)


def mde(sd: float, alpha: float, n: int = PLANNED_SEQUENCES, power: float = 0.8) -> float:
    """Minimum detectable mean difference of a paired t-test over n sequences (normal-theory
    approximation with t quantiles): (t(1 − α/2) + t(power)) · sd / √n."""
    return (t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


def design(alpha: float = 0.05) -> str:
    """The plan's power table: each primary comparison's MDE at its assumed sd, for the Holm
    worst case α/2 and the best case α."""
    rows = []
    for label, pair in (("KIF − ensemble AP", ("kif", "weight-ensemble")), ("KIFLoRA − SeqLoRA AP", ("kiflora", "seqlora"))):
        sd = ASSUMED_SD[pair]
        for level in (alpha / 2, alpha):
            rows.append(f"{label}: assumed sd {sd:g}, alpha {level:g}: MDE {mde(sd, level):.2f} points")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="*", type=Path)
    p.add_argument("--design", action="store_true", help="print the plan's power computation")
    p.add_argument("--json", type=Path, help="also write the analysis as JSON")
    args = p.parse_args()
    if args.design:
        print(design())
        return 0
    result = analyse(load(args.folders))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
