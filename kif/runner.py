"""The continual-learning recipe: named phases, run in order.

``run`` reads as the recipe: **setup** (data, output directory, model, method), the
**zero-shot** row, then per stage (a task; the union of all tasks for a joint method)
**train** -> **consolidate** (the method's ``after_task``, its extra training stage if it
has one, then the runner saves the model's adapter) -> **evaluate** -> **commit**
(checkpoint first, then results.json).
The score matrix a[j][i] and AP/FWT/BWT (eq. 18-20) are updated after every stage, so a
partial run reports too; the record itself is :class:`kif.results.Results`.
"""
from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from . import __version__
from .checkpoint import checkpoint_to_resume
from .config import RunConfig
from .data import get_benchmark, resolve_sequence, sample
from .data.benchmarks import check_labels, label_set
from .data.loaders import refuse_empty_labels
from .data.unseen import UnseenSet, empty_record, load_unseen
from .dist import barrier, device, is_main
from .provenance import source_commit
from .encoding import Encoder
from .errors import ArtifactError
from .evaluation import SequenceEvaluator
from .io import dir_bytes
from .lock import owns_output_dir
from .methods import CLMethod, RunContext, get_method
from .methods.base import ExtraStage
from .metrics import cl_line, describe_normalization
from .models import check_target_modules, load_model, model_path
from .models.hub_kernels import kernel_record
from .results import Results, UnseenPoint
from .rundir import RunDir
from .per_task import check_sequence, task_config
from .torchutil import check_finite_state, use_bf16
from .training import train_task
from .validation import hold_out, make_validator

log = logging.getLogger("kif")


@dataclass
class SequenceData:
    bench: object
    tasks: list[str]
    train: dict
    test: dict
    metrics: dict
    labels: dict
    unseen: UnseenSet | None = None  # eval.unseen: held-out tasks, never trained on
    validation: dict | None = None  # train.validation_samples: held out of each task's train, never trained on


@dataclass
class RunState:
    """What the phases share: the config, where to write, the method and the record."""
    cfg: RunConfig
    out_dir: Path
    data: SequenceData
    method: CLMethod
    evaluator: SequenceEvaluator
    stages: list[tuple[str, list]]
    results: Results
    done: int  # stages completed (and committed)
    elapsed_before: float  # seconds spent by earlier invocations of a resumed run
    unseen: SequenceEvaluator | None = None  # over the held-out tasks of eval.unseen

    @cached_property
    def run_dir(self) -> RunDir:
        return RunDir(self.out_dir)


