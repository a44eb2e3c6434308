"""Held-out tasks for the unseen-task evaluation (paper Table III).

A run with ``eval.unseen`` evaluates a set of tasks it never trains on, zero-shot before
the sequence and after it (see ``kif.runner.evaluate_unseen``). This module resolves that
set: the benchmark, the tasks, their categories (Table III's columns) and their test
examples. Everything is read and checked before a run writes anything.

``superni_unseen`` is the built-in set: 15 SuperNI tasks, 3 per category, none among (or
sharing a source dataset with) the 15 training tasks of ``superni``; Rouge-L, test split
only (``shared/benchmarks/superni_unseen/README.md`` says how they were chosen). Tasks are
named by short id (``task360``), as in ``superni``; the folder names work too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kif.data.benchmarks import Benchmark, TaskSpec, get_benchmark, superni_folders
from kif.data.loaders import Example, sample
from kif.errors import ConfigError, DataError
from kif.results import UnseenScores

# Table III's categories: Dialog, Information Extraction, Question Answering,
# Summarisation, Sentiment Analysis (the README's list; NOTES.json records the same).
SUPERNI_UNSEEN_CATEGORIES = {
    "Dialog": ["task360", "task1600", "task1714"],
    "IE": ["task1451", "task676", "task1411"],
    "QA": ["task1608", "task580", "task041"],
    "Sum": ["task1499", "task1355", "task618"],
    "SA": ["task493", "task398", "task889"],
}
# Categories a built-in held-out benchmark brings with it (a config may still give its own).
BUILTIN_CATEGORIES = {"superni_unseen": SUPERNI_UNSEEN_CATEGORIES}


class HeldOutTaskSpec(TaskSpec):
    """A task with a test split only: asking for any other split (i.e. training on it)
    is a one-line error saying why."""
    described_splits = ("test",)

    def split_file(self, split: str) -> Path:
        if split != "test":
            raise DataError(f"{self.path}: task {self.name} is a held-out task (test split only): "
                            "evaluate it through eval.unseen, never train on it")
        return super().split_file(split)


def superni_unseen(data_dir: Path) -> Benchmark:
    """``superni_unseen/<task>/test.json.gz`` in the SuperNI layout, scored by Rouge-L."""
    root, folders = superni_folders(data_dir, "superni_unseen")
    names = [t for ts in SUPERNI_UNSEEN_CATEGORIES.values() for t in ts]
    # a known task without a folder still gets a spec: the error comes when it is read
    tasks = {n: HeldOutTaskSpec(n, folders.get(n, root / n), "rougeL", "superni") for n in names}
    return Benchmark("superni_unseen", tasks, {},
                     "SuperNI held-out tasks (Table III): 15 generation tasks, 3 per category, Rouge-L, "
                     "test split only; evaluated through eval.unseen",
                     aliases={d.name: n for n, d in folders.items() if n in tasks})


UNSEEN_BUILTINS = {"superni_unseen": superni_unseen}  # registered in kif.data.benchmarks.BUILTINS


@dataclass
class UnseenSet:
    """The held-out tasks of a run: ``categories`` maps each category to its tasks (every
    task in exactly one); ``test`` the (capped) test examples; ``metrics`` what
    ``evaluate_task`` scores with, ``metric_names`` their names for results.json."""

    benchmark: str
    tasks: list[str]
    categories: dict[str, list[str]]
    test: dict[str, list[Example]]
    metrics: dict
    metric_names: dict[str, str]


def load_unseen(cfg, sequence_bench: Benchmark, sequence: list[str]) -> Optional[UnseenSet]:
    """Resolve ``cfg.eval.unseen`` (None when unset) and read its test examples, capped at
    ``eval.unseen_samples`` (default ``data.test_samples``). A task that is also in the
    training sequence is refused: it would not be unseen."""
    spec = cfg.eval.unseen
    if spec is None:
        return None
    key = "eval.unseen"
    try:
        bench = get_benchmark(spec.benchmark, cfg.data_dir)
    except ConfigError as e:
        raise ConfigError(f"{key}.benchmark: {e}") from None

    def canonical(t: str, where: str) -> str:
        try:
            return bench.canonical(t)
        except ConfigError as e:
            raise ConfigError(f"{key}.{where}: {e}") from None

    if spec.categories is not None:
        categories = {c: [canonical(t, f"categories.{c}") for t in ts] for c, ts in spec.categories.items()}
    else:
        tasks = [canonical(t, "tasks") for t in spec.tasks] if spec.tasks is not None else list(bench.tasks)
        categories = restrict_categories(BUILTIN_CATEGORIES.get(bench.name), tasks)
    tasks = [t for ts in categories.values() for t in ts]
    dup = sorted({t for t in tasks if tasks.count(t) > 1})
    if dup:
        raise ConfigError(f"{key}: task(s) listed twice: {', '.join(dup)}")
    if bench.name == sequence_bench.name:
        trained = [t for t in tasks if t in sequence]
        if trained:
            raise ConfigError(f"{key}: task(s) {', '.join(trained)} are in the training sequence, "
                              "so not unseen")
    cap = cfg.eval.unseen_samples or cfg.data.test_samples
    test = {t: sample(bench.tasks[t].load("test"), cap, cfg.seed, f"unseen task {t} test") for t in tasks}
    norm = cfg.eval.normalization
    return UnseenSet(bench.name, tasks, categories, test,
                     metrics={t: bench.tasks[t].scoring(norm) for t in tasks},
                     metric_names={t: bench.tasks[t].metric for t in tasks})


def restrict_categories(categories: Optional[dict[str, list[str]]], tasks: list[str]) -> dict[str, list[str]]:
    """The benchmark's categories cut down to ``tasks`` (empty categories dropped, the
    categories' task order kept); without categories each task is a category of its own.
    A task outside every category forms its own too."""
    if not categories:
        return {t: [t] for t in tasks}
    out = {c: [t for t in ts if t in tasks] for c, ts in categories.items()}
    out = {c: ts for c, ts in out.items() if ts}
    covered = {t for ts in out.values() for t in ts}
    out.update({t: [t] for t in tasks if t not in covered})
    return out


def empty_record(unseen: UnseenSet):
    """The results record of ``unseen`` before any evaluation (``kif.results.UnseenScores``)."""
    return UnseenScores(benchmark=unseen.benchmark, tasks=unseen.tasks, categories=unseen.categories,
                        metrics=unseen.metric_names, n_test={t: len(unseen.test[t]) for t in unseen.tasks})
