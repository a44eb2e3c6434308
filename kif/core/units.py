"""Skill units (docs/method.md §2): groups of trainable parameters scored and fused as one.

Two granularities:
- matrix level (KIF): one unit per parameter tensor;
- LoRA rank-1 (KIFLoRA), eq. (3)-(4): W = W0 + sum_i b_i a_i, unit u_i = (B[:, i], A[i, :]).

Parameters are plain ordered dicts ``name -> tensor``. Names are cleaned
(``clean_param_name``) so that a PEFT model, its saved adapter and a bare state dict
all map onto the same units.
"""

from __future__ import annotations

import re
from typing import Mapping, NamedTuple

import torch
from torch import Tensor

from kif.errors import ArtifactError

_PEFT_PREFIX = "base_model.model."
_LORA_NAME = re.compile(r"^(?:(?P<module>.*)\.)?lora_(?P<role>[AB])\.weight$")


def clean_param_name(name: str, adapter: str = "default") -> str:
    """``base_model.model.X.lora_A.<adapter>.weight`` -> ``X.lora_A.weight``.

    Only the given adapter's segment is stripped, so a second adapter's params keep
    their segment and never collide with the first one's.
    """
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX):]
    return re.sub(rf"\.(lora_[AB])\.{re.escape(adapter)}(?=\.|$)", r".\1", name)


def lora_role(clean_name: str) -> tuple[str, str] | None:
    """(module, 'A'|'B') for a cleaned LoRA weight name, else None."""
    m = _LORA_NAME.match(clean_name)
    return (m["module"] or "", m["role"]) if m else None


def _shape(v) -> tuple[int, ...]:
    return tuple(v.shape) if isinstance(v, Tensor) else tuple(torch.Size(v))


class _Group(NamedTuple):
    """A run of units backed by the same tensors: (w,) -> 1 unit, (A, B) -> r units."""

    params: tuple[str, ...]  # cleaned param names
    start: int  # index of the first unit
    size: int


