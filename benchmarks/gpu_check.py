"""GPU check: what a GPU user runs once (under 10 minutes on one GPU) before real runs.

It prints, in order:
1. the environment (torch, CUDA, cuDNN, GPU, transformers, peft, accelerate, kif, env vars);
2. whether Hugging Face hub kernels are off (transformers reads ``USE_HUB_KERNELS``; whether
   the ``kernels`` package is installed; whether the loaded model asks for kernels; whether any
   module was imported from the hub cache after the model ran);
3. finite gradients in bf16 on left-padded training batches (kif's layout) whose padded length
   is 64 mod 128 (and a control length), one row shorter than the rest: issue 27 item 2, where
   the fused attention backward on Hopper returned NaN for pad rows; on CUDA each SDPA backend
   torch offers is tried separately too;
4. bf16 vs fp32 agreement of greedy predictions on ``--eval-samples`` Long Sequence test
   examples (% identical answers), with evaluation samples/s of each;
5. training tokens/s (target and real input tokens) of one process at each ``--batch-sizes``
   (``kif.training.train_task``, the first step left out);
6. training tokens/s of ``kif sweep --jobs 4`` (4 cells at once), where this kif has ``--jobs``;
7. peak memory: host (ru_maxrss) and GPU (max allocated).

    benchmarks/gpu_check.sh                    # GPU: smollm2-135m, 200 examples, batch 16/64/128
    benchmarks/gpu_check.sh --tiny --device cpu   # CPU smoke form (tiny-llama, seconds; CI runs it)
"""
from __future__ import annotations

import contextlib
import importlib.metadata as md
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import _common as C
import torch

from kif.config import TrainConfig
from kif.encoding import TrainCollator
from kif.evaluation import generate
from kif.torchutil import eval_autocast
from kif.training import train_task

FALSE = {"0", "false", "no", "off", "n", "f"}


