"""The contracts with one owner each: the results record, the method interface, config
validation at load (issue 14)."""
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import kif.methods
from kif.errors import ArtifactError, ConfigError
from kif.report import load_run
from kif.results import SCHEMA_VERSION, Results, load_results
from kif.runner import run
from helpers import FIXTURES, REPO, tiny_config


# ---- the results record ---------------------------------------------------------------------------

def test_results_written_before_the_schema_load():
    """tests/fixtures/results_v1_kif.json was written by kif at commit 6c8079e (no schema_version)."""
    raw = json.loads((FIXTURES / "results_v1_kif.json").read_text())
    assert "schema_version" not in raw
    res = load_results(FIXTURES / "results_v1_kif.json")
    assert res.schema_version == 1 and res.method == "kif" and res.tasks == ["cb", "copa"]
    assert res.matrix == [[0.0, 75.0], [0.0, 75.0]] and (res.AP, res.FWT, res.BWT) == (37.5, 75.0, 0.0)
    again = res.to_dict()
    assert {k: again[k] for k in raw} == raw  # every value as written, nothing lost or renamed


def test_report_reads_old_results(tmp_path):
    d = tmp_path / "old-run"
    d.mkdir()
    (d / "results.json").write_text((FIXTURES / "results_v1_kif.json").read_text())
    r = load_run(d)
    assert r["run_name"] == "old-run" and r["AP"] == 37.5 and r["joint"] is False


def test_newer_schema_is_one_line_error(tmp_path):
    raw = json.loads((FIXTURES / "results_v1_kif.json").read_text())
    raw["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "results.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError) as ei:
        load_results(tmp_path)
    msg = str(ei.value)
    assert f"schema_version {SCHEMA_VERSION + 1}" in msg and "results.json" in msg and "\n" not in msg


def test_record_task_updates_metrics_by_hand():
    res = Results(method="m", model="x", tasks=["a", "b"], matrix=[])
    res.record_task(0, [80.0, 10.0], None, {"task": "a"})
    assert (res.AP, res.FWT, res.BWT, res.tasks_completed) == (80.0, None, None, 1)
    res.record_task(1, [60.0, 90.0], None, {"task": "b"})
    # AP = (60 + 90) / 2; FWT = a[0][1] = 10; BWT = a[1][0] − a[0][0] = −20
    assert (res.AP, res.FWT, res.BWT, res.tasks_completed) == (75.0, 10.0, -20.0, 2)
    joint = Results(method="mtl", model="x", tasks=["a", "b"], matrix=[], joint=True)
    joint.record_task(0, [70.0, 80.0], None, {})
    assert (joint.AP, joint.FWT, joint.BWT, joint.tasks_completed) == (75.0, None, None, 2)


def test_unset_optional_fields_stay_out_of_the_file():
    d = Results(method="m", model="x", tasks=["a"], matrix=[]).to_dict()
    assert not {"zero_shot_ranked", "matrix_ranked", "ranked_metrics", "resumed"} & set(d)
    assert d["schema_version"] == SCHEMA_VERSION


# ---- the method interface: a new method is one file -----------------------------------------------

THROWAWAY = '''
import torch
from kif.methods.base import CLMethod, MethodOptions
from kif.methods.registry import register


@register
class HalfStep(CLMethod):
    """Sequential LoRA that halves its LoRA weights after each task (easy to check by hand)."""
    name = "halfstep-test"
    description = "test method"

    class Options(MethodOptions):
        factor: float = 0.5

    def after_task(self, k, task_dir):
        with torch.no_grad():
            for p in self.trainable().values():
                p.mul_(self.opts.factor)
        (task_dir / "own_artifact.txt").write_text(f"task {k}")
        return {"halved": True}
'''


def test_method_in_a_new_file_is_found_and_run(tmp_path, monkeypatch):
    """A module dropped into the methods package is registered without editing any list; the
    runner saves its adapter (the method only writes its own artifact)."""
    pkg = tmp_path / "extra_methods"
    pkg.mkdir()
    (pkg / "halfstep.py").write_text(textwrap.dedent(THROWAWAY))
    monkeypatch.setattr(kif.methods, "__path__", [*kif.methods.__path__, str(pkg)])
    monkeypatch.delitem(sys.modules, "kif.methods.halfstep", raising=False)
    assert "halfstep-test" in kif.methods.all_methods()
    cfg = tiny_config(method="halfstep-test", tasks=["cb", "copa"], method_args={"factor": 0.5})
    res = run(cfg, tmp_path / "run", show_progress=False)
    assert res["tasks_completed"] == 2 and [s["halved"] for s in res["per_task"]] == [True, True]
    for k, t in enumerate(["cb", "copa"]):
        tdir = tmp_path / "run" / "tasks" / f"{k + 1:02d}_{t}"
        assert (tdir / "own_artifact.txt").read_text() == f"task {k}"
        assert (tdir / "adapter" / "adapter_model.safetensors").is_file()  # saved by the runner
    with pytest.raises(ConfigError, match="method_args.factr: unknown key"):
        tiny_config(method="halfstep-test", method_args={"factr": 1})


