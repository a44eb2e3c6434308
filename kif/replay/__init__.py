"""What replay-based methods share: the episodic memory of finished tasks and the
model-generated pseudo-samples that can stand in for it (``replay`` and ``kif-m`` use it)."""
from .memory import Memory, memory_size
from .pseudo import prompt_template, pseudo_samples

__all__ = ["Memory", "memory_size", "prompt_template", "pseudo_samples"]
