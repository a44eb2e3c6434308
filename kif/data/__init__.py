"""Benchmark data: task files -> Examples, benchmarks and their task orders."""
from kif.data.benchmarks import (
    DEFAULT_DATA_DIR,
    Benchmark,
    TaskSpec,
    get_benchmark,
    label_set,
    list_benchmarks,
    resolve_data_dir,
    resolve_sequence,
)
from kif.data.loaders import SUPERNI_TEMPLATE, Example, load_task_file, read_json, sample

__all__ = [
    "DEFAULT_DATA_DIR", "SUPERNI_TEMPLATE", "Benchmark", "Example", "TaskSpec", "get_benchmark",
    "label_set", "list_benchmarks", "load_task_file", "read_json", "resolve_data_dir",
    "resolve_sequence", "sample",
]
