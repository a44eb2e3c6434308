"""IncLoRA (docs/method.md §8): a new LoRA adapter per task, earlier ones frozen, all summed.

PEFT multi-adapter: task k (1-based) gets adapter ``task{k}`` (same r/alpha/dropout/targets
as ``cfg.lora``). Before training it, all adapters ``task1..task{k}`` are made active, so
every LoRA layer computes h = W0·x + Σ_i s·B_i·A_i·x both while the new adapter trains and
at inference; the old adapters' parameters have ``requires_grad = False`` (only the new
one reaches the optimizer, so the old ones stay bit-identical).

Artifacts: ``tasks/<k>/adapter/task{i}/`` for i = 1..k (``PeftModel.save_pretrained`` writes
every adapter in a sub-folder named after it), so storage grows with the number of tasks.
Load them back with ``PeftModel.from_pretrained(base, ".../adapter/task1", adapter_name="task1")``
then ``load_adapter(".../adapter/task{i}", adapter_name="task{i}")`` for the others and
``model.base_model.set_adapter(["task1", ..., "task{k}"])``.
"""
from __future__ import annotations

from ..errors import ConfigError
from .base import CLMethod
from .registry import register


def adapter_name(k: int) -> str:
    """Adapter of task k (0-based): ``task1``, ``task2``, ..."""
    return f"task{k + 1}"


@register
class IncLoRA(CLMethod):
    STATE = {"adapters": 0}  # what extra_state writes (CLMethod.STATE)
    name = "inclora"
    description = "a new LoRA per task; earlier LoRAs frozen; all adapters summed"

    def setup_model(self, base):
        if not self.ctx.cfg.lora.enabled:
            raise ConfigError(f"lora.enabled: method '{self.name}' adds one LoRA per task; it needs LoRA")
        from peft import get_peft_model

        return get_peft_model(base, self.lora_config(base), adapter_name=adapter_name(0))

    # --- adapters --------------------------------------------------------------------
    def adapters(self) -> list[str]:
        """Adapters that exist, in task order."""
        return sorted(self.model.peft_config, key=lambda n: int(n.removeprefix("task")))

    def adapter_params(self, name: str) -> dict:
        """LoRA tensors (A and B of every module) of one adapter, keyed by parameter name."""
        tag = f".{name}."
        return {n: p for n, p in self.model.named_parameters() if tag in n and ".lora_" in n}

    def before_task(self, k: int) -> None:
        new = adapter_name(k)
        if new not in self.model.peft_config:
            self.model.add_adapter(new, self.lora_config())
        names = [adapter_name(i) for i in range(k + 1)]
        # Activates (and marks trainable) every listed adapter; then freeze all but the new one.
        self.model.base_model.set_adapter(names)
        for old in names[:-1]:
            for p in self.adapter_params(old).values():
                p.requires_grad_(False)

    def state_summary(self) -> dict:
        return {"adapters": len(self.model.peft_config)}

    def extra_state(self):
        return {}, {"adapters": len(self.model.peft_config)}

    def load_extra_state(self, tensors, meta):
        for k in range(int(meta.get("adapters", 1))):  # re-create task1..taskK as training did
            self.before_task(k)
