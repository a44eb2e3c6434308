"""Training one task with the Hugging Face Trainer (no patched trainer: callbacks only).

Methods plug in through four hooks: an extra loss term, a hook that sees the
gradients after accumulation and before the optimizer step, a hook right after each
optimizer step (e.g. an EMA of the weights), and the examples.

Model selection on held-out examples (``train.validation_samples``) is :mod:`kif.validation`.
"""
from __future__ import annotations

import inspect
import math
import tempfile
import warnings
from typing import Callable, Optional

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from .config import TrainConfig
from .dist import is_main
from .errors import ConfigError, KifError
from .divergence import DivergenceGuard
from .schedule_check import ScheduleCheck
from .guards import backward_hint, precision_hint
from .attention import backend_names, sdpa_backends, training_attention
from .encoding import Encoder, TrainCollator, supports_logits_to_keep
from .torchutil import all_finite, use_bf16
from .validation import KeepBest


class FeatureDataset(Dataset):
    def __init__(self, features: list[dict]):
        self.features = features

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return self.features[i]


def length_bucket_order(lengths: list[int], chunk: int, megabatch_chunks: int = 50,
                        generator: torch.Generator | None = None) -> list[int]:
    """One epoch's example order for ``train.group_by_length``.

    Random megabatches of up to ``megabatch_chunks`` chunks (the whole task when it is
    smaller), each sorted by length and cut into chunks of ``chunk`` (a device batch times
    the accumulation steps); the chunk holding the longest example goes first (an
    out-of-memory error shows at once), the others in random order. When ``chunk`` does not
    divide the task, the ``n % chunk`` examples left over are a run of neighbours in length
    taken at a random place of the last megabatch; they make a short chunk that comes last,
    so that every batch boundary falls on a chunk boundary.

    Why a random place: cut from the end of the length order, the short chunk was always
    the shortest examples, one small batch of one kind, the epoch's last step. For Replay
    that was the memory of a short-prompt task alone (two sst2 examples after 96 dbpedia
    ones: docs/results/evidence/README.md). When ``chunk`` divides the task, the order is
    what it was before that change, draw for draw.

    HF's own sampler shrinks its megabatch to a single chunk when a task has fewer than 8
    of them, which leaves a batch of 128 on a 1,000-example task with 20-55 % padding
    (``benchmarks/padding_share.py`` on Long Sequence).
    """
    n = len(lengths)
    if n == 0:
        return []
    perm = torch.randperm(n, generator=generator).tolist()
    size = max(chunk, min(n, megabatch_chunks * chunk))
    megas = [sorted(perm[m:m + size], key=lambda i: -lengths[i]) for m in range(0, n, size)]
    short, r = [], n % chunk
    if r:  # only the last megabatch can hold the left-over examples
        last = megas[-1]
        at = int(torch.randint(len(last) - r + 1, (1,), generator=generator))
        short, megas[-1] = last[at:at + r], last[:at] + last[at + r:]
    chunks = [mega[c:c + chunk] for mega in megas for c in range(0, len(mega), chunk)]
    if not chunks:
        return short
    first = max(range(len(chunks)), key=lambda c: lengths[chunks[c][0]])
    rest = [chunks[c] for c in range(len(chunks)) if c != first]
    order = torch.randperm(len(rest), generator=generator).tolist()
    return [i for c in [chunks[first]] + [rest[j] for j in order] for i in c] + short


class LengthBucketSampler(torch.utils.data.Sampler):
    """``length_bucket_order`` anew each epoch, drawn from torch's global RNG (which the
    Trainer seeds), so every process of a distributed run draws the same order."""

    def __init__(self, lengths: list[int], chunk: int):
        self.lengths, self.chunk = lengths, chunk

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        return iter(length_bucket_order(self.lengths, self.chunk))


