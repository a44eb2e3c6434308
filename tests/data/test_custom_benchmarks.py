"""A custom benchmark as a new user writes it from the README: the README's own example,
`kif benchmarks BENCH.yaml`, and a joint (grouped) task scored through evaluate_task."""
import json
import re
from collections import Counter
from pathlib import Path
from statistics import mean
from types import SimpleNamespace

import pytest
import torch

from kif.cli import main
from kif.data import Example, get_benchmark
from kif.errors import ConfigError
from kif.evaluation import evaluate_task
from kif.metrics import Metric

from helpers import REPO

README = REPO / "README.md"


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


# ---- sampling under a test cap (data.test_samples) -------------------------------------

def _sizes_benchmark():
    """Synthetic grouped test set: 20 groups of each size 1..10 (200 groups, 1100 items)."""
    return [Example(f"g{s}-{r}-{i}", "p", ("x",), f"g{s}-{r}") for s in range(1, 11) for r in range(20)
            for i in range(s)]


def test_grouped_sampling_keeps_the_group_size_distribution():
    from kif.data import sample

    full = _sizes_benchmark()
    size = Counter(e.group for e in full)
    drawn = []  # sizes of the sampled groups, over 20 seeds
    for seed in range(20):
        got = sample(full, 100, seed)
        kept = Counter(e.group for e in got)
        assert all(kept[g] == size[g] for g in kept)  # no partial group
        assert len(kept) == round(100 * 200 / 1100)  # the cap as a share of the groups: 18
        drawn += [size[g] for g in kept]
    # full set: mean group size 5.5, 30 % of groups of size <= 3. Tolerance: ~3 standard
    # errors of 360 groups drawn uniformly (0.15 for the mean, 0.024 for the share).
    assert abs(mean(drawn) - 5.5) < 0.5
    assert abs(sum(s <= 3 for s in drawn) / len(drawn) - 0.30) < 0.08
    # the old fill-the-cap rule gave a mean of ~4.3 at a cap of 24; whole groups are unbiased there too
    small_cap = [size[g] for seed in range(20) for g in {e.group for e in sample(full, 24, seed)}]
    assert abs(mean(small_cap) - 5.5) < 1.0


