"""How far KIF's fusion moves away from plain averaging: per KIF / KIFLoRA run directory and
task, the distribution of the fusion weight w (the share of f̂_{k-1} per skill unit, eq. 15 /
16-17, from ``tasks/NN_<task>/fusion_weights.safetensors``).

    python scripts/fusion_weights.py runs/evidence/kif_o1_seed1 runs/evidence/kiflora_o1_seed1
    python scripts/fusion_weights.py --json runs/evidence/kif_o1_seed1     # a small summary to commit

w = ½ everywhere would be the weight ensemble of eq. 14 with λ = ½; w = 1 keeps the past,
w = 0 takes the new task's value. ``--json`` prints, per run and task, the same shares plus
quantiles and a 20-bin histogram of w on [0, 1]: a few hundred bytes per fusion, so that the
numbers survive when the run directory (with its tensors) is not kept.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
BINS = 20


def _weights(path: Path) -> torch.Tensor:
    return torch.cat([t.flatten().double() for t in load_file(str(path)).values()])


def weight_stats(path: Path) -> dict:
    """units, mean w, and the share of units with w > ½ + 0.05 (past kept), w < ½ − 0.05 (new
    taken) and in between (near an average)."""
    w = _weights(path)
    past, new = (w > 0.55).double().mean().item(), (w < 0.45).double().mean().item()
    return {"units": w.numel(), "mean": w.mean().item(), "past": past, "new": new, "near_half": 1.0 - past - new}


def weight_summary(path: Path) -> dict:
    """:func:`weight_stats` plus quantiles of w and unit counts in 20 equal bins of [0, 1]
    (the last bin holds w = 1), rounded to 6 decimals. w is rounded to 6 decimals before it is
    binned: the weights are stored in float32, where γ = 0.7 is 0.69999999, one bin too low."""
    w = _weights(path)
    bins = (torch.round(w.clamp(0.0, 1.0) * 1e6) / 1e6 * BINS).floor().long().clamp(max=BINS - 1)
    counts = torch.bincount(bins, minlength=BINS)
    out = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in weight_stats(path).items()}
    out["quantiles"] = {str(q): round(torch.quantile(w, q).item(), 6) for q in QUANTILES}
    out["histogram"] = {"bins": BINS, "range": [0.0, 1.0], "counts": [int(c) for c in counts.tolist()]}
    return out


def run_summary(run_dir: str | Path) -> dict:
    """{"run": directory name, "tasks": {task folder: :func:`weight_summary`}} for one run."""
    files = sorted(Path(run_dir).glob("tasks/*/fusion_weights.safetensors"))
    return {"run": Path(run_dir).name, "tasks": {f.parent.name: weight_summary(f) for f in files}}


def main(run_dirs: list[str]) -> None:
    if run_dirs[:1] == ["--json"]:
        print(json.dumps([run_summary(d) for d in run_dirs[1:]], indent=1))
        return
    print("| run | task | units | mean w | w > 0.55 | 0.45-0.55 | w < 0.45 |\n|---|---|---|---|---|---|---|")
    for d in run_dirs:
        for f in sorted(Path(d).glob("tasks/*/fusion_weights.safetensors")):
            s = weight_stats(f)
            print(f"| {Path(d).name} | {f.parent.name} | {s['units']} | {s['mean']:.3f} | {s['past']:.1%} | "
                  f"{s['near_half']:.1%} | {s['new']:.1%} |")


if __name__ == "__main__":
    main(sys.argv[1:])
