"""Atomic file writes: a kill at any instant leaves the old file or the new one, never half.

Under a multi-process launch only the main process writes; the others return at once
(``kif.dist``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .dist import is_main


def atomic_write_text(path: str | Path, text: str) -> None:
    if not is_main():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def atomic_save_dir(dest: str | Path, save_fn) -> None:
    """Call ``save_fn(tmp_dir)`` then move the finished directory to ``dest``."""
    if not is_main():
        return
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        save_fn(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def dir_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def atomic_save_tensors(path: str | Path, tensors: dict) -> None:
    """safetensors file written under a temporary name, then renamed."""
    from safetensors.torch import save_file

    if not is_main():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def load_tensors(path: str | Path) -> dict:
    """Read a safetensors file; a missing or corrupt file is an ArtifactError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .errors import ArtifactError

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: corrupt safetensors file ({str(exc).splitlines()[0]})") from None