@owns_output_dir  # an exclusive lock on out_dir for the whole run (kif.lock)
def run(cfg: RunConfig, out_dir: str | Path, overwrite: bool = False, show_progress: bool = True,
        accept_config_change: bool = False) -> dict:
    """Run (or resume) a sequence; returns the results dict that results.json holds.

    Re-running with the same output directory continues after the last completed task
    (see ``kif.checkpoint``); a different config is refused unless ``accept_config_change``.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    data = load_sequence_data(cfg)
    run_dir = RunDir(out_dir)
    checkpoint = checkpoint_to_resume(run_dir, cfg, overwrite, accept_config_change, data.tasks)
    barrier()  # several processes: all have read the directory before the main one writes to it
    if checkpoint and checkpoint[2].finished:
        log.info("%s: run already complete", out_dir)
        run_dir.restore_results(checkpoint[2])
        return checkpoint[2].to_dict()
    state = setup(cfg, out_dir, data, checkpoint, t_start, overwrite)
    if not checkpoint:
        evaluate_zero_shot(state)
        commit(state)
    for k in range(state.done, len(state.stages)):
        task, examples = state.stages[k]
        tdir = state.run_dir.task_dir(k, task)
        t0 = time.perf_counter()
        stats = train_stage(state, k, show_progress)
        t1 = time.perf_counter()
        stats.update(consolidate(state.method, k, tdir))  # method_s, and <name>_s of an extra stage
        t2 = time.perf_counter()
        row, ranked = state.evaluator.evaluate(state.method.model, state.run_dir.predictions(k, task),
                                               wanted_after(state, k), state.method.eval_task_context,
                                               state.method.reuses_prefix_cache)
        t3 = time.perf_counter()
        stats.update({"task": task, "train_s": round(t1 - t0, 3), "eval_s": round(t3 - t2, 3)})
        if unseen_due(state, k):
            stats["unseen_eval_s"] = evaluate_unseen(state, k)
        record_stage(state, k, tdir, row, ranked, stats, t_start)
        commit(state)
        log_stage(state, k, stats, row)
    barrier()  # several processes: return once the main one has written everything
    return state.results.to_dict()


# ---- setup ------------------------------------------------------------------------------------

def load_sequence_data(cfg: RunConfig) -> SequenceData:
    """Resolve the benchmark and read every split the run needs (fails before any output)."""
    bench = get_benchmark(cfg.benchmark, cfg.data_dir)  # a custom (YAML) benchmark needs no data_dir
    seq = resolve_sequence(bench, cfg.order, cfg.tasks)
    full = {t: (bench.tasks[t].load("train"), bench.tasks[t].load("test")) for t in seq}
    labels = {t: label_set(full[t][0]) for t in seq}  # also the candidates for eval.rank_labels
    for t in seq:
        check_labels(bench.tasks[t], labels[t], full[t][1])
        refuse_empty_labels(bench.tasks[t], labels[t], full[t][1])
    check_sequence(cfg, seq)  # per_task lists and task names against the resolved sequence
    train = {t: sample(full[t][0], cfg.data.train_samples, cfg.seed, f"task {t} train") for t in seq}
    train, validation = hold_out(train, cfg.train.validation_samples, cfg.seed)
    test = {t: sample(full[t][1], cfg.data.test_samples, cfg.seed, f"task {t} test") for t in seq}
    metrics = {t: bench.tasks[t].metric_label for t in seq}  # what results.json and the report name
    return SequenceData(bench, seq, train, test, metrics, labels, load_unseen(cfg, bench, seq), validation)


def run_encoder(cfg: RunConfig, lm) -> Encoder:
    """The run's encoder: the model's tokenizer and prompt format, the config's lengths."""
    return Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0],
                   cfg.data.max_input_length, cfg.data.max_target_length)


def run_evaluator(cfg: RunConfig, encoder: Encoder, data: SequenceData, eos_ids: list[int]) -> SequenceEvaluator:
    """The run's evaluator: every task's test samples, scoring and label set (also what
    ``scripts/score_adapter.py`` scores a saved adapter with, so that it scores as the run did)."""
    specs = {t: data.bench.tasks[t] for t in data.tasks}
    return SequenceEvaluator(cfg, encoder, data.tasks, data.test,
                             {t: s.scoring(cfg.eval.normalization) for t, s in specs.items()}, data.labels,
                             eos_ids, {t: s.classification for t, s in specs.items()})


