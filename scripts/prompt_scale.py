"""The scale of the soft prompts a run saved, next to the scale of its model's token embeddings.

    python scripts/prompt_scale.py RUN [RUN...]      # JSON on stdout

Why: Adam moves every entry by about the learning rate per step whatever the gradient's size, so
a prompt learning rate carries over between models only as far as their embeddings have the same
scale. For each run folder: per task, each tensor of ``tasks/<k>_<task>/adapter/prompts.safetensors``
(std, mean row norm, largest |entry|); once per model: the same of its input embedding matrix.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file


def fail(message: str):
    print(f"prompt_scale.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def scale(t: torch.Tensor) -> dict[str, float]:
    t = t.float()
    return {"std": round(t.std().item(), 4), "row_norm": round(t.norm(dim=-1).mean().item(), 3),
            "max_abs": round(t.abs().max().item(), 3)}


def embedding_scale(model: str) -> dict[str, float]:
    from kif.models.registry import model_path

    folder = Path(model_path(model))
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            name = next((k for k in st.keys() if k.endswith("embed_tokens.weight")), None)
            if name:
                return scale(st.get_tensor(name))
    fail(f"no embed_tokens.weight in {folder}")


def run_scale(run: Path) -> dict:
    tasks = {}
    for f in sorted(run.glob("tasks/*/adapter/prompts.safetensors")):
        tasks[f.parent.parent.name] = {k: scale(v) for k, v in load_file(f).items()}
    if not tasks:
        fail(f"{run}: no tasks/*/adapter/prompts.safetensors (not a prompt method's run)")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    return {"model": cfg["model"], "learning_rate": cfg["train"]["learning_rate"], "tasks": tasks}


if __name__ == "__main__":
    if len(sys.argv) < 2:
        fail("usage: python scripts/prompt_scale.py RUN [RUN...]")
    runs = {str(Path(r)): run_scale(Path(r)) for r in sys.argv[1:]}
    models = {r["model"] for r in runs.values()}
    print(json.dumps({"embeddings": {m: embedding_scale(m) for m in sorted(models)}, "runs": runs}, indent=1))
