"""One row per run directory, from its results.json alone: tasks done, AP, FWT, BWT (eq. 18-20),
the mean score of each task right after it is learned (the matrix diagonal a_jj: plasticity),
training, evaluation and whole-run seconds, and optimizer steps skipped for a non-finite gradient.

    python scripts/runs_table.py docs/results/gpu-h200-long-sequence-15/{seqlora,kiflora,kif,weight-ensemble,inclora,olora,mtl}

The run is named by its directory. Prints a Markdown table (2 decimals, 1 for plasticity,
whole seconds); '-' where a run has no such number (MTL has no FWT, BWT or diagonal; a run
that stopped early has no AP or BWT over the whole sequence).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kif.errors import KifError  # noqa: E402
from kif.results import load_results  # noqa: E402

HEADER = ("| method | tasks done | AP | FWT | BWT | mean score right after learning | train s | eval s "
          "| run s | skipped steps |\n|---|---|---|---|---|---|---|---|---|---|")


def _num(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def row(run_dir: Path) -> dict:
    r = load_results(run_dir)
    k = len(r.tasks)
    done = r.tasks_completed or len(r.matrix)
    diag = [] if r.joint else [r.matrix[j][j] for j in range(len(r.matrix)) if r.matrix[j][j] is not None]
    finished_seq = r.joint or done >= k  # AP/BWT of a sequence that stopped early are not the run's
    sums = {key: sum(t.get(key) or 0 for t in r.per_task) for key in ("train_s", "eval_s", "skipped_steps")}
    return {"name": run_dir.name, "done": f"{1 if r.joint else done}/{1 if r.joint else k}",
            "AP": r.AP if finished_seq else None, "FWT": r.FWT, "BWT": r.BWT if finished_seq else None,
            "plasticity": sum(diag) / len(diag) if diag else None, **sums, "total": r.timings.get("total")}


def table(run_dirs: list[str]) -> str:
    lines = [HEADER]
    for d in run_dirs:
        x = row(Path(d))
        lines.append(f"| {x['name']} | {x['done']} | {_num(x['AP'])} | {_num(x['FWT'])} | {_num(x['BWT'])} | "
                     f"{_num(x['plasticity'], 1)} | {_num(x['train_s'], 0)} | {_num(x['eval_s'], 0)} | "
                     f"{_num(x['total'], 0)} | {x['skipped_steps']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python scripts/runs_table.py RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        sys.exit(2)
    try:
        print(table(sys.argv[1:]))
    except KifError as exc:  # a missing or malformed results.json: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
