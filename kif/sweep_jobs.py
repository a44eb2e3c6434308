"""``kif sweep --jobs N``: up to N cells at once, each an ordinary ``kif run`` in its own process.

Why processes and not threads: a cell is a whole run (its model, its optimizer, its own
output lock and resume), and a process per cell gives each the guarantees ``kif run`` has
alone; a small model leaves a GPU latency-bound, so several runs together keep it busy.

- Threads: each child gets ``OMP_NUM_THREADS = max(1, cores // N)`` so that the children
  together never use more threads than the cores this process may run on; N above the core
  count runs only as many cells at once as there are cores. A user-set ``OMP_NUM_THREADS``
  is passed through unchanged (the user decided).
- Devices: ``devices`` (``--devices 0,1``) or the inherited ``CUDA_VISIBLE_DEVICES``; each
  child sees one of them (``CUDA_VISIBLE_DEVICES``), the least busy, ties in order, so N
  cells on two devices alternate between them. Neither given: children inherit the
  environment unchanged.
- Output: a child's stdout and stderr are appended to ``OUT/<cell>/run.log``; the sweep
  prints one progress line per event (a cell started, finished or failed).
- Failure: a failing cell does not stop the others; the sweep ends with one KifError naming
  every failed cell and its last error line.
- Kills: children die with the sweep (Linux: ``PR_SET_PDEATHSIG``; they also stay in the
  sweep's process group, so a scheduler or Ctrl-C that signals the group reaches them). A
  SIGTERM or Ctrl-C to the sweep stops the children first and waits for them. Whatever
  the kill, each cell resumes from its last committed task on the next invocation.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .configure import dump_config
from .errors import KifError
from .lock import ensure_dir
from .metrics import cl_line
from .sweep_state import Cell, Sweep, cell_status, duration, remaining_seconds, write_state

log = logging.getLogger("kif")

STOP_WAIT_S = 60  # how long a stopped child may take to unwind before it is killed


@dataclass
class _Child:
    cell: Cell
    proc: subprocess.Popen
    device: str | None
    started: float
    log_path: Path
    log_offset: int  # where this invocation's output starts in run.log


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_threads(jobs: int, cores: int, env: dict) -> tuple[int, str | None]:
    """(cells at once, OMP_NUM_THREADS for each child or None to pass the user's through)."""
    if env.get("OMP_NUM_THREADS"):
        return jobs, None
    slots = min(jobs, cores)
    return slots, str(max(1, cores // slots))


def parse_devices(devices: list[str] | str | None, env: dict) -> list[str]:
    """``--devices 0,1`` or the inherited ``CUDA_VISIBLE_DEVICES``; [] when neither is set."""
    if devices is None:
        devices = env.get("CUDA_VISIBLE_DEVICES") or ""
    items = devices.split(",") if isinstance(devices, str) else list(devices)
    items = [d.strip() for d in items]
    if any(not d for d in items) and any(items):
        raise KifError(f"--devices: an empty entry in {','.join(items)!r}; give e.g. --devices 0,1")
    return [d for d in items if d]


def _pick_device(devices: list[str], running: list[_Child]) -> str | None:
    if not devices:
        return None
    load = {d: 0 for d in devices}
    for ch in running:
        if ch.device in load:
            load[ch.device] += 1
    return min(devices, key=lambda d: load[d])  # min keeps the first of equals: round-robin


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_parallel(sweep: Sweep, jobs: int, devices, accept_config_change: bool, show_progress: bool) -> None:
    env = dict(os.environ)
    cores = usable_cores()
    slots, threads = plan_threads(jobs, cores, env)
    device_list = parse_devices(devices, env)
    if slots < jobs:
        log.info("sweep: --jobs %d on %d cores: %d cells at once (one thread each; set OMP_NUM_THREADS "
                 "to decide yourself)", jobs, cores, slots)
    todo = [c for c in sweep.cells if c.status != "finished"]
    log.info("sweep: up to %d cells at once, %s thread(s) each%s", slots, threads or env["OMP_NUM_THREADS"],
             f", devices {','.join(device_list)}" if device_list else "")
    running: list[_Child] = []
    progress = _Progress(sweep, slots, show_progress)
    with tempfile.TemporaryDirectory(prefix="kif-sweep-") as cfg_dir:
        try:
            while todo or running:
                while todo and len(running) < slots:
                    cell = todo.pop(0)
                    try:
                        running.append(_start(sweep, cell, Path(cfg_dir), env, threads,
                                              _pick_device(device_list, running), accept_config_change))
                    except KifError as exc:  # e.g. a file where the cell's folder belongs: that cell only
                        cell.status, cell.metrics = "failed", {"error": str(exc)}
                    write_state(sweep)
                    progress.show(running, None if cell.status == "running" else cell)
                finished = [ch for ch in running if ch.proc.poll() is not None]
                for ch in finished:
                    running.remove(ch)
                    _collect(sweep, ch, accept_config_change)
                    write_state(sweep)
                    progress.show(running, ch.cell)
                if not finished:
                    time.sleep(0.2)
        except BaseException:
            _stop_all(sweep, running)
            raise
        finally:
            progress.close()
    failed = [c for c in sweep.cells if c.status == "failed"]
    if failed:
        detail = "; ".join(f"{c.name} ({c.metrics.get('error', 'failed')})" for c in failed)
        raise KifError(f"sweep: {len(failed)} of {len(sweep.cells)} cells failed, the others ran: {detail}; "
                       f"logs in {sweep.out}/<cell>/run.log; run the sweep again to retry them")
    log.info("sweep: all %d cells finished; %s", len(sweep.cells), sweep.out / "sweep.json")


def _start(sweep: Sweep, cell: Cell, cfg_dir: Path, env: dict, threads: str | None, device: str | None,
           accept_config_change: bool) -> _Child:
    cell_dir = sweep.out / cell.name
    ensure_dir(cell_dir, "cell folder")
    cfg_file = cfg_dir / f"{cell.name}.yaml"
    cfg_file.write_text(dump_config(cell.config), encoding="utf-8")
    child_env = dict(env)
    if threads is not None:
        child_env["OMP_NUM_THREADS"] = child_env["MKL_NUM_THREADS"] = threads
    if device is not None:
        child_env["CUDA_VISIBLE_DEVICES"] = device
    cmd = [sys.executable, "-m", "kif.cli", "run", str(cfg_file), "-o", str(cell_dir), "-q"]
    cmd += ["--accept-config-change"] if accept_config_change else []
    log_path = cell_dir / "run.log"
    with open(log_path, "ab") as fh:  # the child holds its own descriptor; ours closes at once
        offset = fh.tell()
        fh.write(f"== kif sweep {sweep.path}: cell {cell.name}, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
                 f"{f', CUDA_VISIBLE_DEVICES={device}' if device is not None else ''}\n".encode())
        fh.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                env=child_env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    cell.status, cell.metrics = "running", {}
    return _Child(cell, proc, device, time.perf_counter(), log_path, offset)


def _collect(sweep: Sweep, ch: _Child, accept_config_change: bool) -> None:
    """A child has exited: the cell's status is read from its validated checkpoint, as at start."""
    cell, rc = ch.cell, ch.proc.returncode
    cell.seconds = time.perf_counter() - ch.started
    if rc == 0:
        try:
            cell.status, cell.metrics, run_seconds = cell_status(sweep.out / cell.name, cell.config, cell.tasks,
                                                                 accept_config_change)
        except KifError as exc:
            cell.status, cell.metrics, run_seconds = "failed", {"error": f"exit 0 but {exc}"}, None
        cell.run_seconds = run_seconds or cell.seconds
        if cell.status != "finished" and "error" not in cell.metrics:
            cell.status, cell.metrics = "failed", {"error": "exit 0 but the run is not finished"}
        return
    cell.status = "interrupted" if rc in (130, 143, -signal.SIGINT, -signal.SIGTERM) else "failed"
    cell.metrics = {"error": _last_error(ch, rc)}


def _last_error(ch: _Child, rc: int) -> str:
    """The child's ``kif: error: ...`` line (or its last line) from this invocation's part of run.log."""
    try:
        with open(ch.log_path, "rb") as fh:
            fh.seek(ch.log_offset)
            lines = [ln.strip() for ln in fh.read()[-20000:].decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    errors = [ln for ln in lines if ln.startswith("kif: ")]
    what = f"killed by signal {-rc}" if rc < 0 else f"exit {rc}"
    last = (errors or lines[1:] or [""])[-1][:300]
    return f"{what}: {last}" if last else what


def _stop_all(sweep: Sweep, running: list[_Child]) -> None:
    """The sweep is stopping (Ctrl-C, SIGTERM, an error): stop the children, wait for them to
    release their folders, record them as interrupted."""
    for ch in running:
        if ch.proc.poll() is None:
            try:
                ch.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_WAIT_S
    for ch in running:
        try:
            ch.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            ch.proc.kill()
            ch.proc.wait()
        ch.cell.status, ch.cell.seconds = "interrupted", time.perf_counter() - ch.started
    try:
        write_state(sweep)
    except (OSError, KifError):
        pass


class _Progress:
    """One line for the whole sweep: redrawn in place on a terminal, one log line per event otherwise."""

    def __init__(self, sweep: Sweep, slots: int, show: bool):
        self.sweep, self.slots = sweep, slots
        self.tty = show and sys.stderr.isatty()

    def show(self, running: list[_Child], ended: Cell | None = None) -> None:
        cells = self.sweep.cells
        count = {s: sum(c.status == s for c in cells) for s in ("finished", "failed", "interrupted")}
        estimate = remaining_seconds(cells)
        eta = "" if estimate is None else f", ETA {duration(estimate / self.slots)}"
        names = f" ({', '.join(ch.cell.name for ch in running)})" if running else ""
        failed = f", {count['failed']} failed" if count["failed"] else ""
        line = f"sweep: {count['finished']}/{len(cells)} finished, {len(running)} running{names}{failed}{eta}"
        if ended is not None:
            m = ended.metrics
            note = (f"sweep: cell {ended.name} {ended.status} in {duration(ended.seconds or 0)}"
                    + (f"  {cl_line(m)}"
                       if ended.status == "finished" else f": {m.get('error', '')}"))
            self._emit(note, permanent=True)
        self._emit(line, permanent=not self.tty)

    def _emit(self, text: str, permanent: bool) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K" + text + ("\n" if permanent else ""))
            sys.stderr.flush()
        else:
            log.info("%s", text)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