class KifTrainer(Trainer):
    """Trainer whose loss may carry a method's regulariser (e.g. eq. 5), and whose
    ``group_by_length`` sampler also buckets small tasks (``LengthBucketSampler``)."""

    def __init__(self, *args, extra_loss: Optional[Callable] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_loss = extra_loss
        self.extra_sum, self.extra_count = None, 0  # the regulariser's running total (no sync per step)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and isinstance(dataset, FeatureDataset):
            return LengthBucketSampler([len(f["input_ids"]) for f in dataset.features],
                                       self.args.train_batch_size * self.args.gradient_accumulation_steps)
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        extra = self.extra_loss(model) if self.extra_loss else None
        if extra is not None:
            d = extra.detach().float()
            self.extra_sum = d if self.extra_sum is None else self.extra_sum + d
            self.extra_count += 1
            # The LM loss is already normalised over the accumulated batch when the model
            # takes num_items_in_batch; the regulariser must count once per optimizer step.
            scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
            term = extra / self.current_gradient_accumulation_steps if scaled else extra
            loss = loss + term
            for cb in self.callback_handler.callbacks if model.training else ():  # not in evaluation
                if isinstance(cb, DivergenceGuard):  # the divergence stop checks what is optimised
                    cb.add_extra(term)
        return (loss, outputs) if return_outputs else loss


class StepGuard(TrainerCallback):
    """Sees each optimizer step's gradients: skips non-finite ones, then runs the method's hook.

    A skipped step drops every gradient (``grad = None``), so the optimizer leaves the
    weights and its moments untouched for that step. ``post_hook`` runs right after each
    optimizer step that was not skipped.

    Each skipped step is recorded in ``skipped_batches`` (results.json, per task): its
    index, the rows and padded length of what the model saw in training mode during that
    step (``micro_batches`` [[rows, length], ...] under gradient accumulation), and whether
    its loss was finite. Non-finite gradients of a finite loss point at the backward pass
    (the attention kernel on padded rows: ``kif.attention``), not at the learning rate.
    The record comes from a forward hook, which is left out under ``torch_compile``
    (lengths then null).
    """

    def __init__(self, params: list[torch.nn.Parameter], hook: Optional[Callable[[], None]] = None,
                 post_hook: Optional[Callable[[], None]] = None):
        self.params, self.hook, self.post_hook = params, hook, post_hook
        self.skipped = 0
        self.skipped_batches: list[dict] = []
        self.hint: Callable[[bool], str] = lambda loss_finite: "counted in results.json"
        self._warned = False
        self._skip_this_step = False
        self._seen: list[tuple] = []  # (rows, padded length, loss) of this step's forward passes
        self._handle = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._seen = []
        if model is not None and not args.torch_compile:
            self._handle = model.register_forward_hook(self._record, with_kwargs=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _record(self, module, args, kwargs, output):
        if not module.training:  # a validation pass (KeepBest) is no part of the step
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        rows, length = (int(ids.shape[0]), int(ids.shape[-1])) if isinstance(ids, torch.Tensor) else (None, None)
        self._seen.append((rows, length, loss.detach() if isinstance(loss, torch.Tensor) else None))

    def _describe(self, step: int, seen: list[tuple]) -> dict:
        losses = [loss for _, _, loss in seen if loss is not None]
        entry = {"step": step,
                 "rows": sum(r for r, _, _ in seen) if seen and all(r is not None for r, _, _ in seen) else None,
                 "padded_length": max((n for _, n, _ in seen if n is not None), default=None),
                 "loss_finite": bool(torch.stack([x.float() for x in losses]).isfinite().all()) if losses else None}
        if len(seen) > 1:
            entry["micro_batches"] = [[r, n] for r, n, _ in seen]
        return entry

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.post_hook is not None and not self._skip_this_step:
            self.post_hook()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        seen, self._seen = self._seen, []
        grads = [p.grad for p in self.params if p.grad is not None]
        finite = all_finite(grads)  # one fused check, one device sync
        self._skip_this_step = not finite
        if not finite:
            self.skipped += 1
            entry = self._describe(state.global_step + 1, seen)
            self.skipped_batches.append(entry)
            for p in self.params:
                p.grad = None
            if not self._warned:
                warnings.warn(f"non-finite gradient at optimizer step {entry['step']} (batch of {entry['rows']} rows, "
                              f"padded length {entry['padded_length']}): step skipped; {self.hint(entry['loss_finite'])}")
                self._warned = True
            return
        if self.hook is not None:
            self.hook()


class TaskProgress(TrainerCallback):
    """One progress bar per task: ``task k/K name``, epoch, loss."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled, self.bar = label, enabled, None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=state.max_steps, desc=self.label, leave=False, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and self.bar is not None:
            self.bar.set_postfix(epoch=f"{state.epoch:.2f}", loss=f"{logs['loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


def checkpointing_arguments(on: bool) -> dict:
    """``train.gradient_checkpointing`` in the Trainer's terms (``activation_checkpointing``
    since transformers 5.x, ``gradient_checkpointing`` before). Non-reentrant: it works with a
    frozen embedding (LoRA) and restores the RNG state, so the recomputed forward draws the
    same dropout masks and the numbers do not change."""
    if not on:
        return {}
    name = ("activation_checkpointing" if "activation_checkpointing" in inspect.signature(TrainingArguments).parameters
            else "gradient_checkpointing")
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def training_arguments(cfg: TrainConfig, output_dir: str, seed: int, bf16: bool) -> TrainingArguments:
    """The Trainer's arguments for ``cfg``. Warm-up: ``warmup_steps`` as given; a
    ``warmup_ratio`` goes to the Trainer's ``warmup_ratio`` where it has one, else as a
    float ``warmup_steps`` < 1, which this transformers reads as a fraction of the steps."""
    if "warmup_ratio" in inspect.signature(TrainingArguments).parameters:
        warmup = {"warmup_ratio": cfg.warmup_ratio, "warmup_steps": cfg.warmup_steps}
    else:
        warmup = {"warmup_steps": cfg.warmup_steps or cfg.warmup_ratio}
    return TrainingArguments(
        output_dir=output_dir, num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler, **warmup,
        max_grad_norm=cfg.max_grad_norm, bf16=bf16, seed=seed, data_seed=seed,
        # precision bf16 without a GPU: CPU autocast (the Trainer refuses bf16 unless told so)
        use_cpu=bf16 and not torch.cuda.is_available(),
        logging_steps=cfg.logging_steps, save_strategy="no", disable_tqdm=True,
        report_to=[r for r in cfg.report_to if r != "tensorboard"] if is_main() else [],
        torch_compile=cfg.torch_compile,
        **checkpointing_arguments(cfg.gradient_checkpointing),
        remove_unused_columns=False, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
    )


def tensorboard_writer(log_dir):
    """A SummaryWriter for ``log_dir``; a clear error when the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.report_to: tensorboard needs the tensorboard package "
                          "(pip install 'kif[tensorboard]')") from None
    return SummaryWriter(log_dir=str(log_dir))


