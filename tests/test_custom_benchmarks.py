"""A custom benchmark as a new user writes it from the README: the README's own example,
`kif benchmarks BENCH.yaml`, and a joint (grouped) task scored through evaluate_task."""
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kif.cli import main
from kif.data import Example, get_benchmark
from kif.evaluation import evaluate_task
from kif.metrics import Metric

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_benchmark(tmp_path: Path) -> Path:
    """The YAML of the README's "Custom benchmarks" section, with data files holding the
    items the README shows."""
    section = README.read_text(encoding="utf-8").split("#### Custom benchmarks", 1)[1]
    yaml_text = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    (tmp_path / "dst").mkdir()
    slots = [{"id": f"d1-t{t}-{s}", "turn": f"d1-t{t}", "input": f"User: ... Slot: hotel-{s}. Answer:",
              "output": v} for t in (1, 2) for s, v in (("area", "north; centre"), ("price", "cheap"))]
    for split in ("train", "test"):
        (tmp_path / "dst" / f"{split}.jsonl").write_text("\n".join(json.dumps(x) for x in slots) + "\n")
    (tmp_path / "qa.json").write_text(json.dumps([
        {"instruction": "Answer from the passage.", "input": "Passage: ... Question: who wrote it?",
         "output": ["Ann Lee", "Lee"]}]))
    (tmp_path / "bench.yaml").write_text(yaml_text)
    return tmp_path / "bench.yaml"


def test_readme_example_loads_and_lists(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KIF_DATA", str(tmp_path / "no-data-dir"))  # a custom benchmark needs none
    path = _readme_benchmark(tmp_path)
    b = get_benchmark(path)
    assert b.orders == {"main": ["dst", "qa"]}
    assert b.tasks["dst"].metric == "set_match" and b.tasks["qa"].metric == "f1"  # non-default metrics
    test = b.tasks["dst"].load("test")
    assert [e.group for e in test] == ["d1-t1", "d1-t1", "d1-t2", "d1-t2"]
    assert b.tasks["qa"].load("train")[0].prompt == "Answer from the passage.\nPassage: ... Question: who wrote it?"

    assert main(["benchmarks", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "dst_then_qa: dialogue state tracking, then QA",
        f"  dst: set_match ';', joint by field turn; train 4 (2 groups), test 4 (2 groups); {tmp_path / 'dst'}",
        f"  qa: f1; train 1, test 1; {tmp_path / 'qa.json'}",
        "  order main: dst qa",
    ]


def test_kif_benchmarks_bad_yaml_is_one_line(tmp_path, capsys):
    path = _readme_benchmark(tmp_path)
    path.write_text(path.read_text().replace("metric: f1", "metric: bleu"))
    assert main(["benchmarks", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"kif: error: {path}: tasks.qa.metric 'bleu' not one of accuracy, rougeL, f1, set_match")
    (tmp_path / "qa.json").write_text("[]")  # valid YAML, bad data: the listing reads it
    path.write_text(path.read_text().replace("metric: bleu", "metric: f1"))
    assert main(["benchmarks", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"kif: error: {tmp_path / 'qa.json'}: no examples (empty list)"


# ---- a joint task through evaluate_task, with real batching ------------------------------

VOCAB = ["<pad>", "<eos>", "north", "cheap", "3", "centre", "moderate", "q"]


class _AnswerModel(torch.nn.Module):
    """Stands in for a language model: answers each prompt with the word whose id is the
    prompt's last token, then EOS; records the size of every generate() batch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.batches = []

    def generate(self, input_ids, attention_mask, **kw):
        self.batches.append(input_ids.shape[0])
        answer = input_ids[:, -1:]
        return torch.cat([input_ids, answer, torch.ones_like(answer)], 1)


def test_joint_metric_over_groups_split_across_batches():
    tok = SimpleNamespace(pad_token_id=0, decode=lambda ids, skip_special_tokens: " ".join(VOCAB[i] for i in ids))
    encoder = SimpleNamespace(tokenizer=tok, is_seq2seq=False)
    # (prompt length, answer id, group, reference): batches go longest first, two at a time,
    # so turn d1-t1 lands in batches 1 and 3 and d2-t1 in batches 1 and 2.
    rows = [(9, 2, "d1-t1", "north"), (3, 3, "d1-t1", "cheap"), (5, 4, "d1-t2", "2"),
            (8, 5, "d2-t1", "north ; centre"), (6, 6, "d2-t1", "moderate")]
    examples = [Example(f"e{i}", "p", (ref,), g) for i, (_, _, g, ref) in enumerate(rows)]
    prompts = [[7] * (n - 1) + [a] for n, a, _, _ in rows]
    model = _AnswerModel()
    res = evaluate_task(model, encoder, examples, Metric("set_match", delimiter=";"), [1], prompts,
                        batch_size=2, prefix_cache=False)
    assert model.batches == [2, 2, 1]
    assert [r["prediction"] for r in res.predictions] == ["north", "cheap", "3", "centre", "moderate"]
    # per-example scores stay in the predictions, with the group
    assert [r["score"] for r in res.predictions] == [100.0, 100.0, 0.0, 0.0, 100.0]
    assert [r["group"] for r in res.predictions] == ["d1-t1", "d1-t1", "d1-t2", "d2-t1", "d2-t1"]
    # joint goal accuracy: only d1-t1 has every slot right -> 1 of 3 turns
    assert res.score == pytest.approx(100 / 3)
    # the same task without groups: the mean of the example scores, and no group key
    flat = [Example(e.id, e.prompt, e.references) for e in examples]
    res = evaluate_task(_AnswerModel(), encoder, flat, Metric("set_match", delimiter=";"), [1], prompts,
                        batch_size=2, prefix_cache=False)
    assert res.score == pytest.approx(60.0) and "group" not in res.predictions[0]
