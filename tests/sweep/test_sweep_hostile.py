"""kif sweep on edited and malformed inputs (issue 30): labels that are not folder names,
status from the checkpoint (not results.json), sweep.json on every invocation, one sweep per
folder, ``-o`` checked first, ``--accept-config-change``, one-line errors; and a generated
corpus of hostile sweep files and cell folders: exit 2, one line, no file changed."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

import kif.data
import kif.runner
from kif.cli import main
from kif.errors import KifError

from helpers import read_results, snapshot
from test_sweep import BASE, GRID

ONE = {"method": ["seqlora"], "tasks": {"a": GRID["tasks"]["a"]}, "seed": [1]}
CELL = "seqlora_a_seed1"
FINISHED = {"finished": True, "AP": 50.0, "FWT": 1.0, "BWT": -2.0}


def write_sweep(folder: Path, grid=ONE, name="sweep.yaml", **extra) -> Path:
    (folder / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = folder / name
    path.write_text(yaml.safe_dump({"base": "base.yaml", "grid": grid, **extra}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A one-cell sweep, run once; tests copy it."""
    tmp = tmp_path_factory.mktemp("hostile")
    assert main(["sweep", str(write_sweep(tmp)), "-o", str(tmp / "out"), "-q"]) == 0
    return tmp


@pytest.fixture
def work(finished, tmp_path):
    dest = tmp_path / "w"
    shutil.copytree(finished, dest, symlinks=True)
    return dest


@pytest.fixture
def no_run(monkeypatch):
    monkeypatch.setattr(kif.runner, "run", lambda *a, **k: pytest.fail("a cell ran"))


def sweep_cli(capsys, *args) -> tuple[int, list[str]]:
    rc = main(["sweep", *map(str, args), "-q"])
    return rc, capsys.readouterr().err.strip().splitlines()


def make_partial(folder: Path, seed: int) -> Path:
    """A cell stopped after task 1 of 3 (its checkpoint after-01), as a crash leaves it."""
    from kif.sweep import load_sweep

    sweep = load_sweep(write_sweep(folder, grid={**ONE, "seed": [seed]}, name=f"partial{seed}.yaml"), folder / "out")
    cell = sweep.cells[0]
    real = kif.runner.train_stage

    def stop_at_task_2(state, k, show):
        if k == 1:
            raise KifError("stopped for the test")
        return real(state, k, show)

    kif.runner.train_stage = stop_at_task_2
    try:
        with pytest.raises(KifError):
            kif.runner.run(cell.config, folder / "out" / cell.name, show_progress=False)
    finally:
        kif.runner.train_stage = real
    (folder / f"partial{seed}.yaml").unlink()
    return folder / "out" / cell.name


# ---- labels that would become paths --------------------------------------------------------------

@pytest.mark.parametrize("label", ["..", ".", "x/y", "", "a\udcffb"])
def test_label_must_be_one_path_component(tmp_path, no_run, capsys, label):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    quoted = json.dumps(label)  # YAML reads JSON's escapes: "\udcff" is a lone surrogate
    (tmp_path / "sweep.yaml").write_text(f"base: base.yaml\ngrid:\n  tasks:\n    {quoted}: [cb, copa, sst2]\n")
    before = snapshot(tmp_path.parent)
    rc, err = sweep_cli(capsys, tmp_path / "sweep.yaml", "-o", tmp_path / "sub" / "out")
    assert rc == 2 and len(err) == 1 and "one plain path component" in err[0], err
    assert snapshot(tmp_path.parent) == before


# ---- status: the validated checkpoint, not results.json's flag ---------------------------------------

@pytest.mark.parametrize("flag", ["no", True, 1])
def test_partial_cell_with_edited_finished_flag_resumes(work, monkeypatch, capsys, flag):
    cell = make_partial(work, seed=2)
    res = read_results(cell)
    assert res["tasks_completed"] == 1 and res["finished"] is False
    (cell / "results.json").write_text(json.dumps({**res, "finished": flag}))
    calls = []
    monkeypatch.setattr(kif.runner, "run", lambda cfg, out_dir, **kw: calls.append(out_dir.name) or FINISHED)
    sweep = write_sweep(work, grid={**ONE, "seed": [1, 2]})
    rc, err = sweep_cli(capsys, sweep, "-o", work / "out")
    assert rc == 0, err
    assert calls == ["seqlora_a_seed2"]  # the finished cell is skipped, the partial one runs


def test_sweep_json_is_written_on_every_invocation(work, no_run, capsys):
    state_file = work / "out" / "sweep.json"
    state = json.loads(state_file.read_text())
    state["cells"][0]["status"] = "running"  # a kill between the cell's commit and the sweep's write
    state["counts"] = {"running": 1}
    state_file.write_text(json.dumps(state))
    rc, err = sweep_cli(capsys, work / "sweep.yaml", "-o", work / "out")
    assert rc == 0, err
    state = json.loads(state_file.read_text())
    assert state["cells"][0]["status"] == "finished" and state["counts"]["finished"] == 1
    assert state["counts"]["running"] == 0


