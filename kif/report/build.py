"""``kif report``: a comparison of run directories as ``report.md`` + a self-contained ``report.html``.

Output folder (all names deterministic, ``<run>`` = sanitised run directory name)::

    report.md             tables + links to the PNGs next to it
    report.html           the same content, PNGs embedded as data: URIs (no external assets)
    comparison.json       the comparison rows (exact values, no rounding)
    matrix_<run>.png      score matrix per run (zero-shot row on top)
    trajectory_<i>.png    per group of runs sharing one task sequence (paper Figure 5)
    importance_<run>.png  skill-unit importance of KIF runs (paper Figures 6-7)
    unseen.json           Table III rows, when runs have unseen-task scores (``eval.unseen``)
    aggregate.json, seeds_trajectory_<i>.png   statistics over seeds, when a method has ≥ 2
                          seeds on one order (``kif.report.aggregate``, e.g. a ``kif sweep``)
"""
from __future__ import annotations

import base64
import html
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from .. import __version__
from ..errors import ArtifactError
from ..io import atomic_write_text
from ..lock import OutputLock, check_utf8_path
from ..results import RESULTS_FILE
from .aggregate import FIGURE_PATTERN as _SEEDS_PATTERN, add_seed_section
from .plots import plot_importance, plot_matrix, plot_trajectories
from .unseen import add_unseen_section
from .importance import has_importance, top_fraction, unit_fractions
from .tables import (comparison_rows, comparison_table, cost_rows, cost_table, fractions_table, check_run_config,
                     jsonable, load_run, matrix_table, sort_runs)

