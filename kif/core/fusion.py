"""Knowledge fusion (METHOD.md §3 eq. 13 and §4, Algorithm 2).

All score vectors are [U] (one entry per skill unit). A fusion weight ``w_prev`` is the
coefficient of the previous fused model: fused = w_prev·prev + (1 − w_prev)·cur.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor

from kif.core.units import SkillUnits
from kif.errors import ArtifactError


def minmax_normalize(x: Tensor) -> Tensor:
    """Min-max to [0, 1] (the Norm of eq. 13), in fp32.

    A constant vector (incl. a single unit) returns zeros, never NaN: its units are
    indistinguishable, so it carries no ranking information and should add nothing.
    """
    x = x.float()
    if x.numel() == 0:
        return x.clone()
    lo, hi = x.min(), x.max()
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1.0), 0.0)


def accumulate_importance(acc_prev: Tensor | None, current: Tensor, beta: float = 0.7) -> Tensor:
    """Eq. (13): I(Û_k) = β·Norm(I(Û_{k−1})) + (1−β)·Norm(I(U_k)); I(Û_1) = I(U_1) (unnormalised)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if acc_prev is None:
        return current.detach().float().clone()
    _same_units(acc_prev, current)
    return beta * minmax_normalize(acc_prev) + (1 - beta) * minmax_normalize(current)


def top_fraction_mask(scores: Tensor, fraction: float = 0.2) -> Tensor:
    """The "+" units of eq. (15): exactly ceil(fraction·U) highest scores, ties -> lower index.

    This is the rank form of "score above the top-20 % quantile threshold δ": it always
    selects the same count, and the tie rule makes it deterministic. fraction·U is rounded
    to 9 decimals first so that e.g. 0.07·100 = 7.000000000000001 selects 7, not 8.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    n = scores.numel()
    k = min(n, math.ceil(round(fraction * n, 9)))
    order = torch.argsort(-scores.detach().float(), stable=True)  # stable: ties keep index order
    mask = torch.zeros(n, dtype=torch.bool, device=scores.device)
    mask[order[:k]] = True
    return mask


def static_fusion_weights(prev_scores: Tensor, cur_scores: Tensor,
                          top_fraction: float = 0.2, gamma: float = 0.5) -> Tensor:
    """Eq. (15): w_prev per unit from the "+"/"−" status of each unit for prev and cur.

    prev+ cur+ -> γ (task-shared), prev+ cur− -> 1 (keep old), prev− cur+ -> 0 (take new),
    prev− cur− -> ½. Each score vector gets its own top-``top_fraction`` mask.
    """
    _same_units(prev_scores, cur_scores)
    p = top_fraction_mask(prev_scores, top_fraction).cpu()
    c = top_fraction_mask(cur_scores, top_fraction).cpu()
    w = torch.full(p.shape, 0.5)
    w[p & c] = gamma
    w[p & ~c] = 1.0
    w[~p & c] = 0.0
    return w


def adaptive_fusion_weights(prev_scores: Tensor, cur_scores: Tensor,
                            temperature: float = 0.15, normalize: bool = True) -> Tensor:
    """Eq. (16)-(17): w_prev = exp(p/τ) / (exp(p/τ) + exp(c/τ)) = sigmoid((p − c)/τ).

    The sigmoid form never overflows. With ``normalize`` each vector is min-max normalised
    first (the paper's "normalised scores"), so τ acts on a [0, 1] scale.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    _same_units(prev_scores, cur_scores)
    p, c = prev_scores.detach().float(), cur_scores.detach().float()
    if normalize:
        p, c = minmax_normalize(p), minmax_normalize(c)
    return torch.sigmoid((p - c) / temperature).cpu()


def weight_ensemble(prev: Mapping[str, Tensor], cur: Mapping[str, Tensor], lam: float) -> dict[str, Tensor]:
    """Eq. (14) baseline: λ·prev + (1−λ)·cur for every tensor (fp32 math, cur's dtype)."""
    if set(prev) != set(cur):
        name = next(iter(set(prev) ^ set(cur)))
        raise ArtifactError(f"weight ensemble: parameter {name!r} is in only one of prev/cur")
    out = {}
    for k, c in cur.items():
        p = prev[k]
        if p.shape != c.shape:
            raise ArtifactError(f"weight ensemble: {k!r} has shape {list(p.shape)} vs {list(c.shape)}")
        out[k] = (lam * p.detach().to(c.device, torch.float32) + (1 - lam) * c.detach().float()).to(c.dtype)
    return out


def fuse(units: SkillUnits, prev_params: Mapping[str, Tensor], cur_params: Mapping[str, Tensor],
         prev_scores: Tensor, cur_scores: Tensor, mode: str = "adaptive", **hparams) -> tuple[dict[str, Tensor], Tensor]:
    """Fuse the previous fused model with the freshly trained one, unit by unit.

    prev_scores = accumulated importance I(Û_{k−1}) (eq. 13), cur_scores = I(U_k).
    mode "static": eq. (15), hparams top_fraction, gamma; "adaptive": eq. (16)-(17),
    hparams temperature, normalize. Returns (fused params keyed like cur_params, w_prev).
    """
    for what, s in (("prev_scores", prev_scores), ("cur_scores", cur_scores)):
        if s.shape != (len(units),):
            raise ArtifactError(f"{what}: {list(s.shape)} scores for {len(units)} units")
    if mode == "static":
        w = static_fusion_weights(prev_scores, cur_scores, **hparams)
    elif mode == "adaptive":
        w = adaptive_fusion_weights(prev_scores, cur_scores, **hparams)
    else:
        raise ValueError(f"fusion mode must be 'static' or 'adaptive', got {mode!r}")
    return units.interpolate(prev_params, cur_params, w), w


def _same_units(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.dim() != 1:
        raise ArtifactError(f"score vectors do not match: {list(a.shape)} vs {list(b.shape)} "
                            "(scores from a different set of skill units?)")
