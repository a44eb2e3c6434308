"""Run configuration: YAML validated at load time, ``--set key=value`` overrides.

Every error names the file and the dotted key, in one line (see ``kif.errors``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError


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
    lr_scheduler: str = "constant"
    max_grad_norm: float = Field(1.0, ge=0, description="0 disables clipping")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on a GPU that has it")
    group_by_length: bool = Field(True, description="length-bucketed batches: less padding")
    target_logits_only: bool = Field(True, description="decoder-only: vocabulary logits only at target "
                                     "positions (needs a model taking logits_to_keep)")
    logging_steps: int = Field(10, gt=0)
    torch_compile: bool = Field(False, description="compile the model for training (torch.compile)")
    report_to: list[str] = Field(default_factory=list, description="Trainer reporting, e.g. [tensorboard] "
                                 "(logs under OUT/logs/NN_<task>)")
    max_skipped_fraction: float = Field(0.1, ge=0, le=1, description="stop the run when more than this "
                                        "share of a task's optimizer steps had non-finite gradients")


class LoraConfig(_Strict):
    enabled: bool = Field(True, description="false: full fine-tuning of all weights")
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Optional[list[str]] = Field(None, description="None: q/v projections of the architecture")


class EvalConfig(_Strict):
    batch_size: int = Field(32, gt=0)
    max_new_tokens: int = Field(128, gt=0)
    mode: Literal["full", "minimal"] = Field("full", description="full: the K×K matrix and a zero-shot row; "
                                              "minimal: only a[k][k], a[k][k+1] and the last row (same AP/FWT/BWT)")
    rank_labels: bool = Field(False, description="classification tasks: also score by ranking the label set")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on a GPU that has it, as in training; fp32 off; bf16 forced")
    prefix_cache: bool = Field(True, description="decoder-only models: encode a task's shared prompt prefix "
                               "once and start every batch from its KV cache (same predictions, less compute)")
    normalization: Literal["harness", "lenient"] = Field(
        "harness", description="answer normalisation (kif.metrics.NORMALIZATIONS): harness = the O-LoRA/SAPT "
        "code's (articles and the whole generation kept); lenient = SQuAD's, first line only")


class RunConfig(_Strict):
    method: str = "seqlora"
    model: str = "smollm2-135m"
    attn_implementation: Optional[Literal["sdpa", "eager", "flash_attention_2"]] = Field(
        None, description="attention kernel; None: the transformers default (sdpa where supported)")
    benchmark: str = "long_sequence"
    order: Optional[str] = None
    tasks: Optional[list[str]] = None
    data_dir: Optional[str] = None
    seed: int = 42
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    lora: LoraConfig = LoraConfig()
    eval: EvalConfig = EvalConfig()
    method_args: dict[str, Any] = Field(default_factory=dict, description="options of the chosen method")


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{source}: {key}: {msg}"


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """``a.b=c`` sets raw['a']['b'] = yaml(c)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{source}: '{item}' is not key=value")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {key}: '{part}' is not a section")
        node[parts[-1]] = _parse_value(value)
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    raw: dict = {}
    source = str(path) if path else "--set"
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of keys")
    raw = apply_overrides(raw, overrides or [])
    return validate_config(raw, source)


def validate_config(raw: dict, source: str = "config") -> RunConfig:
    """The whole config, ``method_args`` included (against the chosen method's options),
    so that a typo stops the run before any data or model is read."""
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None
    method_options(cfg, source)
    return cfg


def method_options(cfg: RunConfig, source: str = "config"):
    """``cfg.method_args`` validated by the method's ``Options`` schema."""
    from .methods import get_method

    cls = get_method(cfg.method)
    try:
        return cls.Options.model_validate(cfg.method_args)
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(str(p) for p in e["loc"])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        raise ConfigError(f"{source}: method_args.{key}: {msg} (method '{cls.name}')") from None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
