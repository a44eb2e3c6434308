"""The README's quickstart table, from the quickstart runs' results.json (one run directory per
method, e.g. `kif run configs/quickstart.yaml -o runs/quickstart-kiflora --set method=kiflora`):

    python scripts/quickstart_table.py runs/quickstart-seqlora runs/quickstart-kif runs/quickstart-kiflora

One row per run: method, AP, FWT, BWT (eq. 18-20; BWT signed), the first task's score after each
task, the second task's score right after it and after the last task, and the run's wall time
(`timings.total`, all resumes together). The README quotes the output between
`<!-- command: ... -->` markers; tests/project/test_readme_results.py reruns the command and compares.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kif.errors import KifError  # noqa: E402
from kif.results import load_results  # noqa: E402

MINUS = "\u2212"  # the README's minus sign


def _signed(x: float) -> str:
    s = f"{x:+.2f}"
    return s.replace("-", MINUS) if not s.startswith("-0.00") else "+0.00"


def _path(values) -> str:
    return " → ".join("-" if v is None else f"{v:.1f}" for v in values)


def table(run_dirs: list[str]) -> str:
    runs = [load_results(d) for d in run_dirs]
    t = runs[0].tasks
    if len(t) < 3 or any(r.tasks != t or r.joint or r.tasks_completed < len(t) for r in runs):
        raise KifError("quickstart_table: give finished sequential runs of one task sequence of 3 or more tasks")
    lines = [f"| method | AP | FWT | BWT | {t[0]} after each task | {t[1]} after it and after {t[-1]} | wall time |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r.method} | {r.AP:.2f} | {r.FWT:.2f} | {_signed(r.BWT)} | "
                     f"{_path(row[0] for row in r.matrix)} | {_path([r.matrix[1][1], r.matrix[-1][1]])} | "
                     f"{r.timings['total']:.0f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python scripts/quickstart_table.py RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        sys.exit(2)
    try:
        print(table(sys.argv[1:]))
    except KifError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