def test_method_named_module_colon_class(tmp_path, monkeypatch):
    (tmp_path / "my_cl_method.py").write_text(textwrap.dedent(THROWAWAY).replace('"halfstep-test"', '"mine-test"'))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tiny_config(method="my_cl_method:HalfStep", method_args={"factor": 0.25})
    assert cfg.method_args == {"factor": 0.25}
    with pytest.raises(ConfigError, match="cannot import 'no_such_module:X'"):
        tiny_config(method="no_such_module:X")
    with pytest.raises(ConfigError, match="not a CLMethod"):
        tiny_config(method="json:dumps")


def test_extra_stage_is_trained_and_timed_by_the_runner(tmp_path, monkeypatch):
    """A method's ExtraStage (KIF-M's replay) is trained by the runner after after_task, with the
    stage's seed, config and hooks; its stats and seconds go into the task's entry; ``end`` runs
    also when training fails; the saved adapter is the model after the stage."""
    import math

    import torch

    import kif.runner
    from kif.io import load_tensors
    from kif.methods.base import ExtraStage
    from kif.runner import consolidate
    from test_baselines import examples, make, snapshot

    m = make("seqlora", tmp_path)
    steps, ended = [], []
    tcfg = m.ctx.cfg.train.model_copy(update={"epochs": 2})
    stage = ExtraStage("extra", examples("t1", 5), tcfg, 7, post_step_hook=lambda: steps.append(1),
                       end=lambda: ended.append(True))
    monkeypatch.setattr(m, "extra_stage", lambda k: stage if k == 1 else None)
    s0 = consolidate(m, 0, tmp_path / "k1")
    assert not [key for key in s0 if key.startswith("extra_")] and ended == [] and s0["method_s"] >= 0
    before = snapshot(m.trainable())
    s1 = consolidate(m, 1, tmp_path / "k2")
    assert s1["extra_examples"] == 5 and s1["extra_steps"] == 2 * math.ceil(5 / 2) == len(steps)
    assert s1["extra_lr_max"] == tcfg.learning_rate and s1["extra_s"] >= 0 and s1["method_s"] >= 0
    assert ended == [True] and any(not torch.equal(p, before[n]) for n, p in m.trainable().items())
    saved = load_tensors(tmp_path / "k2" / "adapter" / "adapter_model.safetensors")
    after = {n.replace(".default", ""): p for n, p in m.trainable().items()}
    assert all(torch.equal(t, after[n]) for n, t in saved.items())  # the adapter: after the stage

    def failing(*a, **kw):
        raise RuntimeError("stage failed")

    monkeypatch.setattr(kif.runner, "train_task", failing)
    with pytest.raises(RuntimeError, match="stage failed"):
        consolidate(m, 1, tmp_path / "k3")
    assert ended == [True, True]  # hooks are removed even so
    stage.examples = []
    assert consolidate(m, 1, tmp_path / "k4")["extra_examples"] == 0 and ended == [True, True, True]


def test_evaluation_routing_is_declared_by_the_method(monkeypatch):
    """``reuses_prefix_cache`` is a class attribute of the method (not of its model): SAPT and the
    prompt methods route an input by the whole of it; the evaluator and model selection then
    never build a shared-prefix KV cache, whatever eval.prefix_cache says."""
    from types import SimpleNamespace

    import kif.evaluation as ev
    from kif.config import EvalConfig
    from kif.data import Example
    from kif.encoding import Encoder
    from kif.models import load_model
    from kif.validation import Validator

    routed = {name for name, cls in kif.methods.all_methods().items() if not cls.reuses_prefix_cache}
    assert routed == {"sapt", "l2p", "progprompt", "lfpt5"}
    lm = load_model("tiny-llama")
    enc = Encoder(lm.tokenizer, False, False, 2)
    test = [Example(f"x{i}", f"A long shared instruction, the same for all. Input {i}. Answer:", ("yes",))
            for i in range(3)]
    evaluator = ev.SequenceEvaluator(SimpleNamespace(eval=EvalConfig(max_new_tokens=2)), enc, ["t"], {"t": test},
                                     {"t": "accuracy"}, {"t": ["yes"]}, [2])
    built = []
    real = ev._prefix_cache
    monkeypatch.setattr(ev, "_prefix_cache", lambda *a: built.append(1) or real(*a))
    evaluator.evaluate(lm.model, None, set(), reuses_prefix_cache=True)  # nothing wanted: nothing built
    with monkeypatch.context() as mp:
        mp.setattr(ev, "write_jsonl", lambda *a: None)
        evaluator.evaluate(lm.model, Path("unused"), {0}, reuses_prefix_cache=False)
        assert built == []
        evaluator.evaluate(lm.model, Path("unused"), {0})
        assert built == [1]
    assert Validator("score", enc, [(test, "accuracy")], [2], 2, EvalConfig(), reuses_prefix_cache=False).prefix_cache \
        is False
    assert Validator("score", enc, [(test, "accuracy")], [2], 2, EvalConfig()).prefix_cache is True


# ---- validation at load ---------------------------------------------------------------------------

def test_misspelt_method_arg_fails_before_any_data_or_model(tmp_path):
    """One line, exit 2, nothing written; only the config is read (no benchmark, no model)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: kiflora\nmodel: /nonexistent/model\nbenchmark: /nonexistent/bench.yaml\n"
                   "method_args: {temprature: 0.1}\n")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "kif.cli", "run", str(cfg), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == f"kif: error: {cfg}: method_args.temprature: unknown key (method 'kiflora')"
    assert not (tmp_path / "out").exists()
    print(f"misspelt method_args: exit 2 after {wall:.2f} s (python start + imports)")
