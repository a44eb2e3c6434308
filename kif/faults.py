"""Fault injection for the crash tests (``tests/test_resume.py``, ``test_reliability.py``, ...).

``KIF_FAULT=name:N`` SIGKILLs the process the N-th time the named point is passed. A point is
a seam the code already has, a function or method (``SEAMS``); ``install`` (run by
``import kif`` when ``KIF_FAULT`` is set) wraps that one function, before or after its body.
So production code carries no test hook, and with ``KIF_FAULT`` unset nothing is installed:
no cost anywhere, the hot paths (an optimizer step, a task's evaluation) included.
"""
from __future__ import annotations

import functools
import importlib
import os
import signal

SEAMS = {  # name: (module, function or Class.method, kill before or after it runs)
    "train_step": ("kif.training", "StepGuard.on_pre_optimizer_step", "before"),  # an optimizer step
    "fusion": ("kif.methods.kif", "KIF.fuse_task", "before"),  # KIF's consolidation: f_k saved, not fused yet
    "eval": ("kif.evaluation", "write_jsonl", "after"),  # one task's predictions written
    "write": ("kif.runner", "save_checkpoint", "before"),  # just before a checkpoint is written
    "report_publish": ("kif.report.build", "_publish_file", "before"),  # between two renames of a report
    "cache_build": ("kif.models.cache", "_mark", "before"),  # a model cache's files written, not its marker
}


def install(spec: str | None) -> None:
    """Arm the point ``spec`` names (``name:N``): the N-th pass SIGKILLs the process."""
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name not in SEAMS or not n.isdigit():
        raise ValueError(f"KIF_FAULT={spec!r}: expected <point>:<count>, a point of {', '.join(SEAMS)}")
    module, path, when = SEAMS[name]
    owner = importlib.import_module(module)
    *outer, attr = path.split(".")
    for part in outer:
        owner = getattr(owner, part)
    original, passes = getattr(owner, attr), [0]

    def pass_point() -> None:
        passes[0] += 1
        if passes[0] == int(n):
            os.kill(os.getpid(), signal.SIGKILL)

    @functools.wraps(original)
    def armed(*args, **kwargs):
        if when == "before":
            pass_point()
        out = original(*args, **kwargs)
        if when == "after":
            pass_point()
        return out

    setattr(owner, attr, armed)
