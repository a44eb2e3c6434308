"""Unseen-task evaluation (eval.unseen, paper Table III): category means, config checks,
an end-to-end run with its report, and a resume that keeps the zero-shot scores."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import kif
from kif.data.unseen import SUPERNI_UNSEEN_CATEGORIES, restrict_categories
from kif.errors import ConfigError, DataError
from kif.metrics import score_task
from kif.report import build_report
from kif.report.unseen import unseen_rows, unseen_table
from kif.results import Results, UnseenPoint
from kif.runner import load_sequence_data

from helpers import REPO, read_results, tiny_config

UNSEEN = {"benchmark": "superni_unseen", "tasks": ["task360", "task1451", "task889"]}
E2E = dict(tasks=["cb", "copa"], eval={"unseen": UNSEEN, "unseen_samples": 4, "unseen_every_task": True})


# ---- category means -----------------------------------------------------------------------------

def _hand_made_point():
    # Rouge-L F (rouge_score tokens, Porter stems): "cat sat down" vs "the cat sat": LCS 2 of 3 and 3
    # -> 66.67; "sunny day today here" vs "sunny day": P 2/4, R 2/2 -> 66.67 (best of the two references)
    per_task = {
        "a": score_task("rougeL", ["the cat sat", "dog"], [["the cat sat"], ["a cat"]]),  # 100, 0 -> 50
        "b": score_task("rougeL", ["cat sat down"], [["the cat sat"]]),  # 66.67
        "c": score_task("rougeL", ["sunny day today here", "yes"], [["nothing", "sunny day"], ["yes"]]),  # 83.33
    }
    return UnseenPoint.of(per_task, {"Dialog": ["a", "b"], "QA": ["c"]})


def test_category_means_on_hand_made_predictions():
    p = _hand_made_point()
    assert p.per_task["a"] == pytest.approx(50) and p.per_task["b"] == pytest.approx(200 / 3)
    assert p.per_task["c"] == pytest.approx(250 / 3)
    assert p.per_category == {"Dialog": pytest.approx(58.3333, abs=1e-4), "QA": pytest.approx(83.3333, abs=1e-4)}
    # the average is over categories (Table III's last column), not over tasks (66.67)
    assert p.mean == pytest.approx(70.8333, abs=1e-4)


def test_a_task_without_a_score_is_left_out_of_its_category():
    p = UnseenPoint.of({"a": 40.0, "b": None, "c": None}, {"X": ["a", "b"], "Y": ["c"]})
    assert p.per_category == {"X": 40.0, "Y": None} and p.mean == 40.0


def test_report_table_on_hand_made_records():
    point = _hand_made_point().model_dump()
    zero = UnseenPoint.of({"a": 10.0, "b": 20.0, "c": 0.0}, {"Dialog": ["a", "b"], "QA": ["c"]}).model_dump()
    record = {"benchmark": "mine", "tasks": ["a", "b", "c"], "categories": {"Dialog": ["a", "b"], "QA": ["c"]},
              "metrics": dict.fromkeys("abc", "rougeL"), "n_test": {"a": 2, "b": 1, "c": 2},
              "before": zero, "after": point}
    runs = [{"model": "m", "method": meth, "run_name": name, "unseen": record}
            for meth, name in (("kiflora", "r1"), ("olora", "r2"))]
    header, body = unseen_table(unseen_rows(runs), ["Dialog", "QA"])
    assert header == ["model / method", "run", "Dialog", "QA", "average"]
    assert body == [["zero-shot m", "r1", "15.00", "0.00", "7.50"],  # the zero-shot model once
                    ["kiflora", "r1", "58.33", "83.33", "70.83"],
                    ["olora", "r2", "58.33", "83.33", "70.83"]]


# ---- what gets evaluated, checked before a run writes anything ----------------------------------------

def test_superni_unseen_categories_match_its_notes(data_dir):
    notes = json.loads((data_dir / "superni_unseen" / "NOTES.json").read_text())["tasks"]
    from_notes = {}
    for folder, info in notes.items():
        from_notes.setdefault(info["category"], []).append(folder.split("_")[0])
    assert {c: sorted(ts) for c, ts in from_notes.items()} == \
        {c: sorted(ts) for c, ts in SUPERNI_UNSEEN_CATEGORIES.items()}


def test_quickstart_with_superni_unseen_resolves_all_15_tasks(data_dir):
    # the fixture's few dbpedia examples do not cover its test labels: the old quickstart's tasks
    cfg = kif.load_config(REPO / "configs" / "quickstart.yaml", ["eval.unseen=superni_unseen",
                                                                 "tasks=[sst2, copa, wic]", "data.test_samples=32"])
    u = load_sequence_data(cfg).unseen
    assert list(u.categories) == ["Dialog", "IE", "QA", "Sum", "SA"]
    assert all(len(ts) == 3 for ts in u.categories.values()) and len(u.tasks) == 15
    sizes = {t: len(kif.data.get_benchmark("superni_unseen").tasks[t].load("test")) for t in u.tasks}
    assert all(len(u.test[t]) == min(32, sizes[t]) for t in u.tasks)  # data.test_samples caps them
    assert set(u.metric_names.values()) == {"rougeL"}


def test_restricted_task_list_keeps_builtin_categories():
    got = restrict_categories(SUPERNI_UNSEEN_CATEGORIES, ["task889", "task360", "task1411"])
    assert got == {"Dialog": ["task360"], "IE": ["task1411"], "SA": ["task889"]}
    assert restrict_categories(None, ["x", "y"]) == {"x": ["x"], "y": ["y"]}


def test_category_map_and_full_folder_names(data_dir):
    cfg = tiny_config(eval={"unseen": {"benchmark": "superni_unseen", "categories": {
        "talk": ["task360_spolin_yesand_response_generation"], "rest": ["task889", "task041"]}},
        "unseen_samples": 5})
    u = load_sequence_data(cfg).unseen
    assert u.categories == {"talk": ["task360"], "rest": ["task889", "task041"]}
    assert [len(u.test[t]) for t in u.tasks] == [5, 5, 5]


@pytest.mark.parametrize("unseen, words", [
    ({"benchmark": "superni_unseen", "tasks": ["task360"], "categories": {"x": ["task360"]}}, "not both"),
    ({"benchmark": "superni_unseen", "categories": {"x": []}}, "no tasks"),
    ({"tasks": ["task360"]}, "eval.unseen.benchmark"),
    (3, "a benchmark name or a mapping"),
])
def test_bad_unseen_config_is_one_line_at_load(unseen, words):
    with pytest.raises(ConfigError, match=words):
        tiny_config(eval={"unseen": unseen})


def test_unknown_unseen_task_and_trained_task_are_refused(data_dir):
    with pytest.raises(ConfigError, match="eval.unseen.tasks: .*unknown task 'task1'"):
        load_sequence_data(tiny_config(eval={"unseen": {"benchmark": "superni_unseen", "tasks": ["task1"]}}))
    same = tiny_config(benchmark="superni", tasks=["task1572", "task363"],
                       eval={"unseen": {"benchmark": "superni", "tasks": ["task002", "task363"]}})
    with pytest.raises(ConfigError, match="task363 are in the training sequence"):
        load_sequence_data(same)


def test_held_out_tasks_cannot_be_trained_on(data_dir):
    with pytest.raises(DataError, match="held-out task .*never train on it"):
        load_sequence_data(tiny_config(benchmark="superni_unseen", tasks=["task360"]))


def test_a_run_without_unseen_writes_no_unseen_field():
    r = Results(method="seqlora", model="m", tasks=["a"], matrix=[])
    assert "unseen" not in r.to_dict()
    assert tiny_config().eval.unseen is None


# ---- end to end (tiny-llama) ------------------------------------------------------------------------

def _file_mean(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sum(r["score"] for r in rows) / len(rows), len(rows)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("unseen") / "run"
    kif.run(tiny_config(**E2E), out, show_progress=False)
    return out


def test_run_writes_before_after_and_every_task(e2e):
    res = read_results(e2e)
    u = res["unseen"]
    assert u["tasks"] == ["task360", "task1451", "task889"]
    assert u["categories"] == {"Dialog": ["task360"], "IE": ["task1451"], "SA": ["task889"]}
    assert u["n_test"] == dict.fromkeys(u["tasks"], 4) and set(u["metrics"].values()) == {"rougeL"}
    assert len(u["after_each"]) == 2 and u["after_each"][1] == u["after"]
    points = {"zero_shot": u["before"], "after": u["after"], "after_task1": u["after_each"][0]}
    dirs = {"zero_shot": e2e / "unseen" / "zero_shot", "after": e2e / "unseen" / "after",
            "after_task1": e2e / "tasks" / "01_cb" / "unseen"}
    for name, point in points.items():
        for t in u["tasks"]:
            mean, n = _file_mean(dirs[name] / f"{t}.jsonl")
            assert n == 4 and point["per_task"][t] == pytest.approx(mean, abs=1e-4)
        assert point["per_category"] == {"Dialog": point["per_task"]["task360"],
                                         "IE": point["per_task"]["task1451"], "SA": point["per_task"]["task889"]}
        assert point["mean"] == pytest.approx(sum(point["per_task"].values()) / 3, abs=1e-4)
    assert "unseen_zero_shot_eval" in res["timings"] and "unseen_eval_s" in res["per_task"][1]
    assert not (e2e / "tasks" / "02_copa" / "unseen").exists()  # the last point is unseen/after
    # never trained on: the training sets are the sequence's
    assert res["tasks"] == ["cb", "copa"] and set(res["n_train"]) == {"cb", "copa"}


def _kif(args, fault=None):
    env = {k: v for k, v in os.environ.items() if k != "KIF_FAULT"}
    if fault:
        env["KIF_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "kif.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_resume_keeps_zero_shot_scores_and_report_shows_table_iii(e2e, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(**E2E).model_dump(mode="json")))
    out = tmp_path / "out"
    # evaluations: 2 + 3 zero-shot, 2 + 3 after cb, 2 after copa, then the final unseen ones: die in the 2nd
    killed = _kif(["run", str(cfg), "-o", str(out), "-q"], fault="eval:14")
    assert killed.returncode == -9, killed.stderr
    assert read_results(out)["tasks_completed"] == 1  # killed inside the last stage
    zero_file = out / "unseen" / "zero_shot" / "task360.jsonl"
    stamp = zero_file.stat().st_mtime_ns
    resumed = _kif(["run", str(cfg), "-o", str(out), "-q"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "unseen tasks zero-shot" not in resumed.stderr
    assert zero_file.stat().st_mtime_ns == stamp  # not evaluated again
    got, want = read_results(out), read_results(e2e)
    assert got["resumed"] == 1 and got["unseen"] == want["unseen"]

    rep = _kif(["report", str(e2e), str(out), "-o", str(tmp_path / "report")])
    assert rep.returncode == 0, rep.stderr
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Unseen tasks (Table III)" in md
    assert "| model / method | run | Dialog | IE | SA | average |" in md
    rows = json.loads((tmp_path / "report" / "unseen.json").read_text())
    assert [r["row"] for r in rows] == ["zero-shot", "after", "after"]  # the zero-shot model once
    assert rows[1]["per_category"] == want["unseen"]["after"]["per_category"]
    assert md.count("| zero-shot tiny-llama |") == 1


def test_kif_benchmarks_lists_the_held_out_test_splits(data_dir):
    from kif.data.benchmarks import describe_benchmark

    lines = describe_benchmark(kif.data.get_benchmark("superni_unseen"))
    assert len(lines) == 16 and lines[1].startswith("  task360: rougeL; test 8;")  # the fixture has 8
