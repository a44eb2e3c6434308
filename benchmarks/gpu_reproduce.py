"""Long Sequence order 1 with SmolLM2-135M-Instruct: seqlora and kiflora through the library.

Each method runs as ``kif run`` would (``kif.configure.validate_config`` + ``kif.runner.run``)
with the Table I settings of ``configs/table1`` (LoRA r=8 q/v, lr 3e-4, batch 128 (the paper's
LLaMA setting), 10 epochs,
eval batch 64, up to 128 new tokens), up to 1000 train samples per task (all there are: cb
has 250, copa 400) and the full test sets (``--test-cap N`` caps them). Per run it prints
AP/FWT/BWT, training target tokens/s and evaluation samples/s (from results.json
``per_task`` and ``timings``) and the wall time. Meant for a GPU machine (bf16 there);
``--tiny`` is a CPU-sized smoke run (tiny-llama, 3 tasks, a few samples) that checks the
script end to end.

    benchmarks/gpu_reproduce.sh                      # GPU: full order 1, both methods
    benchmarks/gpu_reproduce.sh --test-cap 500 --epochs 3
    benchmarks/gpu_reproduce.sh --tiny --device cpu  # smoke run, ~1 min on a CPU
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import _common as C
import torch

from kif.configure import validate_config
from kif.data.benchmarks import LONG_SEQUENCE_ORDERS
from kif.runner import run


def run_config(args, method: str) -> dict:
    tasks = LONG_SEQUENCE_ORDERS[args.order].split()
    if args.num_tasks:
        tasks = tasks[:args.num_tasks]
    raw = {
        "method": method, "model": args.model, "benchmark": "long_sequence", "tasks": tasks,
        "seed": args.seed,
        "data": {"train_samples": args.train_samples, "test_samples": args.test_cap,
                 "max_input_length": args.max_input_length, "max_target_length": args.max_target_length},
        "train": {"epochs": args.epochs, "learning_rate": args.lr, "batch_size": args.batch_size,
                  "grad_accum": args.grad_accum,
                  "lr_scheduler": "constant", "precision": args.precision, "torch_compile": args.compile},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": args.target_modules},
        "eval": {"batch_size": args.eval_batch_size, "max_new_tokens": args.max_new_tokens,
                 "mode": args.eval_mode},
    }
    if args.data_dir:
        raw["data_dir"] = args.data_dir
    return raw


def summarize(res: dict, wall: float) -> dict:
    per = res["per_task"]
    epochs = res["_epochs"]
    train_tokens = sum(p["target_tokens_per_epoch"] for p in per) * epochs
    input_tokens = sum(p.get("input_tokens_per_epoch", 0) for p in per) * epochs
    train_s = sum(p["train_s"] for p in per)
    # every evaluated (row, task) cell: the zero-shot row and one row after each task
    # (eval.mode minimal leaves cells None: those were not evaluated)
    rows = [res.get("zero_shot") or []] + list(res["matrix"])
    evaluated = sum(res["n_test"][t] for row in rows for t, v in zip(res["tasks"], row) if v is not None)
    eval_s = res["timings"]["zero_shot_eval"] + sum(p["eval_s"] for p in per)
    return {
        "AP": res["AP"], "FWT": res["FWT"], "BWT": res["BWT"],
        "train_tok_s": train_tokens / train_s if train_s else float("nan"),
        "train_in_tok_s": input_tokens / train_s if train_s else float("nan"),
        "eval_sps": evaluated / eval_s if eval_s else float("nan"), "evaluated": evaluated,
        "train_s": train_s, "eval_s": eval_s, "method_s": sum(p["method_s"] for p in per),
        "wall_s": wall, "steps": sum(p["steps"] for p in per),
        "skipped": sum(p["skipped_steps"] for p in per),
    }


def main():
    p = C.base_parser(__doc__.splitlines()[0], repeats=None, model="smollm2-135m")
    p.add_argument("--methods", default="seqlora,kiflora")
    p.add_argument("--order", default="1", choices=sorted(LONG_SEQUENCE_ORDERS))
    p.add_argument("--num-tasks", type=int, default=None, help="only the first N tasks of the order")
    p.add_argument("--train-samples", type=int, default=1000)
    p.add_argument("--test-cap", type=int, default=None, help="cap on test samples per task (default: all)")
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=128, help="per device (paper, LLaMA: 128)")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--eval-mode", choices=("full", "minimal"), default="full",
                   help="full: the whole K x K matrix + zero-shot row; minimal: only what AP/FWT/BWT need")
    p.add_argument("--max-input-length", type=int, default=512)
    p.add_argument("--max-target-length", type=int, default=128)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--compile", action="store_true", help="train.torch_compile: true")
    p.add_argument("--target-modules", default="q_proj,v_proj")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="runs/gpu_reproduce", help="one sub-folder per method (overwritten)")
    p.add_argument("--tiny", action="store_true",
                   help="smoke run: tiny-llama, 3 tasks, 16 train / 8 test samples, 1 epoch, 4 new tokens")
    p.add_argument("--quiet", action="store_true", help="no per-task log lines")
    p.set_defaults(seed=42)
    args = p.parse_args()
    if args.tiny:
        args.model, args.num_tasks, args.train_samples = "tiny-llama", args.num_tasks or 3, 16
        args.test_cap, args.epochs, args.eval_batch_size = args.test_cap or 8, 1, 8
        args.max_new_tokens, args.max_input_length, args.max_target_length = 4, 128, 8
        args.lr, args.batch_size = 5e-3, 8
    args.target_modules = args.target_modules.split(",") if args.target_modules else None
    device = C.setup(args)
    if device.type == "cpu" and torch.cuda.is_available():
        raise SystemExit("internal: --device cpu did not hide the GPU")
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    methods = args.methods.split(",")
    out_root = Path(args.out)
    summaries = {}
    for m in methods:
        cfg = validate_config(run_config(args, m), f"gpu_reproduce:{m}")
        t0 = time.perf_counter()
        res = run(cfg, out_root / m, overwrite=True, show_progress=False)
        wall = time.perf_counter() - t0
        res["_epochs"] = cfg.train.epochs
        summaries[m] = summarize(res, wall)
        if m == methods[0]:
            first = res
        (out_root / m / "bench_summary.json").write_text(json.dumps(summaries[m], indent=2))

    C.print_settings("gpu_reproduce", {
        "model": args.model, "benchmark": f"long_sequence order {args.order}, tasks {' '.join(first['tasks'])}",
        "samples": f"train {args.train_samples}/task (n_train {sum(first['n_train'].values())}), "
                   f"test {'all' if args.test_cap is None else f'<= {args.test_cap}'}/task "
                   f"(n_test {sum(first['n_test'].values())})",
        "training": f"{args.epochs} epochs, batch {args.batch_size} x grad_accum {args.grad_accum}, lr {args.lr}, LoRA r=8 alpha=16 "
                    f"{args.target_modules}, precision {args.precision}, torch_compile {args.compile}",
        "eval": f"batch {args.eval_batch_size}, max_new_tokens {args.max_new_tokens}, greedy, "
                f"mode {args.eval_mode}",
        "out": str(out_root), "results device": first["device"],
        **C.environment(device),
    })
    print("\nper run (train tok/s: target (answer) tokens x epochs / train_s; in-tok/s: real, non-padding "
          "input tokens x epochs / train_s; Trainer start-up included; eval samples/s: test samples "
          "evaluated over all rows / eval time):")
    rows = [[m, s["AP"], s["FWT"], s["BWT"], s["train_tok_s"], s["train_in_tok_s"], s["eval_sps"], s["train_s"],
             s["method_s"], s["eval_s"], s["wall_s"], s["skipped"]] for m, s in summaries.items()]
    C.print_table(["method", "AP", "FWT", "BWT", "train tok/s", "train in-tok/s", "eval samples/s", "train s",
                   "method s", "eval s", "wall s", "skipped"], rows)
    kv = {"model": args.model, "device": device.type}
    for m, s in summaries.items():
        for k in ("AP", "FWT", "BWT", "train_tok_s", "train_in_tok_s", "eval_sps", "wall_s"):
            v = s[k]
            kv[f"{m}_{k}"] = round(float(v), 4) if v is not None else "NA"
    C.result_line("gpu_reproduce", **kv)


if __name__ == "__main__":
    main()
