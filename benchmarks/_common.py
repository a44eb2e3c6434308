"""Shared helpers of the benchmark scripts (not part of the kif package).

Every figure the scripts report is a ratio measured in one process: the variants run
interleaved (A B A B ..., order rotated every repeat) so that load from other processes
hits all of them alike, and each figure is the median over the repeats.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` without an installed kif
    sys.path.insert(0, str(REPO))

# --device cpu hides any GPU before torch starts, so that code which picks CUDA on its own
# (the HF Trainer inside kif.training.train_task, kif.runner.run) stays on the CPU too.
_argv = " ".join(sys.argv[1:])
if "--device cpu" in _argv or "--device=cpu" in _argv:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import torch  # noqa: E402


def base_parser(description: str, repeats: int | None, model: str | None = "tiny-llama") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if model is not None:
        p.add_argument("--model", default=model,
                       help="kif model name (tiny-llama, tiny-t5, smollm2-135m) or a local HF directory")
    if repeats is not None:
        p.add_argument("--repeats", type=int, default=repeats, help="interleaved repeats; figures are medians")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads; default 1 on CPU (on a shared 2-core machine torch's default of "
                        "one thread per core stalled 10-30x whenever another process held a core), "
                        "0 = torch's default")
    return p


def setup(args) -> torch.device:
    torch.manual_seed(args.seed)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device visible")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    threads = args.threads if args.threads is not None else (0 if use_cuda else 1)
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.device("cuda" if use_cuda else "cpu")


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def interleave(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each variant once per repeat, rotating the order (A B C, B C A, ...).

    Each callable returns the figure it measured (seconds, usually); returns name -> list.
    """
    names = list(variants)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            out[n].append(variants[n]())
    return out


def median(xs) -> float:
    return float(statistics.median(xs))


def paired_ratios(num: list[float], den: list[float]) -> list[float]:
    return [a / b for a, b in zip(num, den)]


def spread(xs) -> str:
    """min..max, to show how much contention moved the repeats."""
    return f"[{min(xs):.3f}..{max(xs):.3f}]"


def environment(device) -> dict:
    d = torch.device(device)
    info = {"device": d.type, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}
    if d.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    else:
        info["cpu"] = platform.processor() or platform.machine()
        try:
            info["loadavg"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        except OSError:
            pass
    return info


def print_settings(title: str, settings: dict) -> None:
    print(f"== {title}")
    width = max(len(k) for k in settings)
    for k, v in settings.items():
        print(f"  {k:<{width}} : {v}")


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, r in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _fmt(c) -> str:
    if isinstance(c, float):
        return f"{c:.4g}" if abs(c) < 1e4 else f"{c:.0f}"
    return str(c)


def peak_memory() -> dict:
    """Peak memory of this process so far, the same way in every script: resident set size
    (``ru_maxrss``, as ``/usr/bin/time -v`` reports it) and, on a GPU, torch's max allocated."""
    import resource

    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # KiB on Linux
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def result_line(name: str, **kv) -> None:
    """The final grep-able line: ``RESULT name=<bench> key=value ... peak_rss_mb=...``."""
    kv = {**kv, **peak_memory()}
    parts = [f"name={name}"]
    for k, v in kv.items():
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    print("RESULT " + " ".join(parts), flush=True)


# ---- model and data ------------------------------------------------------------------

def load_lm(name: str, device):
    """(LoadedModel, Encoder) with kif's own loader and encoder (fp32 weights)."""
    from kif.encoding import Encoder
    from kif.models import load_model

    lm = load_model(name)
    lm.model.to(device)
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0])
    return lm, enc


def add_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.05, targets=None):
    """PEFT LoRA as kif's methods build it (default: the architecture's q/v projections)."""
    from peft import LoraConfig, TaskType, get_peft_model

    from kif.methods.base import default_target_modules

    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    cfg = LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM, r=r,
                     lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=list(targets) if targets else default_target_modules(model))
    return get_peft_model(model, cfg)


def long_sequence(split: str, tasks: list[str], per_task: int | None, seed: int = 42, data_dir=None):
    """Real Long Sequence examples, ``per_task`` from each task (kif.data.sample), task-major."""
    from kif.data import get_benchmark, resolve_data_dir, sample

    bench = get_benchmark("long_sequence", resolve_data_dir(data_dir))
    out = []
    for t in tasks:
        out += sample(bench.tasks[t].load(split), per_task, seed)
    return out


# PEFT still calls a transformers property deprecated in v5; the warning says nothing here.
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