class SkillUnits:
    """An ordered list of skill units over a fixed set of parameter tensors.

    Build with ``SkillUnits.matrix_level(params)`` or ``SkillUnits.lora_rank1(params)``;
    ``params`` maps (raw or cleaned) names to tensors or shapes. Every method that takes
    a params/scores dict accepts raw or cleaned keys and checks them against the units.
    """

    def __init__(self, kind: str, names: list[str], groups: list[_Group],
                 shapes: dict[str, tuple[int, ...]], adapter: str = "default"):
        self.kind = kind
        self.names = names
        self.adapter = adapter
        self._groups = groups
        self._shapes = shapes  # cleaned param name -> shape, in param order
        self._slot = {p: (g, i) for g in groups for i, p in enumerate(g.params)}

    # -- construction ------------------------------------------------------------

    @classmethod
    def matrix_level(cls, params: Mapping, adapter: str = "default") -> SkillUnits:
        """§2 matrix-level unit: one unit per parameter tensor, named after it."""
        shapes = _clean_shapes(params, adapter)
        groups = [_Group((p,), i, 1) for i, p in enumerate(shapes)]
        return cls("matrix", list(shapes), groups, shapes, adapter)

    @classmethod
    def lora_rank1(cls, params: Mapping, adapter: str = "default") -> SkillUnits:
        """Eq. (3)-(4): r units ``f"{module}.lora#{i}"`` per LoRA module (A [r,in], B [out,r]).

        Non-LoRA trainable params become matrix-level units. A module sits where its
        first factor (usually A) appears in ``params``.
        """
        shapes = _clean_shapes(params, adapter)
        pairs: dict[str, dict[str, str]] = {}
        for p in shapes:
            if (lr := lora_role(p)) is not None:
                pairs.setdefault(lr[0], {})[lr[1]] = p
        names, groups, seen = [], [], set()
        for p in shapes:
            lr = lora_role(p)
            if lr is None:
                groups.append(_Group((p,), len(names), 1))
                names.append(p)
                continue
            module = lr[0]
            if module in seen:
                continue
            seen.add(module)
            ab = pairs[module]
            if set(ab) != {"A", "B"}:
                have, lack = next(iter(ab)), "B" if "A" in ab else "A"
                raise ArtifactError(f"LoRA module {module!r} has lora_{have} but no lora_{lack}")
            a, b = ab["A"], ab["B"]
            sa, sb = shapes[a], shapes[b]
            if len(sa) != 2 or len(sb) != 2 or sa[0] != sb[1]:
                raise ArtifactError(f"LoRA module {module!r}: lora_A {list(sa)} and lora_B "
                                    f"{list(sb)} do not share a rank (want [r,in] and [out,r])")
            r = sa[0]
            groups.append(_Group((a, b), len(names), r))
            names += [f"{module}.lora#{i}" if module else f"lora#{i}" for i in range(r)]
        return cls("lora_rank1", names, groups, shapes, adapter)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"SkillUnits(kind={self.kind!r}, units={len(self)}, params={len(self._shapes)})"

    @property
    def param_names(self) -> list[str]:
        """Cleaned names of the parameter tensors the units cover, in order."""
        return list(self._shapes)

    # -- scores --------------------------------------------------------------------

    def unit_scores(self, param_scores: Mapping[str, Tensor]) -> Tensor:
        """Eq. (6): unit score = mean of per-parameter scores s(w) over the unit -> [U] fp32.

        Rank-1 unit i: the mean over the entries of outer(s(B[:, i]), s(A[i, :])), computed
        in the equal factored form mean(s(B[:, i])) * mean(s(A[i, :])) (docs/method.md §3).
        """
        s = {c: t.detach().float() for c, (_, t) in self._match(param_scores, "scores").items()}
        out = []
        for g in self._groups:
            if len(g.params) == 1:
                out.append(s[g.params[0]].mean().reshape(1))
            else:
                a, b = s[g.params[0]], s[g.params[1]]
                out.append(b.mean(dim=0) * a.mean(dim=1))
        if not out:
            return torch.zeros(0)
        dev = out[0].device  # one transfer (one sync on a GPU), not one per tensor
        return torch.cat([o.to(dev) for o in out]).cpu()

    def scores_to_dict(self, scores: Tensor) -> dict[str, Tensor]:
        """unit name -> 0-d fp32 tensor (own storage: safetensors rejects shared views)."""
        scores = self._check_vec(scores, "scores")
        return {n: scores[i].detach().float().cpu().clone() for i, n in enumerate(self.names)}

    def scores_from_dict(self, d: Mapping[str, Tensor]) -> Tensor:
        """Inverse of ``scores_to_dict``; ArtifactError names a missing or unexpected unit."""
        missing = [n for n in self.names if n not in d]
        if missing:
            raise ArtifactError(f"unit scores: missing unit {missing[0]!r}"
                                + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
        known = set(self.names)
        extra = [n for n in d if n not in known]
        if extra:
            raise ArtifactError(f"unit scores: unexpected unit {extra[0]!r}"
                                + (f" (+{len(extra) - 1} more)" if len(extra) > 1 else ""))
        bad = [n for n in self.names if d[n].numel() != 1]
        if bad:
            raise ArtifactError(f"unit scores: {bad[0]!r} is not a scalar")
        return torch.stack([d[n].detach().float().cpu().reshape(()) for n in self.names])

    # -- fusion --------------------------------------------------------------------

    def broadcast(self, values: Tensor) -> dict[str, Tensor]:
        """Per-unit values [U] -> per-param tensors that broadcast against each param.

        Matrix unit: a 0-d tensor; LoRA A: [r, 1] (row i); LoRA B: [1, r] (column i).
        Keyed by cleaned param name. Used for fusion and to mask gradients per unit.
        """
        values = self._check_vec(values, "values")
        return {p: self._view(p, values) for p in self._shapes}

    def interpolate(self, prev: Mapping[str, Tensor], cur: Mapping[str, Tensor],
                    w_prev: Tensor) -> dict[str, Tensor]:
        """Per unit: w_prev * prev + (1 - w_prev) * cur (eq. 14-17 applied unit-wise).

        Matrix units scale the whole tensor; rank-1 unit i scales row i of A and column i
        of B by the same coefficient (docs/method.md §4). The two coefficients are rounded to
        fp32 from float64 (1 − w is exact there), and the sum of two products is formed in
        fp32: for static fusion this is bit for bit the authors' ``0.3·cur + 0.7·prev``
        (a ``lerp`` would differ by an ulp). Returned in cur's dtype/device, keyed like ``cur``.
        """
        p, c = self._match(prev, "prev params"), self._match(cur, "cur params")
        w64 = self._check_vec(w_prev, "w_prev").double()
        coef = torch.stack([w64, 1 - w64]).float()  # [2, U]: on prev, on cur
        on_device: dict = {}  # coefficients copied once per device, not once per tensor
        out = {}
        for name, (key, ct) in c.items():
            if ct.device not in on_device:
                on_device[ct.device] = coef.to(ct.device)
            wp, wc = (self._view(name, row) for row in on_device[ct.device])
            pt = p[name][1].detach().to(ct.device, torch.float32)
            fused = pt * wp
            fused.add_(ct.detach().float() * wc)
            out[key] = fused.to(ct.dtype)
        return out

    # -- helpers -------------------------------------------------------------------

    def _view(self, param: str, values: Tensor) -> Tensor:
        g, i = self._slot[param]
        v = values[g.start:g.start + g.size]
        if len(g.params) == 1:
            return v.reshape(())
        return v[:, None] if i == 0 else v[None, :]  # A rows / B columns

    def _check_vec(self, v: Tensor, what: str) -> Tensor:
        if not isinstance(v, Tensor) or v.shape != (len(self),):
            got = list(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ArtifactError(f"{what}: expected a [{len(self)}] vector (one per unit), got {got}")
        return v

    def _match(self, d: Mapping[str, Tensor], what: str) -> dict[str, tuple[str, Tensor]]:
        """Cleaned name -> (original key, tensor); keys and shapes must match the units."""
        by_clean: dict[str, tuple[str, Tensor]] = {}
        for k, t in d.items():
            c = clean_param_name(k, self.adapter)
            if c in by_clean:
                raise ArtifactError(f"{what}: {by_clean[c][0]!r} and {k!r} are the same parameter")
            by_clean[c] = (k, t)
        for c in self._shapes:
            if c not in by_clean:
                raise ArtifactError(f"{what}: missing parameter {c!r}")
        for c, (k, t) in by_clean.items():
            if c not in self._shapes:
                raise ArtifactError(f"{what}: unexpected parameter {k!r}")
            if tuple(t.shape) != self._shapes[c]:
                raise ArtifactError(f"{what}: {k!r} has shape {list(t.shape)}, "
                                    f"units expect {list(self._shapes[c])}")
        return by_clean


def _clean_shapes(params: Mapping, adapter: str) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for k, v in params.items():
        c = clean_param_name(k, adapter)
        if c in shapes:
            raise ArtifactError(f"two parameters clean to the same name {c!r}")
        shapes[c] = _shape(v)
    return shapes
