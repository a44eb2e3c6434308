"""The results record: the one definition of what ``results.json`` holds.

The runner fills a :class:`Results` as the sequence goes (``record_task``), the checkpoint
stores it, resume reloads it, and ``kif report`` and the tests read it with
:func:`load_results`. A file written before ``schema_version`` existed is version 1 and
has the same fields; a newer version than this kif knows is refused in one line.

Scores are on a 0-100 scale; ``matrix[j][i]`` is the score on task i right after
training task j (``None`` where it was not evaluated, e.g. ``eval.mode: minimal``).
Scores and AP/FWT/BWT are stored at full float precision and AP/FWT/BWT are computed from
the unrounded matrix; only displays round (the log and ``kif run``'s last line to 1-2
decimals, the report's tables to 2 in ``kif.report.tables.fmt``). Files written by
earlier versions hold scores rounded to 4 decimals; they read the same.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ArtifactError, validation_message
from .io import atomic_write_json, read_json
from .metrics import CL_NAMES, cl_metrics
from .stats import summarize

SCHEMA_VERSION = 2  # 1: results.json files written before the field existed (same layout)

Row = list[Optional[float]]
# Fields present only when the run asked for them (eval.rank_labels, a resume): left out of
# the file while unset, so a run that does not use them writes what it always wrote.
_OPTIONAL = ("normalization", "zero_shot_ranked", "matrix_ranked", "ranked_metrics", "resumed", "unseen",
             "kernels", "scoring", "n_test_groups", "rescored", "kif_commit_resumes")


class UnseenPoint(BaseModel):
    """Scores on the held-out tasks at one point of the run (Table III's cells): per task,
    per category (mean of its tasks) and ``mean``, the mean of the category means (with
    3 tasks per category, also the mean over tasks)."""
    per_task: dict[str, Optional[float]]
    per_category: dict[str, Optional[float]]
    mean: Optional[float] = None

    @classmethod
    def of(cls, per_task: dict[str, Optional[float]], categories: dict[str, list[str]]) -> "UnseenPoint":
        cats = {c: summarize([per_task.get(t) for t in ts])["mean"] for c, ts in categories.items()}
        mean = summarize(list(cats.values()))["mean"]
        return cls(per_task=dict(per_task), per_category={c: _round(v) for c, v in cats.items()}, mean=_round(mean))


class UnseenScores(BaseModel):
    """``eval.unseen``: held-out tasks never trained on, evaluated zero-shot ``before`` the
    sequence, ``after`` its last task and (``eval.unseen_every_task``) ``after_each`` task."""
    benchmark: str
    tasks: list[str] = Field(min_length=1)
    categories: dict[str, list[str]]
    metrics: dict[str, str]
    n_test: dict[str, int] = Field(default_factory=dict)
    before: Optional[UnseenPoint] = None
    after: Optional[UnseenPoint] = None
    after_each: Optional[list[Optional[UnseenPoint]]] = None  # [k]: after task k

    @model_validator(mode="after")
    def _categories_cover_tasks(self) -> "UnseenScores":
        listed = sorted(t for ts in self.categories.values() for t in ts)
        if listed != sorted(self.tasks):
            raise ValueError("'unseen.categories' must hold every unseen task exactly once")
        return self


class Results(BaseModel):
    """Everything a run reports. Methods may add their own summary keys (``state_summary``:
    e.g. ``memory``, ``adapters``); those are kept as extra fields."""
    model_config = ConfigDict(extra="allow", validate_assignment=False)

    schema_version: int = SCHEMA_VERSION
    kif_version: str = ""
    kif_commit: Optional[dict[str, Any]] = None  # {"commit", "dirty"} of kif's git checkout; None: no git
    kif_commit_resumes: Optional[list[Optional[dict[str, Any]]]] = None  # the same, of each resume in turn
    method: str
    model: str
    benchmark: Optional[str] = None
    order: Optional[str] = None
    tasks: list[str] = Field(min_length=1)
    metrics: dict[str, str] = Field(default_factory=dict)
    normalization: Optional[str] = None  # answer normalisation of the scores (eval.normalization)
    joint: bool = False  # one training stage on all tasks at once (multi-task learning)
    n_train: dict[str, int] = Field(default_factory=dict)
    n_test: dict[str, int] = Field(default_factory=dict)
    zero_shot: Optional[Row] = None
    matrix: list[Row]
    AP: Optional[float] = None  # one field per kif.metrics.CL_METRICS (a test checks them)
    FWT: Optional[float] = None
    BWT: Optional[float] = None
    tasks_completed: int = Field(0, ge=0)
    per_task: list[dict[str, Any]] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    device: str = ""
    adapter_bytes: Optional[int] = None
    finished: bool = False
    zero_shot_ranked: Optional[Row] = None
    matrix_ranked: Optional[list[Row]] = None
    ranked_metrics: Optional[dict[str, Optional[float]]] = None
    resumed: Optional[int] = None
    unseen: Optional[UnseenScores] = None
    # config hub_kernels and where the layers' code came from (kif.models.hub_kernels.kernel_record)
    kernels: Optional[dict[str, Any]] = None
    # per task: {metric, delimiter, normalization, grouped}: how its scores were computed,
    # what `kif rescore` starts from (absent from files written before it existed)
    scoring: Optional[dict[str, dict[str, Any]]] = None
    n_test_groups: Optional[dict[str, int]] = None  # grouped tasks: groups among the n_test examples
    rescored: Optional[dict[str, Any]] = None  # a `kif rescore` file: what it re-scored, and how

    @model_validator(mode="after")
    def _valid(self) -> "Results":
        """The shapes a report and a resume rely on; scores in [0, 100] (or null where not
        evaluated), AP/FWT/BWT in [-100, 100], timings and sizes plausible, no NaN or infinity
        anywhere (Python's json reads ``Infinity``). Anything else (inf, 1e308, -5) names the field."""
        k = len(self.tasks)
        if self.schema_version > SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is newer than this kif reads "
                             f"({SCHEMA_VERSION}); upgrade kif")
        if len(self.matrix) > k:
            raise ValueError(f"'matrix' must be a list of at most {k} rows")
        rows = [("zero_shot", self.zero_shot)] + [(f"matrix[{j}]", r) for j, r in enumerate(self.matrix)]
        for name, row in rows:
            if row is not None and len(row) != k:
                raise ValueError(f"'{name}' must be a list of {k} numbers (or null)")
        for i, st in enumerate(self.per_task):  # what a report reads of them (names, fusion weights)
            if not isinstance(st.get("task", ""), str):
                raise ValueError(f"'per_task[{i}].task' must be a task name")
            w = st.get("mean_weight_on_past")
            if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float))):
                raise ValueError(f"'per_task[{i}].mean_weight_on_past' must be a finite number")
        _finite_everywhere(self.model_dump(mode="python"))  # json mode would hide inf
        u = self.unseen
        points = {"before": u.before, "after": u.after} if u else {}
        points |= {f"after_each[{i}]": p for i, p in enumerate(u.after_each or [])} if u else {}
        for point, p in points.items():
            for part in ("per_task", "per_category"):
                for t, v in (getattr(p, part) if p else {}).items():
                    if v is not None and not 0 <= v <= 100:
                        raise ValueError(f"'unseen.{point}.{part}.{t}' must be a score from 0 to 100, got {v!r}")
        rows += [("zero_shot_ranked", self.zero_shot_ranked)]
        rows += [(f"matrix_ranked[{j}]", r) for j, r in enumerate(self.matrix_ranked or [])]
        for name, row in rows:
            for i, v in enumerate(row or []):
                if v is not None and not 0 <= v <= 100:
                    raise ValueError(f"'{name}[{i}]' must be a score from 0 to 100 (or null), got {v!r}")
        for name in CL_NAMES:
            if getattr(self, name) is not None and not -100 <= getattr(self, name) <= 100:
                raise ValueError(f"'{name}' must be between -100 and 100, got {getattr(self, name)!r}")
        for key, v in self.timings.items():
            if not 0 <= v < 1e10:  # 1e10 s = 300 years
                raise ValueError(f"'timings.{key}' must be a plausible number of seconds, got {v!r}")
        if self.adapter_bytes is not None and not 0 <= self.adapter_bytes < 2**53:
            raise ValueError(f"'adapter_bytes' must be a plausible size, got {self.adapter_bytes!r}")
        return self

    # --- what the loop does to it --------------------------------------------------------
    def record_task(self, k: int, row: Row, ranked: Optional[Row], stats: dict) -> None:
        """Stage k's row of the matrix, its stats, and the metrics (eq. 18-20) it implies."""
        self.matrix.append(row)
        if self.matrix_ranked is not None:
            self.matrix_ranked.append(ranked)
        self.per_task.append(stats)
        self.tasks_completed = len(self.tasks) if self.joint else k + 1
        self.update_metrics()

    def update_metrics(self) -> None:
        """AP/FWT/BWT (eq. 18-20) from the matrix as it stands (unrounded scores); a joint run's
        one row is after all tasks: AP over them, no transfer measures."""
        for name, v in cl_metrics(self.matrix, joint=self.joint).items():
            setattr(self, name, v)
        if not self.joint and self.matrix_ranked is not None and all(v == "accuracy" for v in self.metrics.values()):
            self.ranked_metrics = cl_metrics(self.matrix_ranked)

    # --- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = self.model_dump(mode="json")
        for key in _OPTIONAL:
            if d.get(key) is None:
                d.pop(key, None)
        return d

    def write(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "results.json") -> "Results":
        if not isinstance(data, dict):
            raise ArtifactError(f"{source}: expected a JSON object, got {type(data).__name__}")
        data = {"schema_version": 1, **data}  # files from before the field existed
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ArtifactError(f"{source}: {validation_message(err, quote=True)}") from None


RESULTS_FILE = "results.json"  # a run folder's record (kif.rundir's layout)


def load_results(path: str | Path) -> Results:
    """Read and validate a run directory's ``results.json``, or a results file (``kif rescore``'s)."""
    path = Path(path) if Path(path).is_file() else Path(path) / RESULTS_FILE
    return Results.from_dict(read_json(path, "results file"), str(path))


def _round(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(x, 4)


def _finite_everywhere(x, key: str = "") -> None:
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"'{key}' must be a finite number, got {x!r}")
    if isinstance(x, dict):
        for k, v in x.items():
            _finite_everywhere(v, f"{key}.{k}" if key else str(k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            _finite_everywhere(v, f"{key}[{i}]")
