"""How far KIF's fusion moves away from plain averaging: per KIF / KIFLoRA run directory and
task, the distribution of the fusion weight w (the share of f̂_{k-1} per skill unit, eq. 15 /
16-17, from ``tasks/NN_<task>/fusion_weights.safetensors``).

    python scripts/fusion_weights.py runs/evidence/kif_o1_seed1 runs/evidence/kiflora_o1_seed1

w = ½ everywhere would be the weight ensemble of eq. 14 with λ = ½; w = 1 keeps the past,
w = 0 takes the new task's value.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def weight_stats(path: Path) -> dict:
    """units, mean w, and the share of units with w > ½ + 0.05 (past kept), w < ½ − 0.05 (new
    taken) and in between (near an average)."""
    w = torch.cat([t.flatten().double() for t in load_file(str(path)).values()])
    past, new = (w > 0.55).double().mean().item(), (w < 0.45).double().mean().item()
    return {"units": w.numel(), "mean": w.mean().item(), "past": past, "new": new, "near_half": 1.0 - past - new}


def main(run_dirs: list[str]) -> None:
    print("| run | task | units | mean w | w > 0.55 | 0.45-0.55 | w < 0.45 |\n|---|---|---|---|---|---|---|")
    for d in run_dirs:
        for f in sorted(Path(d).glob("tasks/*/fusion_weights.safetensors")):
            s = weight_stats(f)
            print(f"| {Path(d).name} | {f.parent.name} | {s['units']} | {s['mean']:.3f} | {s['past']:.1%} | "
                  f"{s['near_half']:.1%} | {s['new']:.1%} |")


if __name__ == "__main__":
    main(sys.argv[1:])
