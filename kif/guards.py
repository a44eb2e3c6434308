"""Numeric guards: config values that would silently become 0 or inf in float32, and the advice
given when numbers blow up. Torch-free (read at config load): the check of model states for
NaN/inf is :func:`kif.torchutil.check_finite_state`, training's divergence stop :mod:`kif.divergence`.
"""
from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError

F32_TINY = 1.1754943508222875e-38  # torch.finfo(torch.float32).tiny: smallest normal float32
F32_MAX = 3.4028234663852886e+38  # torch.finfo(torch.float32).max


# ---- config values in the precision they are used in -----------------------------------------

def check_float_range(values: Any, source: str, prefix: str = "", blame=None) -> None:
    """Every float in ``values`` (a config dump, nested dicts/lists) must be finite and, unless
    0, a normal float32 (|x| in [1.2e-38, 3.4e38]): kif computes in float32 (bf16 has the same
    range), where 1e-300 is 0 (a temperature of 0 divides 0 by 0) and 1e39 is inf.
    ``blame(key)`` names the source of a key (e.g. a ``--set`` flag); default ``source``."""
    if isinstance(values, dict):
        for k, v in values.items():
            check_float_range(v, source, f"{prefix}{k}.", blame)
        return
    if isinstance(values, (list, tuple)):
        for i, v in enumerate(values):
            check_float_range(v, source, f"{prefix}{i}.", blame)
        return
    if not isinstance(values, float):
        return
    key = prefix.rstrip(".")
    where = blame(key) if blame else source
    if not math.isfinite(values):
        raise ConfigError(f"{where}: {key}: must be a finite number, got {values}")
    if values != 0 and not (F32_TINY <= abs(values) <= F32_MAX):
        became = "inf" if abs(values) > F32_MAX else "0" if abs(values) < F32_TINY / 2 ** 23 else "subnormal (imprecise)"
        raise ConfigError(f"{where}: {key}: {values!r} is {became} in float32, the precision "
                          f"kif computes in; use a value between {F32_TINY:.2g} and {F32_MAX:.2g} in size")


# ---- advice when numbers blow up ----------------------------------------------------------------

def non_finite_names(tensors: dict) -> list[str]:
    """Names of the floating-point tensors holding NaN or inf, checked one by one with the tensors'
    own methods, so this module stays torch-free (a resume's check, read by ``kif sweep`` before
    torch loads); :func:`kif.torchutil.non_finite` puts one fused pass before it for hot paths."""
    return [n for n, t in tensors.items() if t.is_floating_point() and t.numel() and not bool(t.isfinite().all())]


def precision_hint(bf16: bool) -> str:
    """What to try when numbers blow up; fp32 is suggested only to a run that is not in fp32."""
    return "lower train.learning_rate" + (" or use train.precision: fp32" if bf16 else "")


def backward_hint(attention_backend: str, backends: list[str]) -> str:
    """What to check when a step's loss was finite but its gradients were not: the backward
    pass, not the step size (on Hopper GPUs, cuDNN's bf16 attention backward on padded rows)."""
    return ("the loss was finite but its gradients were not, a fault of the backward pass that a lower "
            f"learning rate does not fix: check train.attention_backend (now {attention_backend}: "
            f"{', '.join(backends)}; math rules the fused kernels out), the padded lengths of the skipped "
            "batches (per_task skipped_batches in results.json), and a method's regulariser if it has one")