def setup(cfg: RunConfig, out_dir: Path, data: SequenceData, checkpoint, t_start: float,
          overwrite: bool = False) -> RunState:
    """Load the model, build the method, and start the record (fresh or from a checkpoint).
    Everything that can fail is done before the first write (and before ``overwrite``
    discards the earlier run)."""
    method_cls = get_method(cfg.method)
    if is_main():
        model_path(cfg.model)  # a built-in model is built/converted into the cache by one process
    barrier()
    torch.manual_seed(cfg.seed)
    lm = load_model(cfg.model, cfg.data.prompt_format, cfg.attn_implementation, cfg.hub_kernels)
    check_target_modules(lm.model, cfg.lora)
    if torch.cuda.is_available():
        lm.model.to(device())
    encoder = run_encoder(cfg, lm)
    method = method_cls(RunContext(cfg, lm, encoder, data.tasks, out_dir))
    evaluator = run_evaluator(cfg, encoder, data, lm.eos_token_ids)
    # A joint method (multi-task learning, the upper reference) has one stage: the union of
    # all tasks' training sets, evaluated once -> a one-row matrix, AP over all tasks.
    joint = bool(method.joint)
    stages = ([("joint", [ex for t in data.tasks for ex in data.train[t]])] if joint
              else [(t, data.train[t]) for t in data.tasks])
    run_dir = RunDir(out_dir)
    if checkpoint:
        tensors, meta, results = checkpoint
        latest = run_dir.latest_checkpoint()
        method.check_state(tensors, meta.get("method", {}), meta.get("stages_done", 0), str(latest / "method.json"))
        try:
            method.load_state_dict(tensors, meta.get("method", {}))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
            raise ArtifactError(f"{latest}: the saved state does not fit method "
                                f"'{cfg.method}' ({exc.__class__.__name__}: {str(exc)[:200]})") from None
        results.resumed = (results.resumed or 0) + 1
        # a run resumed by other code than started it says so (the start's is kif_commit)
        results.kif_commit_resumes = [*(results.kif_commit_resumes or []), source_commit()]
        done = meta.get("stages_done", 0)
        log.info("resuming %s after %d of %d tasks", out_dir, done, len(stages))
    else:
        results, done = new_results(cfg, data, joint, round(time.perf_counter() - t_start, 3)), 0
    results.kernels = kernel_record(lm.model, cfg.hub_kernels)
    if overwrite:
        run_dir.discard()
    run_dir.write_config(cfg)  # the first write of the run
    return RunState(cfg, out_dir, data, method, evaluator, stages, results, done,
                    results.timings.get("total", 0.0), unseen_evaluator(cfg, encoder, data, lm.eos_token_ids))


def new_results(cfg: RunConfig, data: SequenceData, joint: bool, setup_s: float) -> Results:
    seq = data.tasks
    return Results(
        kif_version=__version__, kif_commit=source_commit(), method=cfg.method, model=cfg.model, benchmark=data.bench.name,
        order=cfg.order if not cfg.tasks else None, tasks=seq, metrics=data.metrics, joint=joint,
        n_train={t: len(data.train[t]) for t in seq}, n_test={t: len(data.test[t]) for t in seq},
        normalization=describe_normalization(cfg.eval.normalization), matrix=[], timings={"setup": setup_s},
        scoring={t: scoring_record(data.bench.tasks[t], cfg.eval.normalization) for t in seq},
        n_test_groups={t: len({e.group for e in data.test[t]}) for t in seq
                       if data.bench.tasks[t].group_by is not None} or None,
        device=("cuda:" + torch.cuda.get_device_name(0)) if torch.cuda.is_available()
        else (platform.processor() or "cpu"),
        zero_shot_ranked=None, matrix_ranked=[] if cfg.eval.rank_labels else None,
        unseen=empty_record(data.unseen) if data.unseen else None)


def scoring_record(spec, normalization: str) -> dict:
    """How a task's scores are computed (results.json ``scoring``; ``kif rescore`` reads it)."""
    m = spec.scoring(normalization)
    return {"metric": m.name, "delimiter": m.delimiter, "normalization": m.normalization,
            "grouped": spec.group_by is not None}


# ---- phases --------------------------------------------------------------------------------------

def evaluate_zero_shot(state: RunState) -> None:
    """The row before any training (skipped under ``eval.mode: minimal``)."""
    t0 = time.perf_counter()
    wanted = set(range(len(state.data.tasks))) if state.cfg.eval.mode == "full" else set()
    row, ranked = state.evaluator.evaluate(state.method.model, state.run_dir.predictions(None), wanted,
                                           reuses_prefix_cache=state.method.reuses_prefix_cache)
    state.results.zero_shot = row
    if state.cfg.eval.rank_labels:
        state.results.zero_shot_ranked = ranked
    state.results.timings["zero_shot_eval"] = round(time.perf_counter() - t0, 3)
    log.info("zero-shot: %s", _fmt_row(state.data.tasks, row) if wanted
             else "not evaluated (eval.mode minimal)")
    if state.unseen is not None:  # Table III's zero-shot row, whatever eval.mode
        state.results.timings["unseen_zero_shot_eval"] = evaluate_unseen(state, None)


