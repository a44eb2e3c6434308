"""The run configuration's schema: every section and key, with its type, default and checks.

Loading a YAML file, ``--set key=value`` overrides and the checks that need the chosen
method (``method_args``, ``per_task``) are in ``kif.configure``, above this module and the
methods; everything kif reads a config with imports this schema.
"""
from __future__ import annotations

import importlib.util
import re
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


# transformers schedulers that run without extra arguments or evaluation metrics
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
              "polynomial", "inverse_sqrt")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


def known_scheduler(v: str) -> str:
    """A transformers learning-rate schedule name kif accepts (train.lr_scheduler and a
    method's own stage schedule, e.g. KIF-M's replay_lr_scheduler)."""
    if v not in SCHEDULERS:
        raise ValueError(f"{v!r} is not one of {', '.join(SCHEDULERS)}")
    return v


def check_report_to(names: list[str]) -> list[str]:
    """``train.report_to``: integrations the Trainer knows and that are installed (checked at
    load, not when the first task starts training)."""
    if not names:
        return names
    from transformers.integrations.integration_utils import (INTEGRATION_TO_CALLBACK,
                                                             get_available_reporting_integrations)

    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            raise ValueError(f"{name!r} is not one of {', '.join(sorted(INTEGRATION_TO_CALLBACK))}")
        if name not in get_available_reporting_integrations():
            raise ValueError(f"{name!r} is not installed (pip install {name})")
    return names


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    train_samples: Optional[int] = Field(None, gt=0, description="cap on train samples per task (None: all)")
    test_samples: Optional[int] = Field(None, gt=0, description="cap on test samples per task (None: all)")
    max_input_length: int = Field(512, gt=0, description="prompt tokens; longer prompts lose their middle")
    max_target_length: int = Field(128, gt=0, description="target tokens (EOS included)")
    prompt_format: Literal["auto", "chat", "plain"] = "auto"


class TrainConfig(_Strict):
    epochs: float = Field(10, gt=0)
    learning_rate: float = Field(3e-4, gt=0)
    batch_size: int = Field(8, gt=0, description="per device")
    grad_accum: int = Field(1, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of steps with linear warm-up")
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of linear warm-up (TaSL: 50); "
                              "exclusive with warmup_ratio")
    lr_scheduler: str = Field("constant", description="a transformers scheduler: constant, linear (TaSL), "
                              "constant_with_warmup, cosine, ...")
    max_grad_norm: float = Field(1.0, ge=0, description="0 disables clipping")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on a GPU that has it")
    group_by_length: bool = Field(True, description="length-bucketed batches: less padding")
    target_logits_only: bool = Field(True, description="decoder-only: vocabulary logits only at target "
                                     "positions (needs a model taking logits_to_keep)")
    logging_steps: int = Field(10, gt=0)
    torch_compile: bool = Field(False, description="compile the model for training (torch.compile)")
    gradient_checkpointing: bool = Field(False, description="keep only each layer's input for the backward "
                                         "and recompute the rest: activation memory of batch x length "
                                         "drops ~20x (SmolLM2 quickstart: peak RSS 4.7 -> 1.x GB on CPU) "
                                         "for one extra forward per step; same numbers")
    report_to: list[str] = Field(default_factory=list, description="Trainer reporting, e.g. [tensorboard] "
                                 "(logs under OUT/logs/NN_<task>)")
    max_skipped_fraction: float = Field(0.1, ge=0, le=1, description="stop the run when more than this "
                                        "share of a task's optimizer steps had non-finite gradients")
    attention_backend: Literal["auto", "flash", "efficient", "cudnn", "math"] = Field(
        "auto", description="attention kernels (SDPA) for training (kif.attention): auto = torch's choice, "
        "except that on a CUDA GPU in bf16/fp16 cuDNN is left out (its backward gives NaN gradients on padded "
        "batches on H100/H200); a name: that kernel only")
    # The harness's model selection (kif.validation.KeepBest): held-out examples scored every
    # eval_steps, the best weights kept (TaSL: 100, 40, load_best_model_at_end, eval loss).
    validation_samples: int = Field(0, ge=0, description="examples held out of each task's training data "
                                    "for validation (TaSL/SAPT: 100); never trained on, never replayed")
    eval_steps: int = Field(40, gt=0, description="score the held-out examples every this many optimizer "
                            "steps (TaSL: 40)")
    select_best: bool = Field(False, description="keep the weights of the best evaluation "
                              "(load_best_model_at_end); false: the last weights")
    select_metric: Literal["loss", "score"] = Field(
        "loss", description="loss: validation loss (TaSL: the Trainer's default eval_loss); score: the task's "
        "metric on greedy generations (SAPT: exact match / Rouge-L)")

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        return known_scheduler(v)

    @field_validator("report_to")
    @classmethod
    def _installed_reporters(cls, v: list[str]) -> list[str]:
        return check_report_to(v)

    @model_validator(mode="after")
    def _schedule_and_selection(self) -> "TrainConfig":
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("give warmup_steps or warmup_ratio, not both")
        if (self.warmup_steps or self.warmup_ratio) and self.lr_scheduler == "constant":
            raise ValueError("lr_scheduler constant has no warm-up; use constant_with_warmup or linear")
        if self.select_best and not self.validation_samples:
            raise ValueError("select_best needs validation_samples > 0 (the held-out examples it selects on)")
        return self


