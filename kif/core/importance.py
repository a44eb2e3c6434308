"""Importance-aware knowledge localization (docs/method.md §3, Algorithm 1).

Per trainable parameter w with mini-batch gradient g, at every optimizer step:
  eq. (8)  first order   I = |w·g|
  eq. (9)  second order  I = |w·g − ½(w·g)²|   (Hessian diagonal ≈ empirical Fisher)
  ablation "grad"        I = |g|
  eq. (10) Ī_t = α1·Ī_{t−1} + (1−α1)·I_t
  eq. (11) Ū_t = α2·Ū_{t−1} + (1−α2)·|I_t − Ī_t|   (uses the updated Ī_t, as AdaLoRA)
  eq. (12) s = Ī_t·Ū_t
Unit scores (eq. 6) are computed from ``scores()`` by ``SkillUnits.unit_scores``.

``smoothing`` picks what ``scores()`` returns:
  "ema"          eq. (10)-(12), the method (``True`` means this);
  "single_step"  I_t of ONE optimizer step, no EMA, no uncertainty: the authors' Table IV
                 ablations, "s = I only" (sensitivity "first") and "s = |∇L|" ("grad"),
                 which keep one step's value (the first counted step, ``single_step_index``);
  "mean"         the plain mean of I_t over the task's steps (kif's earlier reading of the
                 ablation; ``False`` means this). It ranks units much like the EMA score
                 (Spearman 0.93-0.95 on a small LoRA) where one step does not (0.22-0.40).

When the scores are read. The authors' trainer calls their tracker after ``optimizer.step()``
(weights w_{t+1} with the clipped gradient g_t) and skips global step 0.
- "ema" and "mean": kif reads (w_t, g_t) in ``update()``, after gradient clipping and before
  ``optimizer.step()``, from the task's first step on -- a known, measured difference, kept:
  with eq. (10)-(12) the two orders rank the units alike (Spearman 1.000 on identical runs),
  and kif's pairs each gradient with the weights it was computed at.
- "single_step" (``single_step_timing: after_step``, the default): the authors' timing. ``update()``
  counts the step; ``after_step()``, called right after ``optimizer.step()`` (before
  ``zero_grad``), reads w_{t+1} and g_t for the kept step. One step's score depends on it: under
  a linear warm-up step 0 has lr 0, so on the first task LoRA's B is still zero at step 1 before
  the step and |w·g| is 0 for every LoRA entry; after step 1 (lr > 0) it is not (issue 28).
  ``before_step`` keeps kif's earlier reading (w_t, g_t). |g| ("grad") is the same either way.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Mapping

import torch
from torch import Tensor

from kif.errors import ArtifactError
from kif.torchutil import all_finite

SENSITIVITIES = ("first", "second", "grad")
SMOOTHINGS = ("ema", "mean", "single_step")
SINGLE_STEP_TIMINGS = ("after_step", "before_step")
_CHUNK = 1 << 26  # elements per fused batch: bounds the fp32 temporaries on full fine-tuning


class ImportanceTracker:
    """Running per-parameter importance over the optimizer steps of one task.

    Call ``update()`` after gradients are accumulated and before ``optimizer.step()``
    (and before ``zero_grad``). State is fp32 on each param's device whatever the param
    dtype; create the tracker after the model is on its device.

    ``smoothing`` (module docstring): "ema" (or True), "mean" (or False), "single_step".
    ``single_step_index``: with "single_step", the 0-based counted step whose I_t is kept;
    -1 keeps the last step. Default 1, the authors' first counted step: they skip step 0,
    and at step 0 of the first task LoRA's B is zero, so |w·g| is 0 for every LoRA weight
    (A's gradient is Bᵀ·(...) = 0 too). A task with fewer steps keeps its last step.
    ``single_step_timing``: "after_step" (the authors': the kept step's I is computed by
    ``after_step()`` from w_{t+1}) or "before_step" (in ``update()``, from w_t).
    """

    def __init__(self, params: Mapping[str, torch.nn.Parameter] | Iterable[tuple[str, Tensor]],
                 sensitivity: str = "first", smoothing: bool | str = "ema",
                 alpha1: float = 0.85, alpha2: float = 0.85, single_step_index: int = 1,
                 single_step_timing: str = "after_step"):
        if sensitivity not in SENSITIVITIES:
            raise ValueError(f"sensitivity must be one of {SENSITIVITIES}, got {sensitivity!r}")
        smoothing = normalize_smoothing(smoothing)
        for name, a in (("alpha1", alpha1), ("alpha2", alpha2)):
            if not 0.0 <= a < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {a}")
        if single_step_index < -1:
            raise ValueError(f"single_step_index must be >= -1, got {single_step_index}")
        if single_step_timing not in SINGLE_STEP_TIMINGS:
            raise ValueError(f"single_step_timing must be one of {SINGLE_STEP_TIMINGS}, got {single_step_timing!r}")
        params = dict(params)
        self.names = list(params)
        self.sensitivity, self.smoothing = sensitivity, smoothing
        self.alpha1, self.alpha2 = alpha1, alpha2
        self.single_step_index = single_step_index
        self.single_step_timing = single_step_timing
        self._pending = False  # "single_step", after_step timing: this step's I is read by after_step()
        self._params = list(params.values())

        def zeros():
            return [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in self._params]

        self._ibar = zeros()  # Ī ("ema"), the running mean of I ("mean") or the kept I_t ("single_step")
        self._ubar = zeros() if smoothing == "ema" else []
        self._chunks = _chunks([p.numel() for p in self._params])
        self.steps = 0  # successful updates this task
        self.skipped = 0  # non-finite updates skipped this task
        self.skipped_total = 0  # ... over the tracker's lifetime (survives reset)
        self._warned = False

    @torch.no_grad()
    def update(self, check_finite: bool = True) -> bool:
        """Fold the current ``.grad``s into the state; False (and no change) if any is non-finite.

        ``check_finite=False`` skips the check (a device sync) for callers that made it already.
        """
        grads = [p.grad for p in self._params]
        if check_finite and not all_finite([g for g in grads if g is not None and g.numel()]):
            self.skipped += 1
            self.skipped_total += 1
            if not self._warned:
                self._warned = True
                warnings.warn("kif: non-finite gradient, importance update skipped "
                              "(further skips are counted in .skipped, not warned)", stacklevel=2)
            return False
        self.steps += 1
        if self.smoothing == "single_step" and 0 <= self.single_step_index < self.steps - 1:
            return True  # the kept step is behind us: nothing to compute
        if self.smoothing == "single_step" and self.single_step_timing == "after_step":
            self._pending = True  # read w_{t+1} and g_t once the optimizer has stepped
            return True
        for lo, hi in self._chunks:
            imp = self._sensitivity(self._params[lo:hi], grads[lo:hi])
            ibar = self._ibar[lo:hi]
            if self.smoothing == "single_step":
                torch._foreach_copy_(ibar, imp)  # I_t of this step (kept once its index is passed)
                continue
            if self.smoothing == "mean":
                torch._foreach_lerp_(ibar, imp, 1.0 / self.steps)  # running mean of I_t
                continue
            torch._foreach_lerp_(ibar, imp, 1.0 - self.alpha1)  # eq. (10)
            torch._foreach_sub_(imp, ibar)
            torch._foreach_abs_(imp)  # |I_t − Ī_t|
            torch._foreach_lerp_(self._ubar[lo:hi], imp, 1.0 - self.alpha2)  # eq. (11)
        return True

    @torch.no_grad()
    def after_step(self) -> None:
        """Right after ``optimizer.step()``, before ``zero_grad``: for "single_step" with the
        authors' timing, the kept step's I_t from the updated weights w_{t+1} and the (clipped)
        gradient g_t still in ``.grad``. A no-op otherwise, and after a skipped ``update()``."""
        if not self._pending:
            return
        self._pending = False
        grads = [p.grad for p in self._params]
        for lo, hi in self._chunks:
            torch._foreach_copy_(self._ibar[lo:hi], self._sensitivity(self._params[lo:hi], grads[lo:hi]))

    def _sensitivity(self, params: list[Tensor], grads: list[Tensor | None]) -> list[Tensor]:
        """Fresh fp32 tensors I_t (never aliases a param or grad, so callers may mutate it)."""
        w = [p.detach().float() for p in params]  # no copy if already fp32: only read below
        g = [torch.zeros_like(x) if gr is None else gr.detach().float() for x, gr in zip(w, grads)]
        if self.sensitivity == "grad":
            return torch._foreach_abs(g)
        wg = torch._foreach_mul(w, g)
        if self.sensitivity == "second":  # eq. (9): w·g − ½(w·g)²
            sq = torch._foreach_mul(wg, wg)
            torch._foreach_mul_(sq, -0.5)
            torch._foreach_add_(wg, sq)
        torch._foreach_abs_(wg)  # eq. (8) / (9)
        return wg

    @torch.no_grad()
    def scores(self) -> dict[str, Tensor]:
        """Per-parameter scores s (fp32, param shapes): eq. (12) Ī·Ū, the mean of I_t, or one step's I_t."""
        s = (torch._foreach_mul(self._ibar, self._ubar) if self.smoothing == "ema"
             else [t.clone() for t in self._ibar])
        return dict(zip(self.names, s))

    def reset(self) -> None:
        """New task: zero the state and the per-task counters (``skipped_total`` is kept)."""
        torch._foreach_zero_(self._ibar)
        if self._ubar:
            torch._foreach_zero_(self._ubar)
        self.steps = self.skipped = 0
        self._pending = False

    # -- checkpointing ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor | int]:
        """Flat dict: ``ibar.<name>`` / ``ubar.<name>`` tensors (copies) + int counters."""
        sd: dict[str, Tensor | int] = {"steps": self.steps, "skipped": self.skipped,
                                       "skipped_total": self.skipped_total}
        sd.update({f"ibar.{n}": t.clone() for n, t in zip(self.names, self._ibar)})
        sd.update({f"ubar.{n}": t.clone() for n, t in zip(self.names, self._ubar)})
        return sd

    def load_state_dict(self, sd: Mapping[str, Tensor | int]) -> None:
        own = self.state_dict()
        missing = [k for k in own if k not in sd]
        extra = [k for k in sd if k not in own]
        if missing or extra:
            what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
            raise ArtifactError(f"importance state does not match the tracker: {what} "
                                f"(smoothing={self.smoothing})")
        for prefix, state in (("ibar", self._ibar), ("ubar", self._ubar)):
            for n, t in zip(self.names, state):
                src = sd[f"{prefix}.{n}"]
                if tuple(src.shape) != tuple(t.shape):
                    raise ArtifactError(f"importance state {prefix}.{n}: shape {list(src.shape)}, "
                                        f"param has {list(t.shape)}")
                t.copy_(src)
        self.steps, self.skipped = int(sd["steps"]), int(sd["skipped"])
        self.skipped_total = int(sd["skipped_total"])


def normalize_smoothing(smoothing: bool | str) -> str:
    """True -> "ema", False -> "mean" (the keys' meaning before "single_step" existed)."""
    if smoothing is True or smoothing is False:
        return "ema" if smoothing else "mean"
    if smoothing not in SMOOTHINGS:
        raise ValueError(f"smoothing must be one of {SMOOTHINGS} (or true/false), got {smoothing!r}")
    return smoothing


def _chunks(numels: list[int]) -> list[tuple[int, int]]:
    """Split tensor indices into consecutive runs of at most _CHUNK elements (>= 1 tensor each)."""
    cap, out, lo, acc = _CHUNK, [], 0, 0
    for i, n in enumerate(numels):
        if acc and acc + n > cap:
            out.append((lo, i))
            lo, acc = i, 0
        acc += n
    if lo < len(numels):
        out.append((lo, len(numels)))
    return out