def versions() -> dict:
    out = {}
    for name in ("transformers", "peft", "accelerate", "kernels", "kif"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    try:
        out["kif commit"] = subprocess.run(["git", "-C", str(C.REPO), "rev-parse", "--short", "HEAD"],
                                           capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        out["kif commit"] = "?"
    return out


def environment(device) -> dict:
    env = C.environment(device)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "gpu memory GiB": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}", "gpus visible": torch.cuda.device_count(),
                    "sdpa backends enabled": ", ".join(
                        n for n, on in (("flash", torch.backends.cuda.flash_sdp_enabled()),
                                        ("mem_efficient", torch.backends.cuda.mem_efficient_sdp_enabled()),
                                        ("cudnn", getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: False)()),
                                        ("math", torch.backends.cuda.math_sdp_enabled())) if on)})
    env.update(versions())
    for var in ("USE_HUB_KERNELS", "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "KIF_CACHE", "KIF_DATA"):
        env[var] = os.environ.get(var, "(unset)")
    return env


def hub_kernels_state(model) -> dict:
    """Read generically: the env var as transformers reads it (default on), the package, the
    model's own flag, and modules actually loaded from the hub cache."""
    raw = os.environ.get("USE_HUB_KERNELS")
    env_on = raw is None or raw.strip().lower() not in FALSE
    installed = importlib.util.find_spec("kernels") is not None
    model_flag = bool(getattr(getattr(model, "get_base_model", lambda: model)(), "use_kernels", False))
    try:
        from huggingface_hub import constants
        hub_cache = str(Path(constants.HF_HUB_CACHE).resolve())
    except Exception:  # noqa: BLE001 - only to name a folder
        hub_cache = None
    from_hub = sorted(n for n, m in list(sys.modules.items())
                      if hub_cache and str(getattr(m, "__file__", "") or "").startswith(hub_cache))
    off = not from_hub and not model_flag and (not env_on or not installed)
    return {"USE_HUB_KERNELS": raw if raw is not None else "(unset: transformers' default is on)",
            "kernels package": "installed" if installed else "not installed",
            "model.use_kernels": model_flag, "modules loaded from the hub cache": ", ".join(from_hub) or "none",
            "verdict": "OFF (only installed code runs)" if off else
            "ON or possible: set USE_HUB_KERNELS=0 (or uninstall kernels) for reproducible, offline runs"}


def padded_grad_check(model, enc, device, lengths, batch: int) -> list[list]:
    """Forward + backward in bf16 autocast on left-padded batches of padded length L: every row
    L tokens but the last, which is shorter (pad rows attend to nothing). Finite LoRA grads?"""
    collate = TrainCollator(enc.tokenizer.pad_token_id, target_logits_only=not enc.is_seq2seq)
    params = [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(0)
    vocab = min(model.config.vocab_size, 1000)
    backends = [("default", None)]
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend
        backends += [(b.name.lower(), b) for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                                                   getattr(SDPBackend, "CUDNN_ATTENTION", None), SDPBackend.MATH) if b]
    rows = []
    model.train()
    for L in lengths:
        feats = []
        for r in range(batch):
            n = L if r < batch - 1 else max(4, L // 3)
            ids = torch.randint(3, vocab, (n,), generator=g).tolist()
            feats.append({"input_ids": ids, "labels": [-100] * (n - 2) + ids[-2:]})
        b = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in collate(feats).items()}
        for name, backend in backends:
            model.zero_grad(set_to_none=True)
            try:
                ctx = torch.nn.attention.sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()
                with ctx, torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = model(**b).loss
                loss.backward()
                bad = sum(1 for p in params if p.grad is not None and not torch.isfinite(p.grad).all())
                rows.append([L, L % 128, name, f"{float(loss):.4f}", bad, "ok" if bad == 0 else "NON-FINITE"])
            except RuntimeError as exc:  # a backend that does not take these inputs
                rows.append([L, L % 128, name, "-", "-", f"n/a ({str(exc).splitlines()[0][:50]})"])
    model.zero_grad(set_to_none=True)
    model.eval()
    return rows


def agreement(model, lm, enc, device, n: int, tasks: list[str], batch: int, new_tokens: int):
    per = -(-n // len(tasks))  # kif evaluates task by task (a shared prefix per task)
    by_task = {t: [enc.prompt_ids(e.prompt) for e in C.long_sequence("test", [t], per, seed=42)] for t in tasks}
    n = sum(map(len, by_task.values()))
    preds, secs = {}, {}
    for precision in ("fp32", "bf16"):
        out = []
        t = time.perf_counter()
        for prompts in by_task.values():
            with eval_autocast(precision, model):
                out += generate(model, enc, prompts, lm.eos_token_ids, batch, new_tokens)
        C.sync(device)
        secs[precision], preds[precision] = time.perf_counter() - t, out
    same = sum(a == b for a, b in zip(preds["fp32"], preds["bf16"]))
    return n, same, secs


def train_speed(model, enc, device, batch_sizes, steps: int, tasks: list[str], precision: str):
    pool = C.long_sequence("train", tasks, -(-max(batch_sizes) * (steps + 1) // len(tasks)), seed=7)
    rows = []
    for bs in batch_sizes:
        examples = pool[:bs * (steps + 1)]
        stamps = []
        cfg = TrainConfig(epochs=1, learning_rate=1e-4, batch_size=bs, precision=precision, logging_steps=10_000)
        C.sync(device)
        t0 = time.perf_counter()
        stats = train_task(model, enc, examples, cfg, seed=1, show_progress=False,
                           post_step_hook=lambda *a, **k: (C.sync(device), stamps.append(time.perf_counter())))
        total = time.perf_counter() - t0
        feats = [enc.train_features(e) for e in examples]
        per_step_tgt = sum(sum(t != -100 for t in f["labels"]) for f in feats) / max(stats["steps"], 1)
        per_step_in = sum(len(f["input_ids"]) for f in feats) / max(stats["steps"], 1)
        steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else total / max(stats["steps"], 1)
        rows.append([bs, stats["steps"], stats["skipped_steps"], per_step_tgt / steady, per_step_in / steady,
                     steady * 1e3, total])
    return rows


def sweep_speed(args, tmp: Path) -> tuple[str, list]:
    helped = subprocess.run([sys.executable, "-m", "kif.cli", "sweep", "--help"], capture_output=True, text=True,
                            cwd=C.REPO, env={**os.environ, "PYTHONPATH": str(C.REPO)})
    if "--jobs" not in helped.stdout:
        return "skipped: this kif's `kif sweep` has no --jobs", []
    tasks = args.tasks.split(",")[:2]
    base = {"method": "seqlora", "model": args.model, "benchmark": "long_sequence", "tasks": tasks,
            "data": {"train_samples": args.sweep_samples, "test_samples": 2, "max_input_length": args.max_input_length},
            "train": {"epochs": 1, "batch_size": args.sweep_batch, "precision": args.precision,
                      "learning_rate": 1e-4},
            "eval": {"batch_size": 8, "max_new_tokens": 2, "mode": "minimal"}}
    if args.data_dir:
        base["data_dir"] = args.data_dir
    (tmp / "base.yaml").write_text(json.dumps(base))
    (tmp / "sweep.yaml").write_text(json.dumps({"base": "base.yaml", "grid": {"seed": [1, 2, 3, 4]}}))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kif.cli", "sweep", str(tmp / "sweep.yaml"), "-o", str(tmp / "sw"),
                           "--jobs", "4", "-q"], capture_output=True, text=True, cwd=C.REPO,
                          env={**os.environ, "PYTHONPATH": str(C.REPO)})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return f"failed (exit {proc.returncode}): {(proc.stderr.strip().splitlines() or ['?'])[-1]}", []
    tokens = train_s = 0.0
    for res in (tmp / "sw").glob("*/results.json"):
        r = json.loads(res.read_text())
        tokens += sum(p["target_tokens_per_epoch"] for p in r["per_task"])
        train_s = max(train_s, sum(p["train_s"] for p in r["per_task"]))
    return "ok", [[4, tokens / train_s if train_s else float("nan"), train_s, wall]]


def main():
    p = C.base_parser(__doc__.splitlines()[0], repeats=None, model="smollm2-135m")
    p.add_argument("--tasks", default="sst2,dbpedia,agnews,yahoo", help="Long Sequence tasks used throughout")
    p.add_argument("--eval-samples", type=int, default=200)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--batch-sizes", default="16,64,128")
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps per batch size (after one more)")
    p.add_argument("--grad-lengths", default="192,320,448,256", help="padded lengths of the gradient check "
                   "(64 mod 128, and a control)")
    p.add_argument("--grad-batch", type=int, default=8)
    p.add_argument("--max-input-length", type=int, default=512)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="of the training speed")
    p.add_argument("--sweep-samples", type=int, default=256, help="train examples per task per sweep cell")
    p.add_argument("--sweep-batch", type=int, default=16)
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tiny", action="store_true", help="CPU smoke form: tiny-llama, 8 eval examples, batches "
                   "4/8, 2 steps, lengths 64/128, sweep of 4 one-step cells")
    args = p.parse_args()
    if args.tiny:
        args.model, args.eval_samples, args.eval_batch_size, args.max_new_tokens = "tiny-llama", 8, 8, 4
        args.batch_sizes, args.steps, args.grad_lengths, args.grad_batch = "4,8", 2, "64,128", 3
        args.max_input_length, args.sweep_samples, args.sweep_batch = 128, 4, 4
    if args.data_dir:
        os.environ["KIF_DATA"] = args.data_dir
    device = C.setup(args)
    t_start = time.perf_counter()
    tasks = args.tasks.split(",")

    lm, enc = C.load_lm(args.model, device)
    enc.max_input_length = args.max_input_length
    model = C.add_lora(lm.model)

    C.print_settings("gpu_check: environment", environment(device))
    grad_rows = padded_grad_check(model, enc, device, [int(x) for x in args.grad_lengths.split(",")], args.grad_batch)
    C.print_settings("hub kernels (after the model ran)", hub_kernels_state(model))
    print("\nbf16 gradients on left-padded batches (last row shorter: pad rows attend to nothing):")
    C.print_table(["padded len", "mod 128", "sdpa backend", "loss", "tensors non-finite", "verdict"], grad_rows)

    n, same, secs = agreement(model, lm, enc, device, args.eval_samples, tasks, args.eval_batch_size,
                              args.max_new_tokens)
    print(f"\ngreedy predictions, bf16 autocast vs fp32: {same} of {n} identical ({100 * same / n:.1f} %); "
          f"evaluation samples/s: fp32 {n / secs['fp32']:.2f}, bf16 {n / secs['bf16']:.2f} "
          f"(eval batch {args.eval_batch_size}, max_new_tokens {args.max_new_tokens}, first pass includes warm-up)")

    rows = train_speed(model, enc, device, [int(b) for b in args.batch_sizes.split(",")], args.steps, tasks,
                       args.precision)
    print(f"\ntraining, one process (kif.training.train_task, precision {args.precision}; "
          f"steady = after the first optimizer step):")
    C.print_table(["batch", "steps", "skipped", "target tok/s", "input tok/s", "ms/step", "total s"], rows)

    with tempfile.TemporaryDirectory(prefix="kif-gpu-check-") as tmp:
        status, sw = ("skipped: --no-sweep", []) if args.no_sweep else sweep_speed(args, Path(tmp))
    print(f"\nkif sweep --jobs 4 (4 seqlora cells, {args.sweep_samples} examples x 2 tasks, batch {args.sweep_batch}): "
          f"{status}")
    if sw:
        C.print_table(["jobs", "target tok/s (all cells)", "longest cell train s", "sweep wall s"], sw)

    peak_host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    print(f"\npeak memory: host {peak_host:.2f} GiB (ru_maxrss of this process), GPU {peak_gpu:.2f} GiB "
          f"(max allocated); wall {time.perf_counter() - t_start:.0f} s")
    nonfinite = sum(1 for r in grad_rows if r[-1] == "NON-FINITE" and r[2] == "default")
    kv = {"model": args.model, "device": device.type, "bf16_fp32_agree_pct": 100 * same / n,
          "grad_nonfinite_default": nonfinite, "hub_kernels_off": hub_kernels_state(model)["verdict"].startswith("OFF"),
          "eval_sps_fp32": n / secs["fp32"], "eval_sps_bf16": n / secs["bf16"]}
    for r in rows:
        kv[f"train_tok_s_b{r[0]}"] = r[3]
    if sw:
        kv["sweep_jobs4_tok_s"] = sw[0][1]
    C.result_line("gpu_check", **kv)


if __name__ == "__main__":
    main()
