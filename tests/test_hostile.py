"""Hostile inputs, round 3 (issue 30): names that become paths, silent wrong numbers,
tracebacks, bounds. Each failure is one line, exit 2, and nothing outside the output
folder changes."""
import json
import os
from pathlib import Path

import pytest
import yaml

from kif.cli import main

from helpers import tiny_config


def _fails(argv, capsys, *culprits):
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("kif: error:")]
    assert code == 2 and len(lines) == 1, err
    assert all(c in lines[0] for c in culprits), lines[0]
    assert "Traceback" not in err
    return lines[0]


def _snapshot(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = ("link", os.readlink(p))
        elif p.is_file():
            out[str(p.relative_to(folder))] = p.read_bytes()
        else:
            out[str(p.relative_to(folder))] = "dir"
    return out


# ---- 1. task names become paths ---------------------------------------------------------------------

def _bench_with_task(tmp_path: Path, name: str) -> Path:
    rows = [{"input": "q", "output": "a"}, {"input": "r", "output": "b"}]
    (tmp_path / "data.json").write_text(json.dumps(rows))
    doc = {"name": "b", "tasks": {name: {"path": "data.json", "metric": "accuracy"}}}
    y = tmp_path / "bench.yaml"
    y.write_text(yaml.safe_dump(doc))
    return y


@pytest.mark.parametrize("name", ["../../../../escape", "..", ".", "x/y", "x\\y", "", "a\x00b", "tab\there"])
def test_task_name_that_is_not_one_path_component_is_refused_before_any_write(name, tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    bench = _bench_with_task(home, name)
    cfg = tiny_config(benchmark=str(bench), tasks=[name], method="seqlora").model_dump(mode="json")
    (home / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    before = _snapshot(tmp_path)
    line = _fails(["run", str(home / "cfg.yaml"), "-o", str(home / "out"), "-q"], capsys,
                  "task name", "bench.yaml")
    assert "path component" in line
    assert _snapshot(tmp_path) == before  # no escape, no output folder


def test_unseen_task_names_from_a_custom_benchmark_are_checked_too(tmp_path, capsys):
    bench = _bench_with_task(tmp_path, "..")
    cfg = tiny_config(method="seqlora", tasks=["cb"], eval={"unseen": {"benchmark": str(bench)}})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    _fails(["run", str(tmp_path / "cfg.yaml"), "-o", str(tmp_path / "out"), "-q"], capsys,
           "task name", "path component")
    assert not (tmp_path / "out").exists()


def test_plain_task_names_with_odd_but_harmless_characters_still_load(tmp_path):
    from kif.data import get_benchmark

    for name in ("qa-1", "a b", "é_task", "x.y", "..x"):
        assert list(get_benchmark(_bench_with_task(tmp_path, name)).tasks) == [name]


# ---- 2a. the divergence stop checks the optimised loss ------------------------------------------------

@pytest.mark.parametrize("method,args", [("ewc", {}), ("kiflora", {"ortho_weight": 1.0})])
def test_divergence_stop_sees_the_method_extra_loss(method, args, tmp_path, capsys, data_dir):
    """At lr 1e6 tiny-llama's own loss stays bounded (clipped steps) while EWC's penalty reaches
    ~1e26 and KIFLoRA's eq. 5 ~1e13: before, the run exited 0 with those numbers in results.json."""
    cfg = tiny_config(method=method, method_args=args, tasks=["cb", "copa"],
                      train={"learning_rate": 1e6}).model_dump(mode="json")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    line = _fails(["run", str(tmp_path / "cfg.yaml"), "-o", str(tmp_path / "out"), "-q"], capsys, "diverged")
    assert "learning_rate" in line
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert not results["finished"]


def test_divergence_guard_adds_the_extra_loss_to_the_step_loss():
    """Hand-computed: micro-batch model losses 2 and 3 plus extras 0.5 and 0.5 -> step loss 6."""
    import torch

    from kif.divergence import DivergenceGuard

    g = DivergenceGuard("t", 1e-3, False, 1.0)
    g._handle = object()  # as if the forward hook were installed
    for model_loss in (2.0, 3.0):
        g._record(type("M", (), {"training": True})(), None, {"loss": torch.tensor(model_loss)})
        g.add_extra(torch.tensor(0.5))
    seen = []
    g.check = lambda loss, step: seen.append(loss)
    g.on_pre_optimizer_step(None, type("S", (), {"global_step": 0})(), None)
    assert seen == [6.0]


# ---- 2d. the checkpoint is the record -----------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
    """One finished two-task SeqLoRA run (copied by each test that edits it)."""
    root = tmp_path_factory.mktemp("finished")
    cfg = tiny_config(method="seqlora", tasks=["cb", "copa"]).model_dump(mode="json")
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(root / "cfg.yaml"), "-o", str(root / "run"), "-q"]) == 0
    return root


def _copy_run(finished_run, tmp_path) -> tuple[Path, Path]:
    import shutil

    shutil.copytree(finished_run / "run", tmp_path / "run")
    shutil.copy(finished_run / "cfg.yaml", tmp_path / "cfg.yaml")
    return tmp_path / "cfg.yaml", tmp_path / "run"


@pytest.mark.parametrize("edit", ["missing", "broken", "not utf-8", "hand-edited", "a list"])
def test_finished_run_with_a_bad_results_file_is_rewritten_from_the_checkpoint(edit, finished_run, tmp_path):
    cfg, run = _copy_run(finished_run, tmp_path)
    results = run / "results.json"
    record = json.loads((run / "checkpoints" / "after-02" / "results.json").read_text())
    original = results.read_bytes()
    if edit == "missing":
        results.unlink()
    elif edit == "broken":
        results.write_text('{"finished": tr')
    elif edit == "not utf-8":
        results.write_bytes(b"\xff\xfe{}")
    elif edit == "hand-edited":
        doc = json.loads(original)
        doc["matrix"][-1][0] = 99.0
        results.write_text(json.dumps(doc))
    else:
        results.write_text("[1, 2]")
    assert main(["run", str(cfg), "-o", str(run), "-q"]) == 0
    assert json.loads(results.read_text()) == record
    assert results.read_bytes() == original  # the same bytes as the run wrote


def test_finished_run_with_an_intact_results_file_is_left_untouched(finished_run, tmp_path):
    cfg, run = _copy_run(finished_run, tmp_path)
    before = _snapshot(run)
    assert main(["run", str(cfg), "-o", str(run), "-q"]) == 0
    assert _snapshot(run) == before


@pytest.mark.parametrize("text", ["", "[1, 2]\n", "just text\n"])
def test_stored_config_that_is_not_a_mapping_is_named_not_an_empty_diff(text, finished_run, tmp_path, capsys):
    cfg, run = _copy_run(finished_run, tmp_path)
    (run / "config.yaml").write_text(text)
    line = _fails(["run", str(cfg), "-o", str(run), "-q"], capsys, "config.yaml", "not a kif config")
    assert "()" not in line


# ---- 2b. a checkpoint must hold the method's own state for its stage ---------------------------------

def _stopped_after_task_1(tmp_path: Path, method: str) -> tuple[Path, Path]:
    """A two-task run of ``method`` killed just before its second task's checkpoint (after-01 stays)."""
    import subprocess
    import sys

    cfg = tiny_config(method=method, tasks=["cb", "copa"]).model_dump(mode="json")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    env = {**os.environ, "KIF_FAULT": "write:3"}  # writes: after-00, after-01, (killed) after-02
    subprocess.run([sys.executable, "-m", "kif.cli", "run", str(tmp_path / "cfg.yaml"), "-o", str(out), "-q"],
                   env=env, capture_output=True, timeout=600)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["after-01"]
    from kif.lock import LOCK_NAME

    (out / LOCK_NAME).unlink(missing_ok=True)  # the killed owner's; the next run replaces it anyway
    return tmp_path / "cfg.yaml", out


def _edit_method_tensors(ckpt: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(ckpt / "method.safetensors")
    save_file(edit(tensors), ckpt / "method.safetensors")


@pytest.fixture(scope="module")
def kif_after_task_1(tmp_path_factory, data_dir):
    return _stopped_after_task_1(tmp_path_factory.mktemp("kif1"), "kif")


@pytest.mark.parametrize("case", ["no accumulated", "no fused_prev", "no method state", "ewc's state"])
def test_kif_checkpoint_without_its_state_after_task_1_is_refused(case, kif_after_task_1, tmp_path, capsys):
    import shutil

    cfg, out = kif_after_task_1[0], tmp_path / "run"
    shutil.copytree(kif_after_task_1[1], out)
    ckpt = out / "checkpoints" / "after-01"
    if case == "no accumulated":
        _edit_method_tensors(ckpt, lambda t: {n: v for n, v in t.items() if n != "method.accumulated"})
    elif case == "no fused_prev":
        _edit_method_tensors(ckpt, lambda t: {n: v for n, v in t.items() if not n.startswith("method.fused_prev/")})
    elif case == "no method state":
        _edit_method_tensors(ckpt, lambda t: {n: v for n, v in t.items() if not n.startswith("method.")})
    else:
        _edit_method_tensors(ckpt, lambda t: {**{n: v for n, v in t.items() if not n.startswith("method.")},
                                              **{n.replace("method.fused_prev/", "method.fisher/"): v
                                                 for n, v in t.items() if n.startswith("method.fused_prev/")}})
    before = _snapshot(out)
    line = _fails(["run", str(cfg), "-o", str(out), "-q"], capsys, str(ckpt))
    assert ("lacks the state" in line) or ("never writes" in line)
    assert _snapshot(out) == before


def test_every_method_declares_exactly_the_state_it_writes(tmp_path, monkeypatch, data_dir):
    """Each method's checkpoints (after the zero-shot row and after its task) hold every entry
    its STATE requires at that stage and nothing it does not declare; every declared entry
    is written at some stage."""
    import kif.runner
    from kif.methods import get_method
    from kif.methods.registry import all_methods

    seen: list = []
    real = kif.runner.save_checkpoint

    def record(out_dir, done, tensors, meta, results):
        seen.append((done, dict(tensors), meta["method"]))
        return real(out_dir, done, tensors, meta, results)

    monkeypatch.setattr(kif.runner, "save_checkpoint", record)
    for name in all_methods():
        seen.clear()
        cfg = tiny_config(method=name, tasks=["cb", "copa"],
                          data={"train_samples": 4, "test_samples": 2}, eval={"max_new_tokens": 2})
        kif.runner.run(cfg, tmp_path / name, show_progress=False)
        cls = get_method(name)
        written = set()
        for done, tensors, meta in seen:
            cls.check_state(tensors, meta, done, f"{name} after {done}")
            written |= {n[len("method."):].replace("/", ".").split(".")[0] for n in tensors
                        if n.startswith("method.")} | set(meta)
        assert written == set(cls.state_entries()), name


# ---- 2c. kif report: run names unique, computed once ------------------------------------------------

def test_report_run_names_are_unique_and_the_same_in_every_section(finished_run, tmp_path):
    import re
    import shutil

    for d in ("a/x", "b/x", "c/x-2", "d/x-3"):
        shutil.copytree(finished_run / "run", tmp_path / d)
    dirs = [str(tmp_path / d) for d in ("a/x", "b/x", "c/x-2", "d/x-3")]
    assert main(["report", *dirs, "-o", str(tmp_path / "rep")]) == 0
    rows = json.loads((tmp_path / "rep" / "comparison.json").read_text())
    table_names = [r["run"] for r in rows if r["kind"] == "run"]
    md = (tmp_path / "rep" / "report.md").read_text()
    runs_section = re.findall(r"^### (.+)$", md.split("## Runs", 1)[1], re.M)
    assert sorted(table_names) == sorted(runs_section) == ["x", "x-2", "x-3", "x-4"]
    assert table_names == runs_section  # same order too
    # each folder literally named x-2 / x-3 keeps its own name: the copies of "x" go around them
    by_dir = dict(re.findall(r"^### (.+)\n+- \*\*directory\*\*: (.+)$", md, re.M))
    assert by_dir["x-2"].endswith("c/x-2") and by_dir["x-3"].endswith("d/x-3")
    assert by_dir["x"].endswith("a/x") and by_dir["x-4"].endswith("b/x")
    assert len(list((tmp_path / "rep").glob("matrix_*.png"))) == 4
