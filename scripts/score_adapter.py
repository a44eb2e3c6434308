"""Score an adapter a run saved (e.g. KIF-M's ``adapter_fused/``, the model before its replay
stage) on some of the run's test sets, exactly as the run's own evaluator does: the run's
config, test samples, prompts, decoding and scoring.

    python scripts/score_adapter.py runs/X tasks/02_sst2/adapter_fused --tasks agnews -o OUT

Writes ``OUT/<task>.jsonl`` (one prediction per test example, as the run's
``tasks/<k>/predictions/``) and prints each task's score with its prediction counts. Scoring the
adapter the run evaluated (``tasks/<k>/adapter``) must give the run's own matrix entry: that is
the check that this script scores as the run did. Only methods whose model is the base model plus
one PEFT adapter, evaluated plainly, are scored; a method with its own saving or evaluation (the
prompt methods, SAPT) or an adapter folder without ``adapter_config.json`` (IncLoRA's per-task
folders) is refused (exit 2).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a directory written by 'kif run'")
    p.add_argument("adapter", help="the adapter folder, relative to the run (a PEFT save)")
    p.add_argument("--tasks", required=True, help="comma-separated tasks of the run's sequence")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for <task>.jsonl")
    args = p.parse_args()

    import torch
    from peft import PeftModel

    from kif.configure import load_config
    from kif.methods import get_method
    from kif.methods.base import CLMethod
    from kif.models import load_model
    from kif.runner import load_sequence_data, run_encoder, run_evaluator

    cfg = load_config(str(args.run / "config.yaml"), [])
    cls = get_method(cfg.method)
    if (cls.save_adapter is not CLMethod.save_adapter or cls.eval_task_context is not CLMethod.eval_task_context
            or not cls.reuses_prefix_cache):
        print(f"score_adapter: method {cfg.method} saves or evaluates its model its own way; not scored here",
              file=sys.stderr)
        return 2
    if not (args.run / args.adapter / "adapter_config.json").is_file():
        print(f"score_adapter: {args.run / args.adapter}: no adapter_config.json (not one PEFT adapter)", file=sys.stderr)
        return 2
    data = load_sequence_data(cfg)
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in data.tasks]
    if unknown:
        print(f"score_adapter: --tasks: {', '.join(unknown)} not in the run's sequence {data.tasks}", file=sys.stderr)
        return 2
    torch.manual_seed(cfg.seed)
    lm = load_model(cfg.model, cfg.data.prompt_format, cfg.attn_implementation, cfg.hub_kernels)
    evaluator = run_evaluator(cfg, run_encoder(cfg, lm), data, lm.eos_token_ids)
    model = PeftModel.from_pretrained(lm.model, str(args.run / args.adapter)).eval()
    args.output.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        row, _ = evaluator.evaluate(model, args.output, {data.tasks.index(t) for t in tasks})
    for t in tasks:
        counts = Counter(json.loads(line)["prediction"] for line in (args.output / f"{t}.jsonl").open())
        print(f"{args.adapter} {t}: {row[data.tasks.index(t)]:.2f}  {dict(counts.most_common())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
