"""The interface every continual-learning method implements (one file per method).

The runner calls, for each task k (0-based) of the sequence:
``train_examples`` -> ``before_task`` -> training (with ``extra_loss`` in the loss and
``on_gradients`` at every optimizer step) -> ``after_task`` -> evaluation of
``model`` on every task. A method that only needs LoRA + plain training overrides
nothing (that is SeqLoRA).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from ..config import RunConfig
from ..encoding import Encoder
from ..errors import ConfigError
from ..io import atomic_save_dir


class MethodOptions(BaseModel):
    """Base of each method's ``method_args`` schema (unknown keys are errors)."""
    model_config = ConfigDict(extra="forbid")


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
    Options: ClassVar[type[MethodOptions]] = MethodOptions

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        try:
            self.opts = self.Options.model_validate(ctx.cfg.method_args)
        except ValidationError as err:
            e = err.errors()[0]
            key = ".".join(str(p) for p in e["loc"])
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            raise ConfigError(f"method_args.{key}: {msg} (method '{self.name}')") from None
        self.model = self.setup_model(ctx.lm.model)

    # --- model -----------------------------------------------------------------
    def setup_model(self, base):
        """LoRA via PEFT on the configured (or architecture-default) modules; or full fine-tuning."""
        lcfg = self.ctx.cfg.lora
        if not lcfg.enabled:
            for p in base.parameters():
                p.requires_grad_(True)
            return base
        from peft import LoraConfig, TaskType, get_peft_model

        task = TaskType.SEQ_2_SEQ_LM if self.ctx.lm.is_seq2seq else TaskType.CAUSAL_LM
        targets = lcfg.target_modules or default_target_modules(base)
        config = LoraConfig(task_type=task, r=lcfg.r, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout,
                            target_modules=targets)
        return get_peft_model(base, config)

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    # --- hooks (defaults: plain sequential fine-tuning) ---------------------------
    def train_examples(self, k: int, examples: list) -> list:
        return examples

    def before_task(self, k: int) -> None:
        pass

    def extra_loss(self, model) -> Optional[torch.Tensor]:
        return None

    def on_gradients(self) -> None:
        pass

    def after_task(self, k: int, task_dir: Path) -> dict:
        """Called after training task k; returns stats for results.json."""
        self.save_adapter(task_dir / "adapter")
        return {}

    def state_summary(self) -> dict:
        return {}

    # --- artifacts -----------------------------------------------------------------
    def save_adapter(self, dest: Path) -> None:
        """PEFT format (``PeftModel.from_pretrained`` loads it); full fine-tuning saves nothing per task."""
        if self.ctx.cfg.lora.enabled:
            atomic_save_dir(dest, self.model.save_pretrained)


def default_target_modules(model) -> list[str]:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAP

    mtype = model.config.model_type
    if mtype not in MAP:
        raise ConfigError(f"lora.target_modules: no default for model type '{mtype}'; set it in the config")
    return list(MAP[mtype])
