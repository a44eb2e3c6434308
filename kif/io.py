"""Atomic file writes: a kill at any instant leaves the old file or the new one, never half;
and how kif reads the JSON and YAML files of runs, configs and checkpoints (:func:`read_json`,
:func:`read_yaml`): every failure is one line naming the file. Benchmark data files (gzip,
a BOM, a size cap) are read by ``kif.data.loaders.read_json``, which raises DataError.

A write that fails (a full disk, a read-only folder) is an :class:`~kif.errors.OutputError`
naming the file; the temporary file is removed and the previous version stays. Saved
artifacts are deterministic byte for byte (JSON lists that PEFT writes from Python sets
are sorted). Under a multi-process launch only the main process writes; the others
return at once (``kif.dist``).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import yaml

from .dist import is_main
from .errors import ArtifactError, KifError, OutputError

# safetensors headers kif writes hold a few thousand entries (~0.1 KB each); a header
# beyond these bounds is refused before it is parsed (a hostile one costs minutes and GBs)
MAX_HEADER_BYTES = 16 * 2**20
MAX_TENSORS = 100_000


class WriteFailed(OutputError):
    """A write that failed: ``path`` (the file kif meant to write) and the OS's ``reason``."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: cannot write ({reason}); free space or fix permissions and rerun the same "
                         "command (what was complete is kept)")


def write_failed(path: str | Path, exc: OSError) -> WriteFailed:
    return WriteFailed(path, exc.strerror or str(exc))


def _disk_error(exc: BaseException) -> bool:
    """A library's own error type for a failed write (safetensors wraps the OS error in its text)."""
    text = str(exc)
    return any(s in text for s in ("No space left", "Disk quota", "Read-only file system", "os error 28"))


def _atomic_file(path: str | Path, write) -> None:
    """``write(tmp)`` fills a temporary file next to ``path``; it is synced to disk (a full
    disk shows here, not as a short file after the rename), made readable as any file the
    user writes, and renamed to ``path``. Only the main process writes."""
    if not is_main():
        return
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise write_failed(path, exc) from None
    except Exception as exc:
        if _disk_error(exc):  # e.g. safetensors wraps the OS error in its own type
            raise WriteFailed(path, str(exc).splitlines()[0]) from None
        raise
    finally:
        if tmp is not None and os.path.lexists(tmp):
            Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic_file(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Valid JSON only: a NaN/inf float is written as null, never as ``NaN``/``Infinity``."""
    atomic_write_text(path, json.dumps(finite_json(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def finite_json(x: Any) -> Any:
    """``x`` with every non-finite float replaced by None (JSON has no NaN or infinity)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_json(v) for v in x]
    return x


def read_json(path: str | Path, what: str, **kw) -> Any:
    """The parsed JSON file at ``path``; see :func:`read_yaml` for the options."""
    return _read(Path(path), what, "JSON", json.loads, **kw)


def read_yaml(path: str | Path, what: str, **kw) -> Any:
    """The parsed YAML file at ``path`` (None for an empty one). Whatever fails (missing, a
    folder, unreadable, not UTF-8, not valid, nested too deeply, over ``max_bytes``, not a
    mapping with ``mapping=True``) is one ``error`` (ArtifactError) naming the file and the
    ``what`` it should be, followed by ``note`` (e.g. what could not be done)."""
    return _read(Path(path), what, "YAML", yaml.safe_load, **kw)


@contextmanager
def reading(path: Path, what: str, note: str = "", error: type[KifError] = ArtifactError):
    """What the OS refuses while ``path`` is read, as one ``error`` naming it and what it should be."""
    try:
        yield
    except FileNotFoundError:
        raise error(f"{path}: {what} not found{note}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what}{note}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc}){note}") from None


