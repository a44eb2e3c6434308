"""``kif data pull``: the built-in benchmarks from their public sources, verified.

Each task split listed in the manifest (``kif.data.manifest``) is rebuilt from its upstream
file at the pinned commit, fetched as ``<base>/<owner>/<repo>/<commit>/<path>`` (base:
``--base-url``, else ``$KIF_DATA_BASE_URL``, else the public GitHub raw-file host). A
download goes to a ``.part`` file and resumes with an HTTP Range request after a dropped
connection, in the same pull or the next one; the content is checked against the
manifest's hash before the split is written, atomically, as ``.json.gz`` in the shared
layout. A split already there and verified is not downloaded again.

Where kif looks for data (``kif.data.locations``; ``kif benchmarks`` shows it): config
``data_dir`` (or ``--data-dir``), ``$KIF_DATA``, the pull location (``$KIF_DATA_HOME``,
default ``$KIF_CACHE/data``, i.e. ``~/.cache/kif/data``), ``../shared/benchmarks``.
"""
from __future__ import annotations

import errno
import gzip
import http.client
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from kif.data.loaders import read_json
from kif.data.manifest import (
    Entry,
    apply_transform,
    content_problem,
    file_problem,
    load_manifest,
    select,
    stored_file,
)
from kif.data.locations import default_pull_dir
from kif.errors import DataError, OutputError
from kif.lock import OutputLock

DEFAULT_BASE_URL = "https://raw.githubusercontent.com"  # a data host, not a package index
BASE_URL_ENV = "KIF_DATA_BASE_URL"
DOWNLOADS = ".kif-download"  # upstream files while a pull runs (and .part files to resume)
CHUNK = 1 << 16
TIMEOUT_S = 60  # one socket read (or connect) waiting longer than this fails the attempt
RETRY_DELAYS_S = (0, 2, 5)  # the first retry at once: a dropped connection resumes straight away
# Bounds (a hostile or broken server): the manifest's upstream files are at most a few MB;
# a source may state its size (``source.bytes``), then the cap is that plus a margin.
MAX_DOWNLOAD_BYTES = 256 * 2**20
SIZE_MARGIN = 1.25
STALL_WINDOW_S = 60  # fewer than STALL_MIN_BYTES in a window: the connection is stalled (retried)
STALL_MIN_BYTES = 4096
DEADLINE_S = 2 * 3600  # the whole pull; past it, what was fetched is kept for the next pull


# ---- downloading ----------------------------------------------------------------------------

def source_url(base_url: str, source: dict) -> str:
    return f"{base_url.rstrip('/')}/{source['repo']}/{source['commit']}/{source['path']}"