def test_cap_below_every_group_says_so(caplog):
    from kif.data import sample

    ex = [Example(f"e{i}", "p", ("x",), "ab"[i // 3]) for i in range(6)]  # two groups of 3
    with caplog.at_level("WARNING", logger="kif"):
        got = sample(ex, 2, 0, "task t test")
    assert len({e.group for e in got}) == 1 and len(got) == 3
    assert caplog.messages == ["task t test: the sample cap 2 is smaller than the smallest group "
                               "(3 examples): keeping 1 whole group(s), 3 examples"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="kif"):
        sample(ex, 3, 0, "task t test")
    assert caplog.messages == []


def test_ungrouped_sampling_draws_what_it_always_drew(data_dir):
    """Pinned (ids drawn before grouped sampling changed): a capped Long Sequence run keeps
    its examples."""
    from kif.data import sample

    cb = get_benchmark("long_sequence", data_dir).tasks["cb"].load("test")
    assert [e.id for e in sample(cb, 5, 42)] == ["CB_6", "CB_14", "CB_16", "CB_41", "CB_49"]
    ex = [Example(f"x{i}", "p", ("a",)) for i in range(1000)]
    assert [e.id for e in sample(ex, 10, 0)] == ["x41", "x265", "x394", "x430", "x497", "x523", "x776",
                                                 "x864", "x911", "x988"]


# ---- per-task normalisation, delimiter listing, duplicate ids ---------------------------

def _slots_benchmark(tmp_path: Path, extra: str = "", items=None) -> Path:
    items = items or [{"id": "s1", "input": "q", "output": "London, UK; Paris"},
                      {"id": "s2", "input": "q", "output": "a"}]
    (tmp_path / "slots.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    (tmp_path / "b.yaml").write_text(
        "name: b\ntasks:\n  slots: {path: slots.jsonl, metric: set_match, delimiter: ';'"
        f"{extra}}}\n  plain: {{path: slots.jsonl, metric: set_match}}\n")
    return tmp_path / "b.yaml"


def test_normalization_per_task(tmp_path, capsys):
    b = get_benchmark(_slots_benchmark(tmp_path, ", normalization: lower_strip"))
    strict = b.tasks["slots"].scoring("harness")  # the task's own rule wins over the run's
    assert strict.normalization == "lower_strip"
    assert strict.score("paris ;london, uk ", ["London, UK; Paris"]) == 100.0  # case, order, spaces
    assert strict.score("london uk; paris", ["London, UK; Paris"]) == 0.0      # the comma counts
    assert b.tasks["plain"].scoring("harness").score("London UK", ["london, uk"]) == 0.0  # "," splits
    assert Metric("set_match", ";", "harness").score("london uk; paris", ["London, UK; Paris"]) == 100.0
    assert main(["benchmarks", str(tmp_path / "b.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"  slots: set_match ';', normalization lower_strip; train 2, test 2; {tmp_path / 'slots.jsonl'}"
    assert out[2] == f"  plain: set_match ','; train 2, test 2; {tmp_path / 'slots.jsonl'}"  # the default shown
    _slots_benchmark(tmp_path, ", normalization: exact")
    assert main(["benchmarks", str(tmp_path / "b.yaml")]) == 2
    assert capsys.readouterr().err.strip() == (f"kif: error: {tmp_path / 'b.yaml'}: tasks.slots.normalization "
                                               "'exact' not one of harness, lenient, lower_strip")


def test_duplicate_test_id_is_an_error(tmp_path, capsys):
    path = _slots_benchmark(tmp_path, items=[{"id": "t1-a", "input": "q", "output": "x"},
                                             {"id": "t1-b", "input": "q", "output": "y"},
                                             {"id": "t1-a", "input": "q2", "output": "z"}])
    assert main(["benchmarks", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (f"kif: error: {tmp_path / 'slots.jsonl'}: id 't1-a' occurs more "
                                               "than once (each test item needs its own id)")


# ---- file messages ---------------------------------------------------------------------------

def test_json_lines_messages(tmp_path):
    from kif.data import load_task_file
    from kif.errors import DataError

    lines = '{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n'
    (tmp_path / "t.json").write_text(lines)
    with pytest.raises(DataError) as e:
        load_task_file(tmp_path / "t.json")
    assert str(e.value) == (f"{tmp_path / 't.json'}: invalid JSON on line 2 column 1: Extra data (this looks like "
                            "JSON Lines, one item a line: name the file .jsonl or .jsonl.gz)")
    (tmp_path / "t.jsonl").write_text(lines + '{"input": "e", "output": "f\n')
    with pytest.raises(DataError) as e:
        load_task_file(tmp_path / "t.jsonl")
    assert str(e.value) == f"{tmp_path / 't.jsonl'}: invalid JSON on line 3: Unterminated string starting at column 26"
    (tmp_path / "t.jsonl").write_text("\n")
    with pytest.raises(DataError) as e:
        load_task_file(tmp_path / "t.jsonl")
    assert str(e.value) == f"{tmp_path / 't.jsonl'}: no examples (empty JSON Lines file)"


# ---- a run config's benchmark path ----------------------------------------------------------

def test_benchmark_path_is_relative_to_the_config(tmp_path, monkeypatch):
    from kif.configure import load_config
    from kif.rundir import _same_benchmark

    (tmp_path / "exp").mkdir()
    bench = _slots_benchmark(tmp_path / "exp")
    (tmp_path / "exp" / "run.yaml").write_text("benchmark: b.yaml\ntasks: [slots]\n"
                                               "eval: {unseen: {benchmark: b.yaml, tasks: [plain]}}\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # resume from another folder
    cfg = load_config(tmp_path / "exp" / "run.yaml")
    assert cfg.benchmark == str(bench) and cfg.eval.unseen.benchmark == str(bench)  # absolute, recorded
    monkeypatch.chdir(tmp_path)
    assert load_config(None, ["benchmark=exp/b.yaml"]).benchmark == str(bench)  # --set: from the working dir
    # a config from before: the path relative to the working directory still works ...
    (tmp_path / "old.yaml").write_text("benchmark: exp/b.yaml\n")
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "old.yaml").write_text("benchmark: exp/b.yaml\n")
    assert load_config(tmp_path / "cfgs" / "old.yaml").benchmark == str(bench)
    # ... and a run it started (config.yaml holding the relative path) resumes without a config change
    assert _same_benchmark({"benchmark": "exp/b.yaml", "seed": 1}, cfg) == {"benchmark": str(bench), "seed": 1}
    assert _same_benchmark({"benchmark": "other.yaml"}, cfg) == {"benchmark": "other.yaml"}
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'cfgs' / 'missing.yaml'}: benchmark file not found")):
        from kif.data import get_benchmark as gb
        (tmp_path / "cfgs" / "run.yaml").write_text("benchmark: missing.yaml\n")
        gb(load_config(tmp_path / "cfgs" / "run.yaml").benchmark)


def test_run_from_another_folder_records_groups_and_resumes(tmp_path, monkeypatch):
    """A real (tiny) run of a grouped custom benchmark: the config's benchmark path is relative
    to the config, results.json says how each task was scored and how many groups were tested,
    and the run resumes from another working directory."""
    import yaml

    from kif.configure import load_config
    from kif.runner import run

    (tmp_path / "exp").mkdir()
    turns = [{"id": f"d{d}-t1-{s}", "input": f"slot {s} of d{d}?", "output": s} for d in range(6)
             for s in ("area", "price", "day")[: 1 + d % 3]]
    (tmp_path / "exp" / "dst.jsonl").write_text("".join(json.dumps(x) + "\n" for x in turns))
    (tmp_path / "exp" / "b.yaml").write_text(
        "name: g\ntasks:\n  dst: {path: dst.jsonl, metric: accuracy, group_by: {id_prefix_sep: '-'}}\n"
        "  dst2: {path: dst.jsonl, metric: set_match, normalization: lower_strip}\n")
    cfg_file = tmp_path / "exp" / "run.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "model": "tiny-llama", "benchmark": "b.yaml", "tasks": ["dst", "dst2"], "seed": 3,
        "data": {"test_samples": 7, "max_input_length": 64, "max_target_length": 8},
        "train": {"epochs": 1, "batch_size": 4}, "eval": {"batch_size": 8, "max_new_tokens": 3}}))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    res = run(load_config(cfg_file), tmp_path / "out", show_progress=False)
    stored = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert stored["benchmark"] == str(tmp_path / "exp" / "b.yaml")
    # 6 turns of 1, 2, 3 slots (12 items); cap 7 -> round(7 * 6 / 12) = 4 whole turns
    assert res["n_test_groups"] == {"dst": 4} and res["n_test"]["dst2"] == 7
    assert res["scoring"] == {
        "dst": {"metric": "accuracy", "delimiter": ",", "normalization": "harness", "grouped": True},
        "dst2": {"metric": "set_match", "delimiter": ",", "normalization": "lower_strip", "grouped": False}}
    assert res["metrics"]["dst2"] == "set_match, normalization lower_strip"
    monkeypatch.chdir(tmp_path / "b")  # same config, another folder: the finished run is found, no config change
    assert run(load_config(cfg_file), tmp_path / "out", show_progress=False) == res