def train_stage(state: RunState, k: int, show_progress: bool) -> dict:
    """Train stage k from a fixed seed (``seed + k``): a redo after a crash is identical."""
    task, examples = state.stages[k]
    method, cfg = state.method, state.cfg
    task_cfg = cfg if state.results.joint else task_config(cfg, k, task)  # per_task values applied
    held = [(state.data.validation.get(t, []) if state.data.validation else [], state.evaluator.metrics[t])
            for t in (state.data.tasks if state.results.joint else [task])]
    examples = method.train_examples(k, examples)
    method.before_task(k)
    stats = train_task(method.model, method.ctx.encoder, examples, task_cfg.train, cfg.seed + k,
                       extra_loss=method.extra_loss, step_hook=method.on_gradients,
                       post_step_hook=method.on_step_end,
                       progress_label=f"task {k + 1}/{len(state.stages)} {task}", show_progress=show_progress,
                       logging_dir=state.run_dir.log_dir(k, task),
                       validator=make_validator(task_cfg, method.ctx.encoder, held, method.ctx.lm.eos_token_ids,
                                                method.reuses_prefix_cache))
    stats["train_examples"] = len(examples)
    return stats


def consolidate(method: CLMethod, k: int, task_dir: Path) -> dict:
    """The method's task boundary (fusion, memory, Fisher, ...), its extra training stage if any
    (timed apart: ``<name>_s``), then the model's adapter as ``task_dir/adapter`` (PEFT format),
    the model the evaluation sees."""
    t0 = time.perf_counter()
    if is_main():
        task_dir.mkdir(parents=True, exist_ok=True)
    stats = method.after_task(k, task_dir) or {}
    stage = method.extra_stage(k)
    extra_s = 0.0
    if stage is not None:
        t1 = time.perf_counter()
        stats.update(train_extra_stage(method, k, stage))
        extra_s = time.perf_counter() - t1
        stats[f"{stage.name}_s"] = round(extra_s, 3)
    method.save_adapter(task_dir / "adapter")
    stats["method_s"] = round(time.perf_counter() - t0 - extra_s, 3)
    return stats


EXTRA_STAGE_STATS = ("steps", "loss", "skipped_steps", "lr_min", "lr_max", "warmup_steps", "schedule_flags")


def train_extra_stage(method: CLMethod, k: int, stage: ExtraStage) -> dict:
    """Train a method's ``ExtraStage`` of task k (no progress bar); its stats, prefixed ``<name>_``."""
    try:
        stats = {"examples": len(stage.examples)}
        if stage.examples:
            stats.update(train_task(method.model, method.ctx.encoder, stage.examples, stage.train, stage.seed,
                                    extra_loss=stage.extra_loss,
                                    post_step_hook=stage.post_step_hook, show_progress=False,
                                    progress_label=f"{stage.name} {k + 1}/{len(method.ctx.tasks)}"))
    finally:
        stage.end()
    return {f"{stage.name}_{key}": stats[key] for key in ("examples", *EXTRA_STAGE_STATS) if key in stats}


def wanted_after(state: RunState, k: int) -> set[int]:
    if state.results.joint:
        return set(range(len(state.data.tasks)))
    return state.evaluator.wanted_after(k, len(state.stages))


def record_stage(state: RunState, k: int, tdir: Path, row, ranked, stats: dict, t_start: float) -> None:
    res = state.results
    res.record_task(k, row, ranked, stats)
    res.timings["total"] = round(state.elapsed_before + time.perf_counter() - t_start, 3)
    # what a user keeps to use the model after this task (IncLoRA's holds K adapters)
    res.adapter_bytes = dir_bytes(tdir / "adapter") if (tdir / "adapter").exists() else 0
    res.kernels = kernel_record(state.method.ctx.lm.model, state.cfg.hub_kernels)  # as training left it
    for key, value in state.method.state_summary().items():
        setattr(res, key, value)
    state.done = k + 1


