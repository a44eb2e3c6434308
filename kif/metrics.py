"""Task scores (exact match, Rouge-L, token F1, set match, joint over groups) and the
continual-learning metrics (docs/method.md §7).

All scores are on a 0-100 scale. A score matrix ``a`` holds one row per trained task:
``a[j][i]`` is the score on task ``i`` right after training task ``j`` (0-indexed; the
paper's a_{j+1,i+1}); an entry is ``None`` when that pair was not evaluated.

Answer normalisation (``eval.normalization``) decides what of a generation is scored and
how answers compare:

* ``harness`` (default): what the O-LoRA / SAPT evaluation code does (their
  ``compute_metrics.normalize_answer``: SQuAD's normalisation *without* article removal):
  lowercase, drop ASCII punctuation, collapse whitespace; the whole generated text is
  scored. "the entailment" does not match "entailment".
* ``lenient``: kif's earlier form: SQuAD's normalisation (articles a/an/the dropped too),
  and only the first non-empty line of a generation is scored.
* ``lower_strip``: lowercase and trim only (punctuation, articles and inner spaces kept:
  "London, UK" matches "london, uk", not "london uk"); the whole generation is scored. For
  benchmarks whose authors compare values this way; a task sets it in its benchmark YAML.

``set_match`` splits the answer and each reference at the task's delimiter and compares
the *sets* of items, each item in the form above (so under ``harness`` a comma inside an
item is dropped, under ``lower_strip`` it is kept); empty items are dropped.

Rouge-L does not use this normalisation in either form: like the harness, it scores the
raw text with ``rouge_score``'s own tokeniser (lowercase, non-alphanumerics as spaces,
Porter stemming of words longer than 3 characters); the form only decides whether the
whole generation or its first line is scored.

A normalisation must never erase an answer: SQuAD-style normalisation turns COPA's gold
"A" into "", which would then equal "", ".", "the" or "???". Every comparison therefore
uses :func:`canonical_answer`, the first non-empty of ever lighter forms.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from statistics import fmean
from typing import Callable, Mapping, Sequence

from kif.errors import ConfigError
from kif.stats import mean_or_none, summarize

METRICS = ("accuracy", "rougeL", "f1", "set_match")
NORMALIZATIONS = {
    "harness": "lowercase, punctuation and extra whitespace removed, articles and the whole "
               "generation kept (O-LoRA/SAPT compute_metrics.py)",
    "lenient": "lowercase, punctuation, articles (a/an/the) and extra whitespace removed, "
               "first non-empty line of the generation only (SQuAD; kif's earlier default)",
    "lower_strip": "lowercase and surrounding whitespace trimmed only (punctuation, articles and inner "
                   "spaces kept), the whole generation kept",
}
DEFAULT_NORMALIZATION = "harness"
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


def check_normalization(name: str) -> str:
    if name not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalization {name!r} "
                          f"(expected one of {', '.join(NORMALIZATIONS)})")
    return name


def describe_normalization(name: str) -> str:
    """One line for results.json / the report: the name and what it does."""
    return f"{check_normalization(name)}: {NORMALIZATIONS[name]}"


def normalize_answer(s: str, normalization: str = DEFAULT_NORMALIZATION) -> str:
    """``harness``: lowercase, drop punctuation, collapse whitespace (the O-LoRA/SAPT
    harness). ``lenient``: the same and drop the articles a/an/the (SQuAD). ``lower_strip``:
    lowercase and trim, nothing else."""
    if check_normalization(normalization) == "lower_strip":
        return s.lower().strip()
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    if check_normalization(normalization) == "lenient":
        s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def canonical_answer(s: str, normalization: str = DEFAULT_NORMALIZATION) -> str:
    """The form answers are compared in: :func:`normalize_answer`, or, where that erases the
    whole answer (COPA's "A" under ``lenient``, "???" under both), the first non-empty of
    lighter forms: without article removal, then lowercase with whitespace collapsed. So an
    answer made only of articles or punctuation is matched by itself, not by everything."""
    for form in (normalize_answer(s, normalization), normalize_answer(s, "harness")):
        if form:
            return form
    return " ".join(s.lower().split())


def answer_text(generation: str, normalization: str = DEFAULT_NORMALIZATION) -> str:
    """The part of a generation that is scored: all of it (``harness``) or its first
    non-empty line (``lenient``), stripped."""
    if check_normalization(normalization) == "lenient":
        return clean_prediction(generation)
    return generation.strip()


def exact_match(prediction: str, references: Sequence[str],
                normalization: str = DEFAULT_NORMALIZATION) -> float:
    """Accuracy of one prediction: 100.0 if its canonical form equals that of any reference,
    else 0.0 ("Positive." matches "positive")."""
    pred = canonical_answer(prediction, normalization)
    return 100.0 if any(pred == canonical_answer(r, normalization) for r in _refs(references)) else 0.0


def _f1(pred: list[str], gold: list[str]) -> float:
    if not pred or not gold:
        return 100.0 if pred == gold else 0.0
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 100.0 * 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: Sequence[str],
             normalization: str = DEFAULT_NORMALIZATION) -> float:
    """SQuAD token F1 ×100 on the canonical forms split at whitespace (repeated tokens count
    as often as they occur in both), best over references."""
    pred = canonical_answer(prediction, normalization).split()
    return max(_f1(pred, canonical_answer(r, normalization).split()) for r in _refs(references))


def answer_set(text: str, delimiter: str = ",",
               normalization: str = DEFAULT_NORMALIZATION) -> frozenset[str]:
    """The items of ``text`` split at ``delimiter``, each in canonical form; empty items
    (", ," or a trailing delimiter) are dropped, so "" is the empty set."""
    items = (canonical_answer(x, normalization) for x in text.split(delimiter))
    return frozenset(x for x in items if x)


def set_match(prediction: str, references: Sequence[str], delimiter: str = ",",
              normalization: str = DEFAULT_NORMALIZATION) -> float:
    """100.0 if the prediction's item set equals a reference's ("b ,a" matches "a, b"),
    else 0.0."""
    pred = answer_set(prediction, delimiter, normalization)
    return 100.0 if any(pred == answer_set(r, delimiter, normalization)
                        for r in _refs(references)) else 0.0


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """Rouge-L F-measure ×100 (``rouge_score``, Porter stemmer), best over references."""
    global _scorer
    if _scorer is None:  # building the scorer loads nltk's stemmer: do it once
        from rouge_score import rouge_scorer
        _scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return max(100.0 * _scorer.score(r, prediction)["rougeL"].fmeasure for r in _refs(references))


@dataclass(frozen=True)
class Metric:
    """How one task is scored: the metric, its ``set_match`` delimiter, the normalisation.
    Invalid values are a :class:`ConfigError` when the metric is made."""

    name: str = "accuracy"
    delimiter: str = ","
    normalization: str = DEFAULT_NORMALIZATION

    def __post_init__(self):
        if self.name not in METRICS:
            raise ConfigError(f"unknown metric {self.name!r} (expected one of {', '.join(METRICS)})")
        if not isinstance(self.delimiter, str) or not self.delimiter:
            raise ConfigError("set_match delimiter must be a non-empty string")
        check_normalization(self.normalization)

    def answer(self, generation: str) -> str:
        return answer_text(generation, self.normalization)

    def score(self, prediction: str, references: Sequence[str]) -> float:
        if self.name == "rougeL":
            return rouge_l(prediction, references)
        if self.name == "f1":
            return token_f1(prediction, references, self.normalization)
        if self.name == "set_match":
            return set_match(prediction, references, self.delimiter, self.normalization)
        return exact_match(prediction, references, self.normalization)


def get_metric(metric: "str | Metric") -> Metric:
    return metric if isinstance(metric, Metric) else Metric(metric)


def score_each(metric: "str | Metric", predictions: Sequence[str],
               references: Sequence[Sequence[str]]) -> list[float]:
    """Per-example scores (0-100) under ``metric`` (a name of :data:`METRICS`, or a
    :class:`Metric` carrying a delimiter and a normalisation)."""
    m = get_metric(metric)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference sets")
    return [m.score(p, r) for p, r in zip(predictions, references)]


def joint_score(scores: Sequence[float], groups: Sequence["str | None"] | None = None) -> float:
    """The task score from per-example scores: their mean, or, when examples carry a group
    (e.g. one dialogue turn), the share ×100 of groups whose every example scores 100 (joint
    goal accuracy). Groups are collected over the whole list, wherever their examples sit
    (several evaluation batches, any order); an example without a group is its own group."""
    if not scores:
        raise ValueError("no predictions to score")
    if groups is None or all(g is None for g in groups):
        return fmean(scores)
    if len(groups) != len(scores):
        raise ValueError(f"{len(groups)} groups for {len(scores)} scores")
    right: dict[object, bool] = {}
    for i, (s, g) in enumerate(zip(scores, groups)):
        key = ("group", g) if g is not None else ("example", i)
        right[key] = right.get(key, True) and s >= 100.0 - 1e-9
    return 100.0 * sum(right.values()) / len(right)


def score_task(metric: "str | Metric", predictions: Sequence[str],
               references: Sequence[Sequence[str]],
               groups: Sequence["str | None"] | None = None) -> float:
    """A task's test-set score, a_{j,i} of docs/method.md §7: the mean per-example score, or the
    joint score over ``groups`` (:func:`joint_score`)."""
    return joint_score(score_each(metric, predictions, references), groups)


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


def average_performance(a: Matrix, k: int | None = None) -> float | None:
    """AP, eq. (18): mean over i < k of a[k-1][i] (scores after the k-th task)."""
    k = _k(a, k)
    return mean_or_none([_get(a, k - 1, i) for i in range(k)]) if k else None


def forward_transfer(a: Matrix, k: int | None = None) -> float | None:
    """FWT, eq. (19): mean over i = 1..k-1 of a[i-1][i], the score on each task just
    before training on it. None when k < 2."""
    k = _k(a, k)
    return mean_or_none([_get(a, i - 1, i) for i in range(1, k)])


def backward_transfer(a: Matrix, k: int | None = None) -> float | None:
    """BWT, eq. (20): mean over i = 0..k-2 of a[k-1][i] - a[i][i], the change on each
    earlier task since it was learned (negative = forgetting). None when k < 2."""
    k = _k(a, k)
    diffs = []
    for i in range(k - 1):
        last, learned = _get(a, k - 1, i), _get(a, i, i)
        diffs.append(None if last is None or learned is None else last - learned)
    return mean_or_none(diffs)


@dataclass(frozen=True)
class CLMetric:
    """A continual-learning metric of a score matrix (docs/method.md §7): ``of(a, k)`` over its
    first k rows, ``of_joint(row)`` of a joint run's one row (None: not defined there). Adding one
    adds it to the checks, logs and report; :class:`kif.results.Results` declares its field."""

    name: str
    help: str
    of: Callable[[Matrix, int | None], float | None]
    of_joint: Callable[[Sequence[float | None]], float | None] | None = None
    higher_is_better: bool = True
    digits: int = 2

    def format(self, value) -> str:
        """Display form: ``digits`` decimals; "-" for None (or anything not a number)."""
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return f"{value:.{self.digits}f}" if number else "-"


CL_METRICS = (
    # a joint run's one row is after all tasks: AP is its mean (tasks not evaluated left out)
    CLMetric("AP", "average performance, eq. (18): mean score on every task after the last", average_performance,
             lambda row: summarize(row)["mean"]),
    CLMetric("FWT", "forward transfer, eq. (19): mean score on each task just before training on it",
             forward_transfer),
    CLMetric("BWT", "backward transfer, eq. (20): mean change on each task since it was learned "
             "(negative = forgetting)", backward_transfer),
)
CL_NAMES = tuple(m.name for m in CL_METRICS)


def cl_line(values) -> str:
    """``AP=61.67 FWT=35.50 BWT=-40.00`` for a log line, from a results dict or record."""
    get = values.get if isinstance(values, Mapping) else lambda name: getattr(values, name, None)
    return " ".join(f"{m.name}={m.format(get(m.name))}" for m in CL_METRICS)


def cl_metrics(a: Matrix, k: int | None = None, joint: bool = False) -> dict[str, float | None]:
    """Every :data:`CL_METRICS` (eqs. 18-20) over the first ``k`` rows (default: all); for a
    ``joint`` run, of its last row."""
    if joint:
        row = a[-1] if a else []
        return {m.name: m.of_joint(row) if m.of_joint else None for m in CL_METRICS}
    return {m.name: m.of(a, k) for m in CL_METRICS}
