"""Score a run's stored predictions again under another metric or normalisation
(``kif rescore``): e.g. exact match and Rouge-L, or slot accuracy and joint accuracy,
from one run, with no model and no generation.

Every evaluated cell has its predictions in ``zero_shot/predictions/<task>.jsonl`` or
``tasks/NN_<stage>/predictions/<task>.jsonl`` (id, prediction, references, group). Each
cell is scored again exactly as the evaluator scores a fresh generation (the metric's
``answer`` form of the stored prediction, then :func:`kif.metrics.score_task`), AP/FWT/BWT
(eq. 18-20) follow from the new matrix, and the result is a results file of its own beside
the run's results.json (never over it), readable by ``kif report``.

What was stored bounds what can be re-scored: under ``lenient`` normalisation only the first
line of each generation was kept, so such a run can be re-scored under ``lenient`` only.
Label-ranking scores (``eval.rank_labels``) are left out of the new file; the held-out
tasks' record (``unseen``, scored under its own metrics) is copied unchanged.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import __version__
from .data.loaders import read_jsonl
from .errors import ArtifactError, ConfigError, DataError
from .metrics import Metric, check_normalization, describe_normalization, score_task
from .results import RESULTS_FILE, Results
from .rundir import RunDir
_DELIMITER = re.compile(r"^set_match ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
_NORMALIZATION = re.compile(r", normalization (\w+)")


@dataclass(frozen=True)
class TaskScoring:
    """How one task is (or was) scored; ``grouped``: joint over its examples' groups."""
    metric: str
    delimiter: str
    normalization: str
    grouped: bool

    def label(self, old_label: str) -> str:
        """The new metric label, keeping the run's wording of its grouping."""
        label = self.metric + (f" {self.delimiter!r}" if self.metric == "set_match" and self.delimiter != "," else "")
        label += f", normalization {self.normalization}"
        if self.grouped:
            label += ", joint by " + (old_label.split(", joint by ", 1)[1] if ", joint by " in old_label else "group")
        return label


def stored_scoring(res: Results, task: str) -> TaskScoring:
    """How ``task`` was scored in the run: its ``scoring`` record, or, for files written
    before it existed, what the metric label and ``normalization`` say (runs that recorded
    no normalisation used kif's earlier default, ``lenient``)."""
    if res.scoring and task in res.scoring:
        s = res.scoring[task]
        return TaskScoring(s["metric"], s.get("delimiter", ","), s["normalization"], bool(s.get("grouped")))
    label = res.metrics.get(task, "accuracy")
    delim = _DELIMITER.match(label)
    norm = _NORMALIZATION.search(label)
    run_norm = res.normalization.split(":", 1)[0] if res.normalization else "lenient"
    return TaskScoring(label.split()[0].rstrip(","), ast.literal_eval(delim.group(1)) if delim else ",",
                       norm.group(1) if norm else run_norm, ", joint by " in label)


def rescore_run(run_dir: str | Path, metric: Optional[str] = None, normalization: Optional[str] = None,
                delimiter: Optional[str] = None, per_example: bool = False) -> Results:
    """The run in ``run_dir`` scored again: every task under ``metric`` (None: its own),
    ``normalization`` (None: its own) and ``delimiter`` (set_match; None: its own), joint over
    groups as in the run unless ``per_example`` (then the mean over examples, e.g. slot
    accuracy instead of joint goal accuracy). Nothing is written."""
    run = RunDir(run_dir)
    res = run.read_results()
    if normalization is not None:
        check_normalization(normalization)
    old = {t: stored_scoring(res, t) for t in res.tasks}
    new = {t: TaskScoring(metric or s.metric, delimiter or s.delimiter, normalization or s.normalization,
                          s.grouped and not per_example) for t, s in old.items()}
    for t in res.tasks:
        Metric(new[t].metric, new[t].delimiter, new[t].normalization)  # a ConfigError if not valid
        if old[t].normalization == "lenient" and new[t].normalization != "lenient":
            raise ArtifactError(f"{run_dir}: task {t}'s predictions were stored under lenient normalisation "
                                f"(first line of each generation only); they cannot be re-scored under "
                                f"{new[t].normalization}")
    stages = ["joint"] if res.joint else res.tasks
    out = res.model_copy(deep=True)
    if res.zero_shot is not None:
        out.zero_shot = _row(run.predictions(None), res, new, res.zero_shot)
    out.matrix = [_row(run.predictions(k, stages[k]), res, new, row)
                  for k, row in enumerate(res.matrix)]
    out.metrics = {t: new[t].label(res.metrics.get(t, "")) for t in res.tasks}
    out.scoring = {t: vars(new[t]).copy() for t in res.tasks}
    norms = {s.normalization for s in new.values()}
    out.normalization = describe_normalization(norms.pop()) if len(norms) == 1 else "per task (see scoring)"
    out.zero_shot_ranked = out.matrix_ranked = out.ranked_metrics = None
    out.rescored = {"from": str(run.results_file.resolve()), "kif_version": __version__,
                    "metric": metric, "normalization": normalization, "delimiter": delimiter,
                    "per_example": per_example}
    out.update_metrics()
    return out


def _row(pred_dir: Path, res: Results, scoring: dict[str, TaskScoring], old_row: list) -> list:
    """One matrix row scored again from ``pred_dir``; a cell the run did not evaluate stays None."""
    row = []
    for t, old_score in zip(res.tasks, old_row):
        if old_score is None:
            row.append(None)
            continue
        path = pred_dir / f"{t}.jsonl"
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (the run scored this cell, so its predictions should be here)")
        try:
            recs = read_jsonl(path)
        except DataError as e:
            raise ArtifactError(str(e)) from None
        if not recs or not all(isinstance(r, dict) and "prediction" in r and "references" in r for r in recs):
            raise ArtifactError(f"{path}: not a kif predictions file (rows of id, prediction, references)")
        if res.n_test.get(t) not in (None, len(recs)):
            raise ArtifactError(f"{path}: {len(recs)} predictions, but the run tested {res.n_test[t]} examples")
        s = scoring[t]
        m = Metric(s.metric, s.delimiter, s.normalization)
        groups = [r.get("group") for r in recs] if s.grouped else None
        row.append(score_task(m, [m.answer(r["prediction"]) for r in recs], [r["references"] for r in recs],
                              groups))
    return row


def write_rescored(results: Results, path: str | Path) -> Path:
    """Write a re-scored record; never a run's own results.json."""
    path = Path(path)
    if path.name == RESULTS_FILE:
        raise ConfigError(f"{path}: a run's own results file; write the re-scored results under another "
                          "name (default RUN/results.<metric>.json)")
    results.write(path)
    return path

