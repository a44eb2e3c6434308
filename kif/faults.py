"""Fault injection for the crash tests: ``KIF_FAULT=name:N`` SIGKILLs the process the N-th time
the named point is passed. A point is a function or method the code already has (``SEAMS``);
``import kif`` wraps the one ``KIF_FAULT`` names, and nothing when it is unset: production code
carries no test hook and its hot paths (an optimizer step, a task's evaluation) pay nothing.
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
    "write": ("kif.rundir", "RunDir.save_checkpoint", "before"),  # just before a checkpoint is written
    "report_publish": ("kif.report.build", "_publish_file", "before"),  # between two renames of a report
    "cache_build": ("kif.models.cache", "_mark", "before"),  # a model cache's files written, not its marker
}


def install(spec: str) -> None:
    name, _, n = spec.partition(":")
    if name not in SEAMS or not n.isdigit():
        raise ValueError(f"KIF_FAULT={spec!r}: expected <point>:<count>, a point of {', '.join(SEAMS)}")
    module, path, when = SEAMS[name]
    *outer, attr = path.split(".")
    owner = functools.reduce(getattr, outer, importlib.import_module(module))
    original, passes = getattr(owner, attr), []

    @functools.wraps(original)
    def armed(*args, **kwargs):
        out = original(*args, **kwargs) if when == "after" else None
        passes.append(1)
        if len(passes) == int(n):
            os.kill(os.getpid(), signal.SIGKILL)
        return out if when == "after" else original(*args, **kwargs)

    setattr(owner, attr, armed)
