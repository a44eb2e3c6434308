"""Where a SAPT run's attention sends each task's inputs: the mean SALS weights over the keys, on
the first N training prompts of every task of the run, after each task (from its saved
``tasks/<k>/adapter/selection.safetensors``) and at the start of the next one (the same selection
plus the fresh key ``before_task`` adds, from its seeded stream).

    python scripts/sapt_attention.py RUN [--prompts 64]      # JSON on stdout

Why: the weights decide which task's LoRA block answers (eq. 3-4 of SAPT); a block whose weight
is near 0 on its own task's inputs gets almost no gradient and is never used. results.json's
``attention_target`` gives the same mean for task k's own prompts after task k only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fail(message: str):
    print(f"sapt_attention.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a directory written by 'kif run' with method sapt")
    p.add_argument("--prompts", type=int, default=64, help="training prompts per task (default 64)")
    args = p.parse_args()

    import torch
    from safetensors.torch import load_file

    from kif.configure import load_config
    from kif.methods.options import SAPTOptions, parse_options
    from kif.methods.sapt import Selection, pool_prompts
    from kif.models import load_model
    from kif.runner import load_sequence_data, run_encoder

    if not (args.run / "config.yaml").is_file():
        fail(f"{args.run}: no config.yaml (not a run directory)")
    cfg = load_config(str(args.run / "config.yaml"), [])
    if cfg.method != "sapt":
        fail(f"{args.run}: method {cfg.method}, not sapt")
    saved = sorted(args.run.glob("tasks/*/adapter/selection.safetensors"))
    if not saved:
        fail(f"{args.run}: no tasks/*/adapter/selection.safetensors")
    data = load_sequence_data(cfg)
    lm = load_model(cfg.model, cfg.data.prompt_format, cfg.attn_implementation, cfg.hub_kernels)
    enc, emb = run_encoder(cfg, lm), lm.model.get_input_embeddings()

    queries = {t: pool_prompts(emb, enc, [ex.prompt for ex in data.train[t][:args.prompts]]) for t in data.tasks}

    def mean_weights(sel: Selection) -> dict[str, list[float]]:
        with torch.no_grad():
            return {t: [round(w, 6) for w in sel.weights(q).mean(0).tolist()] for t, q in queries.items()}

    o = parse_options(SAPTOptions, cfg.method_args or {}, "sapt")
    out = []
    for f in saved:
        state = load_file(str(f))
        sel = Selection(emb.weight.shape[1], o.trans_hidden_dim, o.temperature, cfg.seed + 4000)
        for _ in range(sum(n.startswith("keys.") for n in state)):
            sel.add_key()
        sel.load_state_dict(state)
        row = {"after": f.parent.parent.name, "weights": mean_weights(sel)}
        if len(sel.keys) < len(data.tasks):
            sel.add_key()  # the next task's key, as SAPT.before_task draws it
            row["next_task_start"] = mean_weights(sel)
        out.append(row)
    print(json.dumps({"run": str(args.run), "prompts_per_task": args.prompts, "tasks": data.tasks,
                      "rows": out}, indent=1))


if __name__ == "__main__":
    main()