_OWN_PATTERNS = ("matrix_*.png", "trajectory_*.png", "importance_*.png", _SEEDS_PATTERN)
_OWN_FILES = ("comparison.json", "aggregate.json", "unseen.json", "report.md", "report.html")


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories from the given paths: a folder with results.json is a run; a folder
    without one whose direct subfolders hold runs stands for those runs (e.g. ``runs/``).
    Duplicates are dropped. Anything else is an ArtifactError naming the missing file."""
    out: list[Path] = []
    seen = set()
    for p in paths:
        p = Path(p)
        if (p / RESULTS_FILE).exists() or not p.is_dir():
            found = [p]
        else:
            found = sorted(c for c in p.iterdir() if c.is_dir() and (c / RESULTS_FILE).is_file())
            if not found:
                found = [p]  # load_run names the missing results.json
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


# ---- a tiny document model rendered to both Markdown and HTML ------------------------------------

class _Doc:
    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def items(self, pairs: Sequence[tuple[str, str]]):
        self.blocks.append(("items", list(pairs)))

    def table(self, header, body, bold_rows=()):
        self.blocks.append(("table", header, body, set(bold_rows)))

    def img(self, file: str, alt: str):
        self.blocks.append(("img", file, alt))

    # -- markdown
    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "items":
                out.append("\n".join(f"- **{k}**: {_md_cell(v)}" for k, v in b[1]))
            elif b[0] == "table":
                _, header, body, bold = b
                lines = ["| " + " | ".join(_md_cell(c) for c in header) + " |",
                         "|" + "|".join("---" for _ in header) + "|"]
                for i, row in enumerate(body):
                    cells = [_md_cell(c) for c in row]
                    if i in bold:
                        cells = [f"**{c}**" if c not in ("", "-") else c for c in cells]
                    lines.append("| " + " | ".join(cells) + " |")
                out.append("\n".join(lines))
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1]})")
        return "\n\n".join(out) + "\n"

    # -- html
    def html(self, root: Path, title: str) -> str:
        esc = html.escape
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
               f"<title>{esc(title)}</title>", f"<style>{_CSS}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                anchor = f' id="{esc(_slug(b[2]))}"' if b[1] <= 3 else ""
                out.append(f"<h{b[1]}{anchor}>{esc(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{esc(b[1])}</p>")
            elif b[0] == "items":
                out.append("<ul>" + "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in b[1]) + "</ul>")
            elif b[0] == "table":
                _, header, body, bold = b
                rows = ["<tr>" + "".join(f"<th>{esc(c)}</th>" for c in header) + "</tr>"]
                for i, row in enumerate(body):
                    cls = ' class="mean"' if i in bold else ""
                    rows.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
                out.append("<table>" + "".join(rows) + "</table>")
            elif b[0] == "img":
                data = base64.b64encode((root / b[1]).read_bytes()).decode("ascii")
                out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(b[2])}">'
                           f"<figcaption>{esc(b[1])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}th{background:#f0f0f0}"
        "tr.mean td{font-weight:bold;background:#f7f7e8}"
        "img{max-width:100%;height:auto}figure{margin:1em 0}figcaption{font-size:12px;color:#777}")


def _md_cell(c) -> str:
    return str(c).replace("|", "\\|").replace("\n", " ")


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s.lower()).strip("-")


# ---- the report ----------------------------------------------------------------------------------

def build_report(run_dirs: Iterable[str | Path], out_dir: str | Path = "report") -> Path:
    """Read every run, draw the figures and write ``report.md`` and ``report.html`` into
    ``out_dir``. Returns the path of ``report.html``. Bad input is a KifError naming the file."""
    paths = find_runs(run_dirs)
    if not paths:
        raise ArtifactError("kif report: no run directories given")
    runs = []
    for p in paths:  # all read and checked before anything is written
        check_utf8_path(p.resolve(), "run folder")
        runs.append(load_run(p))  # validated, score ranges included (kif.results)
        check_run_config(p)  # the config values the report reads (seed, fractions)
    runs = sort_runs(runs)
    final = Path(out_dir)
    with OutputLock(final, "report folder"):
        for stale in final.glob(".kif-report-*"):  # left by a killed report
            shutil.rmtree(stale, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=".kif-report-", dir=final))
        try:
            _write_report(runs, stage)
            _publish(stage, final)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return final / "report.html"


def _publish_file(src: Path, dest: Path) -> None:
    """One file of a report into place, by an atomic rename (a kill point of the crash tests)."""
    os.replace(src, dest)


def _publish(stage: Path, final: Path) -> None:
    """Move the finished report from ``stage`` into ``final``, each file by an atomic rename:
    figures and data first, ``report.html`` and ``report.md`` last, then the previous report's
    files that this one no longer has. A kill at any point leaves a report.md whose images
    all exist (the old one or the new one), and never a partly written file."""
    new = sorted(f.name for f in stage.iterdir())
    last = [n for n in ("report.html", "report.md") if n in new]
    for name in [n for n in new if n not in last] + last:
        _publish_file(stage / name, final / name)
    for pattern in _OWN_PATTERNS + _OWN_FILES:
        for f in final.glob(pattern):
            if f.name not in new and f.is_file() and not f.is_symlink():
                f.unlink()


def _write_report(runs: list[dict], out: Path) -> None:
    """Draw and write the whole report into the (staging) folder ``out``."""
    rows = comparison_rows(runs)
    doc = _Doc()
    doc.h(1, "kif report")
    doc.p(f"{len(runs)} run(s); kif {__version__}. Scores are 0-100 (accuracy or Rouge-L); "
          "AP, FWT, BWT as in docs/method.md §7 (eq. 18-20).")

    doc.h(2, "Comparison")
    header, body = comparison_table(rows)
    doc.table(header, body, bold_rows=[i for i, r in enumerate(rows) if r["kind"] == "mean"])
    doc.p("tasks = tasks completed / sequence length. storage = bytes of the adapter(s) "
          "the model needs after the last task completed (IncLoRA/O-LoRA keep one per task). "
          "Rows named 'mean' average one method over ≥ 2 task orders (finished runs only), "
          "as the paper reports the mean of two orders.")
    atomic_write_text(out / "comparison.json",
                      json.dumps(jsonable([{k: v for k, v in r.items() if k != "complete"} for r in rows]),
                                 indent=2, ensure_ascii=False) + "\n")

    costs = cost_rows(runs)
    if sum(r["runs"] for r in costs if r["method"] != "all") >= 2:
        doc.h(2, "Compute")
        doc.table(*cost_table(costs))
        doc.p("Wall time of each run from its results.json (`timings.total`: setup, training, method "
              "steps and evaluation, all resumes together), on the machine and with the threads it ran on.")

    add_unseen_section(doc, runs, out)  # Table III, only when runs evaluated held-out tasks

    seeds = add_seed_section(doc, runs, out)  # only when a method has >= 2 seeds on one order
    (out / "aggregate.json").unlink(missing_ok=True)
    if seeds is not None:
        atomic_write_text(out / "aggregate.json", json.dumps(jsonable(seeds), indent=2, ensure_ascii=False) + "\n")

    doc.h(2, "Forgetting along the sequence")
    doc.p("Score of the first task after each task of the sequence (paper Figure 5), and every "
          "task's trajectory per run.")
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(tuple(r["tasks"]), []).append(r)
    for i, (seq, grp) in enumerate(groups.items(), start=1):
        name = f"trajectory_{i}.png"
        plot_trajectories(grp, out / name)
        doc.h(3, f"Sequence {i}: " + " → ".join(seq))
        doc.p("runs: " + ", ".join(r["run_name"] for r in grp))
        doc.img(name, f"trajectories of sequence {i}")

    doc.h(2, "Runs")
    for r in runs:
        name = r["run_name"]
        doc.h(3, name)
        k = len(r["tasks"])
        doc.items([("directory", r["run_dir"]), ("method", str(r.get("method"))),
                   ("model", str(r.get("model"))), ("benchmark", str(r.get("benchmark"))),
                   ("order", "-" if r.get("order") is None else str(r["order"])),
                   ("tasks", f"{r.get('tasks_completed', len(r['matrix']))}/{k}: "
                    + ", ".join(f"{t} ({(r.get('metrics') or {}).get(t, '?')})" for t in r["tasks"])),
                   ("device", str(r.get("device", "-"))), ("kif version", str(r.get("kif_version", "-")))])
        doc.h(4, "Score matrix")
        plot_matrix(r, out / f"matrix_{name}.png")
        doc.img(f"matrix_{name}.png", f"score matrix of {name}")
        doc.table(*matrix_table(r))
        if has_importance(r["run_dir"]):
            doc.h(4, "Skill-unit importance")
            plot_importance(r["run_dir"], out / f"importance_{name}.png", title=f"{name}: unit importance")
            doc.img(f"importance_{name}.png", f"unit importance of {name}")
            frac = top_fraction(r["run_dir"])
            doc.p(f"Units in the top {100 * frac:g} % ('+', docs/method.md §4) of the past tasks' accumulated "
                  "importance I(Û_{k-1}) and/or of the current task's I(U_k), as a share of all units.")
            doc.table(*fractions_table(unit_fractions(r["run_dir"], frac), r.get("per_task")))

    atomic_write_text(out / "report.md", doc.markdown())
    atomic_write_text(out / "report.html", doc.html(out, "kif report"))
    for f in ("comparison.json", "report.md", "report.html"):  # mkstemp made them owner-only
        os.chmod(out / f, 0o644)
