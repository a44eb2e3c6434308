"""The run folder's one owner (kif.rundir.RunDir), the one reading ladder (kif.io.read_json /
read_yaml) and the results record's own range checks: hand-made folders and files, no model."""
from __future__ import annotations

import json

import pytest

from kif.errors import ArtifactError, ConfigError
from kif.io import read_json, read_yaml
from kif.results import Results
from kif.rundir import ENTRIES, RunDir

RECORD = {"method": "seqlora", "model": "tiny", "tasks": ["cb", "copa"], "matrix": [[50.0, 25.0]],
          "tasks_completed": 1, "timings": {"total": 3.5}}


def test_layout(tmp_path):
    rd = RunDir(tmp_path)
    assert rd.config_file == tmp_path / "config.yaml" and rd.results_file == tmp_path / "results.json"
    assert rd.task_dir(0, "cb") == tmp_path / "tasks" / "01_cb"
    assert rd.log_dir(1, "copa") == tmp_path / "logs" / "02_copa"
    assert rd.predictions(None) == tmp_path / "zero_shot" / "predictions"
    assert rd.predictions(1, "copa") == tmp_path / "tasks" / "02_copa" / "predictions"
    assert rd.unseen_predictions(None, "", last=False) == tmp_path / "unseen" / "zero_shot"
    assert rd.unseen_predictions(1, "copa", last=True) == tmp_path / "unseen" / "after"
    assert rd.unseen_predictions(0, "cb", last=False) == tmp_path / "tasks" / "01_cb" / "unseen"
    assert rd.checkpoint_dir(3) == tmp_path / "checkpoints" / "after-03"
    assert rd.rescored_file("f1", None, False) == tmp_path / "results.f1.json"
    assert rd.rescored_file(None, "strict", True) == tmp_path / "results.rescored.strict.per_example.json"
    assert set(ENTRIES) == {"checkpoints", "tasks", "zero_shot", "logs", "unseen", "results.json", "config.yaml"}
    with pytest.raises(ConfigError, match="path separator"):
        rd.task_dir(0, "../x")


def test_task_dirs_in_sequence_order(tmp_path):
    for name in ("10_x_y", "02_copa", "01_cb", "100_z", "notes", "03_"):
        (tmp_path / "tasks" / name).mkdir(parents=True)
    (tmp_path / "tasks" / "04_file").write_text("")
    assert [(t, p.name) for t, p in RunDir(tmp_path).task_dirs()] == [
        ("cb", "01_cb"), ("copa", "02_copa"), ("x_y", "10_x_y"), ("z", "100_z")]
    assert RunDir(tmp_path / "none").task_dirs() == []


@pytest.mark.parametrize("text, expected", [(None, None), ("", None), ("seed: 3\n", {"seed": 3})])
def test_read_config_absent_or_empty_is_none(tmp_path, text, expected):
    if text is not None:
        (tmp_path / "config.yaml").write_text(text)
    assert RunDir(tmp_path).read_config() == expected


@pytest.mark.parametrize("text, words", [
    (None, "kif config not found; cannot check the run to resume"),
    ("", "not a kif config (an empty file); cannot check the run to resume"),
    ("[1, 2]\n", "not a kif config (its top level must be a mapping of keys, got list); cannot check"),
    ("seed: [1\n", "not valid YAML"),
])
def test_a_resume_requires_a_config_mapping(tmp_path, text, words):
    if text is not None:
        (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ArtifactError) as e:
        RunDir(tmp_path).read_config(required=True)
    assert str(e.value).startswith(f"{tmp_path / 'config.yaml'}: ") and words in str(e.value)
    assert "\n" not in str(e.value)


