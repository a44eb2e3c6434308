"""Table III of ``kif report``: scores on held-out tasks (``eval.unseen``) that no run
trained on. Rows: the zero-shot model (once per model and task set) and each run's method
after its sequence; columns: the categories (Dialog, IE, QA, Sum, SA for
``superni_unseen``) and their average. All numbers are results.json's ``unseen`` record.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..io import atomic_write_text
from .tables import fmt, jsonable

JSON_NAME = "unseen.json"


def _groups(runs: Sequence[dict]) -> dict[tuple, list[dict]]:
    """Runs whose zero-shot row is the same model on the same held-out examples, by
    (model, benchmark, tasks, n_test)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        u = r["unseen"]
        groups.setdefault((str(r.get("model")), u["benchmark"], tuple(u["tasks"]), tuple(sorted(u["n_test"].items()))),
                          []).append(r)
    return groups


def _row(kind: str, run: dict, point: dict | None) -> dict:
    point = point or {}
    return {"row": kind, "model": run.get("model"), "method": run.get("method"), "run": run["run_name"],
            "per_category": point.get("per_category"), "mean": point.get("mean"),
            "per_task": point.get("per_task")}


def unseen_rows(runs: Sequence[dict]) -> list[dict]:
    """Table III's rows, zero-shot rows first (one per group of runs sharing a model and
    held-out examples, taken from the group's first run that has one), then every run
    after its sequence (no scores yet for an unfinished run). Empty: no run has unseen scores."""
    with_unseen = [r for r in runs if r.get("unseen")]
    rows = []
    for grp in _groups(with_unseen).values():
        first = next((r for r in grp if r["unseen"].get("before")), None)
        if first is not None:
            row = _row("zero-shot", first, first["unseen"]["before"])
            # the same model on the same examples: a different row means different evaluation settings
            row["differs"] = [r["run_name"] for r in grp if r["unseen"].get("before")
                              and r["unseen"]["before"]["per_task"] != first["unseen"]["before"]["per_task"]]
            rows.append(row)
    return rows + [_row("after", r, r["unseen"].get("after")) for r in with_unseen]


def categories_of(runs: Sequence[dict]) -> list[str]:
    """Column order: the categories as the runs' records list them, first seen first."""
    cats: list[str] = []
    for r in runs:
        for c in (r.get("unseen") or {}).get("categories", {}):
            if c not in cats:
                cats.append(c)
    return cats


def unseen_table(rows: Sequence[dict], categories: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    header = ["model / method", "run", *categories, "average"]
    body = []
    for r in rows:
        name = f"zero-shot {r['model']}" if r["row"] == "zero-shot" else str(r["method"])
        cats = r["per_category"] or {}
        body.append([name, r["run"], *[fmt(cats.get(c)) for c in categories], fmt(r["mean"])])
    return header, body


def task_table(same: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Per task of one group of runs (same model, same held-out examples): zero-shot, then
    each run after its sequence."""
    ref = same[0]["unseen"]
    before = next((r["unseen"]["before"]["per_task"] for r in same if r["unseen"].get("before")), {})
    header = ["category", "task", "zero-shot", *[r["run_name"] for r in same]]
    body = []
    for cat, tasks in ref["categories"].items():
        for t in tasks:
            after = [((r["unseen"].get("after") or {}).get("per_task") or {}).get(t) for r in same]
            body.append([cat, t, fmt(before.get(t)), *[fmt(v) for v in after]])
    return header, body


def add_unseen_section(doc, runs: Sequence[dict], out: Path) -> list[dict] | None:
    """Append "Unseen tasks (Table III)" to a ``kif.report.build._Doc`` and write
    ``unseen.json``; without unseen scores in any run, add nothing, remove a stale
    ``unseen.json`` and return None."""
    (out / JSON_NAME).unlink(missing_ok=True)
    with_unseen = [r for r in runs if r.get("unseen")]
    if not with_unseen:
        return None
    rows = unseen_rows(with_unseen)
    metrics = sorted({m for r in with_unseen for m in r["unseen"]["metrics"].values()})
    doc.h(2, "Unseen tasks (Table III)")
    doc.p(f"Held-out tasks no run trained on ({', '.join(sorted({r['unseen']['benchmark'] for r in with_unseen}))}; "
          f"metric {', '.join(metrics)}), evaluated zero-shot before the sequence and after its last task. "
          "A category's score is the mean of its tasks; 'average' is the mean of the categories.")
    doc.table(*unseen_table(rows, categories_of(with_unseen)))
    for r in rows:
        if r.get("differs"):
            doc.p(f"Zero-shot row of {r['model']}: taken from {r['run']}; {', '.join(r['differs'])} scored "
                  "differently before training (other evaluation settings?).")
    doc.h(3, "Unseen tasks, per task")
    groups = _groups(with_unseen)
    for (model, bench, tasks, _), grp in groups.items():
        if len(groups) > 1:
            doc.p(f"{model} on {len(tasks)} task(s) of {bench}:")
        doc.table(*task_table(grp))
    atomic_write_text(out / JSON_NAME, json.dumps(jsonable(rows), indent=2, ensure_ascii=False) + "\n")
    os.chmod(out / JSON_NAME, 0o644)  # mkstemp made it owner-only
    return rows
