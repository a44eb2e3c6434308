"""`kif rescore`: a run's stored predictions scored again equal a fresh run scored that way;
scores and AP/FWT/BWT kept unrounded. The "runs" here are the runner's evaluation phases
(zero-shot row, one row per task, results.json, predictions files) driven by a scripted
model whose answers are written by hand, so every number is known."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kif.cli import main
from kif.data import Example, TaskSpec
from kif.evaluation import SequenceEvaluator
from kif.metrics import describe_normalization
from kif.rescore import rescore_run
from kif.results import Results, load_results
from kif.rundir import task_dir_name
from kif.runner import scoring_record

WORDS = ["<pad>", "<eos>", "red", "house", "the", "blue", "car", "north", "south"]
W = {w: i for i, w in enumerate(WORDS)}
# task a: 14 items "the red house"; task b: 2 turns of 2 slots (grouped)
A_REF, B_REFS = "the red house", [("t1", "north"), ("t1", "south"), ("t2", "north"), ("t2", "blue")]


class _Scripted(torch.nn.Module):
    """Answers prompt token p with ``script[p]`` (words), then EOS."""

    def __init__(self, script: dict[int, str]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.script = script

    def generate(self, input_ids, attention_mask, **kw):
        rows = [ids + [W[w] for w in self.script[ids[-1]].split()] + [1] for ids in input_ids.tolist()]
        width = max(map(len, rows))
        return torch.tensor([r + [1] * (width - len(r)) for r in rows])


def _examples():
    a = [Example(f"a{i}", str(100 + i), (A_REF,)) for i in range(14)]
    b = [Example(f"b{i}", str(200 + i), (ref,), g) for i, (g, ref) in enumerate(B_REFS)]
    return {"a": a, "b": b}


def _script(a_right: int, a_partial: int, b_answers: list[str]) -> _Scripted:
    """a: ``a_right`` items exactly right, ``a_partial`` "red house" (Rouge-L 80, not exact), rest "car"."""
    script = {100 + i: A_REF if i < a_right else "red house" if i < a_right + a_partial else "car"
              for i in range(14)}
    script.update({200 + i: w for i, w in enumerate(b_answers)})
    return _Scripted(script)


STAGES = [_script(0, 0, ["car"] * 4),                           # zero-shot
          _script(13, 1, ["car"] * 4),                          # after task a
          _script(12, 2, ["north", "south", "north", "car"])]   # after task b: t1 right, t2 not


def fresh_run(out: Path, metric: str, normalization: str = "harness") -> Results:
    """Evaluate the scripted stages as `kif run` does and write OUT/results.json."""
    test = _examples()
    specs = {"a": TaskSpec("a", out, metric),
             "b": TaskSpec("b", out, metric, group_by=SimpleNamespace(describe=lambda: "field turn"))}
    cfg = SimpleNamespace(eval=SimpleNamespace(mode="full", track_first=False, rank_labels=False, precision="fp32",
                                               batch_size=4, max_new_tokens=8, prefix_cache=False))
    tok = SimpleNamespace(pad_token_id=0, decode=lambda ids, skip_special_tokens: " ".join(WORDS[i] for i in ids))
    encoder = SimpleNamespace(tokenizer=tok, is_seq2seq=False, prompt_ids=lambda p: [int(p)])
    ev = SequenceEvaluator(cfg, encoder, ["a", "b"], test, {t: s.scoring(normalization) for t, s in specs.items()},
                           {"a": [], "b": []}, [1], {"a": False, "b": False})
    res = Results(method="seqlora", model="scripted", tasks=["a", "b"], matrix=[],
                  metrics={t: s.metric_label for t, s in specs.items()}, n_test={"a": 14, "b": 4},
                  normalization=describe_normalization(normalization),
                  scoring={t: scoring_record(s, normalization) for t, s in specs.items()})
    res.zero_shot, _ = ev.evaluate(STAGES[0], out / "zero_shot" / "predictions", {0, 1})
    for k, t in enumerate(["a", "b"]):
        row, _ = ev.evaluate(STAGES[k + 1], out / "tasks" / task_dir_name(k, t) / "predictions", {0, 1})
        res.record_task(k, row, None, {"task": t})
    res.finished = True
    res.write(out / "results.json")
    return res


def test_scores_and_metrics_are_unrounded(tmp_path):
    res = fresh_run(tmp_path, "accuracy")
    assert res.matrix == [[100 * 13 / 14, 0.0], [100 * 12 / 14, 50.0]]  # 92.857142857..., not 92.8571
    assert res.BWT == pytest.approx(-100 / 14, abs=1e-12)  # -7.142857142857..., not -7.1428
    assert res.AP == pytest.approx((100 * 12 / 14 + 50) / 2, abs=1e-12)
    assert load_results(tmp_path).BWT == res.BWT  # stored as computed


def _numbers(r: Results):
    return r.zero_shot, r.matrix, r.AP, r.FWT, r.BWT


@pytest.mark.parametrize("metric, normalization", [("rougeL", None), ("f1", None), ("accuracy", "lower_strip")])
def test_rescore_equals_a_fresh_run(tmp_path, metric, normalization):
    run = fresh_run(tmp_path / "acc", "accuracy")
    want = fresh_run(tmp_path / "fresh", metric, normalization or "harness")
    got = rescore_run(tmp_path / "acc", metric, normalization)
    assert _numbers(got) == _numbers(want)
    assert (_numbers(got) != _numbers(run)) == (metric != "accuracy")  # another metric: other numbers
    assert got.metrics["b"].startswith(metric) and got.metrics["b"].endswith("joint by field turn")
    assert got.scoring == want.scoring and got.rescored["metric"] == metric


def test_rescore_cli_writes_beside_the_run_and_reports(tmp_path, capsys):
    fresh_run(tmp_path / "run", "accuracy")
    before = (tmp_path / "run" / "results.json").read_bytes()
    assert main(["rescore", str(tmp_path / "run"), "--metric", "rougeL"]) == 0
    out = tmp_path / "run" / "results.rougeL.json"
    assert capsys.readouterr().out.split()[0] == str(out)
    assert (tmp_path / "run" / "results.json").read_bytes() == before  # the run's own record untouched
    rescored = json.loads(out.read_text())
    # a: 12 exact + 2 "red house" (Rouge-L F 80) of 14; b: joint over turns, t1 right
    assert rescored["matrix"][1] == pytest.approx([(12 * 100 + 2 * 80) / 14, 50.0])
    # slot accuracy instead of joint accuracy: 3 of 4 slots right
    assert main(["rescore", str(tmp_path / "run"), "--per-example"]) == 0
    per_slot = load_results(tmp_path / "run" / "results.rescored.per_example.json")
    assert per_slot.matrix[1][1] == 75.0 and per_slot.matrix[1][0] == 100 * 12 / 14
    assert main(["rescore", str(tmp_path / "run"), "--metric", "f1", "-o", str(tmp_path / "run" / "results.json")]) == 2
    assert "a run's own results file" in capsys.readouterr().err
    assert (tmp_path / "run" / "results.json").read_bytes() == before
    assert main(["report", str(tmp_path / "run"), str(out), "-o", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "run-results.rougeL" in md


def test_lenient_predictions_cannot_be_rescored_under_harness(tmp_path, capsys):
    fresh_run(tmp_path / "run", "accuracy", "lenient")
    assert main(["rescore", str(tmp_path / "run"), "--normalization", "harness"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("task a's predictions were stored under lenient normalisation (first line of each "
                        "generation only); they cannot be re-scored under harness")
    assert main(["rescore", str(tmp_path / "run"), "--metric", "rougeL"]) == 0  # lenient kept: fine


def test_rescore_reads_runs_from_before_the_scoring_record(tmp_path):
    run = fresh_run(tmp_path / "run", "set_match")
    raw = json.loads((tmp_path / "run" / "results.json").read_text())
    del raw["scoring"]
    raw["metrics"] = {"a": "set_match ';'", "b": "set_match, joint by field turn"}
    (tmp_path / "run" / "results.json").write_text(json.dumps(raw))
    got = rescore_run(tmp_path / "run", "set_match")
    assert got.scoring["a"]["delimiter"] == ";" and got.scoring["b"]["grouped"]
    assert _numbers(got) == _numbers(run)