def _read(path: Path, what: str, fmt: str, parse: Callable[[str], Any], *, note: str = "",
          error: type[KifError] = ArtifactError, mapping: bool = False, max_bytes: int | None = None) -> Any:
    try:
        with reading(path, what, note, error):
            if max_bytes is not None and path.stat().st_size > max_bytes:
                raise error(f"{path}: larger than {max_bytes >> 20} MB; not a {what}{note}")
            data = parse(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}){note}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid {fmt} ({str(exc).splitlines()[0]}){note}") from None
    except RecursionError:
        raise error(f"{path}: nested too deeply{note}") from None
    if mapping and not isinstance(data, dict) and (data is not None or fmt == "JSON"):
        raise error(f"{path}: not a {what} (its top level must be a mapping of keys, got {type(data).__name__})"
                    f"{note}")
    return data


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def atomic_save_dir(dest: str | Path, save_fn) -> None:
    """Call ``save_fn(tmp_dir)`` then move the finished directory to ``dest``. An existing
    ``dest`` is moved aside first and removed only once the new one is in place; a symbolic
    link at ``dest`` is refused (never written or deleted through)."""
    if not is_main():
        return
    dest = Path(dest)
    if dest.is_symlink():
        raise OutputError(f"{dest}: is a symbolic link; kif writes only real folders in its output "
                          "(remove the link)")
    tmp = old = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        os.chmod(tmp, 0o777 & ~_umask())
        save_fn(tmp)
        canonical_json(tmp)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
        tmp = None
    except WriteFailed as exc:  # name the file as it would have been, not its temporary folder
        inside = exc.path.relative_to(tmp) if tmp is not None and exc.path.is_relative_to(tmp) else None
        raise WriteFailed(dest / inside if inside else dest, exc.reason) from None
    except OSError as exc:
        where = Path(exc.filename) if isinstance(exc.filename, str) else None
        inside = where.relative_to(tmp) if where and tmp is not None and where.is_relative_to(tmp) else None
        raise WriteFailed(dest / inside if inside else dest, exc.strerror or str(exc)) from None
    except Exception as exc:
        if _disk_error(exc):
            raise WriteFailed(dest, str(exc).splitlines()[0]) from None
        raise
    finally:
        for leftover in (tmp, old):
            if leftover is not None:
                shutil.rmtree(leftover, ignore_errors=True)


def canonical_json(folder: Path) -> None:
    """Sort ``target_modules`` in the ``adapter_config.json`` files PEFT wrote: PEFT keeps
    them in a set, whose order changes from one process to the next (string hashing)."""
    for f in sorted(folder.rglob("adapter_config.json")):
        data = json.loads(f.read_text(encoding="utf-8"))
        mods = data.get("target_modules")
        if isinstance(mods, list) and all(isinstance(m, str) for m in mods):
            data["target_modules"] = sorted(mods)
            f.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")  # PEFT's own layout


def dir_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def atomic_save_tensors(path: str | Path, tensors: dict) -> None:
    """safetensors file written under a temporary name, then renamed."""
    from safetensors.torch import save_file

    _atomic_file(path, lambda tmp: save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp))


def _check_header(path: Path) -> None:
    """Bound what a safetensors header may cost before it is parsed: its stated length
    (the first 8 bytes, little-endian) and its number of entries."""
    with reading(path, "safetensors file"), open(path, "rb") as f:
        head = f.read(8)
        size = os.fstat(f.fileno()).st_size
        if len(head) < 8:
            raise ArtifactError(f"{path}: corrupt safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise ArtifactError(f"{path}: safetensors header of {n} bytes (more than {MAX_HEADER_BYTES}); "
                                "not a kif file, refused unread")
        if n + 8 > size:
            raise ArtifactError(f"{path}: corrupt safetensors file (header of {n} bytes, file of {size})")
        header = f.read(n)
    # each tensor entry is a JSON object, so it needs a literal "{" (a key name can be written
    # with escapes, "data\u005foffsets", an object cannot): cheap to count unparsed
    if header.count(b"{") > MAX_TENSORS:  # (the header itself and __metadata__ count too)
        raise ArtifactError(f"{path}: safetensors header with more than {MAX_TENSORS} tensors; refused unread")


def load_tensors(path: str | Path) -> dict:
    """Read a safetensors file; a missing, corrupt or oversized file is an ArtifactError naming
    it. Any path the OS accepts works (safetensors itself opens only UTF-8 paths)."""
    from safetensors import SafetensorError
    from safetensors.torch import load, load_file

    path = Path(path)
    _check_header(path)
    try:
        try:
            os.fspath(path).encode("utf-8")
        except UnicodeEncodeError:
            return load(path.read_bytes())
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: corrupt safetensors file ({str(exc).splitlines()[0]})") from None
