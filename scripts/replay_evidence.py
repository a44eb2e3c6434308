"""The replay-evidence table of issue 28 (configs/replay-evidence/sweep.yaml), from the cells'
results.json files alone.

    python scripts/replay_evidence.py docs/results/replay-evidence docs/results/replay-evidence/mixed
    python scripts/replay_evidence.py --before-replay docs/results/replay-evidence/before-replay

For each pair (a method with generative replay, the same method without) and task order: AP and
BWT of both arms, their difference, and what the replay arm's generator kept per task ("kept of
asked", from ``per_task[].pseudo_fill``; a memory written after the sequence's last task is never
replayed and is marked so). Then, per pair, the mean difference over the orders with its 95 %
Student t-interval (the order is the unit, df = orders − 1) and Holm's adjustment over the pair ×
metric family, in the words of kif.stats. Only orders where both arms finished count; while a
pair has fewer than the sweep's 3 orders its line says "interim". The extra arm of
configs/replay-evidence/mixed.yaml (kiflora-m replayed as the authors' code does), when its folder
is given, is set against kiflora and against kiflora-m in a family of its own (its own Holm), so
that it does not change the three pairs' adjustment.

``--before-replay DIR``: what KIF-M's replay stage itself did. DIR holds, per cell and task
folder, the predictions of the model before the stage (``adapter_fused/<task>.jsonl``) and after
it (``adapter/<task>.jsonl``) on the earlier tasks, as ``scripts/score_adapter.py`` writes them;
the table gives both scores, their difference and the most frequent prediction after the stage.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kif.stats import holm, holm_word, interval_word, t_interval  # noqa: E402

PAIRS = [("kiflora-m", "kiflora"), ("lfpt5", "lfpt5-noreplay"), ("sapt", "sapt-noreplay")]
EXTRA = [("kiflora-m-mixed", "kiflora"), ("kiflora-m-mixed", "kiflora-m")]  # mixed.yaml, if given
ORDERS = ["o1", "o2", "o3"]
METRICS = ["AP", "BWT"]


def load(folders: list[Path]) -> dict[tuple[str, str], dict]:
    """(arm, order) -> results.json of every finished cell named <arm>_<order>_seed1 (the sweep's
    one seed; the folders of earlier commits, ``at-<commit>/``, are one level down and not read)."""
    runs = {}
    for folder in folders:
        for res in sorted(folder.glob("*_o*_seed1/results.json")):
            r = json.loads(res.read_text())
            if r.get("finished"):
                arm, order, _ = res.parent.name.rsplit("_", 2)
                if (arm, order) in runs:
                    raise SystemExit(f"replay_evidence: {res.parent.name} found twice")
                runs[(arm, order)] = r
    return runs


def memories(run: dict) -> str:
    """'task kept/asked' for every memory the generator wrote, in the order written; '-' for none.
    A memory of task k is written after task k (kiflora-m, sapt: the one written after the last
    task is never replayed) or, for earlier tasks, before task k (lfpt5: "before <task k>")."""
    last = len(run["tasks"]) - 1
    out = []
    for k, entry in enumerate(run["per_task"]):
        before = []
        for task, fill in (entry.get("pseudo_fill") or {}).items():
            text = f"{task} {fill['kept']}/{fill['requested']}"
            if task != entry.get("task"):
                before.append(text)
            else:
                out.append(text + (" (not replayed)" if k == last else ""))
        if before:
            out.append(f"before {entry.get('task')}: {', '.join(before)}")
    return "; ".join(out) or "-"


def analyse(runs: dict) -> dict:
    rows, comparisons = [], []
    has_extra = any(arm == EXTRA[0][0] for arm, _ in runs)
    for family, pairs in (("replay", PAIRS), ("extra", EXTRA if has_extra else [])):
        mine = []
        for a, b in pairs:
            done = [o for o in ORDERS if (a, o) in runs and (b, o) in runs]
            pair_rows = []
            for o in done:
                ra, rb = runs[(a, o)], runs[(b, o)]
                pair_rows.append({"pair": (a, b), "order": o, "memory": memories(ra),
                                  **{m: (ra[m], rb[m], ra[m] - rb[m]) for m in METRICS}})
            rows += pair_rows
            for m in METRICS:
                mine.append({"family": family, "a": a, "b": b, "metric": m, "orders": done,
                             **t_interval([r[m][2] for r in pair_rows])})
        # Holm over the whole planned family: a comparison without a p yet counts as p = 1 (it cannot
        # be rejected), so the others are adjusted for all of them, not only for those already in
        padded = holm([1.0 if c["p"] is None else c["p"] for c in mine])
        for c, adj in zip(mine, padded):
            c["p_holm"] = None if c["p"] is None else adj
        comparisons += mine
    return {"rows": rows, "comparisons": comparisons}


def _num(x, fmt="+.2f") -> str:
    return "-" if x is None else format(x, fmt)


def markdown(result: dict) -> str:
    lines = ["| A (replay) | B | order | AP A | AP B | Δ AP | BWT A | BWT B | Δ BWT "
             "| A's memories (kept/asked) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        (a, b), cells = r["pair"], [f"{r[m][0]:.2f} | {r[m][1]:.2f} | {r[m][2]:+.2f}" for m in METRICS]
        lines.append(f"| {a} | {b} | {r['order']} | {' | '.join(cells)} | {r['memory']} |")
    lines += ["", "| family | comparison | metric | orders | mean diff | 95 % interval | p | Holm p | interval says "
              "| Holm says |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in result["comparisons"]:
        n = len(c["orders"])
        label = f"{n}" + ("" if n == len(ORDERS) else f" (interim, {n} of {len(ORDERS)})")
        above, below = f"{c['a']} > {c['b']}", f"{c['a']} < {c['b']}"
        span = "-" if c["half"] is None else f"[{c['low']:+.2f}, {c['high']:+.2f}]"
        says = interval_word(c, above, below) if n >= 2 else "no interval (n < 2)"
        lines.append(f"| {c['family']} | {c['a']} − {c['b']} | {c['metric']} | {label} | {_num(c['mean'])} | {span} | "
                     f"{_num(c['p'], '.3f')} | {_num(c['p_holm'], '.3f')} | {says} | "
                     f"{holm_word(c['p_holm'], c['mean'], 0.05, above, below)} |")
    return "\n".join(lines) + "\n"


def _score(path: Path) -> tuple[float, list[str], list[str]]:
    """Mean score (the task's score for ungrouped tasks such as these), predictions, example ids."""
    if not path.is_file():
        raise SystemExit(f"replay_evidence: {path} is missing")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    if not rows:
        raise SystemExit(f"replay_evidence: {path} is empty")
    return sum(r["score"] for r in rows) / len(rows), [r["prediction"] for r in rows], [r.get("id") for r in rows]


def before_replay(folder: Path) -> str:
    """One row per (cell, stage, earlier task): score before and after the replay stage."""
    lines = ["| cell | replay stage after | task | before | after | Δ | most frequent prediction after |",
             "|---|---|---|---|---|---|---|"]
    deltas = []
    for before in sorted(folder.glob("*/tasks/*/adapter_fused/*.jsonl")):
        after = before.parent.parent / "adapter" / before.name
        (b, _, ids_b), (a, preds, ids_a) = _score(before), _score(after)
        if ids_b != ids_a:
            raise SystemExit(f"replay_evidence: {before} and {after} score different examples")
        top = Counter(preds).most_common(1)[0][0]  # ties: the first predicted
        deltas.append(a - b)
        lines.append(f"| {before.parents[3].name} | {before.parents[1].name} | {before.stem} | {b:.1f} | {a:.1f} | "
                     f"{a - b:+.1f} | {top} ({preds.count(top)} of {len(preds)}) |")
    if not deltas:
        raise SystemExit(f"replay_evidence: no */tasks/*/adapter_fused/*.jsonl under {folder}")
    down = sum(d < 0 for d in deltas)
    lines.append(f"\n{len(deltas)} scores: {down} fell, {len(deltas) - down} did not; mean change "
                 f"{sum(deltas) / len(deltas):+.1f} points.")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", type=Path, nargs="+", help="the sweep's folder (and the extra arm's)")
    p.add_argument("--before-replay", action="store_true", help="one folder of score_adapter.py predictions")
    args = p.parse_args()
    if args.before_replay:
        if len(args.folders) != 1:
            p.error("--before-replay reads one folder")
        print(before_replay(args.folders[0]), end="")
    else:
        print(markdown(analyse(load(args.folders))), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
