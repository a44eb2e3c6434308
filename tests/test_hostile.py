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
