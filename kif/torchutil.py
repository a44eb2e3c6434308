"""Small tensor and module helpers that several parts of kif share."""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch


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
