"""Output-folder ownership: one kif process writes a folder at a time.

``OUT/.kif.lock`` is held with ``fcntl.flock`` for the writer's lifetime. The kernel drops
the lock when the process dies, however it dies (SIGKILL included), so a stale file never
blocks a later run; the file's text (pid, host, start time, command) only names the holder
in the error a second writer gets. A folder created only to hold the lock is removed again
when the owner fails before writing anything, so a failed start leaves nothing behind.
"""
from __future__ import annotations

import fcntl
import functools
import inspect
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .dist import is_main
from .errors import OutputError

LOCK_NAME = ".kif.lock"


def check_utf8_path(path: str | Path, what: str = "path") -> None:
    """Refuse a path that is not valid UTF-8 (the OS accepts any bytes but kif records paths in
    UTF-8 text files and safetensors opens only UTF-8 paths): a one-line error at start, not a
    misleading failure after hours of training."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        shown = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        raise OutputError(f"{shown}: {what} is not valid UTF-8 (byte {text[e.start]!a} at character "
                          f"{e.start}); rename it, kif needs UTF-8 paths") from None


def ensure_dir(path: Path, what: str = "output folder") -> bool:
    """Create ``path`` (and parents) as a folder; returns True when it did not exist before.
    Whatever stops it (a file in the way, a dangling symlink, no permission, a read-only
    disk) is a one-line OutputError naming the path."""
    check_utf8_path(path, what)
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{path}: {what} is a symbolic link to a missing target "
                          f"({os.readlink(path)}); create the target or choose another folder")
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{path}: exists and is not a folder; choose another {what}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: {what} is not writable (permission denied or read-only disk)")
        return False
    try:
        path.mkdir(parents=True)
    except FileExistsError:  # created meanwhile by another process: fine if it is a folder
        if not path.is_dir():
            raise OutputError(f"{path}: exists and is not a folder; choose another {what}") from None
        return False
    except OSError as e:
        raise OutputError(f"{path}: cannot create the {what} ({e.strerror or e})") from None
    return True


def _describe_holder(lock_file: Path) -> str:
    try:
        text = lock_file.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text.replace("\n", ", ") or "a process that has not written its name yet"


class OutputLock:
    """Exclusive ownership of ``out_dir`` (non-blocking: a second owner fails at once).

    ``with OutputLock(out):`` creates the folder if needed; on exit the lock file is
    removed, and so is the folder when this owner created it and left it empty.
    Under a multi-process launch only the main process locks (the others write nothing).
    """

    def __init__(self, out_dir: str | Path, what: str = "output folder"):
        self.out_dir, self.what = Path(out_dir), what
        self.fd: int | None = None
        self.created = False

    def __enter__(self) -> "OutputLock":
        if is_main():
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        lock_file = self.out_dir / LOCK_NAME
        for _ in range(20):  # the folder or file may vanish under us while another owner cleans up
            self.created = ensure_dir(self.out_dir, self.what) or self.created
            try:
                fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise OutputError(f"{lock_file}: cannot create the lock file ({e.strerror or e})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputError(f"{self.out_dir}: in use by another kif process ({_describe_holder(lock_file)}; "
                                  f"lock {lock_file}); wait for it to finish or choose another folder") from None
            try:  # the file we locked must still be the one at the path (an owner unlinks it on exit)
                same = os.fstat(fd).st_ino == os.stat(lock_file, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.fd = fd
            os.ftruncate(fd, 0)
            os.write(fd, _holder_text().encode("utf-8", "backslashreplace"))
            return
        raise OutputError(f"{lock_file}: could not take the lock (the folder keeps changing)")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            (self.out_dir / LOCK_NAME).unlink(missing_ok=True)  # still held: nobody else holds this file
        finally:
            os.close(self.fd)
            self.fd = None
        if self.created:
            try:
                self.out_dir.rmdir()  # only when empty: a failed start leaves no folder behind
            except OSError:
                pass


def _holder_text() -> str:
    cmd = " ".join(shlex.quote(a) for a in sys.argv)
    return (f"pid {os.getpid()}\nhost {socket.gethostname()}\n"
            f"started {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\ncommand {cmd}\n")


def owns_output_dir(fn):
    """Decorator: ``fn(cfg, out_dir, ...)`` runs holding :class:`OutputLock` on ``out_dir``."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out_dir = sig.bind(*args, **kwargs).arguments["out_dir"]
        with OutputLock(out_dir):
            return fn(*args, **kwargs)
    return wrapper


@contextmanager
def file_lock(path: Path):
    """A blocking exclusive lock on ``path`` (e.g. one process builds a cache, the others wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
