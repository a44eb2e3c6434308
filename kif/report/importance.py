"""Skill-unit importance of KIF runs for ``kif report`` (paper Figures 6-7): the per-task unit
scores a run saved under ``tasks/NN_<task>/``, the units' names parsed into stack, layer and
module, and the share of units that are "+" for the past and/or the current task (eq. 15)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from ..core.fusion import top_fraction_mask
from ..errors import ArtifactError
from ..io import load_tensors  # the run path's guarded loader: header size and entry caps
from ..rundir import RunDir
from .tables import run_config

DEFAULT_TOP_FRACTION = 0.2  # docs/method.md §4: "+" = top 20 % of a task's unit scores

def has_importance(run_dir: str | Path) -> bool:
    return any((d / "scores_current.safetensors").is_file() for _, d in RunDir(run_dir).task_dirs())


def _load_scores(path: Path) -> dict[str, float]:
    d = load_tensors(path)
    try:
        return {k: float(v.float().reshape(-1)[0]) if v.numel() == 1 else float(v.float().mean())
                for k, v in d.items()}
    except (RuntimeError, IndexError) as e:
        raise ArtifactError(f"{path}: unexpected tensor in unit scores ({e})") from None


def _method_arg(run_dir: str | Path, key: str):
    """``method_args.<key>`` of the run's config.yaml, or None (absent or unreadable)."""
    args = run_config(run_dir).get("method_args")
    return args.get(key) if isinstance(args, dict) else None


def top_fraction(run_dir: str | Path) -> float:
    """The run's ``method_args.top_fraction`` (config.yaml), else 0.2 (docs/method.md §4)."""
    val = _method_arg(run_dir, "top_fraction")
    try:
        return float(val) if val is not None else DEFAULT_TOP_FRACTION
    except (TypeError, ValueError):
        return DEFAULT_TOP_FRACTION


def threshold_rule(run_dir: str | Path) -> str:
    """The "+" rule the run used (``method_args.threshold``). Config files that do not name
    one come from kif versions whose only rule was ``rank``."""
    val = _method_arg(run_dir, "threshold")
    return val if val in ("percentile", "rank") else "rank"


_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|block|blocks|h)\.(\d+)\.")
_RANK = re.compile(r"\.lora#(\d+)$")
_MATRIX = re.compile(r"\.(lora_[AB])\.weight$")


def natural_key(s: str) -> list:
    parts = re.split(r"(\d+)", s)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)]


def parse_unit(name: str) -> dict:
    """Split a unit name into stack (encoder/decoder/""), layer, module and part.

    ``model.layers.3.self_attn.q_proj.lora#5`` -> ("", 3, "self_attn.q_proj", "#5");
    ``decoder.block.1.layer.1.EncDecAttention.v.lora_B.weight`` -> ("decoder", 1, "EncDecAttention.v", "lora_B").
    """
    base, part, rank = name, "", -1
    if m := _RANK.search(name):
        base, part, rank = name[:m.start()], f"#{m[1]}", int(m[1])
    elif m := _MATRIX.search(name):
        base, part, rank = name[:m.start()], m[1], 0 if m[1] == "lora_A" else 1
    elif name.endswith(".weight") or name.endswith(".bias"):
        base, part = name.rsplit(".", 1)
    stack = "encoder" if ".encoder." in f".{base}." else "decoder" if ".decoder." in f".{base}." else ""
    stack_rank = {"encoder": 0, "": 0, "decoder": 1}[stack]
    m = _LAYER.search(base)
    if m:
        layer, path = int(m[1]), base[m.end():]
        module = re.sub(r"^layer\.\d+\.", "", path)  # T5: block.N.layer.M.SelfAttention.q
    else:
        layer, path = None, base
        module = path
    return {"name": name, "stack": stack, "stack_rank": stack_rank, "layer": layer,
            "module": module, "path": path, "part": part, "rank": rank}


def unit_sort_key(name: str) -> tuple:
    """(stack, layer index, module, rank): encoder before decoder, units outside layers last;
    the module is compared with its sub-layer (T5 ``layer.0.SelfAttention`` before
    ``layer.1.EncDecAttention``), numbers numerically."""
    u = parse_unit(name)
    return (u["stack_rank"], u["layer"] is None, u["layer"] if u["layer"] is not None else 0,
            natural_key(u["path"]), u["rank"], natural_key(u["part"]), name)


def load_importance(run_dir: str | Path) -> dict:
    """Per-task unit scores of a KIF run.

    Returns ``{"tasks": [...], "units": [...] (sorted by :func:`unit_sort_key`),
    "current": [[score per unit] per task], "accumulated": [[...] per task]}``; a unit
    absent from one task's file is NaN there. Raises ArtifactError if no task has scores.
    """
    tasks, cur, acc = [], [], []
    for task, d in RunDir(run_dir).task_dirs():
        p = d / "scores_current.safetensors"
        if not p.is_file():
            continue
        tasks.append(task)
        cur.append(_load_scores(p))
        pa = d / "scores_accumulated.safetensors"
        acc.append(_load_scores(pa) if pa.is_file() else None)
    if not tasks:
        raise ArtifactError(f"{Path(run_dir) / 'tasks'}: no scores_current.safetensors (not a KIF run?)")
    units = sorted(set().union(*cur), key=unit_sort_key)
    nan = float("nan")
    return {"tasks": tasks, "units": units,
            "current": [[c.get(u, nan) for u in units] for c in cur],
            "accumulated": [None if a is None else [a.get(u, nan) for u in units] for a in acc]}


def unit_fractions(run_dir: str | Path, fraction: float | None = None) -> list[dict]:
    """Per task k: share of units that are "+" (top ``fraction``, docs/method.md §4) for
    the past I(Û_{k-1}) and/or the current task I(U_k).

    ``scores_accumulated`` of task dir k is I(Û_k) (it already includes task k), so the
    past of task k is the accumulated file of task k-1 -- exactly the pair eq. 15 fuses
    with. Task 1 has no past: its shares are None. Keys: task, units, shared
    (+ for both), specific_new (+ only now), specific_old (+ only for the past).
    """
    imp = load_importance(run_dir)
    if fraction is None:
        fraction = top_fraction(run_dir)
    rule = threshold_rule(run_dir)
    out = []
    prev_acc = None
    for t, cur, acc in zip(imp["tasks"], imp["current"], imp["accumulated"]):
        row = {"task": t, "units": len(imp["units"]), "shared": None, "specific_new": None,
               "specific_old": None}
        if prev_acc is not None:
            c, p = (top_fraction_mask(torch.nan_to_num(torch.tensor(v, dtype=torch.float32), nan=-math.inf),
                                      fraction, rule) for v in (cur, prev_acc))
            n = c.numel()
            row.update(shared=float((c & p).sum()) / n, specific_new=float((c & ~p).sum()) / n,
                       specific_old=float((~c & p).sum()) / n)
        out.append(row)
        prev_acc = acc
    return out
