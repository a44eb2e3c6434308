"""Knowledge fusion (docs/method.md §3 eq. 13 and §4, Algorithm 2).

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
from kif.torchutil import fraction_count


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


THRESHOLDS = ("percentile", "rank")


def percentile(scores: Tensor, q: float) -> Tensor:
    """``np.percentile(scores, q)`` (its default "linear" method), in float64 torch: 0-d tensor.

    Same arithmetic as numpy, so the value is bit-identical: virtual index (n−1)·q/100 in
    the ascending order, then numpy's lerp (a + (b−a)·γ, or b − (b−a)·(1−γ) when γ ≥ ½).
    """
    x = torch.sort(scores.detach().double().flatten()).values
    n = x.numel()
    if n == 0:
        raise ValueError("percentile of an empty score vector")
    pos = (n - 1) * (q / 100)
    lo = math.floor(pos)
    if pos >= n - 1:
        return x[-1]
    a, b, g = x[lo], x[lo + 1], pos - lo
    return b - (b - a) * (1 - g) if g >= 0.5 else a + (b - a) * g


def top_fraction_mask(scores: Tensor, fraction: float = 0.2, threshold: str = "percentile") -> Tensor:
    """The "+" units of eq. (15): the top ``fraction`` of the scores, by one of two rules.

    - "percentile" (default; the authors' code): score strictly above
      ``np.percentile(scores, 100 − 100·fraction)``. Ties at the threshold are all "−", so
      the count can fall short of fraction·U (U = 96: 19 units, not 20).
    - "rank" (kif's earlier rule): exactly ceil(fraction·U) highest scores, ties -> lower
      index; fraction·U is rounded to 9 decimals first (0.07·100 = 7.000000000000001 -> 7).

    Under both, a unit tied with the lowest score is never "+" (the percentile rule gives this
    by its strict ">"; the rank rule drops such units): importance scores are ≥ 0, so every
    zero-score unit is one of them, and the authors threshold min-max-normalised scores, where
    the lowest score is 0. A constant vector therefore has no "+" unit.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if threshold not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")
    n = scores.numel()
    s = scores.detach().double().flatten()
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=scores.device)
    if threshold == "percentile":
        return s > percentile(s, 100 - round(100 * fraction, 9))
    k = min(n, fraction_count(n, fraction))
    order = torch.argsort(-s, stable=True)  # stable: ties keep index order
    mask = torch.zeros(n, dtype=torch.bool, device=scores.device)
    mask[order[:k]] = True
    return mask & (s > s.min())


def static_fusion_weights(prev_scores: Tensor, cur_scores: Tensor, top_fraction: float = 0.2,
                          gamma: float = 0.7, threshold: str = "percentile") -> Tensor:
    """Eq. (15): w_prev per unit from the "+"/"−" status of each unit for prev and cur.

    prev+ cur+ -> γ (task-shared), prev+ cur− -> 1 (keep old), prev− cur+ -> 0 (take new),
    prev− cur− -> ½. Each score vector gets its own top-``top_fraction`` mask
    (``top_fraction_mask``, rule ``threshold``). γ is not given in the paper; the default
    0.7 is the authors' code (task-shared units = 0.7·previous + 0.3·current).
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    _same_units(prev_scores, cur_scores)
    p = top_fraction_mask(prev_scores, top_fraction, threshold).cpu()
    c = top_fraction_mask(cur_scores, top_fraction, threshold).cpu()
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
    mode "static": eq. (15), hparams top_fraction, gamma, threshold; "adaptive": eq. (16)-(17),
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
