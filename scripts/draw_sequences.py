"""Draw the evidence-v2 task sequences (docs/results/evidence-v2/PLAN.md) and write their sweep.

    python scripts/draw_sequences.py            # writes configs/evidence-v2/{sweep,ablations}.yaml
    python scripts/draw_sequences.py --check    # exit 1 unless the committed files are what the draw gives

14 sequences of 3 distinct tasks from the 7 Long Sequence tasks that SmolLM2-135M learns.
Balanced by construction: every task appears 6 times in all and exactly twice at each position
(first, second, third), and no two sequences share their task set. Each position's column is a
shuffle of the 7 tasks twice over (random.Random(SEED)); a draw is kept only when every row
has 3 distinct tasks and the rows' task sets are all different, so the first such draw of the
seeded stream is the design. Nothing in the draw looks at any result.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

TASKS = ["sst2", "imdb", "yelp", "amazon", "dbpedia", "agnews", "yahoo"]
N_SEQUENCES, LENGTH, SEED = 14, 3, 20261204
METHODS = ["seqlora", "kiflora", "kif", "weight-ensemble", "ewc"]
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "evidence-v2"


def draw(seed: int = SEED) -> list[list[str]]:
    rng = random.Random(seed)
    copies = N_SEQUENCES * LENGTH // len(TASKS) // LENGTH  # times each task stands at each position
    for _ in range(1_000_000):
        columns = []
        for _ in range(LENGTH):
            col = TASKS * copies
            rng.shuffle(col)
            columns.append(col)
        rows = [list(r) for r in zip(*columns)]
        if all(len(set(r)) == LENGTH for r in rows) and len({frozenset(r) for r in rows}) == len(rows):
            return rows
    raise RuntimeError("no balanced draw found")


def _grid_tasks(rows: list[list[str]]) -> list[str]:
    return [f"    s{i + 1:02d}: [{', '.join(r)}]" for i, r in enumerate(rows)]


def sweep_text(rows: list[list[str]]) -> str:
    lines = [
        "# Evidence v2 (issue 31): 14 independent task sequences x 5 methods, one seed each.",
        "# Written by scripts/draw_sequences.py (do not edit by hand); the analysis is fixed in",
        "# docs/results/evidence-v2/PLAN.md, committed before the first run.",
        "#   kif sweep configs/evidence-v2/sweep.yaml -o runs/evidence-v2     # again: resumes",
        "base: ../quickstart.yaml        # 96 train x 2 epochs, batch 8, lr 1e-3 constant, 200 test",
        "grid:",
        "  tasks:                        # outermost: sequences complete one after another",
        *_grid_tasks(rows),
        f"  method: [{', '.join(METHODS)}]",
        "  seed: [1]",
        "methods:",
        "  ewc:",
        "    method_args: {fisher_samples: 32}   # as in configs/evidence/grid.yaml",
        "",
    ]
    return "\n".join(lines)


def ablations_text(rows: list[list[str]]) -> str:
    lines = [
        "# Evidence v2, secondary: KIFLoRA with static fusion (eq. 15) on the same 14 sequences, to set",
        "# against sweep.yaml's KIFLoRA (adaptive, eq. 16-17). Run only after sweep.yaml is complete.",
        "# Written by scripts/draw_sequences.py (do not edit by hand).",
        "#   kif sweep configs/evidence-v2/ablations.yaml -o runs/evidence-v2-ablations",
        "base: ../quickstart.yaml",
        "grid:",
        "  tasks:",
        *_grid_tasks(rows),
        "  method: {kiflora-static: kiflora}   # label: method",
        "  seed: [1]",
        "methods:",
        "  kiflora:",
        "    method_args: {fusion: static}",
        "",
    ]
    return "\n".join(lines)


def outputs() -> dict[Path, str]:
    rows = draw()
    return {CONFIGS / "sweep.yaml": sweep_text(rows), CONFIGS / "ablations.yaml": ablations_text(rows)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with the committed sweep file")
    files = outputs()
    if p.parse_args().check:
        differ = [str(f) for f, text in files.items() if not f.exists() or f.read_text() != text]
        print(f"differ from the draw: {', '.join(differ)}" if differ else "sweep files match the draw")
        return 1 if differ else 0
    for f, text in files.items():
        f.write_text(text)
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
