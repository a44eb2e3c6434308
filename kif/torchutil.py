"""Small tensor and module helpers that several parts of kif share."""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch

from .errors import KifError
from .guards import non_finite_names, precision_hint


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model.eval()`` for the block (no dropout), then back to the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def stack_terms(terms: Sequence[torch.Tensor]) -> torch.Tensor:
    """[n] tensor of 0-d loss terms, gathered on the first term's device (a model split over
    devices has its terms on several)."""
    return torch.stack([t.to(terms[0].device) for t in terms])


def fraction_count(n: int, fraction: float) -> int:
    """ceil(fraction·n), with fraction·n rounded to 9 decimals first, so that e.g.
    0.07·100 = 7.000000000000001 counts 7, not 8."""
    return math.ceil(round(fraction * n, 9))


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """One fused max-|x| per tensor (NaN/inf propagate, no overflow) and a single sync."""
    if not tensors:
        return True
    norms = torch._foreach_norm(tensors, ord=float("inf"))
    dev = norms[0].device
    return bool(torch.stack([n.float().to(dev) for n in norms]).isfinite().all())


def non_finite(tensors: dict) -> list[str]:
    """Names of the floating-point tensors holding NaN or inf (one fused check when all are finite)."""
    floats = [t for t in tensors.values() if t.is_floating_point() and t.numel()]
    return [] if all_finite(floats) else non_finite_names(tensors)


def check_finite_state(tensors: dict, what: str, bf16: bool) -> None:
    """Refuse to checkpoint a state holding NaN/inf: it would be a 'completed' task that
    poisons every later one and cannot be resumed from."""
    bad = non_finite(tensors)
    if bad:
        raise KifError(f"{what}: the model state holds non-finite values (NaN/inf, e.g. {bad[0]}; "
                       f"{len(bad)} tensor(s)); not saved. {precision_hint(bf16)[0].upper()}"
                       f"{precision_hint(bf16)[1:]}. Earlier tasks are kept; rerun to resume")


# ---- precision (train.precision, eval.precision) ------------------------------------------------

def use_bf16(precision: str) -> bool:
    if precision == "fp32":
        return False
    has = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return has if precision == "auto" else True


def eval_autocast(precision: str, model):
    """bf16 autocast for evaluation where ``precision`` asks for it (the rules of training's
    ``train.precision``); weights stay as they are. A no-op context for fp32."""
    if not use_bf16(precision):
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)
