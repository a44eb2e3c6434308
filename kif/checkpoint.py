"""Task-boundary checkpoints: what a killed run needs to continue with identical numbers.

After the zero-shot row and after every task, ``OUT/checkpoints/after-NN/`` receives the
method's state (tensors in safetensors, the rest in JSON) and the results so far. The
directory is written under a temporary name and renamed, so it either exists complete or
not at all; the newest one is the commit point. Training a task starts from a fixed
seed, so a task interrupted anywhere is redone from its start and gives the same result.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .dist import is_main
from .errors import ArtifactError
from .io import atomic_save_dir, atomic_save_tensors, load_tensors

DIRNAME = "checkpoints"


def _name(done: int) -> str:
    return f"after-{done:02d}"


def save_checkpoint(out_dir: Path, done: int, tensors: dict, meta: dict, results: dict) -> Path:
    root = Path(out_dir) / DIRNAME
    dest = root / _name(done)
    if not is_main():  # several processes: only the main one writes
        return dest

    def write(tmp: Path) -> None:
        atomic_save_tensors(tmp / "method.safetensors", tensors)
        (tmp / "method.json").write_text(json.dumps(meta))
        (tmp / "results.json").write_text(json.dumps(results, indent=1))

    atomic_save_dir(dest, write)
    for old in root.glob("after-*"):  # keep only the newest
        if old.name != dest.name:
            shutil.rmtree(old, ignore_errors=True)
    return dest


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = Path(out_dir) / DIRNAME
    found = sorted(p for p in root.glob("after-*") if p.is_dir()) if root.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """(tensors, meta, results); a damaged checkpoint is an ArtifactError naming the file."""
    tensors = load_tensors(path / "method.safetensors")
    out = []
    for name in ("method.json", "results.json"):
        f = path / name
        try:
            out.append(json.loads(f.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ArtifactError(f"{f}: missing from the checkpoint; the run directory is damaged") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{f}: corrupt ({exc.__class__.__name__}); the run directory is damaged") from None
    return tensors, out[0], out[1]
