"""``kif sweep --jobs N``: the tiny grid (configs/sweeps/tiny.yaml) run two cells at a time gives
the bytes of ``--jobs 1``; a SIGKILL of the sweep takes its children along and the sweep resumes;
a failing cell leaves the others finished; threads and devices are split as documented.
Each cell is a ``kif run`` subprocess (an import of torch each): these tests take minutes."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kif import sweep_jobs
from kif.cli import main
from kif.errors import KifError

from helpers import REPO, read_results

pytestmark = pytest.mark.slow  # whole runs: `pytest -m "not slow"` leaves them out

ROOT = REPO
TINY = ROOT / "configs" / "sweeps" / "tiny.yaml"
CELLS = [f"{m}_{o}_seed{s}" for m in ("seqlora", "kiflora") for o in "ab" for s in (1, 2)]


def tiny_subgrid(folder: Path, grid: dict) -> Path:
    """tiny.yaml with another grid (same base and settings, so the same cell names and configs)."""
    raw = yaml.safe_load(TINY.read_text())
    raw["base"] = str((TINY.parent / raw["base"]).resolve())
    raw["grid"] = grid
    path = folder / "sub.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


SEQ_A = {"method": ["seqlora"], "tasks": {"a": ["cb", "copa", "sst2"]}, "seed": [1, 2]}


@pytest.fixture(scope="module")
def jobs1(tmp_path_factory, data_dir):
    """The reference: the tiny grid, one cell after another in this process."""
    out = tmp_path_factory.mktemp("jobs1") / "out"
    assert main(["sweep", str(TINY), "-o", str(out), "-q"]) == 0
    return out


def same_run(got: Path, want: Path) -> None:
    """results.json equal but for timings (seconds: ``timings``, ``per_task[*].*_s``) and the
    resumes (their count and each one's code); every adapter file byte for byte."""
    a, b = read_results(got), read_results(want)
    for r in (a, b):
        r.pop("timings")
        r.pop("resumed", None)
        r.pop("kif_commit_resumes", None)
        r["per_task"] = [{k: v for k, v in t.items() if not k.endswith("_s")} for t in r["per_task"]]
    assert a == b
    adapters = sorted(p.relative_to(want) for p in (want / "tasks").rglob("*") if p.is_file())
    assert adapters and adapters == sorted(p.relative_to(got) for p in (got / "tasks").rglob("*") if p.is_file())
    for rel in adapters:
        assert (got / rel).read_bytes() == (want / rel).read_bytes(), rel


def sweep_proc(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kif.cli", "sweep", *map(str, args), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_jobs_2_gives_the_bytes_of_jobs_1(jobs1, tmp_path):
    out = tmp_path / "out"
    proc = sweep_proc(TINY, "-o", out, "--jobs", "2")
    _, err = proc.communicate(timeout=1500)
    assert proc.returncode == 0, err
    for name in CELLS:
        same_run(out / name, jobs1 / name)
        log = (out / name / "run.log").read_text()
        assert log.startswith(f"== kif sweep {TINY}: cell {name}, ") and "task 3/3" in log
    state = json.loads((out / "sweep.json").read_text())
    assert [c["status"] for c in state["cells"]] == ["finished"] * 8
    assert "sweep: 0/8 finished, 2 running (seqlora_a_seed1, seqlora_a_seed2)" in err  # the sweep's progress line


def _lock_holders(out: Path) -> list[int]:
    """pids named by the cells' lock files that still hold their lock."""
    pids = []
    for lock in out.glob("*/.kif.lock"):
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            words = lock.read_text().split()
            pids += [int(words[1])] if len(words) > 1 else []
        finally:
            os.close(fd)
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_sigkill_of_the_sweep_kills_its_cells_and_resumes(jobs1, tmp_path):
    sweep = tiny_subgrid(tmp_path, SEQ_A)
    out = tmp_path / "out"
    proc = sweep_proc(sweep, "-o", out, "--jobs", "2")
    deadline = time.monotonic() + 900
    while not list(out.glob("*/checkpoints/after-01")):  # a cell has committed its first task
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    children = _lock_holders(out)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert children, "no cell was running"
    deadline = time.monotonic() + 120
    while any(_alive(p) for p in children):  # they die with the sweep
        assert time.monotonic() < deadline, f"cells {children} outlived the sweep"
        time.sleep(0.2)
    state = {c["name"]: c["status"] for c in json.loads((out / "sweep.json").read_text())["cells"]}
    assert "running" in state.values()  # as the kill left it
    unfinished = [n for n in state if not (out / n / "results.json").exists() or not read_results(out / n)["finished"]]
    assert unfinished, "the kill came after the whole sweep"

    rerun = sweep_proc(sweep, "-o", out, "--jobs", "2")
    _, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err
    for name in state:
        same_run(out / name, jobs1 / name)
    assert all(c["status"] == "finished" for c in json.loads((out / "sweep.json").read_text())["cells"])


def test_sigterm_stops_the_cells_and_records_them(data_dir, tmp_path):
    """SIGTERM to the sweep (a scheduler's stop): it stops its running cells, waits for them
    and records them as interrupted; exit 143 as for kif run."""
    out = tmp_path / "out"
    proc = sweep_proc(tiny_subgrid(tmp_path, SEQ_A), "-o", out, "--jobs", "2")
    deadline = time.monotonic() + 900
    while len(children := _lock_holders(out)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("kif: stopped by SIGTERM; completed work is kept")
    assert not any(_alive(p) for p in children) and not _lock_holders(out)
    states = [c["status"] for c in json.loads((out / "sweep.json").read_text())["cells"]]
    assert "interrupted" in states and set(states) <= {"interrupted", "finished"}, states


def test_a_failing_cell_leaves_the_others_finished(jobs1, tmp_path):
    """seqlora_a_seed1's folder is held by another process: that cell fails, seed 2 finishes,
    the sweep exits 2 with one line naming the failed cell."""
    sweep = tiny_subgrid(tmp_path, SEQ_A)
    out = tmp_path / "out"
    held = out / "seqlora_a_seed1"
    held.mkdir(parents=True)
    fd = os.open(held / ".kif.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"pid 1\nhost test\n")
    try:
        proc = sweep_proc(sweep, "-o", out, "--jobs", "2", "--devices", "0,1")
        _, err = proc.communicate(timeout=900)
    finally:
        os.close(fd)
    assert proc.returncode == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("kif: error: sweep: 1 of 2 cells failed, the others ran: seqlora_a_seed1 (exit 2: "
                           f"kif: error: {held}: in use by another kif process"), last
    same_run(out / "seqlora_a_seed2", jobs1 / "seqlora_a_seed2")
    cells = {c["name"]: c for c in json.loads((out / "sweep.json").read_text())["cells"]}
    assert cells["seqlora_a_seed1"]["status"] == "failed" and cells["seqlora_a_seed2"]["status"] == "finished"
    assert "in use by another kif process" in (held / "run.log").read_text()
    # devices round-robin: the first cell started got device 0, the second device 1
    assert ", CUDA_VISIBLE_DEVICES=0\n" in (held / "run.log").read_text()
    assert ", CUDA_VISIBLE_DEVICES=1\n" in (out / "seqlora_a_seed2" / "run.log").read_text()


# ---- threads and devices (no subprocess) ---------------------------------------------------------

@pytest.mark.parametrize("jobs, cores, env, want", [
    (2, 2, {}, (2, "1")),
    (1, 2, {}, (1, "2")),
    (3, 16, {}, (3, "5")),  # 15 of 16 cores
    (4, 2, {}, (2, "1")),  # never more threads than cores: only 2 cells at once
    (4, 2, {"OMP_NUM_THREADS": "1"}, (4, None)),  # the user decided
])
def test_threads_are_split_between_cells(jobs, cores, env, want):
    assert sweep_jobs.plan_threads(jobs, cores, env) == want


def test_devices_from_the_flag_or_the_environment():
    assert sweep_jobs.parse_devices("0,1", {"CUDA_VISIBLE_DEVICES": "3"}) == ["0", "1"]
    assert sweep_jobs.parse_devices(None, {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert sweep_jobs.parse_devices(None, {}) == []
    with pytest.raises(KifError, match="--devices: an empty entry"):
        sweep_jobs.parse_devices("0,,1", {})


def test_child_environment(tmp_path, monkeypatch):
    """What a cell's process gets: its thread count, its device, its log, the plain kif run command."""
    from kif.sweep import Cell, Sweep
    from helpers import tiny_config

    seen = {}

    class FakePopen:
        def __init__(self, cmd, **kw):
            seen.update(cmd=cmd, env=kw["env"], stdout=kw["stdout"].name)

    monkeypatch.setattr(sweep_jobs.subprocess, "Popen", FakePopen)
    cell = Cell("c1", {}, {}, tiny_config())
    sweep = Sweep(tmp_path / "s.yaml", tmp_path / "out", {}, [cell])
    sweep_jobs._start(sweep, cell, tmp_path, {"PATH": "/bin"}, "3", "1", True)
    assert seen["env"] == {"PATH": "/bin", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "CUDA_VISIBLE_DEVICES": "1"}
    assert seen["cmd"][1:] == ["-m", "kif.cli", "run", str(tmp_path / "c1.yaml"), "-o", str(tmp_path / "out" / "c1"),
                               "-q", "--accept-config-change"]
    assert seen["stdout"] == str(tmp_path / "out" / "c1" / "run.log")
    from kif.configure import config_record, load_config

    assert config_record(load_config(tmp_path / "c1.yaml")) == config_record(cell.config)


def test_jobs_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "x.yaml", "--jobs", "0"])
    assert exc.value.code == 2 and "must be a whole number of at least 1" in capsys.readouterr().err
