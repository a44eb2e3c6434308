"""Small shared pieces for the harness tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository root
FIXTURES = REPO / "tests" / "fixtures"

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


def write_config(path, **overrides):
    """A tiny run's config file (``tiny_config`` with ``overrides``) at ``path``."""
    import yaml

    path.write_text(yaml.safe_dump(tiny_config(**overrides).model_dump(mode="json")))
    return path


def kif_run(cfg, out, fault=None, extra=()):
    """``kif run CFG -o OUT -q`` in a subprocess; ``fault``: the ``KIF_FAULT`` to inject (kif.faults)."""
    env = {k: v for k, v in os.environ.items() if k != "KIF_FAULT"}
    if fault:
        env["KIF_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "kif.cli", "run", str(cfg), "-o", str(out), "-q", *extra],
                          env=env, capture_output=True, text=True, timeout=300)


def fails_one_line(argv, capsys, *culprits) -> str:
    """``kif ARGV`` in-process exits 2 with one "kif: error:" line naming every culprit, no traceback."""
    from kif.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("kif: error:")]
    assert code == 2 and len(lines) == 1, err
    assert all(c in lines[0] for c in culprits), lines[0]
    assert "Traceback" not in err
    return lines[0]


def snapshot(root: Path, folders: bool = True) -> dict:
    """Every path under ``root`` (links not followed) -> its content's sha256, ``("link", target)``
    for a link, ``"dir"`` for a folder (with ``folders``): equal snapshots = nothing was written."""
    import hashlib

    out: dict = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            key = str(p.relative_to(root))
            if p.is_symlink():
                out[key] = ("link", os.readlink(p))
            elif p.is_dir():
                if folders:
                    out[key] = "dir"
            else:
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
