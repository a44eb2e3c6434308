"""SeqLoRA: one LoRA trained through the whole sequence (docs/method.md §8), the lower bound."""
from .base import CLMethod
from .registry import register


@register
class SeqLoRA(CLMethod):
    name = "seqlora"
    description = "one LoRA fine-tuned on each task in turn (no protection against forgetting)"