def test_second_sweep_file_on_the_folder_is_refused(work, no_run, capsys):
    other = write_sweep(work, grid={**ONE, "seed": [3]}, name="other.yaml")
    before = snapshot(work)
    rc, err = sweep_cli(capsys, other, "-o", work / "out")
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"kif: error: {work}/out/sweep.json: this folder holds the sweep of ")
    assert f"/sweep.yaml (another grid); running {other} here would replace its record" in err[0]
    assert snapshot(work) == before


def test_the_same_sweep_file_edited_keeps_its_folder(work, monkeypatch, capsys):
    monkeypatch.setattr(kif.runner, "run", lambda cfg, out_dir, **kw: FINISHED)
    write_sweep(work, grid={**ONE, "seed": [1, 2]})  # a seed added to the same file
    rc, err = sweep_cli(capsys, work / "sweep.yaml", "-o", work / "out")
    assert rc == 0, err
    assert [c["status"] for c in json.loads((work / "out" / "sweep.json").read_text())["cells"]] == ["finished"] * 2


# ---- -o checked before anything is read or created -------------------------------------------------

def test_output_that_is_a_file_fails_at_once(tmp_path, no_run, monkeypatch, capsys):
    monkeypatch.setattr(kif.data, "get_benchmark", lambda *a, **k: pytest.fail("data read before -o was checked"))
    (tmp_path / "out").write_text("mine")
    rc, err = sweep_cli(capsys, write_sweep(tmp_path), "-o", tmp_path / "out")
    assert rc == 2 and err == [f"kif: error: {tmp_path}/out: exists and is not a folder; choose another "
                               "sweep output folder (-o)"]
    assert (tmp_path / "out").read_text() == "mine"


def test_non_utf8_output_is_refused_before_the_folder_exists(tmp_path, no_run, capsys):
    out = tmp_path / "out\udcff"  # the byte 0xff in the file name
    rc, err = sweep_cli(capsys, write_sweep(tmp_path), "-o", out)
    assert rc == 2 and len(err) == 1 and "is not valid UTF-8" in err[0], err
    assert not os.path.lexists(out)


# ---- the "lower the learning rate and rerun" advice, inside a sweep -----------------------------------

def test_accept_config_change_continues_a_started_cell(work, monkeypatch, capsys):
    make_partial(work, seed=2)
    sweep = write_sweep(work, grid={**ONE, "seed": [2]}, set={"train.learning_rate": 1e-3}, name="sweep2.yaml")
    (work / "out" / "sweep.json").unlink()  # this test is about the cell, not the folder's owner
    monkeypatch.setattr(kif.runner, "run", lambda *a, **k: pytest.fail("a cell ran"))
    rc, err = sweep_cli(capsys, sweep, "-o", work / "out")
    assert rc == 2 and len(err) == 1 and "ran with another config (train.learning_rate)" in err[0]
    assert "pass --accept-config-change to continue the cell with the new one" in err[0]
    seen = []
    monkeypatch.setattr(kif.runner, "run", lambda cfg, out_dir, **kw: seen.append(
        (out_dir.name, cfg.train.learning_rate, kw.get("accept_config_change"))) or FINISHED)
    rc, err = sweep_cli(capsys, sweep, "-o", work / "out", "--accept-config-change")
    assert rc == 0, err
    assert seen == [("seqlora_a_seed2", 1e-3, True)]


def test_accept_config_change_reaches_the_run(work, capsys):
    """End to end: the real run resumes the partial cell with the new learning rate."""
    cell = make_partial(work, seed=2)
    sweep = write_sweep(work, grid={**ONE, "seed": [2]}, set={"train.learning_rate": 1e-3}, name="sweep2.yaml")
    (work / "out" / "sweep.json").unlink()
    rc, err = sweep_cli(capsys, sweep, "-o", work / "out", "--accept-config-change")
    assert rc == 0, err
    res = read_results(cell)
    assert res["finished"] and res["resumed"] == 1
    assert yaml.safe_load((cell / "config.yaml").read_text())["train"]["learning_rate"] == 1e-3


# ---- one line, not a traceback ------------------------------------------------------------------

@pytest.mark.parametrize("content", [[1, 2], "a string", "TIMINGS"])
def test_edited_results_of_a_finished_cell_are_restored(work, no_run, capsys, content):
    """results.json a list, a string, or with timings that overflowed the ETA: the checkpoint is
    the record, so the sweep rewrites the file from it (no traceback, true numbers)."""
    path = work / "out" / CELL / "results.json"
    record = json.loads((work / "out" / CELL / "checkpoints" / "after-03" / "results.json").read_text())
    if content == "TIMINGS":
        content = {**json.loads(path.read_text()), "timings": {"total": 1e308, "setup": 1e308}}
    path.write_text(json.dumps(content))
    rc, err = sweep_cli(capsys, work / "sweep.yaml", "-o", work / "out")
    assert rc == 0, err
    assert json.loads(path.read_text()) == record


