"""kif sweep: a 2 × 2 × 2 grid on the tiny model, skip on rerun, resume after a kill, checks first."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

import kif.runner
from kif.cli import main
from kif.errors import KifError
from kif.io import load_tensors
from kif.sweep import Cell, load_sweep, remaining_seconds, run_sweep

from helpers import REPO, TINY_ARGS, read_results

# 8 train samples / batch 8 = 1 optimizer step per task, 4 test samples: ~2-3 s a cell
BASE = {**TINY_ARGS, "data": {**TINY_ARGS["data"], "train_samples": 8, "test_samples": 4}}
GRID = {"method": ["seqlora", "kiflora"], "tasks": {"a": ["cb", "copa", "sst2"], "b": ["sst2", "copa", "cb"]},
        "seed": [1, 2]}
CELLS = [f"{m}_{o}_seed{s}" for m in ("seqlora", "kiflora") for o in "ab" for s in (1, 2)]


def write_sweep(tmp, grid=GRID, **extra):
    (tmp / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "grid": grid, **extra}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def done(tmp_path_factory, data_dir):
    """The whole grid, run once through the CLI."""
    tmp = tmp_path_factory.mktemp("sweep")
    t0 = time.perf_counter()
    assert main(["sweep", str(write_sweep(tmp)), "-o", str(tmp / "out"), "-q"]) == 0
    return tmp, time.perf_counter() - t0


def test_grid_runs_every_cell(done):
    tmp, seconds = done
    out = tmp / "out"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(CELLS)
    for name in CELLS:
        method, order, seed = name.split("_")
        res = read_results(out / name)
        cfg = yaml.safe_load((out / name / "config.yaml").read_text())
        assert res["finished"] and res["method"] == method
        assert res["tasks"] == GRID["tasks"][order] and cfg["seed"] == int(seed[4:])
        assert cfg["data"]["train_samples"] == 8 and cfg["model"] == "tiny-llama" and cfg["order"] is None
    state = json.loads((out / "sweep.json").read_text())
    assert [c["name"] for c in state["cells"]] == CELLS  # grid order, the last key fastest
    assert all(c["status"] == "finished" and c["seconds"] > 0 for c in state["cells"])
    assert state["counts"]["finished"] == 8
    assert seconds < 120  # eight 3-task cells of the tiny model


def test_rerun_skips_finished_cells(done, monkeypatch, capsys):
    tmp, _ = done
    before = {n: (tmp / "out" / n / "results.json").stat().st_mtime_ns for n in CELLS}

    def no_training(*a, **k):
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(kif.runner, "run", no_training)
    t0 = time.perf_counter()
    assert main(["sweep", str(tmp / "sweep.yaml"), "-o", str(tmp / "out"), "-q"]) == 0
    assert time.perf_counter() - t0 < 10
    assert capsys.readouterr().out.count("finished ") == 8
    assert before == {n: (tmp / "out" / n / "results.json").stat().st_mtime_ns for n in CELLS}


def test_report_reads_the_sweep(done):
    """``kif report OUT`` finds the cells and aggregates them (the report's wiring and figures:
    tests/report/test_aggregate.py, which builds one)."""
    from kif.report import find_runs, load_run
    from kif.report.aggregate import paired_rows, seed_rows

    tmp, _ = done
    runs = [load_run(p) for p in find_runs([tmp / "out"])]
    assert sorted(r["run_name"] for r in runs) == sorted(CELLS)
    means = [r for r in seed_rows(runs) if r["kind"] == "mean"]
    assert [(r["arm"], r["seeds"]) for r in means] == [("kiflora", ["1", "2"]), ("seqlora", ["1", "2"])]
    assert [(r["arm"], r["reference"], r["pairs"]) for r in paired_rows(runs)] == [("kiflora", "seqlora", 4)]


def test_killed_cell_resumes(done, tmp_path):
    """SIGKILL in the second cell (the 5th optimizer step: task 2 of cell 2); the rerun skips
    cell 1, resumes cell 2 after its completed task and gives the uninterrupted adapter."""
    ref = done[0] / "out"
    sweep = write_sweep(tmp_path, grid={"method": ["seqlora"], "tasks": {"a": GRID["tasks"]["a"]}, "seed": [1, 2]})
    out = tmp_path / "out"
    env = {**os.environ, "KIF_FAULT": "train_step:5"}
    proc = subprocess.run([sys.executable, "-m", "kif.cli", "sweep", str(sweep), "-o", str(out), "-q"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert read_results(out / "seqlora_a_seed1")["finished"]
    partial = read_results(out / "seqlora_a_seed2")
    assert not partial["finished"] and partial["tasks_completed"] == 1
    state = {c["name"]: c["status"] for c in json.loads((out / "sweep.json").read_text())["cells"]}
    assert state == {"seqlora_a_seed1": "finished", "seqlora_a_seed2": "running"}  # as it was when killed

    calls = []

    def counted(cfg, out_dir, **kw):
        calls.append(out_dir.name)
        return kif.runner.run(cfg, out_dir, **kw)

    first = (out / "seqlora_a_seed1" / "results.json").stat().st_mtime_ns
    sw = run_sweep(sweep, out, show_progress=False, run_fn=counted)
    assert calls == ["seqlora_a_seed2"] and [c.status for c in sw.cells] == ["finished", "finished"]
    assert (out / "seqlora_a_seed1" / "results.json").stat().st_mtime_ns == first
    res = read_results(out / "seqlora_a_seed2")
    assert res["finished"] and res["resumed"] == 1
    assert res["matrix"] == read_results(ref / "seqlora_a_seed2")["matrix"]
    adapter = "tasks/03_sst2/adapter/adapter_model.safetensors"
    got, want = load_tensors(out / "seqlora_a_seed2" / adapter), load_tensors(ref / "seqlora_a_seed2" / adapter)
    assert got.keys() == want.keys() and all((got[k] == want[k]).all() for k in want)


def test_failing_cell_stops_the_sweep(data_dir, tmp_path, monkeypatch, capsys):
    calls = []

    def fake_run(cfg, out_dir, **kw):
        calls.append(out_dir.name)
        if len(calls) == 2:
            raise KifError(f"{out_dir}/data: something the user can fix")
        return {"finished": True, "AP": 50.0, "FWT": 1.0, "BWT": -2.0}

    monkeypatch.setattr(kif.runner, "run", fake_run)
    assert main(["sweep", str(write_sweep(tmp_path)), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"kif: error: sweep cell seqlora_a_seed2: {tmp_path}/out/seqlora_a_seed2/data: "
                   "something the user can fix"]
    assert calls == ["seqlora_a_seed1", "seqlora_a_seed2"]
    cells = json.loads((tmp_path / "out" / "sweep.json").read_text())["cells"]
    assert [c["status"] for c in cells[:3]] == ["finished", "failed", "pending"]
    assert cells[0]["AP"] == 50.0 and "something the user can fix" in cells[1]["error"]


@pytest.mark.parametrize("extra, grid, msg", [
    ({}, {**GRID, "seed": [1, 2], "train.epochs": [1, -1]}, "(cell seqlora_a_epochs--1_seed1): train.epochs: "
     "Input should be greater than 0"),
    ({"methods": {"kiflora": {"train": {"epocs": 2}}}}, GRID, "(cell kiflora_a_seed1): train.epocs: unknown key"),
    ({"methods": {"kiflora": {"method_args": {"gama": 0.5}}}}, GRID,
     "(cell kiflora_a_seed1): method_args.gama: unknown key (method 'kiflora')"),
    ({}, {**GRID, "method": ["seqlora", "kiflra"]}, "(cell kiflra_a_seed1): method: unknown method 'kiflra'"),
    ({}, {"method": ["seqlora"], "order": ["1", "99"]}, "(cell seqlora_99): benchmark long_sequence: unknown order '99'"),
    ({"set": {"bogus": 1}}, GRID, "(cell seqlora_a_seed1): bogus: unknown key"),
    ({"grids": {}}, GRID, "grids: unknown key"),
    ({"methods": {"olora": {}}}, GRID, "methods.olora: no cell runs this method"),
])
def test_bad_cell_fails_before_anything_runs(data_dir, tmp_path, monkeypatch, capsys, extra, grid, msg):
    monkeypatch.setattr(kif.runner, "run", lambda *a, **k: pytest.fail("a cell ran"))
    sweep = write_sweep(tmp_path, grid=grid, **extra)
    assert main(["sweep", str(sweep), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kif: error: {sweep}") and msg in err[0], err
    assert not (tmp_path / "out").exists()  # nothing written


def test_changed_config_of_a_started_cell_fails_first(done, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(kif.runner, "run", lambda *a, **k: pytest.fail("a cell ran"))
    src = done[0]
    sweep = write_sweep(tmp_path, set={"train.learning_rate": 0.1})
    assert main(["sweep", str(sweep), "-o", str(src / "out")]) == 2
    err = capsys.readouterr().err
    assert "seqlora_a_seed1/config.yaml: cell seqlora_a_seed1 ran with another config (train.learning_rate)" in err


def test_dry_run_lists_and_writes_nothing(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(kif.runner, "run", lambda *a, **k: pytest.fail("a cell ran"))
    assert main(["sweep", str(write_sweep(tmp_path)), "-o", str(tmp_path / "out"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and all(ln.startswith("pending ") for ln in lines)
    assert not (tmp_path / "out").exists()


def test_layers_base_set_method_grid(tmp_path):
    """base → set → methods[m] (config: replaces base) → grid; order clears tasks and back."""
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({**BASE, "train": {"epochs": 5}, "lora": {"r": 4}}))
    sweep = write_sweep(tmp_path, grid={"method": ["seqlora", "kiflora"], "order": ["1", "2"]},
                        set={"train": {"learning_rate": 0.01}, "data.test_samples": 2},
                        methods={"kiflora": {"config": "other.yaml", "eval.batch_size": 3,
                                             "method_args": {"gamma": 0.7}}})
    cells = {c.name: c.config for c in load_sweep(sweep, tmp_path / "out").cells}
    assert list(cells) == ["seqlora_1", "seqlora_2", "kiflora_1", "kiflora_2"]
    s, k = cells["seqlora_2"], cells["kiflora_1"]
    assert (s.order, s.tasks, s.train.learning_rate, s.data.test_samples, s.data.train_samples) == ("2", None, 0.01, 2, 8)
    assert (s.train.epochs, s.lora.r, s.eval.batch_size, s.method_args) == (1, 8, 8, {})
    assert (k.order, k.tasks, k.train.learning_rate, k.train.epochs, k.lora.r) == ("1", None, 0.01, 5, 4)
    assert (k.eval.batch_size, k.method_args, k.method) == (3, {"gamma": 0.7}, "kiflora")


def test_eta_is_the_median_run_time_of_each_method():
    def cell(method, status, run_seconds=None):
        return Cell(name=method, values={}, labels={"method": method}, config=None, status=status,
                    run_seconds=run_seconds)
    cells = [cell("seqlora", "finished", 100.0), cell("seqlora", "finished", 200.0), cell("kif", "finished", 400.0),
             cell("kif", "finished", 410.0), cell("kif", "finished", 1500.0),  # one kif cell slowed by another job
             cell("seqlora", "pending"), cell("kif", "partial"), cell("mtl", "pending")]
    # seqlora 150 + kif 410 + mtl (no finished mtl yet: the median of all five finished, 400)
    assert remaining_seconds(cells) == pytest.approx(150 + 410 + 400)
    assert remaining_seconds([cell("seqlora", "pending"), cell("kif", "partial")]) is None
    assert remaining_seconds(cells[:5]) == 0


def test_sweep_json_records_each_runs_own_time(done):
    tmp, _ = done
    state = json.loads((tmp / "out" / "sweep.json").read_text())
    for c in state["cells"]:
        res = read_results(tmp / "out" / c["name"])
        assert c["run_seconds"] == pytest.approx(res["timings"]["total"], abs=1e-3)


def test_the_gpu_sweep_file_validates(full_data, monkeypatch, tmp_path, capsys):
    """configs/paper/long_sequence_gpu_sweep.yaml (the paper's Long Sequence protocol, 3 orders ×
    9 methods) passes every check `kif sweep --dry-run` makes, on CPU, without running a cell."""
    from pathlib import Path

    path = REPO / "configs" / "paper" / "long_sequence_gpu_sweep.yaml"
    monkeypatch.setenv("KIF_DATA", str(full_data))
    monkeypatch.setattr(kif.runner, "run", lambda *a, **k: pytest.fail("a cell ran"))
    sweep = run_sweep(path, tmp_path / "out", dry_run=True, show_progress=False)
    methods = ["seqlora", "kiflora", "kif", "inclora", "olora", "ewc", "replay", "weight-ensemble", "mtl"]
    assert [c.name for c in sweep.cells] == [f"{m}_{o}" for o in "123" for m in methods]
    paper = load_sweep(path, tmp_path / "out").cells[0].config
    assert (paper.train.epochs, paper.train.learning_rate, paper.train.batch_size, paper.lora.r) == (10, 3e-4, 128, 8)
    assert {c.config.order for c in sweep.cells} == {"1", "2", "3"} and not (tmp_path / "out").exists()
