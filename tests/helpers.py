"""Small shared pieces for the harness tests."""
from __future__ import annotations

import json
from pathlib import Path

TINY_ARGS = {
    "model": "tiny-llama",
    "tasks": ["cb", "copa", "sst2"],  # tests/fixtures/benchmarks (KIF_DATA, set by conftest)
    "data": {"train_samples": 16, "test_samples": 8, "max_input_length": 128, "max_target_length": 8},
    "train": {"epochs": 1, "batch_size": 8, "learning_rate": 5e-3},
    "eval": {"batch_size": 8, "max_new_tokens": 4},
}


def tiny_config(**overrides):
    from kif.configure import validate_config

    raw = json.loads(json.dumps(TINY_ARGS))
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(raw.get(k), dict):
            raw[k].update(v)
        else:
            raw[k] = v
    return validate_config(raw)


def read_results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())
