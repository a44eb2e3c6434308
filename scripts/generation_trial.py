"""Write a task's generated memory again from a finished run's trained adapter, under other generator
settings, without training again: a generator change (forced tag, parser, sampling) is measured on the
very model the run trained.

The run must be kif-m / kiflora-m with ``memory_source: pseudo`` (its ``tasks/<k>/adapter_trained`` is
f_k, the model that wrote the memory); ``--set`` takes ``method_args.gen_*`` / ``memory_*`` keys as
``kif run --set`` does. The seed and the examples are the run's (``seed + 2000 + k``, the task's
training examples), so the run's own settings give back its own ``generations.jsonl``.

    python scripts/generation_trial.py runs/tagged_sst2 -o runs/trial_sst2 --set method_args.gen_force_tag=false

writes ``OUT/generations.jsonl``, ``OUT/pseudo.jsonl`` and ``OUT/fill.json`` (the ``pseudo_fill`` record,
with the settings), and prints the fill line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kif.configure import load_config, method_options
from kif.io import atomic_write_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--task-index", type=int, default=0, help="k, 0-based (default 0)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    cfg = load_config(args.run / "config.yaml", args.set)
    opts = method_options(cfg)
    if getattr(opts, "memory_source", None) != "pseudo":
        print(f"{args.run}: not a run with a generated memory (memory_source pseudo)", file=sys.stderr)
        return 2
    import torch
    from peft import PeftModel

    from kif.models import load_model
    from kif.replay.generative import closed_labels, generate_with, save_generations, save_pseudo
    from kif.replay.memory import Memory
    from kif.replay.pseudo import prompt_template
    from kif.replay.tagged_parse import task_fields
    from kif.runner import load_sequence_data, run_encoder

    data = load_sequence_data(cfg)
    k = args.task_index
    task = data.tasks[k]
    adapter = next(args.run.glob(f"tasks/{k + 1:02d}_*/adapter_trained"), None)
    if adapter is None:
        print(f"{args.run}: no tasks/{k + 1:02d}_*/adapter_trained", file=sys.stderr)
        return 2
    torch.manual_seed(cfg.seed)
    lm = load_model(cfg.model, cfg.data.prompt_format, cfg.attn_implementation, cfg.hub_kernels)
    model = PeftModel.from_pretrained(lm.model, str(adapter))
    encoder = run_encoder(cfg, lm)
    examples = data.train[task]
    n = Memory.from_options(opts, cfg.seed).size_for(len(examples))
    info: dict = {}
    record: list = []
    prompts = [ex.prompt for ex in examples]
    template = prompt_template(prompts)  # as kif-m's store_memory
    kept = generate_with(opts, model, encoder, task, template, n, lm.eos_token_ids, labels=closed_labels(examples),
                         seed=cfg.seed + 2000 + k, batch_size=cfg.eval.batch_size, prefix_cache=True, stats=info,
                         record=record, fields=task_fields(prompts, *template))
    args.output.mkdir(parents=True, exist_ok=True)
    save_generations(args.output, record)
    save_pseudo(args.output, kept)
    fill = info["fill"]
    atomic_write_json(args.output / "fill.json", {"run": str(args.run), "task": task, "set": args.set, "fill": fill})
    print(f"{task}: {fill['well_formed']} of {fill['generated']} well-formed ({fill['well_formed_rate']}), "
          f"kept {fill['kept']} of {fill['requested']}, labels {fill['labels']}, refused {fill.get('rejected')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
