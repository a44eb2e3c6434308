"""Where kif looks for benchmark data (``kif benchmarks`` prints it): below both
:mod:`kif.data.benchmarks`, which reads the data, and :mod:`kif.data.pull`, which puts it there."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kif.errors import DataError

# Last-resort data location: the benchmarks folder next to the repository.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "benchmarks"
PULL_DIR_ENV = "KIF_DATA_HOME"


def default_pull_dir() -> Path:
    """Where ``kif data pull`` puts data: ``$KIF_DATA_HOME``, else ``$KIF_CACHE/data``
    (``~/.cache/kif/data``; ``$KIF_CACHE`` also holds the converted models)."""
    if os.environ.get(PULL_DIR_ENV):
        return Path(os.environ[PULL_DIR_ENV]).expanduser()
    return Path(os.environ.get("KIF_CACHE") or Path.home() / ".cache" / "kif").expanduser() / "data"


@dataclass(frozen=True)
class DataDirCandidate:
    """One step of the lookup: ``path`` None when not set; a folder the user named
    (``required``) must exist, the others are skipped when absent."""

    source: str
    label: str
    path: Optional[Path]
    required: bool = False


def data_dir_candidates(explicit: str | Path | None = None) -> list[DataDirCandidate]:
    """The lookup, in order; ``../shared/benchmarks`` from the current folder, then next to the
    repository."""
    env = os.environ.get("KIF_DATA")
    shared_here = (Path.cwd() / ".." / "shared" / "benchmarks").resolve()
    out = [
        DataDirCandidate("data_dir", "config data_dir / --data-dir",
                         Path(explicit).expanduser() if explicit is not None else None, True),
        DataDirCandidate("KIF_DATA", "$KIF_DATA", Path(env).expanduser() if env else None, True),
        DataDirCandidate("pull", "kif data pull location ($KIF_DATA_HOME, default ~/.cache/kif/data)",
                         default_pull_dir()),
        DataDirCandidate("shared", "../shared/benchmarks", shared_here),
    ]
    if DEFAULT_DATA_DIR.resolve() != shared_here:
        out.append(DataDirCandidate("shared", "../shared/benchmarks next to the kif repository",
                                    DEFAULT_DATA_DIR.resolve()))
    return out


def describe_lookup(explicit: str | Path | None = None) -> list[str]:
    """The lookup order as ``kif benchmarks`` prints it, marking the folder used."""
    cands = data_dir_candidates(explicit)
    used = next((c for c in cands if c.path is not None and c.path.is_dir()), None)
    lines = ["data lookup (first found is used):"]
    for i, c in enumerate(cands, 1):
        if c.path is None:
            state = "not set"
        else:
            state = str(c.path) + ("  <- used" if c is used else "" if c.path.is_dir() else "  (absent)")
        lines.append(f"  {i}. {c.label}: {state}")
    return lines


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The benchmark data folder: the first of :func:`data_dir_candidates` that exists
    (``explicit`` is config ``data_dir``). A folder the user named must exist."""
    candidates = data_dir_candidates(explicit)
    for c in candidates:
        if c.path is not None and c.path.is_dir():
            return c.path
        if c.path is not None and c.required:
            raise DataError(f"{c.path}: data directory not found (from {c.source}); "
                            "set KIF_DATA or data_dir")
    tried = ", ".join(str(c.path) for c in candidates if c.path is not None)
    raise DataError(f"no benchmark data directory (looked in {tried}); "
                    "run 'kif data pull', or set KIF_DATA or pass data_dir")
