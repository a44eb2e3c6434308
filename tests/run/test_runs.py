"""End-to-end runs on real Long Sequence tasks with tiny models (CPU, seconds)."""
import json

import pytest
import torch

from kif.core import SkillUnits, accumulate_importance, fuse
from kif.io import load_tensors
from kif.metrics import cl_metrics
from kif.runner import run

from helpers import read_results, tiny_config

pytestmark = pytest.mark.slow  # whole runs: `pytest -m "not slow"` leaves them out


@pytest.fixture(scope="module")
def kiflora_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("kiflora")
    run(tiny_config(method="kiflora"), out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def kif_t5_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("kif_t5")
    run(tiny_config(method="kif", model="tiny-t5"), out, show_progress=False)
    return out


@pytest.mark.parametrize("fixture", ["kiflora_run", "kif_t5_run"])
def test_results_schema_and_metrics(fixture, request):
    out = request.getfixturevalue(fixture)
    res = read_results(out)
    assert res["tasks"] == ["cb", "copa", "sst2"] and res["tasks_completed"] == 3
    assert len(res["zero_shot"]) == 3 and len(res["matrix"]) == 3
    assert all(len(row) == 3 and all(0 <= v <= 100 for v in row) for row in res["matrix"])
    assert res["metrics"] == {"cb": "accuracy", "copa": "accuracy", "sst2": "accuracy"}
    assert {k: res[k] for k in ("AP", "FWT", "BWT")} == cl_metrics(res["matrix"])
    assert res["n_train"] == {"cb": 16, "copa": 16, "sst2": 16} and res["n_test"]["cb"] == 8
    assert res["adapter_bytes"] > 0 and res["timings"]["total"] > 0
    for stats in res["per_task"]:  # token counts: answers (+ EOS) within all real input tokens
        assert 0 < stats["target_tokens_per_epoch"] < stats["input_tokens_per_epoch"]
    for k, t in enumerate(res["tasks"]):
        tdir = out / "tasks" / f"{k + 1:02d}_{t}"
        for name in ("adapter", "adapter_trained"):
            assert (tdir / name / "adapter_config.json").is_file()
        rows = [json.loads(line) for line in (tdir / "predictions" / "sst2.jsonl").read_text().splitlines()]
        assert len(rows) == 8 and set(rows[0]) == {"id", "prediction", "references", "score"}
        # the matrix entry is the mean of the per-sample scores that were written
        assert res["matrix"][k][2] == pytest.approx(sum(r["score"] for r in rows) / 8, abs=1e-3)
    assert (out / "config.yaml").is_file()
    # the kif source that produced it: this checkout's commit (tests/run/test_provenance.py), or None
    from kif.provenance import source_commit
    assert res["kif_commit"] == source_commit()


def test_adapter_loads_with_peft(kiflora_run):
    from peft import PeftModel

    from kif.models import load_model

    lm = load_model("tiny-llama")
    model = PeftModel.from_pretrained(lm.model, kiflora_run / "tasks" / "03_sst2" / "adapter")
    saved = load_tensors(kiflora_run / "tasks" / "03_sst2" / "adapter" / "adapter_model.safetensors")
    assert len(saved) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    name, value = next(iter(saved.items()))
    loaded = dict(model.named_parameters())
    match = [p for n, p in loaded.items() if n.replace(".default", "").endswith(name.split("base_model.model.")[-1])]
    assert match and torch.equal(match[0].detach(), value)


def _adapter(path):
    return load_tensors(path / "adapter_model.safetensors")


@pytest.mark.parametrize("fixture,mode,kind", [("kiflora_run", "adaptive", "rank1"),
                                               ("kif_t5_run", "static", "matrix")])
def test_fusion_rederived_from_saved_artifacts(fixture, mode, kind, request):
    """f̂_k from the saved f_k, f̂_{k-1}, I(Û_{k-1}) and I(U_k) equals the saved fused adapter."""
    out = request.getfixturevalue(fixture)
    tasks = sorted((out / "tasks").iterdir())
    for k in range(1, 3):
        prev_dir, cur_dir = tasks[k - 1], tasks[k]
        prev_fused, trained, fused = (_adapter(prev_dir / "adapter"), _adapter(cur_dir / "adapter_trained"),
                                      _adapter(cur_dir / "adapter"))
        units = SkillUnits.lora_rank1(trained) if kind == "rank1" else SkillUnits.matrix_level(trained)
        prev_scores = units.scores_from_dict(load_tensors(prev_dir / "scores_accumulated.safetensors"))
        cur_scores = units.scores_from_dict(load_tensors(cur_dir / "scores_current.safetensors"))
        hp = {"temperature": 0.15} if mode == "adaptive" else {"top_fraction": 0.2, "gamma": 0.7}  # defaults
        rederived, w = fuse(units, prev_fused, trained, prev_scores, cur_scores, mode, **hp)
        for name in fused:
            torch.testing.assert_close(rederived[name], fused[name], atol=1e-6, rtol=0)
        saved_w = units.scores_from_dict(load_tensors(cur_dir / "fusion_weights.safetensors"))
        torch.testing.assert_close(w, saved_w)
        # eq. 13: the saved accumulated scores follow from the previous ones
        acc_saved = units.scores_from_dict(load_tensors(cur_dir / "scores_accumulated.safetensors"))
        torch.testing.assert_close(accumulate_importance(prev_scores, cur_scores, 0.7), acc_saved)
        assert not any(torch.equal(trained[n], fused[n]) for n in fused if "lora_A" in n) or mode == "static"


def test_first_task_fused_equals_trained(kiflora_run):
    first = sorted((kiflora_run / "tasks").iterdir())[0]
    a, b = _adapter(first / "adapter"), _adapter(first / "adapter_trained")
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not (first / "fusion_weights.safetensors").exists()


def test_seqlora_on_tiny_t5_cli(tmp_path, data_dir, capsys):
    from kif.cli import main

    out = tmp_path / "seq"
    args = ["run", "-q", "-o", str(out), "--set", "method=seqlora", "--set", "model=tiny-t5",
            "--set", "tasks=[cb,copa,sst2]", "--set", "data.train_samples=8", "--set", "data.test_samples=4",
            "--set", "train.epochs=1", "--set", "eval.max_new_tokens=4"]
    assert main(args) == 0
    res = read_results(out)
    assert res["method"] == "seqlora" and len(res["matrix"]) == 3
    assert f"{out}/results.json" in capsys.readouterr().out
    # the same command again finds the run complete; another config is refused
    assert main(args) == 0
    assert main(args + ["--set", "seed=7"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_minimal_eval_mode_gives_identical_metrics(kiflora_run, tmp_path, data_dir):
    """eval.mode minimal evaluates a[k][k], a[k][k+1] and the last row only: same AP/FWT/BWT."""
    out = tmp_path / "minimal"
    res = run(tiny_config(method="kiflora", eval={"mode": "minimal"}), out, show_progress=False)
    full = read_results(kiflora_run)
    assert (res["AP"], res["FWT"], res["BWT"]) == (full["AP"], full["FWT"], full["BWT"])
    assert res["zero_shot"] == [None, None, None]
    assert res["matrix"][0] == [full["matrix"][0][0], full["matrix"][0][1], None]
    assert res["matrix"][1] == [None, full["matrix"][1][1], full["matrix"][1][2]]
    assert res["matrix"][2] == full["matrix"][2]
    assert not (out / "tasks" / "01_cb" / "predictions" / "sst2.jsonl").exists()


def test_rank_labels_reported_next_to_generation(tmp_path, data_dir):
    out = tmp_path / "ranked"
    res = run(tiny_config(method="seqlora", tasks=["cb", "copa"], eval={"rank_labels": True}), out,
              show_progress=False)
    assert len(res["zero_shot_ranked"]) == 2 and len(res["matrix_ranked"]) == 2
    assert set(res["ranked_metrics"]) == {"AP", "FWT", "BWT"}
    rows = [json.loads(x) for x in (out / "tasks" / "02_copa" / "predictions" / "copa.jsonl").read_text().splitlines()]
    assert all(r["ranked"] in ("A", "B") for r in rows)
    acc = 100 * sum(r["ranked"] == r["references"][0] for r in rows) / len(rows)
    assert res["matrix_ranked"][1][1] == pytest.approx(acc, abs=1e-3)


def test_tensorboard_logs_loss_and_importance(tmp_path, data_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    run(tiny_config(method="kiflora", tasks=["cb", "copa"], train={"report_to": ["tensorboard"], "logging_steps": 1},
                    attn_implementation="eager"), out, show_progress=False)
    acc = EventAccumulator(str(out / "logs" / "02_copa"), size_guidance={"histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "train/loss" in tags["scalars"]
    assert {"importance/current", "importance/accumulated", "fusion/weight_on_past"} <= set(tags["histograms"])


def test_track_first_adds_the_first_task_to_minimal_rows():
    """eval.track_first: a[k][0] after every task too (the task-1 trajectory), nothing else."""
    from types import SimpleNamespace

    from kif.config import EvalConfig
    from kif.evaluation import SequenceEvaluator

    enc = SimpleNamespace(prompt_ids=lambda prompt: [1])
    tasks = ["a", "b", "c", "d"]

    def wanted(**kw):
        ev = SequenceEvaluator(SimpleNamespace(eval=EvalConfig(**kw)), enc, tasks, {t: [] for t in tasks},
                               {t: "accuracy" for t in tasks}, {t: [] for t in tasks}, [0])
        return [sorted(ev.wanted_after(k, 4)) for k in range(4)]

    assert wanted(mode="minimal") == [[0, 1], [1, 2], [2, 3], [0, 1, 2, 3]]
    assert wanted(mode="minimal", track_first=True) == [[0, 1], [0, 1, 2], [0, 2, 3], [0, 1, 2, 3]]
    assert wanted(mode="full", track_first=True) == [[0, 1, 2, 3]] * 4