class LoraConfig(_Strict):
    enabled: bool = Field(True, description="false: full fine-tuning of all weights")
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Optional[list[str]] = Field(None, description="None: q/v projections of the architecture")

    @field_validator("target_modules")
    @classmethod
    def _module_names(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v is not None and not v:
            raise ValueError("an empty list trains nothing; omit it for the architecture's default")
        for name in v or []:
            if not _MODULE_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a module name (e.g. q_proj or self_attn.q_proj)")
        return v


class UnseenConfig(_Strict):
    """``eval.unseen``: a benchmark (built-in name or YAML path) and which of its tasks;
    ``categories`` groups them as Table III's columns (default: the benchmark's own, e.g.
    ``superni_unseen``'s five, else one per task)."""
    benchmark: str = Field(description="superni_unseen, another built-in, or a benchmark YAML path")
    tasks: Optional[list[str]] = Field(None, min_length=1, description="None: all of the benchmark's tasks")
    categories: Optional[dict[str, list[str]]] = Field(None, min_length=1, description="category -> tasks")

    @model_validator(mode="after")
    def _tasks_or_categories(self) -> "UnseenConfig":
        if self.tasks is not None and self.categories is not None:
            raise ValueError("give tasks or categories, not both")
        for name, tasks in (self.categories or {}).items():
            if not tasks:
                raise ValueError(f"category {name!r} has no tasks")
        return self


class EvalConfig(_Strict):
    batch_size: int = Field(32, gt=0)
    max_new_tokens: int = Field(128, gt=0)
    mode: Literal["full", "minimal"] = Field("full", description="full: the K×K matrix and a zero-shot row; "
                                              "minimal: only a[k][k], a[k][k+1] and the last row (same AP/FWT/BWT)")
    track_first: bool = Field(False, description="minimal mode: also evaluate the sequence's first task after "
                              "every task (its trajectory, the report's forgetting curve)")
    rank_labels: bool = Field(False, description="classification tasks: also score by ranking the label set")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on a GPU that has it, as in training; fp32 off; bf16 forced")
    prefix_cache: bool = Field(True, description="decoder-only models: encode a task's shared prompt prefix "
                               "once and start every batch from its KV cache (same predictions, less compute)")
    normalization: Literal["harness", "lenient", "lower_strip"] = Field(
        "harness", description="answer normalisation (kif.metrics.NORMALIZATIONS): harness = the O-LoRA/SAPT "
        "code's (articles and the whole generation kept); lenient = SQuAD's, first line only; lower_strip = "
        "lowercase and trim only. A benchmark YAML's task-level normalization wins for that task")
    unseen: Optional[UnseenConfig] = Field(None, description="held-out tasks evaluated zero-shot before the "
                                           "sequence and after it, never trained on (Table III)")
    unseen_every_task: bool = Field(False, description="also evaluate the unseen tasks after every task")
    unseen_samples: Optional[int] = Field(None, gt=0, description="test samples per unseen task "
                                          "(None: data.test_samples)")
    unseen_max_new_tokens: Optional[int] = Field(None, gt=0, description="generation length on the unseen "
                                                 "tasks (None: eval.max_new_tokens)")

    @field_validator("unseen", mode="before")
    @classmethod
    def _unseen_shorthand(cls, v):
        if v is not None and not isinstance(v, (str, dict, UnseenConfig)):
            raise ValueError("a benchmark name or a mapping {benchmark, tasks | categories}")
        return {"benchmark": v} if isinstance(v, str) else v  # eval.unseen: superni_unseen


class PerTaskConfig(_Strict):
    """``per_task``: per key, a list (one value per task, in order) or a map by task name
    (optional ``default``); checked by ``kif.per_task.check_values``."""
    train: dict[str, Any] = Field(default_factory=dict, description="train key -> list or map")
    method_args: dict[str, Any] = Field(default_factory=dict, description="method option -> list or map")


class RunConfig(_Strict):
    method: str = "seqlora"
    model: str = "smollm2-135m"
    attn_implementation: Optional[Literal["sdpa", "eager", "flash_attention_2"]] = Field(
        None, description="attention kernel; None: the transformers default (sdpa where supported)")
    hub_kernels: bool = Field(False, description="let transformers replace layers with kernels it downloads "
                              "from the Hugging Face hub (the kernels package); false: only installed code runs")
    benchmark: str = "long_sequence"
    order: Optional[str] = None
    tasks: Optional[list[str]] = None
    data_dir: Optional[str] = None
    seed: int = Field(42, ge=0, lt=2**31, description="task k trains from seed + k (numpy needs < 2^32)")
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    lora: LoraConfig = LoraConfig()
    eval: EvalConfig = EvalConfig()
    method_args: dict[str, Any] = Field(default_factory=dict, description="options of the chosen method")
    per_task: PerTaskConfig = Field(default_factory=PerTaskConfig,
                                    description="train / method_args values that differ per task (kif.per_task)")

    @field_validator("hub_kernels")
    @classmethod
    def _kernels_installed(cls, v: bool) -> bool:
        if v and importlib.util.find_spec("kernels") is None:
            raise ValueError("true needs the kernels package (pip install kernels); false runs installed code only")
        return v

    @field_validator("attn_implementation")
    @classmethod
    def _attention_available(cls, v: Optional[str]) -> Optional[str]:
        if v == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ValueError("flash_attention_2 needs the flash-attn package (and a CUDA GPU); use sdpa")
        return v
