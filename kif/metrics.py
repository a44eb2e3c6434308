"""Task scores (exact match, Rouge-L) and continual-learning metrics (METHOD.md §7).

All scores are on a 0-100 scale. A score matrix ``a`` holds one row per trained task:
``a[j][i]`` is the score on task ``i`` right after training task ``j`` (0-indexed; the
paper's a_{j+1,i+1}); an entry is ``None`` when that pair was not evaluated.
"""
from __future__ import annotations

import re
import string
from statistics import fmean
from typing import Sequence

from kif.errors import ConfigError

METRICS = ("accuracy", "rougeL")
Matrix = Sequence[Sequence["float | None"]]

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_scorer = None


def _refs(references: Sequence[str] | str) -> Sequence[str]:
    # A bare string would otherwise be iterated character by character.
    refs = (references,) if isinstance(references, str) else references
    if not refs:
        raise ValueError("no references to score against")
    return refs


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop articles a/an/the,
    collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """Accuracy of one prediction: 100.0 if its normalised form equals that of any
    reference, else 0.0. Comparing normalised strings follows the O-LoRA / TaSL
    evaluation code, so "Positive." matches "positive"."""
    pred = normalize_answer(prediction)
    return 100.0 if any(pred == normalize_answer(r) for r in _refs(references)) else 0.0


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """Rouge-L F-measure ×100 (``rouge_score``, Porter stemmer), best over references."""
    global _scorer
    if _scorer is None:  # building the scorer loads nltk's stemmer: do it once
        from rouge_score import rouge_scorer
        _scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return max(100.0 * _scorer.score(r, prediction)["rougeL"].fmeasure for r in _refs(references))


_SCORERS = {"accuracy": exact_match, "rougeL": rouge_l}


def score_each(metric: str, predictions: Sequence[str],
               references: Sequence[Sequence[str]]) -> list[float]:
    """Per-example scores (0-100) under ``metric`` ("accuracy" or "rougeL")."""
    if metric not in _SCORERS:
        raise ConfigError(f"unknown metric {metric!r} (expected one of {', '.join(METRICS)})")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference sets")
    fn = _SCORERS[metric]
    return [fn(p, r) for p, r in zip(predictions, references)]


def score_task(metric: str, predictions: Sequence[str],
               references: Sequence[Sequence[str]]) -> float:
    """Mean per-example score of a task's test set: a_{j,i} of METHOD.md §7."""
    scores = score_each(metric, predictions, references)
    if not scores:
        raise ValueError("no predictions to score")
    return fmean(scores)


def clean_prediction(text: str) -> str:
    """First non-empty line of a generation, stripped (models often run on past the answer)."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


# ---- continual-learning metrics -------------------------------------------------------
# For a partial run (fewer rows than tasks) the formulas are applied to the first k
# tasks, i.e. as if the sequence had ended after task k.

def _k(a: Matrix, k: int | None) -> int:
    k = len(a) if k is None else k
    if not 0 <= k <= len(a):
        raise ValueError(f"k={k} but the score matrix has {len(a)} rows")
    return k


def _get(a: Matrix, j: int, i: int) -> float | None:
    row = a[j]
    return row[i] if i < len(row) else None


def _mean(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return fmean(values)


def average_performance(a: Matrix, k: int | None = None) -> float | None:
    """AP, eq. (18): mean over i < k of a[k-1][i] (scores after the k-th task)."""
    k = _k(a, k)
    return _mean([_get(a, k - 1, i) for i in range(k)]) if k else None


def forward_transfer(a: Matrix, k: int | None = None) -> float | None:
    """FWT, eq. (19): mean over i = 1..k-1 of a[i-1][i], the score on each task just
    before training on it. None when k < 2."""
    k = _k(a, k)
    return _mean([_get(a, i - 1, i) for i in range(1, k)])


def backward_transfer(a: Matrix, k: int | None = None) -> float | None:
    """BWT, eq. (20): mean over i = 0..k-2 of a[k-1][i] - a[i][i], the change on each
    earlier task since it was learned (negative = forgetting). None when k < 2."""
    k = _k(a, k)
    diffs = []
    for i in range(k - 1):
        last, learned = _get(a, k - 1, i), _get(a, i, i)
        diffs.append(None if last is None or learned is None else last - learned)
    return _mean(diffs)


def cl_metrics(a: Matrix, k: int | None = None) -> dict[str, float | None]:
    """``{"AP", "FWT", "BWT"}`` (eqs. 18-20) over the first ``k`` tasks (default: all rows)."""
    return {"AP": average_performance(a, k), "FWT": forward_transfer(a, k),
            "BWT": backward_transfer(a, k)}