def commit(state: RunState) -> None:
    """Checkpoint first (the commit point), then the user-facing results.json."""
    state.results.finished = state.done == len(state.stages)
    tensors, meta = state.method.state_dict()
    check_finite_state(tensors, f"{state.out_dir}: after {state.done} of {len(state.stages)} stages",
                       use_bf16(state.cfg.train.precision))  # never checkpoint NaN/inf
    state.run_dir.save_checkpoint(state.done, tensors, {"stages_done": state.done, "method": meta},
                                  state.results.to_dict())
    state.run_dir.write_results(state.results)


def log_stage(state: RunState, k: int, stats: dict, row) -> None:
    loss = _fmt(stats.get("loss"))
    if "regularizer_loss" in stats:  # e.g. eq. 5: show what the task itself reached
        loss += f" (task {_fmt(stats.get('task_loss'))} + reg {_fmt(stats['regularizer_loss'])})"
    log.info("task %d/%d %s: loss %s | %s | %s", k + 1, len(state.stages), state.stages[k][0],
             loss, _fmt_row(state.data.tasks, row), cl_line(state.results))


# ---- unseen tasks (eval.unseen, Table III) ------------------------------------------------------------

def unseen_evaluator(cfg: RunConfig, encoder: Encoder, data: SequenceData, eos_ids) -> SequenceEvaluator | None:
    """A second evaluator over the held-out tasks (their own generation length; no label ranking)."""
    u = data.unseen
    if u is None:
        return None
    ev = cfg.eval.model_copy(update={"rank_labels": False,
                                     "max_new_tokens": cfg.eval.unseen_max_new_tokens or cfg.eval.max_new_tokens})
    return SequenceEvaluator(cfg.model_copy(update={"eval": ev}), encoder, u.tasks, u.test, u.metrics,
                             {t: [] for t in u.tasks}, eos_ids)


def unseen_due(state: RunState, k: int) -> bool:
    """After the last stage, and after every stage with ``eval.unseen_every_task``."""
    return state.unseen is not None and (k == len(state.stages) - 1 or state.cfg.eval.unseen_every_task)


def evaluate_unseen(state: RunState, k: int | None) -> float:
    """Evaluate the held-out tasks with the model as it is (``k``: None before the sequence,
    else right after stage k) and record the point in ``results.unseen``; returns seconds.
    The evaluation model of every method is the one it uses for any input, with no task
    identity (IncLoRA/O-LoRA: all adapters summed), so an unseen input gets what a seen one gets."""
    t0 = time.perf_counter()
    last = k == len(state.stages) - 1
    pred_dir = state.run_dir.unseen_predictions(k, "" if k is None else state.stages[k][0], last)
    row, _ = state.unseen.evaluate(state.method.model, pred_dir, set(range(len(state.unseen.tasks))),
                                   reuses_prefix_cache=state.method.reuses_prefix_cache)
    rec = state.results.unseen
    if rec is None or rec.tasks != state.data.unseen.tasks:  # a resume that accepted a config change
        rec = state.results.unseen = empty_record(state.data.unseen)
    point = UnseenPoint.of(dict(zip(rec.tasks, row)), rec.categories)
    if k is None:
        rec.before = point
    else:
        if state.cfg.eval.unseen_every_task:  # [k] = after stage k; a redone stage replaces its entry
            done = (rec.after_each or [])[:k]
            rec.after_each = done + [None] * (k - len(done)) + [point]
        if last:
            rec.after = point
    log.info("unseen tasks %s: %s | mean %s", "zero-shot" if k is None else f"after task {k + 1}",
             " ".join(f"{c}={_fmt(v)}" for c, v in point.per_category.items()), _fmt(point.mean))
    return round(time.perf_counter() - t0, 3)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _fmt_row(seq, row) -> str:
    return " ".join(f"{t}={v:.1f}" for t, v in zip(seq, row) if v is not None)
