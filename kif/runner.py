"""The continual-learning loop: train task k, let the method consolidate, evaluate all tasks.

Produces the full score matrix a[j][i] (METHOD.md §7) plus a zero-shot row, and the
metrics AP/FWT/BWT (eq. 18-20) after every task, so partial runs are reported too.
"""
from __future__ import annotations

import logging
import platform
import shutil
import time
from pathlib import Path
from statistics import fmean

import torch
import yaml

from . import __version__
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import RunConfig, dump_config
from .data.benchmarks import check_labels, label_set
from .data import get_benchmark, resolve_data_dir, resolve_sequence, sample
from .dist import barrier, device, is_main
from .encoding import Encoder
from .errors import KifError
from .evaluation import eval_autocast, evaluate_task, rank_labels
from .faults import fault_point
from .io import atomic_write_json, atomic_write_text, dir_bytes, write_jsonl
from .methods import RunContext, get_method
from .metrics import cl_metrics, score_task
from .models import load_model, model_path
from .training import train_task

log = logging.getLogger("kif")


def load_sequence_data(cfg: RunConfig):
    """Resolve the benchmark and read every split the run needs (fails before any output)."""
    bench = get_benchmark(cfg.benchmark, resolve_data_dir(cfg.data_dir))
    seq = resolve_sequence(bench, cfg.order, cfg.tasks)
    full = {t: (bench.tasks[t].load("train"), bench.tasks[t].load("test")) for t in seq}
    labels = {t: label_set(full[t][0]) for t in seq}  # also the candidates for eval.rank_labels
    for t in seq:
        check_labels(bench.tasks[t], labels[t], full[t][1])
    train = {t: sample(full[t][0], cfg.data.train_samples, cfg.seed) for t in seq}
    test = {t: sample(full[t][1], cfg.data.test_samples, cfg.seed) for t in seq}
    metrics = {t: bench.tasks[t].metric for t in seq}
    return bench, seq, train, test, metrics, labels


def task_dir_name(k: int, task: str) -> str:
    return f"{k + 1:02d}_{task}"