def test_oversized_config_is_refused_unparsed(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 1\n" + "#" * (1 << 20))
    with pytest.raises(ArtifactError, match="larger than 1 MB; not a kif config"):
        RunDir(tmp_path).read_config()


def test_restore_results_rewrites_only_what_differs(tmp_path):
    rd, record = RunDir(tmp_path), Results.from_dict(RECORD)
    rd.restore_results(record)  # missing -> written
    written = rd.results_file.read_bytes()
    assert json.loads(written) == record.to_dict()
    rd.restore_results(record)  # intact -> untouched
    assert rd.results_file.read_bytes() == written
    for damage in ('{"method": "ki', "[1, 2]", json.dumps({**record.to_dict(), "AP": 99.0})):
        rd.results_file.write_text(damage)
        rd.restore_results(record, lock="cell folder")
        assert rd.results_file.read_bytes() == written
    assert not (tmp_path / ".kif.lock").exists()  # the lock was released


def test_checkpoint_round_trip_keeps_the_newest_only(tmp_path):
    import torch

    rd, record = RunDir(tmp_path), Results.from_dict(RECORD)
    rd.save_checkpoint(0, {"method.a": torch.zeros(2)}, {"stages_done": 0}, record.to_dict())
    rd.save_checkpoint(1, {"method.a": torch.ones(2)}, {"stages_done": 1}, record.to_dict())
    assert rd.latest_checkpoint() == rd.checkpoint_dir(1)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["after-01"]
    tensors, meta, results = rd.load_checkpoint(rd.latest_checkpoint())
    assert tensors["method.a"].tolist() == [1.0, 1.0] and meta == {"stages_done": 1} and results == record
    (rd.checkpoint_dir(1) / "method.json").unlink()
    with pytest.raises(ArtifactError, match="method.json: checkpoint file not found; the run directory is damaged"):
        rd.load_checkpoint(rd.checkpoint_dir(1))


def test_discard_removes_exactly_what_kif_wrote(tmp_path):
    for name in ("tasks/01_cb", "checkpoints/after-00", "mine"):
        (tmp_path / name).mkdir(parents=True)
    for name in ("results.json", "config.yaml", "notes.txt"):
        (tmp_path / name).write_text("x")
    RunDir(tmp_path).discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt"]


# ---- the one reading ladder ------------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (None, "results file not found"),
    ("folder", "is a folder, not a results file"),
    (b'{"a": "\xff"}', "not valid JSON ('utf-8' codec can't decode byte 0xff"),
    (b'{"a": 1', "not valid JSON (line 1: Expecting ',' delimiter)"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_read_json_failures_are_one_line_naming_the_file(tmp_path, content, words):
    path = tmp_path / "results.json"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ArtifactError) as e:
        read_json(path, "results file", note="; more")
    assert str(e.value).startswith(f"{path}: ") and words in str(e.value) and str(e.value).endswith("; more")
    assert "\n" not in str(e.value)


def test_read_yaml_mapping_and_error_type(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("")
    assert read_yaml(path, "sweep file", mapping=True) is None  # empty: the caller decides
    path.write_text("- a\n")
    with pytest.raises(ConfigError, match=r"s.yaml: not a sweep file \(its top level must be a mapping of keys, "
                                          r"got list\)$"):
        read_yaml(path, "sweep file", error=ConfigError, mapping=True)


# ---- the results record checks its own ranges --------------------------------------------------------

@pytest.mark.parametrize("edit, words", [
    (lambda d: d["matrix"][0].__setitem__(1, 100.5), "'matrix[0][1]' must be a score from 0 to 100 (or null), got 100.5"),
    (lambda d: d.update(zero_shot=[-1.0, 0.0]), "'zero_shot[0]' must be a score from 0 to 100"),
    (lambda d: d.update(AP=1e300), "'AP' must be between -100 and 100, got 1e+300"),
    (lambda d: d.update(BWT=float("inf")), "'BWT' must be a finite number, got inf"),
    (lambda d: d["timings"].update(total=1e10), "'timings.total' must be a plausible number of seconds"),
    (lambda d: d.update(adapter_bytes=-1), "'adapter_bytes' must be a plausible size, got -1"),
    (lambda d: d.update(per_task=[{"task": "cb", "loss": float("nan")}]), "'per_task[0].loss' must be a finite"),
])
def test_out_of_range_results_name_the_field(edit, words):
    data = json.loads(json.dumps(RECORD))
    edit(data)
    with pytest.raises(ArtifactError) as e:
        Results.from_dict(data, "run/results.json")
    assert str(e.value).startswith(f"run/results.json: {words}")


def test_scores_at_the_bounds_are_valid():
    data = {**RECORD, "matrix": [[0.0, 100.0]], "zero_shot": [None, 100.0], "AP": -100.0, "BWT": 100.0}
    assert Results.from_dict(data).matrix == [[0.0, 100.0]]
