"""MTL: multi-task learning on all tasks at once, the upper reference (not continual).

``joint = True`` makes the runner train one LoRA once on the union of all tasks'
training sets (shuffled together) and evaluate once: results.json then has a one-row
``matrix``, AP = the mean over all tasks, FWT = BWT = None.
"""
from .base import CLMethod
from .registry import register


@register
class MTL(CLMethod):
    name = "mtl"
    description = "multi-task learning: one LoRA trained once on all tasks' data (upper reference)"
    joint = True