def train_task(model, encoder: Encoder, examples, cfg: TrainConfig, seed: int, *,
               extra_loss=None, step_hook=None, post_step_hook=None, progress_label="train",
               show_progress=True, logging_dir=None, validator: Optional[Callable] = None) -> dict:
    """Fine-tune ``model`` in place on ``examples``; returns stats (loss, steps, skipped, tokens).

    With a ``validator`` (``make_validator``: the task's held-out examples), the model is
    scored every ``cfg.eval_steps`` steps and, under ``cfg.select_best``, left with the
    weights of the best evaluation (``KeepBest``); the stats then carry the history,
    ``best_step`` and ``best_validation``."""
    features = [encoder.train_features(ex) for ex in examples]
    trainable = [p for p in model.parameters() if p.requires_grad]
    guard = StepGuard(trainable, step_hook, post_step_hook)
    progress = TaskProgress(progress_label, show_progress and is_main())
    schedule = ScheduleCheck(progress_label)
    keeper = None
    if validator is not None:
        keeper = KeepBest(trainable, validator, cfg.eval_steps, getattr(validator, "greater_is_better", False),
                          cfg.select_best, model)
    bf16 = use_bf16(cfg.precision)
    with tempfile.TemporaryDirectory(prefix="kif-trainer-") as tmp:
        args = training_arguments(cfg, tmp, seed, bf16)
        target_only = cfg.target_logits_only and not encoder.is_seq2seq and supports_logits_to_keep(model)
        collator = TrainCollator(encoder.tokenizer.pad_token_id, target_logits_only=target_only)
        trainer = KifTrainer(model=model, args=args, train_dataset=FeatureDataset(features),
                             data_collator=collator,
                             callbacks=[guard, progress, schedule] + ([keeper] if keeper else [])
                             # last: it checks the weights training ends with, after KeepBest restored them
                             + [DivergenceGuard(progress_label, cfg.learning_rate, bf16, cfg.max_grad_norm)],
                             extra_loss=extra_loss)
        if "tensorboard" in cfg.report_to and is_main() and logging_dir is not None:
            from transformers.integrations import TensorBoardCallback

            trainer.add_callback(TensorBoardCallback(tb_writer=tensorboard_writer(logging_dir)))
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        backends = sdpa_backends(args.device.type, torch.bfloat16 if bf16 else torch.float32, cfg.attention_backend)
        names = backend_names(backends)
        guard.hint = lambda loss_finite: (backward_hint(cfg.attention_backend, names) if loss_finite
                                          else precision_hint(bf16))
        try:
            with training_attention(backends):  # forward and backward of training only
                out = trainer.train()
        except RuntimeError as exc:
            if backends is None or not any(m in str(exc) for m in ("No available kernel", "No viable backend")):
                raise
            raise ConfigError(f"train.attention_backend: {cfg.attention_backend}: torch has no such attention kernel "
                              f"for this model, device and precision ({args.device.type}, "
                              f"{'bf16' if bf16 else 'fp32'}); use auto") from None
        loss = float(out.training_loss)
        if trainer.accelerator.num_processes > 1:  # each process's loss is its share: the mean is the loss
            loss = trainer.accelerator.reduce(torch.tensor(loss, dtype=torch.float64, device=args.device),
                                              "mean").item()
    steps = max(int(out.global_step), 1)
    if guard.skipped > cfg.max_skipped_fraction * steps:
        finite_loss = [e for e in guard.skipped_batches if e["loss_finite"]]
        lengths = sorted({e["padded_length"] for e in guard.skipped_batches if e["padded_length"] is not None})
        raise KifError(f"{progress_label}: {guard.skipped} of {steps} optimizer steps had non-finite gradients "
                       f"(train.max_skipped_fraction {cfg.max_skipped_fraction}; padded lengths "
                       f"{', '.join(map(str, lengths)) or 'unknown'}); "
                       f"{guard.hint(len(finite_loss) > 0)}. Results of earlier tasks are kept; rerun to resume")
    n_tokens = sum(sum(1 for t in f["labels"] if t != -100) for f in features)
    stats = {"loss": loss if math.isfinite(loss) else None,
             "steps": int(out.global_step), "skipped_steps": guard.skipped,
             "skipped_batches": guard.skipped_batches, "attention_backends": names,
             "target_tokens_per_epoch": n_tokens,
             "input_tokens_per_epoch": sum(len(f["input_ids"]) for f in features),  # real, no padding
             **schedule.stats()}
    if keeper is not None:
        stats.update(keeper.stats(getattr(validator, "kind", "custom"), getattr(validator, "n_examples", None)))
    if trainer.extra_count:  # `loss` includes the method's regulariser: report both parts
        reg = float(trainer.extra_sum) / trainer.extra_count
        stats["regularizer_loss"] = reg if math.isfinite(reg) else None
        stats["task_loss"] = loss - reg if stats["loss"] is not None and math.isfinite(reg) else None
    return stats
