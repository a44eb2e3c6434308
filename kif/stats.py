"""Statistics for comparing continual-learning runs, in pure Python (no torch, no scipy).

The unit of analysis is the **task sequence** (a task order): runs of one sequence share
its tasks, its order and the difficulty they bring, so the seeds run on one sequence move
together and are not independent replicates. A paired comparison of method A with method B
therefore takes, per sequence, the mean of the differences A − B over the seeds both ran on
it, and a Student t-interval over those per-sequence means, with n_sequences − 1 degrees of
freedom (:func:`sequence_paired`). With one seed per sequence this is the plain paired t.
Treating every (sequence, seed) pair as independent (:func:`t_interval` over all pairs)
understates the uncertainty when the seeds of a sequence agree.

A family of comparisons (e.g. the paper's claims) gets a family-wise verdict by Holm's
step-down adjustment of the two-sided p-values (:func:`holm`), reported next to each
comparison's own 95 % interval.
"""
from __future__ import annotations

import math
from statistics import fmean, stdev
from typing import Mapping, Sequence

# ---- Student t (no scipy) --------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz; Numerical Recipes §6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (e.g. t(0.975, 2) = 4.302653); bisection on :func:`t_cdf`."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile: need 0 < p < 1 and df > 0 (got p={p}, df={df})")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def t_pvalue(mean: float, sd: float, n: int) -> float | None:
    """Two-sided p of H0 "true mean 0" for a sample of ``n`` with this mean and sd:
    2·P(T > |mean|/(sd/√n)), df = n − 1. None for n < 2; sd = 0 gives 1 (mean 0) or 0."""
    if n < 2:
        return None
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = abs(mean) / (sd / math.sqrt(n))
    return min(1.0, 2.0 * (1.0 - t_cdf(t, n - 1)))


# ---- intervals -------------------------------------------------------------------------------------


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """The mean, or None when there is no value or one is missing (a score not evaluated)."""
    return None if not values or any(v is None for v in values) else fmean(values)


def summarize(values: Sequence[float | None]) -> dict:
    """Mean, sample standard deviation (n − 1; None for n < 2) and n; None entries (a metric
    a run does not have, e.g. FWT of a joint run) are left out."""
    vals = [float(v) for v in values if v is not None]
    return {"mean": fmean(vals) if vals else None, "sd": stdev(vals) if len(vals) >= 2 else None, "n": len(vals)}


def t_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean of independent values with its Student t-interval: mean ± t((1+level)/2, n−1)·sd/√n,
    and the two-sided p of "mean 0". Keys mean, sd, n, half (None for n < 2), low, high, p."""
    s = summarize(values)
    half = None
    if s["n"] >= 2:
        half = t_quantile(0.5 + level / 2.0, s["n"] - 1) * s["sd"] / math.sqrt(s["n"])
    return {**s, "half": half, "low": None if half is None else s["mean"] - half,
            "high": None if half is None else s["mean"] + half,
            "p": None if half is None else t_pvalue(s["mean"], s["sd"], s["n"])}


def sequence_paired(by_sequence: Mapping[object, Sequence[float]], level: float = 0.95) -> dict:
    """Paired comparison with the task sequence as the unit: ``by_sequence`` maps each
    sequence to the differences A − B of its seeds (one per seed both methods ran). Each
    sequence contributes the mean of its differences; the result is :func:`t_interval` over
    those means (n = sequences, df = n − 1), plus ``pairs`` (all differences) and ``unit_means``.
    Sequences without a difference are left out. With one seed per sequence it is the plain
    paired t over the pairs."""
    means = {k: fmean(v) for k, v in by_sequence.items() if len(v)}
    out = t_interval(list(means.values()), level)
    return {**out, "pairs": sum(len(v) for v in by_sequence.values()), "unit_means": means}


def mean_over_units(by_unit: Mapping[object, Mapping[object, float | None]]) -> dict:
    """The mean over units (task orders) of each unit's mean over its replicates (seeds), as the
    paper averages over orders, with the sd (and n) of the replicates run in every unit, of each
    one's mean over the units. ``by_unit``: unit -> {replicate: value, None where missing}."""
    per_unit = [summarize(list(v.values()))["mean"] for v in by_unit.values()]
    common = set.intersection(*(set(v) for v in by_unit.values()))
    per_replicate = [None if any(v[r] is None for v in by_unit.values()) else fmean(v[r] for v in by_unit.values())
                     for r in common]
    spread = summarize(per_replicate)
    return {"mean": None if any(m is None for m in per_unit) else fmean(per_unit), "sd": spread["sd"], "n": spread["n"]}


def mirror(interval: dict) -> dict:
    """B − A from A − B: the same interval, negated (0.0 − x: no "-0.00")."""
    neg = lambda x: None if x is None else 0.0 - x  # noqa: E731
    out = {**interval, "mean": neg(interval["mean"]), "low": neg(interval.get("high")), "high": neg(interval.get("low"))}
    if "unit_means" in interval:
        out["unit_means"] = {k: neg(v) for k, v in interval["unit_means"].items()}
    return out


# ---- a family of comparisons -----------------------------------------------------------------------


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error ≤ α when rejecting adjusted p ≤ α):
    sorted ascending, the i-th smallest (0-based) becomes max over j ≤ i of min(1, (m − j)·p_j),
    with m the number of comparisons that have a p. None stays None (no interval, not counted)."""
    have = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(have)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for j, (p, i) in enumerate(have):
        running = max(running, min(1.0, (m - j) * p))
        out[i] = running
    return out


def interval_word(ci: dict | None, above: str = "A > B", below: str = "A < B") -> str:
    """What a 95 % interval allows one to say: ``above`` when it lies above 0, ``below`` when
    it lies below, "not resolved" when it contains 0 ("one unit: no interval" for n < 2)."""
    if ci is None or ci.get("half") is None:
        return "one unit: no interval"
    if ci["low"] > 0:
        return above
    if ci["high"] < 0:
        return below
    return "not resolved"


def holm_word(p_holm: float | None, mean: float | None, alpha: float = 0.05,
              above: str = "A > B", below: str = "A < B") -> str:
    """The family-wise verdict: the sign's word when Holm's adjusted p ≤ α, else "not resolved"."""
    if p_holm is None or mean is None:
        return "-"
    if p_holm > alpha:
        return "not resolved"
    return above if mean > 0 else below