def run(cfg: RunConfig, out_dir: str | Path, overwrite: bool = False, show_progress: bool = True,
        accept_config_change: bool = False) -> dict:
    """Run (or resume) a sequence; returns the results dict that results.json holds.

    Re-running with the same output directory continues after the last completed task
    (see ``kif.checkpoint``); a different config is refused unless ``accept_config_change``.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    method_cls = get_method(cfg.method)
    bench, seq, train, test, metrics, labels = load_sequence_data(cfg)
    resume = prepare_output_dir(out_dir, cfg, overwrite, accept_config_change)
    checkpoint = load_checkpoint(resume) if resume else None  # a damaged one fails before the model loads
    barrier()  # several processes: all have read the directory before the main one writes to it
    if checkpoint and checkpoint[2].get("finished"):
        log.info("%s: run already complete", out_dir)
        return checkpoint[2]

    if is_main():
        model_path(cfg.model)  # a built-in model is built/converted into the cache by one process
    barrier()
    torch.manual_seed(cfg.seed)
    lm = load_model(cfg.model, cfg.data.prompt_format, cfg.attn_implementation)
    if torch.cuda.is_available():
        lm.model.to(device())
    encoder = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0],
                      cfg.data.max_input_length, cfg.data.max_target_length)
    ctx = RunContext(cfg, lm, encoder, seq, out_dir)
    method = method_cls(ctx)
    t_setup = time.perf_counter() - t_start

    if is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", dump_config(cfg))
    prompts = {t: [encoder.prompt_ids(ex.prompt) for ex in test[t]] for t in seq}

    def evaluate_all(pred_dir: Path, wanted: set[int]) -> tuple[list, list]:
        """Scores of the ``wanted`` tasks (None elsewhere); with eval.rank_labels also the
        ranking accuracy of the classification tasks."""
        row, ranked = [], []
        for i, t in enumerate(seq):
            if i not in wanted:
                row.append(None)
                ranked.append(None)
                continue
            with eval_autocast(cfg.eval.precision, method.model):
                res = evaluate_task(method.model, encoder, test[t], metrics[t], lm.eos_token_ids, prompts[t],
                                    cfg.eval.batch_size, cfg.eval.max_new_tokens, cfg.eval.prefix_cache)
                ranking = cfg.eval.rank_labels and metrics[t] == "accuracy"
                picks = rank_labels(method.model, encoder, prompts[t], labels[t],
                                    cfg.eval.batch_size) if ranking else None
            row.append(round(res.score, 4))
            r = None
            if ranking:
                for rec, pick in zip(res.predictions, picks):
                    rec["ranked"] = pick
                r = round(score_task("accuracy", picks, [ex.references for ex in test[t]]), 4)
            ranked.append(r)
            write_jsonl(pred_dir / f"{t}.jsonl", res.predictions)
            fault_point("eval")
        return row, ranked

    def wanted_after(k: int) -> set[int]:
        """eval.mode minimal: only what AP/FWT/BWT need (a[k][k], a[k][k+1], the last row)."""
        if cfg.eval.mode == "full" or joint or k == len(stages) - 1:
            return set(range(len(seq)))
        return {k, k + 1}

    # A joint method (multi-task learning, the upper reference) has one stage: the union of
    # all tasks' training sets, evaluated once -> a one-row matrix, AP over all tasks.
    joint = bool(getattr(method, "joint", False))
    stages = [("joint", [ex for t in seq for ex in train[t]])] if joint else [(t, train[t]) for t in seq]

    def commit(done: int) -> None:
        """Checkpoint first (the commit point), then the user-facing results.json."""
        results["finished"] = done == len(stages)
        tensors, meta = method.state_dict()
        fault_point("write")
        save_checkpoint(out_dir, done, tensors, {"stages_done": done, "method": meta}, results)
        atomic_write_json(out_dir / "results.json", results)

    if checkpoint:
        tensors, meta, results = checkpoint
        done = meta.get("stages_done", 0)
        method.load_state_dict(tensors, meta.get("method", {}))
        results["resumed"] = results.get("resumed", 0) + 1
        log.info("resuming %s after %d of %d tasks", out_dir, done, len(stages))
    else:
        done = 0
        results = {
            "kif_version": __version__, "method": cfg.method, "model": cfg.model,
            "benchmark": bench.name, "order": cfg.order if not cfg.tasks else None,
            "tasks": seq, "metrics": metrics, "joint": joint,
            "n_train": {t: len(train[t]) for t in seq}, "n_test": {t: len(test[t]) for t in seq},
            "zero_shot": None, "matrix": [], "AP": None, "FWT": None, "BWT": None,
            "tasks_completed": 0, "per_task": [],
            "timings": {"setup": round(t_setup, 3)},
            "device": ("cuda:" + torch.cuda.get_device_name(0)) if torch.cuda.is_available()
            else (platform.processor() or "cpu"),
        }
        t0 = time.perf_counter()
        zero_wanted = set(range(len(seq))) if cfg.eval.mode == "full" else set()
        results["zero_shot"], ranked = evaluate_all(out_dir / "zero_shot" / "predictions", zero_wanted)
        if cfg.eval.rank_labels:
            results["zero_shot_ranked"], results["matrix_ranked"] = ranked, []
        results["timings"]["zero_shot_eval"] = round(time.perf_counter() - t0, 3)
        log.info("zero-shot: %s", _fmt_row(seq, results["zero_shot"]) if zero_wanted
                 else "not evaluated (eval.mode minimal)")
        commit(0)
    elapsed_before = results["timings"].get("total", 0.0)

    for k in range(done, len(stages)):
        task, task_train = stages[k]
        tdir = out_dir / "tasks" / task_dir_name(k, task)
        t0 = time.perf_counter()
        examples = method.train_examples(k, task_train)
        method.before_task(k)
        stats = train_task(method.model, encoder, examples, cfg.train, cfg.seed + k,
                           extra_loss=method.extra_loss, step_hook=method.on_gradients,
                           post_step_hook=method.on_step_end,
                           progress_label=f"task {k + 1}/{len(stages)} {task}", show_progress=show_progress,
                           logging_dir=out_dir / "logs" / task_dir_name(k, task))
        t1 = time.perf_counter()
        stats.update(method.after_task(k, tdir) or {})
        t2 = time.perf_counter()
        row, ranked = evaluate_all(tdir / "predictions", wanted_after(k))
        t3 = time.perf_counter()
        results["matrix"].append(row)
        if cfg.eval.rank_labels:
            results["matrix_ranked"].append(ranked)
        results["tasks_completed"] = len(seq) if joint else k + 1
        results.update({"AP": fmean(row), "FWT": None, "BWT": None} if joint
                       else cl_metrics(results["matrix"]))
        if cfg.eval.rank_labels and not joint and all(m == "accuracy" for m in metrics.values()):
            results["ranked_metrics"] = cl_metrics(results["matrix_ranked"])
        stats.update({"task": task, "train_s": round(t1 - t0, 3), "method_s": round(t2 - t1, 3),
                      "eval_s": round(t3 - t2, 3), "train_examples": len(examples)})
        results["per_task"].append(stats)
        results["timings"]["total"] = round(elapsed_before + time.perf_counter() - t_start, 3)
        # what a user keeps to use the model after this task (IncLoRA's holds K adapters)
        results["adapter_bytes"] = dir_bytes(tdir / "adapter") if (tdir / "adapter").exists() else 0
        results.update(method.state_summary())
        commit(k + 1)
        loss = _fmt(stats.get("loss"))
        if "regularizer_loss" in stats:  # e.g. eq. 5: show what the task itself reached
            loss += f" (task {_fmt(stats.get('task_loss'))} + reg {_fmt(stats['regularizer_loss'])})"
        log.info("task %d/%d %s: loss %s | %s | AP %s BWT %s", k + 1, len(stages), task,
                 loss, _fmt_row(seq, row), _fmt(results["AP"]), _fmt(results["BWT"]))
    barrier()  # several processes: return once the main one has written everything
    return results


def prepare_output_dir(out_dir: Path, cfg: RunConfig, overwrite: bool, accept_config_change: bool):
    """Decide between a fresh start and a resume; returns the checkpoint to resume from (or None)."""
    if overwrite:
        if not is_main():
            return None
        for name in ("checkpoints", "tasks", "zero_shot", "logs"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
        (out_dir / "results.json").unlink(missing_ok=True)
        return None
    latest = latest_checkpoint(out_dir)
    if latest is None:
        if (out_dir / "results.json").exists():
            raise KifError(f"{out_dir / 'results.json'}: present but no checkpoint to resume from; "
                           "pass --overwrite to start afresh or choose another -o")
        return None
    stored_path = out_dir / "config.yaml"
    try:
        stored = yaml.safe_load(stored_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        raise KifError(f"{stored_path}: missing or unreadable; cannot check the run to resume") from None
    current = cfg.model_dump(mode="json")
    changed = _diff_keys(stored, current)
    if changed and not accept_config_change:
        raise KifError(f"{stored_path}: the run in this directory used another config ({', '.join(changed[:5])}); "
                       "pass --overwrite to start afresh, or --accept-config-change to resume anyway")
    return latest


def _diff_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _fmt_row(seq, row) -> str:
    return " ".join(f"{t}={v:.1f}" for t, v in zip(seq, row) if v is not None)
