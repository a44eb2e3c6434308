"""The model cache (``$KIF_CACHE/models/<name>``): built once, complete or absent.

A build runs in a staging folder next to the destination, under a file lock (concurrent
runs wait for one builder instead of racing), and ends by writing ``.kif-complete.json``
(every file's size) and renaming the folder into place. A cache without that marker, or
whose files no longer have the recorded sizes (a kill mid-build, a truncated copy, a
deleted file), is damaged: it is rebuilt, or, when the rebuild fails, the error names the
folder and how to fix it. A cache written by an older kif (no marker) is adopted when its
files open (safetensors headers, JSON); otherwise it is rebuilt.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import KifError
from ..io import _umask, atomic_write_text, load_tensors
from ..lock import file_lock

MARKER = ".kif-complete.json"
log = logging.getLogger("kif")


def _sizes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER}


def is_complete(folder: Path) -> bool:
    """The marker is there and every file it lists has its recorded size."""
    try:
        recorded = json.loads((folder / MARKER).read_text(encoding="utf-8"))["files"]
        return bool(recorded) and all((folder / n).is_file() and (folder / n).stat().st_size == s
                                      for n, s in recorded.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _opens(folder: Path) -> bool:
    """An unmarked (older kif's) cache: config, tokenizer and every weight file open."""
    weights = sorted(folder.glob("*.safetensors"))
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not weights or not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()):
            return False
        for f in weights:
            load_tensors(f)
        for f in folder.glob("*.json"):
            json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError, KifError):
        return False
    return True


def _mark(folder: Path) -> None:
    atomic_write_text(folder / MARKER, json.dumps({"files": _sizes(folder)}, indent=1, sort_keys=True) + "\n")


def cached(dest: Path, build: Callable[[Path], object], fix: str, rebuild: bool = False) -> Path:
    """``dest``, built by ``build(folder)`` unless a complete copy is there. ``fix`` tells the
    user what to do when a damaged cache cannot be rebuilt (e.g. the pull command)."""
    if not rebuild and is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent / f".{dest.name}.lock"):
        if not rebuild and is_complete(dest):  # another process built it while we waited
            return dest
        if not rebuild and dest.is_dir() and not (dest / MARKER).exists() and _opens(dest):
            _mark(dest)  # written by a kif before the marker existed, and intact
            return dest
        damaged = dest.exists() and not rebuild
        if damaged:
            log.warning("%s: model cache incomplete or damaged; rebuilding it", dest)
        for stale in dest.parent.glob(f".{dest.name}.staging-*"):  # left by killed builds
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
        try:
            try:
                build(staging)
            except KifError as exc:
                if damaged:
                    raise KifError(f"{dest}: model cache is damaged and rebuilding it failed ({exc}); "
                                   f"{fix}") from None
                raise
            _mark(staging)
            os.chmod(staging, 0o777 & ~_umask())  # mkdtemp made it owner-only
            if dest.exists() or dest.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-old-", dir=dest.parent))
                os.replace(dest, old / dest.name)
                os.replace(staging, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already when renamed
    return dest
