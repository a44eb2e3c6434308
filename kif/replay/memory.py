"""Episodic memory of finished tasks' training samples (Replay, docs/method.md §8; KIF-M, §5).

``Memory`` keeps, per finished task, a random subset of its training examples: a
``fraction`` of them (2 % in the paper) or a fixed ``per_task`` count, at least
``min_per_task``. The subset is drawn with ``random.Random(f"{seed}:{task}")``, so it
depends only on the run seed, the task name and the task's examples (not on the task
order or on what was drawn before), and keeps the examples' original order.

The memory source is the caller's business: real training samples (Replay) or
generated pseudo-samples (LFPT5/SAPT-style) are added the same way. ``state_dict`` is
plain JSON (lists, dicts, strings) so a run can be resumed from results on disk.
"""
from __future__ import annotations

import random
from typing import Optional, Sequence

from ..data import Example
from ..errors import ArtifactError
from ..torchutil import fraction_count


def memory_size(n: int, fraction: float, per_task: Optional[int], min_per_task: int) -> int:
    """How many of a task's ``n`` examples to keep.

    ``per_task`` (if given) wins over ``fraction``; otherwise ceil(fraction·n), with
    fraction·n rounded to 9 decimals first (0.07·100 = 7.000000000000001 keeps 7, not 8).
    Never less than ``min_per_task`` nor more than ``n``.
    """
    if n <= 0:
        return 0
    want = per_task if per_task is not None else fraction_count(n, fraction)
    return min(n, max(min_per_task, want))


class Memory:
    """Per-task sample memory: ``add(task, examples)`` after a task, ``examples_before(k)`` to replay."""

    def __init__(self, fraction: float, per_task: Optional[int], min_per_task: int, seed: int):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"memory fraction must be in [0, 1], got {fraction}")
        self.fraction, self.per_task, self.min_per_task, self.seed = fraction, per_task, min_per_task, seed
        self._tasks: list[str] = []  # insertion order = task order
        self._examples: dict[str, list[Example]] = {}

    @classmethod
    def from_options(cls, opts, seed: int) -> "Memory":
        """From a method's options with the memory's keys (``kif.methods.options.MemoryOptions``)."""
        return cls(opts.memory_fraction, opts.memory_per_task, opts.min_per_task, seed=seed)

    # --- filling -------------------------------------------------------------------
    def size_for(self, n: int) -> int:
        return memory_size(n, self.fraction, self.per_task, self.min_per_task)

    def select(self, task: str, examples: Sequence[Example]) -> list[Example]:
        """The subset of ``examples`` that ``add`` would keep for ``task`` (deterministic)."""
        n = self.size_for(len(examples))
        chosen = sorted(random.Random(f"{self.seed}:{task}").sample(range(len(examples)), n))
        return [examples[i] for i in chosen]

    def add(self, task: str, examples: Sequence[Example], *, select: bool = True) -> list[Example]:
        """Store ``task``'s memory (replacing an earlier entry of that task); returns what was kept.

        ``select=False`` stores ``examples`` as given (e.g. pseudo-samples already sized).
        """
        kept = self.select(task, examples) if select else list(examples)
        if task not in self._examples:
            self._tasks.append(task)
        self._examples[task] = kept
        return kept

    # --- reading -------------------------------------------------------------------
    @property
    def tasks(self) -> list[str]:
        return list(self._tasks)

    def task_examples(self, task: str) -> list[Example]:
        return list(self._examples.get(task, []))

    def examples_before(self, k: int) -> list[Example]:
        """Memory of the first ``k`` stored tasks (tasks 0..k-1), in task order."""
        return [ex for t in self._tasks[:k] for ex in self._examples[t]]

    def all_examples(self) -> list[Example]:
        return self.examples_before(len(self._tasks))

    def __len__(self) -> int:
        return sum(len(v) for v in self._examples.values())

    def sizes(self) -> dict[str, int]:
        return {t: len(self._examples[t]) for t in self._tasks}

    # --- persistence ---------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "fraction": self.fraction, "per_task": self.per_task, "min_per_task": self.min_per_task,
            "seed": self.seed,
            "tasks": [{"task": t, "examples": [{"id": e.id, "prompt": e.prompt, "references": list(e.references)}
                                               for e in self._examples[t]]} for t in self._tasks],
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            self.fraction, self.per_task = float(state["fraction"]), state["per_task"]
            self.min_per_task, self.seed = int(state["min_per_task"]), int(state["seed"])
            tasks = [(d["task"], [Example(str(e["id"]), e["prompt"], tuple(e["references"])) for e in d["examples"]])
                     for d in state["tasks"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"memory state: malformed ({type(exc).__name__}: {exc})") from None
        self._tasks = [t for t, _ in tasks]
        self._examples = dict(tasks)

    @classmethod
    def from_state_dict(cls, state: dict) -> "Memory":
        mem = cls(0.0, None, 0, 0)
        mem.load_state_dict(state)
        return mem