def test_sweep_file_that_is_a_folder(tmp_path, no_run, capsys):
    (tmp_path / "sweep.yaml").mkdir()
    rc, err = sweep_cli(capsys, tmp_path / "sweep.yaml", "-o", tmp_path / "out")
    assert rc == 2 and err == [f"kif: error: {tmp_path}/sweep.yaml: is a folder, not a sweep file"]


# ---- a generated corpus ------------------------------------------------------------------------

def _ckpt(w):
    return w / "out" / CELL / "checkpoints" / "after-03"


def _edit_json(path: Path, fn):
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


SWEEP_FILES = {  # name -> text of sweep.yaml
    "top-level list": "- 1\n- 2\n",
    "no grid": "base: base.yaml\n",
    "empty grid": "base: base.yaml\ngrid: {}\n",
    "empty values": "base: base.yaml\ngrid: {seed: []}\n",
    "label ..": "base: base.yaml\ngrid: {tasks: {'..': [cb, copa, sst2]}}\n",
    "label .": "base: base.yaml\ngrid: {tasks: {'.': [cb, copa, sst2]}}\n",
    "label x/y": "base: base.yaml\ngrid: {tasks: {'x/y': [cb, copa, sst2]}}\n",
    "label empty": "base: base.yaml\ngrid: {tasks: {'': [cb, copa, sst2]}}\n",
    "value ..": "base: base.yaml\ngrid: {order: ['..']}\n",
    "unknown key": "base: base.yaml\ngrids: {seed: [1]}\n",
    "bad YAML": "base: base.yaml\ngrid: {seed: [1, 2\n",
    "missing base": "base: nowhere.yaml\ngrid: {seed: [1]}\n",
    "deep nesting": "grid: " + "[" * 5000 + "]" * 5000 + "\n",
    "unknown method": "base: base.yaml\ngrid: {method: [seqlra]}\n",
}

CELL_EDITS = {  # name -> how to damage the finished cell (the sweep file is the original one)
    "method.json a list": lambda w: (_ckpt(w) / "method.json").write_text("[]"),
    "stages_done a string": lambda w: _edit_json(_ckpt(w) / "method.json", lambda m: {**m, "stages_done": "3"}),
    "checkpoint results a string": lambda w: (_ckpt(w) / "results.json").write_text('"done"'),
    "checkpoint timings overflow": lambda w: _edit_json(_ckpt(w) / "results.json",
                                                        lambda r: {**r, "timings": {"total": 1e308}}),
    "checkpoint finished flag 'no'": lambda w: _edit_json(_ckpt(w) / "results.json", lambda r: {**r, "finished": "no"}),
    "checkpoint AP out of range": lambda w: _edit_json(_ckpt(w) / "results.json", lambda r: {**r, "AP": 1e9}),
    "safetensors truncated": lambda w: (_ckpt(w) / "method.safetensors").write_bytes(b"\x08\x00"),
    "checkpoint renamed": lambda w: _ckpt(w).rename(_ckpt(w).with_name("after-02")),
    "checkpoint removed, results kept": lambda w: shutil.rmtree(_ckpt(w).parent),
    "config.yaml binary": lambda w: (w / "out" / CELL / "config.yaml").write_bytes(b"\xff\xfe\x00"),
    "config.yaml another config": lambda w: _edit_json_yaml(w / "out" / CELL / "config.yaml"),
    "tasks is a link": lambda w: _link_tasks(w),
    "sweep.json garbage": lambda w: (w / "out" / "sweep.json").write_text("{not json"),
    "sweep.json a list": lambda w: (w / "out" / "sweep.json").write_text("[]"),
    "sweep.json of another sweep": lambda w: _edit_json(
        w / "out" / "sweep.json",
        lambda s: {**s, "sweep_path": "/elsewhere.yaml", "sweep_file": "/elsewhere.yaml", "grid": {"seed": {"9": 9}}}),
}


def _edit_json_yaml(path: Path):
    cfg = yaml.safe_load(path.read_text())
    cfg["train"]["learning_rate"] = 0.5
    path.write_text(yaml.safe_dump(cfg))


def _link_tasks(w: Path):
    target = w / "elsewhere"
    shutil.move(w / "out" / CELL / "tasks", target)
    (w / "out" / CELL / "tasks").symlink_to(target)


@pytest.mark.parametrize("case", list(SWEEP_FILES) + list(CELL_EDITS))
def test_hostile_corpus_exit_2_one_line_nothing_changed(work, no_run, capsys, case):
    sweep = work / "sweep.yaml"
    if case in SWEEP_FILES:
        sweep.write_text(SWEEP_FILES[case])
    else:
        CELL_EDITS[case](work)
    before = snapshot(work)
    rc, err = sweep_cli(capsys, sweep, "-o", work / "out")
    assert rc == 2 and len(err) == 1 and err[0].startswith("kif: error: "), err
    assert snapshot(work) == before
