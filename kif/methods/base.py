"""The interface every continual-learning method implements (one file per method).

The runner calls, for each task k (0-based) of the sequence:
``train_examples`` -> ``before_task`` -> training (with ``extra_loss`` in the loss,
``on_gradients`` before and ``on_step_end`` after every optimizer step) -> ``after_task``
-> ``extra_stage``: a second training stage the runner trains and times like a task, if the
method has one (KIF-M's replay) -> evaluation of ``model`` on every task, routed as the
method declares (``reuses_prefix_cache``, ``eval_task_context``). A method that only needs
LoRA + plain training overrides nothing (that is SeqLoRA). A method with ``joint = True``
(multi-task learning) is trained once on the union of all tasks (k = 0) and evaluated once.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Optional

import torch

from ..config import RunConfig, TrainConfig
from ..encoding import Encoder
from ..errors import ArtifactError, ConfigError
from ..io import atomic_save_dir
from ..per_task import task_config
from .options import MethodOptions, parse_options


@dataclass
class ExtraStage:
    """A training stage of task k after ``after_task`` (KIF-M's replay), which the runner trains
    and times like a task (``runner.train_extra_stage``: results.json ``<name>_steps``, ``_loss``,
    ..., ``<name>_s``), with the stage's hooks, not the method's. No examples: nothing trains."""
    name: str
    examples: list
    train: TrainConfig
    seed: int
    extra_loss: Optional[Callable] = None
    post_step_hook: Optional[Callable[[], None]] = None  # as on_step_end
    end: Callable[[], None] = lambda: None  # after training, also when it failed: undo the stage's set-up


@dataclass
class RunContext:
    cfg: RunConfig
    lm: object  # kif.models.LoadedModel
    encoder: Encoder
    tasks: list[str]
    out_dir: Path


class CLMethod:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[MethodOptions]] = MethodOptions  # kif.methods.options (no torch there)
    joint: ClassVar[bool] = False  # True: one training stage on all tasks' data at once
    # Evaluation routing: False where the model routes an input by the whole of it (SAPT, a
    # prompted model), so a shared prompt prefix's KV cache does not apply; evaluation, model
    # selection and pseudo-sample generation then encode every prompt whole.
    reuses_prefix_cache: ClassVar[bool] = True

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.opts = parse_options(self.Options, ctx.cfg.method_args, self.name)
        self.model = self.setup_model(ctx.lm.model)

    # --- per-task options (kif.per_task) ---------------------------------------------
    def task_config(self, k: int) -> RunConfig:
        """The run config as task k sees it: its ``per_task`` values applied."""
        return task_config(self.ctx.cfg, k, self.ctx.tasks[k]) if k < len(self.ctx.tasks) else self.ctx.cfg

    def task_opts(self, k: int):
        """Task k's ``method_args`` (its ``per_task`` values applied), validated like ``self.opts``."""
        cfg = self.task_config(k)
        return self.opts if cfg is self.ctx.cfg else parse_options(self.Options, cfg.method_args, self.name)

    # --- model -----------------------------------------------------------------
    def setup_model(self, base):
        """LoRA via PEFT on the configured (or architecture-default) modules; or full fine-tuning."""
        lcfg = self.ctx.cfg.lora
        if not lcfg.enabled:
            for p in base.parameters():
                p.requires_grad_(True)
            return base
        from peft import get_peft_model

        return get_peft_model(base, self.lora_config(base))

    def lora_config(self, base=None):
        """A fresh ``peft.LoraConfig`` from ``cfg.lora`` (methods that add adapters reuse it)."""
        from peft import LoraConfig, TaskType

        lcfg = self.ctx.cfg.lora
        task = TaskType.SEQ_2_SEQ_LM if self.ctx.lm.is_seq2seq else TaskType.CAUSAL_LM
        targets = lcfg.target_modules or default_target_modules(base if base is not None else self.ctx.lm.model)
        return LoraConfig(task_type=task, r=lcfg.r, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout,
                          target_modules=targets)

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def snapshot_trainable(self) -> dict[str, torch.Tensor]:
        """A detached copy of the trainable weights, keyed like ``trainable()``."""
        return {n: p.detach().clone() for n, p in self.trainable().items()}

    @torch.no_grad()
    def set_trainable(self, values: dict[str, torch.Tensor]) -> None:
        """Write ``values`` (keyed like ``trainable()``) into the trainable weights."""
        for n, p in self.trainable().items():
            p.copy_(values[n])

    # --- hooks (defaults: plain sequential fine-tuning) ---------------------------
    def train_examples(self, k: int, examples: list) -> list:
        return examples

    def before_task(self, k: int) -> None:
        pass

    def extra_loss(self, model) -> Optional[torch.Tensor]:
        return None

    def on_gradients(self) -> None:
        """After gradient accumulation, before the optimizer consumes the gradients."""

    def on_step_end(self) -> None:
        """Right after each optimizer step that was taken (not after a skipped non-finite step)."""

    def eval_task_context(self, i: int):
        """The context the model is evaluated on sequence task i under; by default none: the
        model answers every input alike, with no task identity."""
        return contextlib.nullcontext()

    def after_task(self, k: int, task_dir: Path) -> dict:
        """Called after training task k: consolidate (fuse, store memory, ...) and write the
        method's own artifacts into ``task_dir``; returns stats for results.json. The runner
        then trains ``extra_stage`` and saves the model's adapter as ``task_dir/adapter``
        (methods never do)."""
        return {}

    def extra_stage(self, k: int) -> Optional[ExtraStage]:
        """A second training stage of task k, right after ``after_task`` (see ``ExtraStage``); None: none."""
        return None

    def state_summary(self) -> dict:
        return {}

    # --- resume (kif.checkpoint) ---------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """What task k+1 needs to start exactly as in an uninterrupted run: the model's
        adapter weights (all adapters; every weight under full fine-tuning) and the
        method's own state (``extra_state``)."""
        tensors = {f"model.{n}": p.detach() for n, p in self._model_state().items()}
        extra, meta = self.extra_state()
        tensors.update({f"method.{n}": t.detach() for n, t in extra.items()})
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        extra = {n[len("method."):]: t for n, t in tensors.items() if n.startswith("method.")}
        self.load_extra_state(extra, meta)  # first: it may add adapters the weights belong to
        params = self._model_state()
        saved = {n[len("model."):]: t for n, t in tensors.items() if n.startswith("model.")}
        missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
        if missing or unexpected:
            raise ArtifactError(f"checkpoint: weights do not match the model (missing {missing[:2]}, "
                                f"unexpected {unexpected[:2]})")
        with torch.no_grad():
            for n, p in params.items():
                if p.shape != saved[n].shape:
                    raise ArtifactError(f"checkpoint: {n} has shape {list(saved[n].shape)}, "
                                        f"the model {list(p.shape)}")
                p.copy_(saved[n])

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Method state beyond the weights: (tensors, JSON-able dict). ``STATE`` declares it."""
        return {}, {}

    # What ``extra_state`` writes: entry -> the number of completed stages from which it is
    # always there, or None for an entry added after checkpoints of the method existed (an
    # earlier kif's checkpoint lacks it and still resumes; the method reads it as empty). An
    # entry is a tensor's name up to its first '/' or '.' (``fisher/<param>`` -> ``fisher``) or
    # a key of the JSON part. Each class lists what its own ``extra_state`` adds (subclasses
    # and mixins inherit, see ``state_entries``).
    STATE: ClassVar[dict[str, Optional[int]]] = {}

    @classmethod
    def state_entries(cls) -> dict[str, Optional[int]]:
        """``STATE`` merged over the class hierarchy."""
        out: dict[str, Optional[int]] = {}
        for c in reversed(cls.__mro__):
            out.update(vars(c).get("STATE", {}))
        return out

    @classmethod
    def check_state(cls, tensors: dict, meta: dict, done: int, source: str) -> None:
        """Refuse (ArtifactError) a checkpoint's method state that lacks an entry this method
        writes after ``done`` stages (e.g. KIF's accumulated importance after task 1: read as
        "no state yet" it would train task 2 from the wrong state), or that holds an entry
        this method never writes (another method's state). ``tensors``: the checkpoint's
        tensors (``method.*`` are the method's); ``meta``: its ``method`` record."""
        names = [n[len("method."):] for n in tensors if n.startswith("method.")]
        have = {re.split(r"[/.]", n, maxsplit=1)[0] for n in names} | set(meta)
        declared = cls.state_entries()
        foreign = sorted(have - set(declared))
        if foreign:
            raise ArtifactError(f"{source}: holds state {', '.join(map(repr, foreign[:3]))} that method "
                                f"'{cls.name}' never writes (another method's checkpoint?); use --overwrite "
                                "or another -o")
        missing = sorted(e for e, since in declared.items()
                         if since is not None and done >= since and e not in have)
        if missing:
            raise ArtifactError(f"{source}: lacks the state {', '.join(map(repr, missing[:3]))} that method "
                                f"'{cls.name}' writes after {done} stage(s); the run directory is damaged")

    def load_extra_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        pass

    def _model_state(self) -> dict[str, torch.nn.Parameter]:
        named = dict(self.model.named_parameters())
        if self.ctx.cfg.lora.enabled:
            return {n: p for n, p in named.items() if ".lora_" in n}
        return named

    # --- artifacts -----------------------------------------------------------------
    def save_adapter(self, dest: Path) -> None:
        """PEFT format (``PeftModel.from_pretrained`` loads it); full fine-tuning saves nothing per task."""
        if self.ctx.cfg.lora.enabled:
            atomic_save_dir(dest, self.model.save_pretrained)


def pack(prefix: str, tensors: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """``{prefix/name: t}`` for ``extra_state``; ``unpack`` reverses it."""
    return {f"{prefix}/{n}": t for n, t in (tensors or {}).items()}


def unpack(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    out = {n[len(prefix) + 1:]: t.clone() for n, t in tensors.items() if n.startswith(prefix + "/")}
    return out or None


def default_target_modules(model) -> list[str]:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAP

    mtype = model.config.model_type
    if mtype not in MAP:
        raise ConfigError(f"lora.target_modules: no default for model type '{mtype}'; set it in the config")
    return list(MAP[mtype])