def check_base_url(base_url: str) -> str:
    """``base_url`` when it is an http(s) URL with a host; else a one-line DataError."""
    where = f"--base-url / ${BASE_URL_ENV} {base_url!r}"
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise DataError(f"{where}: not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataError(f"{where}: expected http(s)://HOST[/PATH]")
    if any(not ch.isprintable() or ch.isspace() for ch in base_url):
        raise DataError(f"{where}: contains white space or control characters")
    return base_url


def max_download_bytes(source: dict) -> int:
    """The most bytes a download of ``source`` may take: its stated size plus a margin, else
    ``MAX_DOWNLOAD_BYTES``."""
    stated = source.get("bytes")
    if isinstance(stated, int) and not isinstance(stated, bool) and stated > 0:
        return int(stated * SIZE_MARGIN) + CHUNK
    return MAX_DOWNLOAD_BYTES


def _one_line(x) -> str:
    return " ".join(str(x).split())


class _Short(Exception):
    """The connection ended before the announced length."""


def _content_total(resp, have: int) -> Optional[int]:
    """The full file size from a 206's Content-Range (``bytes a-b/N``) or a 200's length."""
    if resp.status == 206:
        total = (resp.headers.get("Content-Range") or "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


class _TooLarge(Exception):
    """More bytes than the download may take."""


def _disk_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


def download(url: str, target: Path, *, retries: int = 3, progress: bool = True,
             label: str = "", max_bytes: int = MAX_DOWNLOAD_BYTES, deadline: Optional[float] = None) -> int:
    """Fetch ``url`` to ``target`` through ``target.part``, resuming it with a Range request
    (after a dropped connection, or a ``.part`` left by an earlier pull). Returns the bytes
    transferred; a 4xx/5xx, or ``retries`` failed resumes, is a one-line DataError.

    Bounded: at most ``max_bytes`` (announced or received), a socket read waits at most
    ``TIMEOUT_S``, a connection delivering under ``STALL_MIN_BYTES`` per ``STALL_WINDOW_S``
    is dropped (and resumed), and past ``deadline`` (``time.monotonic()``) the pull stops,
    keeping the ``.part`` for the next one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    fetched, last = 0, None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(RETRY_DELAYS_S[min(attempt - 1, len(RETRY_DELAYS_S) - 1)])
        if deadline is not None and time.monotonic() > deadline:
            raise DataError(f"{url}: the pull ran past its deadline ({DEADLINE_S:g} s); what was fetched "
                            "is kept: run the same command again to resume")
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "kif-data-pull"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as resp:
                if resp.status != 206:
                    have = 0  # the server sent the whole file: start the .part again
                total = _content_total(resp, have)
                if total is not None and total > max_bytes:
                    raise _TooLarge(f"{total} bytes announced")
                with open(part, "ab" if have else "wb") as f, \
                        tqdm(total=total, initial=have, unit="B", unit_scale=True, leave=False,
                             desc=label or target.name, disable=not progress) as bar:
                    size, window_start, window_bytes = have, time.monotonic(), 0
                    while chunk := resp.read1(CHUNK):  # read1: returns what arrived, so the clocks are seen
                        size += len(chunk)
                        if size > max_bytes:
                            raise _TooLarge(f"more than {max_bytes} bytes received")
                        f.write(chunk)
                        fetched += len(chunk)
                        bar.update(len(chunk))
                        now, window_bytes = time.monotonic(), window_bytes + len(chunk)
                        if deadline is not None and now > deadline:
                            raise DataError(f"{url}: the pull ran past its deadline ({DEADLINE_S:g} s); what was "
                                            "fetched is kept: run the same command again to resume")
                        if now - window_start >= STALL_WINDOW_S:
                            if window_bytes < STALL_MIN_BYTES:
                                raise _Short(f"stalled: {window_bytes} bytes in {now - window_start:.0f} s")
                            window_start, window_bytes = now, 0
            size = part.stat().st_size
            if total is not None and size < total:
                raise _Short(f"connection closed at byte {size} of {total}")
            if total is not None and size > total:
                part.unlink()
                raise _Short(f"got {size} bytes, {total} announced")
            os.replace(part, target)
            return fetched
        except _TooLarge as e:
            part.unlink(missing_ok=True)
            raise DataError(f"{url}: larger than this file can be ({e}; at most {max_bytes} bytes); "
                            "nothing kept, check --base-url") from None
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # range past the end: a stale .part; fetch it whole
                part.unlink(missing_ok=True)
                last = e
                continue
            raise DataError(f"{url}: HTTP {e.code} {_one_line(e.reason)}") from None
        except ValueError as e:  # urllib: a URL it cannot open (bad scheme, bad port)
            raise DataError(f"{url}: not a URL kif can download ({_one_line(e)}); check --base-url") from None
        except OSError as e:
            if _disk_full(e):
                raise DataError(f"{part}: the disk is full ({e.strerror}); free space, then run the same "
                                "command again to resume") from None
            last = e  # dropped, reset, timed out: resume from what the .part holds
        except (_Short, http.client.HTTPException) as e:
            last = e
    reason = getattr(last, "reason", None) or last
    raise DataError(f"{url}: download failed after {retries + 1} attempt(s) ({_one_line(reason)}); "
                    "run the same command again to resume it")


def _write_gz(path: Path, obj) -> None:
    """``path`` (a ``.json.gz``) written under a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(json.dumps(obj, ensure_ascii=False).encode("utf-8"), mtime=0)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- pulling -----------------------------------------------------------------------------------

@dataclass
class PullReport:
    dest: Path
    present: dict = field(default_factory=dict)  # benchmark -> splits already there, verified
    written: dict = field(default_factory=dict)  # benchmark -> splits downloaded and written
    downloads: int = 0  # upstream files fetched (or resumed)
    bytes: int = 0

    def lines(self) -> list[str]:
        out = []
        for bench in sorted(set(self.present) | set(self.written)):
            new, old = self.written.get(bench, 0), self.present.get(bench, 0)
            out.append(f"{bench}: {new + old} task split{'s' * (new + old != 1)} verified "
                       f"({new} downloaded, {old} already there)")
        n = sum(self.written.values()) + sum(self.present.values())
        out.append(f"data: {self.dest}  ({n} task splits match kif's manifest; "
                   f"{self.downloads} files, {self.bytes / 1e6:.1f} MB downloaded)")
        if self.dest.resolve() == default_pull_dir().resolve():
            out.append("kif finds it there (after config data_dir and $KIF_DATA); "
                       f"to name it explicitly: export KIF_DATA={self.dest}")
        else:
            out.append(f"point kif at it: export KIF_DATA={self.dest}   (or data_dir: {self.dest} in a config)")
        return out


def pull(benchmarks: Iterable[str] | str | None = None, dest: str | Path | None = None, *,
         base_url: str | None = None, progress: bool = True, retries: int = 3,
         entries: list[Entry] | None = None) -> PullReport:
    """Download, rebuild and verify the task splits of ``benchmarks`` (names from the
    manifest, or ``all``) into ``dest`` (default ``default_pull_dir()``). A split that fails
    its checksum is a one-line DataError naming it; nothing is written for it."""
    if isinstance(benchmarks, str):
        benchmarks = [benchmarks]
    dest = Path(dest).expanduser() if dest is not None else default_pull_dir()
    base = check_base_url(base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL)
    chosen = select(entries if entries is not None else load_manifest(), benchmarks)
    if dest.exists() and not dest.is_dir():
        raise DataError(f"{dest}: not a folder (--dir names where the data goes)")
    try:
        with OutputLock(dest, "data folder"):  # a second pull into it fails at once, naming the first
            return _pull_locked(chosen, dest, base, progress, retries)
    except OutputError as e:
        raise DataError(str(e)) from None


def _pull_locked(chosen: list[Entry], dest: Path, base: str, progress: bool, retries: int) -> PullReport:
    deadline = time.monotonic() + DEADLINE_S
    report = PullReport(dest)
    todo: dict[str, list[tuple[Entry, Optional[Path]]]] = {}  # url -> splits built from it
    for e in chosen:
        have = stored_file(dest, e)
        if have is not None and file_problem(have, e) is None:
            report.present[e.benchmark] = report.present.get(e.benchmark, 0) + 1
        else:
            todo.setdefault(source_url(base, e.source), []).append((e, have))
    cache = dest / DOWNLOADS
    with tqdm(total=sum(map(len, todo.values())), unit="split", desc="kif data pull",
              disable=not progress or not todo) as bar:
        for url, splits in todo.items():
            src = splits[0][0].source
            raw = cache / src["repo"] / src["commit"] / src["path"]
            if not raw.is_file():
                report.bytes += download(url, raw, retries=retries, progress=progress,
                                         label=f"{src['repo']} {Path(src['path']).name}",
                                         max_bytes=max_download_bytes(src), deadline=deadline)
                report.downloads += 1
            obj = _parse(raw, url, splits[0][0], dest, max_download_bytes(src))
            for e, old in splits:
                _build_split(obj, e, old, raw, url, dest)
                report.written[e.benchmark] = report.written.get(e.benchmark, 0) + 1
                bar.update(1)
            raw.unlink()
    shutil.rmtree(cache, ignore_errors=True)
    return report


def _parse(raw: Path, url: str, entry: Entry, dest: Path, max_bytes: int):
    try:
        return read_json(raw, max_bytes=max_bytes)
    except DataError as e:
        raw.unlink(missing_ok=True)  # a broken download is fetched afresh next time
        why = str(e).removeprefix(f"{raw}: ")
        raise DataError(f"{dest / entry.stored_name}: the file downloaded from {url} is unreadable "
                        f"({why}); nothing written, run again to download it afresh") from None


def _build_split(obj, e: Entry, old: Optional[Path], raw: Path, url: str, dest: Path) -> None:
    """Rebuild split ``e`` from the parsed upstream file, verify it, write it."""
    target = dest / e.stored_name
    try:
        content = apply_transform(obj, e.transform)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raw.unlink(missing_ok=True)
        raise DataError(f"{target}: the file downloaded from {url} does not have the layout the "
                        f"manifest expects ({type(exc).__name__}: {exc}); nothing written") from None
    why = content_problem(content, e)
    if why:
        raw.unlink(missing_ok=True)
        raise DataError(f"{target}: checksum mismatch for the file downloaded from {url} ({why}); "
                        "nothing written, run again to download it afresh")
    _write_gz(target, content)
    if old is not None and old != target:
        old.unlink(missing_ok=True)  # an altered plain .json copy: the verified .json.gz replaces it
