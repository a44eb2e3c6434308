"""Fault injection for the crash tests (``tests/test_resume.py``).

``KIF_FAULT=name:N`` SIGKILLs the process the N-th time the named point is passed.
Points: ``train_step`` (an optimizer step), ``fusion`` (inside KIF's consolidation),
``eval`` (after one task's evaluation), ``write`` (just before the checkpoint is written).
Unset (always, outside tests) it costs one dict lookup.
"""
from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    spec = os.environ.get("KIF_FAULT")
    if not spec or not spec.startswith(name + ":"):
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(spec.split(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)
