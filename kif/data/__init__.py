"""Benchmark data: task files -> Examples, benchmarks and their task orders."""
from kif.data.benchmarks import (
    BUILTINS,
    Benchmark,
    TaskSpec,
    get_benchmark,
    label_set,
    list_benchmarks,
    resolve_sequence,
)
from kif.data.locations import DEFAULT_DATA_DIR, resolve_data_dir
from kif.data.loaders import SUPERNI_TEMPLATE, Example, load_task_file, read_json, sample
from kif.data.unseen import UNSEEN_BUILTINS

# The held-out benchmarks (eval.unseen) build on benchmarks' classes, so they are registered
# here, above both modules, rather than by benchmarks importing unseen (an import cycle).
BUILTINS.update(UNSEEN_BUILTINS)

__all__ = [
    "DEFAULT_DATA_DIR", "SUPERNI_TEMPLATE", "Benchmark", "Example", "TaskSpec", "get_benchmark",
    "label_set", "list_benchmarks", "load_task_file", "read_json", "resolve_data_dir",
    "resolve_sequence", "sample",
]
