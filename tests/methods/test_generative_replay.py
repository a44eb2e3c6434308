"""Generative replay (kif/replay/generative.py): LAMOL-style generation examples, filtering, and a
tiny model overfitted to a task writing that task's examples back."""
from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from kif.configure import validate_config
from kif.data import Example
from kif.encoding import Encoder
from kif.methods.options import GenerativeOptions
from kif.models import load_model
from kif.replay.generative import (answer_mark, balanced, closed_labels, cueless_prompt, examples_from_texts,
                                   fill_record, gen_prompt, generate_examples, generation_examples, generation_target,
                                   parse_example, tagged_examples_from_texts)
from kif.replay.pseudo import prompt_template
from kif.replay.tagged_parse import input_fields, sentence_head, task_fields, verdict
from kif.training import train_task

from helpers import REPO

REAL = [Example(f"s-{i}", f"Is it good? Option: yes, no.\nText: {t}\nAnswer:", (a,))
        for i, (t, a) in enumerate([("a fine film", "yes"), ("dull and slow", "no"), ("great cast", "yes"),
                                    ("awful plot", "no")])]
TEMPLATE = ("Is it good? Option: yes, no.\nText: ", "\nAnswer:")


def test_template_and_targets():
    assert prompt_template([ex.prompt for ex in REAL]) == TEMPLATE
    assert generation_target(REAL[1], *TEMPLATE) == "dull and slow\nAnswer: no"  # the task's own answer cue
    assert generation_target(REAL[1], "Is it good? Option: yes, no.\nText: ", "") == (
        "dull and slow\nAnswer: __ans__ no")  # no suffix: LAMOL's __ans__ token
    gen = generation_examples("sst2", REAL, 0.5, seed=1)
    assert len(gen) == 2  # ⌈0.5·4⌉
    assert all(ex.prompt == gen_prompt("sst2") == "__gen_sst2__" for ex in gen)
    assert gen == generation_examples("sst2", REAL, 0.5, seed=1)  # seeded draw
    assert [ex.id for ex in generation_examples("sst2", REAL, 1.0, seed=1)] == [f"gen-s-{i}" for i in range(4)]
    assert generation_examples("sst2", REAL, 0.0, seed=1) == []
    assert len(generation_examples("sst2", REAL, 0.25, seed=1)) == 1


def test_parse_filters_malformed():
    labels = closed_labels(REAL + REAL)  # 2 labels in 8 examples: closed
    assert labels == {"yes", "no"}
    assert parse_example(" great cast\nAnswer: yes", *TEMPLATE, labels) == (REAL[2].prompt, "yes")
    assert parse_example("great cast yes", *TEMPLATE, labels) is None  # no answer cue
    assert parse_example("\nAnswer: yes", *TEMPLATE, labels) is None  # empty input
    assert parse_example("x\nAnswer: ", *TEMPLATE, labels) is None  # empty answer
    assert parse_example("x\nAnswer: maybe", *TEMPLATE, labels) is None  # not a label
    assert parse_example("x\nAnswer: y\nAnswer: no", *TEMPLATE, labels) is None  # two cues
    assert parse_example("x\nAnswer: maybe", *TEMPLATE, None) == (TEMPLATE[0] + "x" + TEMPLATE[1], "maybe")
    assert parse_example("x __ans__ no", "Q: ", "", labels) == ("Q: x", "no")  # no suffix: __ans__
    assert closed_labels([Example(str(i), "p", (f"free {i}",)) for i in range(6)]) is None


def test_predicted_answers_label_cueless_inputs():
    """gen_answers: predicted — a text with no cue is an input; its answer is the model's (here a lambda's)."""
    asked: list[list[str]] = []

    def predict(prompts):  # "yes" for inputs with "nice", "maybe" (no label) for the rest
        asked.append(prompts)
        return [" yes\n" if "nice" in p else "maybe" for p in prompts]

    texts = [" a nice film ", "great cast\nAnswer: yes", "flat and dull", "x\nAnswer: y\nAnswer: no", "  ",
             "a nice film", "great cast\nAnswer: yes", "another nice one"]
    info: dict = {}
    out = examples_from_texts("sst2", [texts], TEMPLATE, 10, labels={"yes", "no"}, predict=predict, stats=info)
    assert [(ex.id, ex.prompt, ex.references) for ex in out] == [
        ("pseudo-sst2-0", TEMPLATE[0] + "a nice film" + TEMPLATE[1], ("yes",)),  # rebuilt prompt, stripped answer
        ("pseudo-sst2-1", REAL[2].prompt, ("yes",)),  # one cue: the written answer, as before
        ("pseudo-sst2-2", TEMPLATE[0] + "another nice one" + TEMPLATE[1], ("yes",))]
    # one batched call per round, each cue-less prompt once; two cues or a blank text are never asked
    assert asked == [[TEMPLATE[0] + b + TEMPLATE[1] for b in ("a nice film", "flat and dull", "another nice one")]]
    # "flat and dull" -> "maybe": outside the label set, dropped; the duplicates count as well-formed, not kept
    assert info == {"generated": 8, "well_formed": 5, "kept": 3, "answers_predicted": 2}
    # free-form task (no label set): the predicted answer is kept
    free = examples_from_texts("sst2", [["flat and dull"]], TEMPLATE, 10, predict=predict)
    assert [(ex.prompt, ex.references[0]) for ex in free] == [(TEMPLATE[0] + "flat and dull" + TEMPLATE[1], "maybe")]
    # "generated" (no predict): the cue-less texts are malformed, as in LAMOL
    info = {}
    assert [ex.prompt for ex in examples_from_texts("sst2", [texts], TEMPLATE, 10, labels={"yes", "no"},
                                                    stats=info)] == [REAL[2].prompt]
    assert info == {"generated": 8, "well_formed": 2, "kept": 1, "answers_predicted": 0}
    assert cueless_prompt("x\nAnswer: no", *TEMPLATE) is None and cueless_prompt(" \n", *TEMPLATE) is None


def test_predicted_answers_stop_at_n_and_read_no_further_round():
    rounds_read = []

    def rounds():
        for r in range(3):
            rounds_read.append(r)
            yield [f"input {r}-{i}" for i in range(3)]

    info: dict = {}
    out = examples_from_texts("t", rounds(), TEMPLATE, 4, predict=lambda ps: ["no"] * len(ps), stats=info)
    assert [ex.prompt for ex in out] == [TEMPLATE[0] + f"input {r}-{i}" + TEMPLATE[1]
                                         for r, i in [(0, 0), (0, 1), (0, 2), (1, 0)]]
    assert rounds_read == [0, 1] and info == {"generated": 6, "well_formed": 6, "kept": 4, "answers_predicted": 4}
    assert examples_from_texts("t", rounds(), TEMPLATE, 0, predict=lambda ps: ["no"] * len(ps)) == []
    assert GenerativeOptions().gen_answers == "generated"  # LAMOL's behaviour unless asked
    with pytest.raises(ValueError):
        GenerativeOptions(gen_answers="guessed")


def test_predicted_answers_on_a_tiny_model():
    """generate_examples(..., gen_answers="predicted") on random tiny-llama weights: whatever it keeps
    is a prompt of the task's form, and a predicted answer is the model's greedy answer to that prompt."""
    from kif.evaluation import generate

    lm = load_model("tiny-llama", "plain")
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0], 64, 8)
    rng, info = torch.get_rng_state(), {}
    out = generate_examples(lm.model, enc, "sst2", TEMPLATE, 3, lm.eos_token_ids, seed=1, max_new_tokens=12,
                            rounds=2, batch_size=4, gen_answers="predicted", stats=info)
    assert torch.equal(torch.get_rng_state(), rng)
    assert 0 < len(out) <= 3 and info["kept"] == len(out) and info["generated"] >= 6
    assert info["answers_predicted"] >= 1  # random weights rarely write the cue; greedy answers any input
    for ex in out:
        assert ex.prompt.startswith(TEMPLATE[0]) and ex.prompt.endswith(TEMPLATE[1]) and ex.references[0]
    greedy = generate(lm.model, enc, [enc.prompt_ids(ex.prompt) for ex in out], lm.eos_token_ids, 4, 8)
    # each predicted answer is the greedy answer (at most max_target_length tokens) to its rebuilt prompt
    assert sum(ex.references[0] == g.strip() for ex, g in zip(out, greedy)) >= info["answers_predicted"]
    assert out == generate_examples(lm.model, enc, "sst2", TEMPLATE, 3, lm.eos_token_ids, seed=1,
                                    max_new_tokens=12, rounds=2, batch_size=4, gen_answers="predicted")


def _overfit(model: str, examples, batch_size: int):
    """A tiny model with every weight trainable, trained 150 epochs on ``examples`` at lr 3e-3:
    (the loaded model, its encoder, the training stats)."""
    cfg = validate_config({"model": model, "lora": {"enabled": False},
                           "train": {"epochs": 150, "batch_size": batch_size, "learning_rate": 3e-3,
                                     "precision": "fp32", "group_by_length": False, "logging_steps": 50},
                           "data": {"max_input_length": 64, "max_target_length": 48}})
    torch.manual_seed(0)
    lm = load_model(cfg.model, cfg.data.prompt_format)
    for p in lm.model.parameters():
        p.requires_grad_(True)
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0], 64, 48)
    return lm, enc, train_task(lm.model, enc, examples, cfg.train, 0, show_progress=False)


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_overfitted_model_writes_its_task_back(model):
    """A tiny model trained hard on the generation objective of 4 examples reproduces them."""
    lm, enc, stats = _overfit(model, generation_examples("sst2", REAL, 1.0, seed=0), batch_size=4)
    assert stats["steps"] == 150  # one batch of all 4 examples per epoch
    rng = torch.get_rng_state()
    info: dict = {}
    out = generate_examples(lm.model, enc, "sst2", TEMPLATE, 4, lm.eos_token_ids, labels={"yes", "no"}, seed=3,
                            top_k=1, max_new_tokens=40, rounds=3, batch_size=8, stats=info)
    assert torch.equal(torch.get_rng_state(), rng)  # the run's RNG untouched
    real = {(ex.prompt, ex.references[0]) for ex in REAL}
    got = {(ex.prompt, ex.references[0]) for ex in out}
    assert got and got <= real  # every generated sample is one of the task's real examples, exactly
    assert [ex.id for ex in out] == [f"pseudo-sst2-{i}" for i in range(len(out))]
    assert len(got) == len(out)  # deduplicated
    assert info["kept"] == len(out) and info["well_formed"] >= len(out)
    # sampling (top-k 20 on the overfitted model) finds several distinct real examples, seeded
    sampled = generate_examples(lm.model, enc, "sst2", TEMPLATE, 4, lm.eos_token_ids, labels={"yes", "no"}, seed=3,
                                top_k=20, max_new_tokens=40, rounds=4, batch_size=8)
    exact = [ex for ex in sampled if (ex.prompt, ex.references[0]) in real]
    # several distinct samples, at least one a real example exactly (tiny-t5 under transformers 5.25
    # writes one exact and three near-exact: "awful plow", "great st", "dullll and slow")
    assert len(sampled) == 4 and len({ex.prompt for ex in sampled}) >= 2 and exact
    for ex in sampled:  # the rest near-exact: most of a real input's characters, in order
        assert max(difflib.SequenceMatcher(None, ex.prompt, r.prompt).ratio() for r in REAL) > 0.8, ex.prompt
    assert sampled == generate_examples(lm.model, enc, "sst2", TEMPLATE, 4, lm.eos_token_ids,
                                        labels={"yes", "no"}, seed=3, top_k=20, max_new_tokens=40, rounds=4,
                                        batch_size=8)


def test_kif_m_pseudo_memory_from_the_generative_component(tmp_path):
    """kiflora-m, memory_source pseudo + pseudo_generator generative: task k trains on its data plus
    ⌈λ·n⌉ generation examples, and its memory is what the model writes, all well-formed."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_baselines import make, train
    from kif.runner import consolidate

    m = make("kiflora-m", tmp_path, method_args={"memory_per_task": 3, "memory_source": "pseudo",
                                                 "pseudo_generator": "generative", "gen_max_tokens": 24,
                                                 "gen_rounds": 2})
    assert m.opts.gen_weight == 0.25 and m.opts.gen_top_k == 20  # LAMOL's λ and top-k
    exs, _ = train(m, 0, REAL + REAL[:2])
    assert [ex.id for ex in exs[:6]] == ["s-0", "s-1", "s-2", "s-3", "s-0", "s-1"]
    assert m.opts.gen_format == "tagged"  # kif's default
    assert len(exs) == 6 + 2 and all(ex.prompt == gen_prompt("t1", "tagged", TEMPLATE[0])
                                     and ex.references[0].startswith("[t1] ") for ex in exs[6:])
    stats = consolidate(m, 0, tmp_path / "k1")
    kept = m.memory.task_examples("t1")
    assert stats["memory_added"] == len(kept) <= 3
    fill = stats["pseudo_fill"]["t1"]  # the fill record in the task's results
    assert (fill["requested"], fill["kept"], fill["format"]) == (3, len(kept), "tagged")
    drawn = [json.loads(line) for line in (tmp_path / "k1" / "generations.jsonl").read_text().splitlines()]
    # every text drawn is on disk with its verdict (tagged: one prompt, no label asked)
    assert len(drawn) == fill["generated"] and all(d["asked"] is None for d in drawn)
    assert sum(d["verdict"] == "ok" for d in drawn) == fill["well_formed"]
    assert sum(d["verdict"] != "ok" for d in drawn) == sum(fill["rejected"].values())
    assert fill["generated"] == stats["pseudo_generated"] and fill["empty"] == (not kept)
    for ex in kept:  # a random tiny model rarely writes a well-formed sample; whatever it kept is one
        assert ex.prompt.startswith(TEMPLATE[0]) and ex.prompt.endswith(TEMPLATE[1])
        assert ex.references[0] in {"yes", "no"}
    assert make("kiflora-m", tmp_path, method_args={"memory_source": "pseudo"}).opts.pseudo_generator == "generative"


def test_kif_m_pseudo_memory_on_the_default_path_end_to_end(tmp_path):
    """kif-m with memory_source pseudo and nothing else set: the generative component is the pseudo
    memory (each task trains on ⌈0.25·16⌉ = 4 generation examples too; what the model writes is the memory)."""
    import yaml

    from kif.runner import run
    from helpers import tiny_config

    out = tmp_path / "run"
    res = run(tiny_config(method="kif-m", method_args={"memory_source": "pseudo", "gen_max_tokens": 24}), out,
              show_progress=False)
    assert res["finished"] and len(res["matrix"]) == 3 and all(len(r) == 3 for r in res["matrix"])
    assert yaml.safe_load((out / "config.yaml").read_text())["method_args"]["pseudo_generator"] == "generative"
    assert [t["train_examples"] for t in res["per_task"]] == [16 + 4] * 3
    for t in res["per_task"]:
        assert t["pseudo_generated"] > 0 and t["pseudo_well_formed"] >= t["memory_added"]
        assert 0 <= t["memory_added"] <= 1  # ⌈2 % of 16⌉ at most: fewer when the model writes none well-formed
    assert sum(res["memory"].values()) == res["per_task"][2]["memory_total"]
    assert [t.get("replay_examples") for t in res["per_task"][1:]] == [res["memory"].get("cb", 0),
                                                                      res["memory"].get("cb", 0)
                                                                      + res["memory"].get("copa", 0)]
    # scripts/generation_trial.py from task 2's trained adapter, with the run's own settings, draws
    # exactly the texts the run drew; with the tag not forced, other texts

    spec = importlib.util.spec_from_file_location("trial", REPO / "scripts" / "generation_trial.py")
    trial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trial)
    drawn = (out / "tasks" / "02_copa" / "generations.jsonl").read_bytes()
    assert trial.main([str(out), "-o", str(tmp_path / "again"), "--task-index", "1"]) == 0
    assert (tmp_path / "again" / "generations.jsonl").read_bytes() == drawn
    fill = json.loads((tmp_path / "again" / "fill.json").read_text())["fill"]
    assert fill == res["per_task"][1]["pseudo_fill"]["copa"]
    assert trial.main([str(out), "-o", str(tmp_path / "free"), "--task-index", "1",
                       "--set", "method_args.gen_force_tag=false"]) == 0
    assert (tmp_path / "free" / "generations.jsonl").read_bytes() != drawn


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_long_inputs_are_cut_so_the_answer_fits(model):
    lm = load_model(model, "plain")
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0], 64, 32)
    long = Example("l", TEMPLATE[0] + "a very long review " * 5 + TEMPLATE[1], ("no",))
    target = generation_target(long, *TEMPLATE, enc)
    assert target.endswith("\nAnswer: no") and target.startswith("a very long")
    ids = enc.target_ids(target)
    assert len(ids) <= 32 and lm.tokenizer.decode(ids, skip_special_tokens=True).strip().endswith("Answer: no")
    assert generation_target(REAL[1], *TEMPLATE, enc) == "dull and slow\nAnswer: no"  # short: untouched
    [gen] = generation_examples("sst2", [long], 1.0, seed=0, template=TEMPLATE, encoder=enc)
    assert gen.references[0] == target


def test_pseudo_quality_counts_copies_and_near_duplicates(tmp_path, data_dir, capsys):
    """scripts/pseudo_quality.py on a hand-made run: one copy (same answer), one near-duplicate
    (one word changed), one new input; well-formed share from results.json."""
    import json

    from kif.replay.generative import save_pseudo
    from kif.runner import load_sequence_data

    (tmp_path / "config.yaml").write_text("method: lfpt5\nmodel: tiny-llama\nbenchmark: long_sequence\n"
                                          "tasks: [sst2, copa]\ndata: {train_samples: 4}\n")
    cfg = validate_config({"method": "lfpt5", "model": "tiny-llama", "benchmark": "long_sequence",
                           "tasks": ["sst2", "copa"], "data": {"train_samples": 4}})
    real = load_sequence_data(cfg).train["sst2"]
    words = real[1].prompt.split(" ")
    words[len(words) // 2] = "zzzz"
    save_pseudo(tmp_path / "tasks" / "01_copa", [
        Example("pseudo-sst2-0", real[0].prompt, real[0].references),
        Example("pseudo-sst2-1", " ".join(words), ("whatever",)),
        Example("pseudo-sst2-2", "an input nobody wrote", ("Good",))])
    rec = {"requested": 3, "generated": 10, "well_formed": 4, "distinct": 3, "kept": 3, "labels": {"Good": 3},
           "empty": False}
    (tmp_path / "results.json").write_text(json.dumps({"per_task": [{}, {"pseudo_generated": 10,
                                                                         "pseudo_well_formed": 4,
                                                                         "pseudo_fill": {"sst2": rec}}]}))
    spec = importlib.util.spec_from_file_location("pq", REPO / "scripts" / "pseudo_quality.py")
    pq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pq)
    rows = [("[sst2] a new review", True, "ok", "Good"), ("[sst2] [sst2] twice", True, "ok", "Bad"),  # now refused
            ("[sst2] was refused", True, "no_tag", None), ("[sst2] cut", False, "unfinished", None)]
    from kif.io import write_jsonl
    write_jsonl(tmp_path / "tasks" / "01_sst2" / "generations.jsonl",
                [{"text": t, "finished": f, "asked": None, "verdict": v, "answer": a} for t, f, v, a in rows])
    q = pq.quality(tmp_path)
    assert q["well_formed_share"] == 0.4 and q["fill"] == {"2:sst2": rec}
    # judged again: the repeated tag is refused now; a text refused then has no answer on record
    assert q["reparsed"] == {"1:sst2": {"drawn": 4, "well_formed_rate": 0.25, "verdicts": {
        "ok": 1, "tag_again": 1, "unanswered": 1, "unfinished": 1}, "fields": [], "fields_cut": 0}}
    assert q["tasks"] == {"sst2": {"samples": 3, "copies": 1, "copies_same_answer": 1, "near": 2}}
    # one committed generations file, judged against a one-task config (no run folder)
    one = tmp_path / "one.yaml"
    one.write_text("method: lfpt5\nmodel: tiny-llama\nbenchmark: long_sequence\ntasks: [sst2]\n"
                   "data: {train_samples: 4}\n")
    assert pq.main([str(one), "--generations", str(tmp_path / "tasks" / "01_sst2" / "generations.jsonl"),
                    "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == q["reparsed"]["1:sst2"]
    assert pq.main([str(tmp_path / "config.yaml"), "--generations", str(one)]) == 2  # two tasks
    # shape: every real agnews input is "Title\nText: …"; a well-formed title alone lacks the field
    rows = [("[agnews] A title\nText: a body.", True, "World"), ("[agnews] A title alone", True, "Sports"),
            ("[agnews] Another\ntext: lower case counts", True, "World"), ("[agnews] Refused\nText: x", True, None),
            ("[agnews] Cut title\nText: ran to the limit", False, "World")]  # cut at the line end: the title
    write_jsonl(tmp_path / "agnews.jsonl", [{"text": t, "finished": f, "asked": None, "verdict": "ok" if a else
                                             "no_answer", "answer": a} for t, f, a in rows])
    (tmp_path / "agnews.yaml").write_text("method: lfpt5\nmodel: tiny-llama\nbenchmark: long_sequence\n"
                                          "tasks: [agnews]\ndata: {train_samples: 4}\n")
    assert pq.main([str(tmp_path / "agnews.yaml"), "--generations", str(tmp_path / "agnews.jsonl"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["verdicts"], r["fields"], r["fields_cut"]) == ({"ok": 2, "fields": 2, "no_answer": 1}, ["text"], 1)
    # the run's gen_fields false: not checked
    (tmp_path / "agnews.yaml").write_text("method: lfpt5\nmodel: tiny-llama\nbenchmark: long_sequence\n"
                                          "tasks: [agnews]\ndata: {train_samples: 4}\n"
                                          "method_args: {gen_fields: false}\n")
    assert pq.main([str(tmp_path / "agnews.yaml"), "--generations", str(tmp_path / "agnews.jsonl"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["verdicts"], r["fields"], r["fields_cut"]) == ({"ok": 4, "no_answer": 1}, [], 0)


# ---- gen_format: tagged (kif's default) ------------------------------------------------------------------------

def parse_tagged(text, task, prefix, suffix, finished=True, labels=None):
    """The input the tagged parser finds in ``text``, or None."""
    return verdict(text, task, prefix, answer_mark(suffix), finished, labels)[0]


def untagged_asks(rounds):
    """Rounds of (text, finished) as the tagged format draws them: no label asked."""
    return [[(text, finished, None) for text, finished in r] for r in rounds]


def test_tagged_prompt_target_and_parser():
    assert GenerativeOptions().gen_format == "tagged" and GenerativeOptions().gen_balance
    assert gen_prompt("sst2", "tagged", TEMPLATE[0]) == (
        "[sst2] Write a new input for this task.\nIs it good? Option: yes, no.\nText:")
    assert gen_prompt("sst2", "tagged") == "[sst2] Write a new input for this task."
    assert generation_target(REAL[1], *TEMPLATE, fmt="tagged", task="sst2") == "[sst2] dull and slow"  # no answer
    gen = generation_examples("sst2", REAL[:2], 1.0, seed=0, fmt="tagged")[0]
    assert (gen.prompt, gen.references) == (gen_prompt("sst2", "tagged", TEMPLATE[0]), ("[sst2] a fine film",))
    p, s = TEMPLATE
    assert parse_tagged(" [sst2]  great cast \n", "sst2", p, s) == "great cast"
    assert parse_tagged("[sst2] great cast", "sst2", p, s, finished=False) is None  # cut at the token limit
    assert parse_tagged("great cast", "sst2", p, s) is None  # no tag: e.g. a chat reply
    assert parse_tagged("[copa] great cast", "sst2", p, s) is None  # another task's tag
    assert parse_tagged("[sst2]   ", "sst2", p, s) is None  # empty input
    assert parse_tagged("[sst2] great cast\nAnswer: yes", "sst2", p, s, labels=["no", "yes"]) is None  # answered
    assert parse_tagged("[sst2] great cast\nAnswer:", "sst2", p, s) is None  # the cue, nothing after it
    assert parse_tagged("[sst2] Is it good? Option: yes, no.\nText: x", "sst2", p, s) is None  # the instruction


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_tagged_target_is_cut_to_fit_with_its_tag(model):
    lm = load_model(model, "plain")
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0], 64, 32)
    long = Example("l", TEMPLATE[0] + "a very long review " * 5 + TEMPLATE[1], ("no",))
    target = generation_target(long, *TEMPLATE, enc, fmt="tagged", task="sst2")
    ids = enc.target_ids(target)
    assert target.startswith("[sst2] a very long") and len(ids) <= 32 and ids[-1] == enc.eos_token_id
    assert lm.tokenizer.decode(ids[:-1], skip_special_tokens=True).strip() == target  # whole: the encoder cut nothing


def test_sentence_head_cuts_at_the_last_sentence_or_line_end():
    assert sentence_head("One. Two three") == "One."
    assert sentence_head('He said "no." Then he') == 'He said "no."'  # closing quote kept
    assert sentence_head("Wow! Really? Yes it") == "Wow! Really?"
    assert sentence_head("Kodak wins\nText: Eastman Kodak Co. won the fir") == "Kodak wins\nText: Eastman Kodak Co."
    assert sentence_head("Kodak wins\nText: Eastman Kodak won the fir") == "Kodak wins"  # the line end
    assert sentence_head("3.5 million people and") == "3.5 million people and"  # no end: all of it
    assert sentence_head("The end.") == "The end."  # an end needs a space after it: no cut, all of it


def test_generation_targets_script_counts_cut_targets(tmp_path, capsys):
    """scripts/generation_targets.py on tiny-llama with max_target_length 8: the fixture's sst2 inputs
    are longer than the 8 - 2 - tag tokens a target leaves them, so every one is cut; its row says so."""
    from helpers import write_config

    cfg = write_config(tmp_path / "c.yaml", tasks=["sst2"], data={"max_target_length": 8, "train_samples": 4})
    spec = importlib.util.spec_from_file_location("gt", REPO / "scripts" / "generation_targets.py")
    gt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gt)
    assert gt.main([str(cfg)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| sst2 ")]
    assert len(rows) == 1 and rows[0].startswith("| sst2 | 4 | 4 (100.0 %) | ")


def test_balanced_round_robin_over_labels():
    c = [("a", "Good"), ("b", "Good"), ("c", "Good"), ("d", "Bad"), ("e", "Good"), ("f", "Meh")]
    # round-robin Bad, Good, Meh (label order), then Good: b, c... -> kept in the candidates' order
    assert balanced(c, 4, ["Bad", "Good", "Meh"]) == [("a", "Good"), ("b", "Good"), ("d", "Bad"), ("f", "Meh")]
    assert balanced(c, 3, ["Bad", "Good", "Meh"]) == [("a", "Good"), ("d", "Bad"), ("f", "Meh")]
    assert balanced(c, 10, ["Bad", "Good", "Meh"]) == c  # fewer than n: all of them
    assert balanced(c, 2) == [("a", "Good"), ("d", "Bad")]  # no label order: first appearance
    assert balanced([], 3, ["x"]) == []


def test_tagged_examples_label_constraint_dedup_balance_and_fill():
    """8 texts drawn per round: the parser, the label set, duplicates and balance, counted by hand."""
    p, s = TEMPLATE
    calls: list[list[str]] = []

    def answer(prompts):  # "maybe" (outside the label set) for "odd", else yes/no by "good"
        calls.append(prompts)
        return ["maybe" if "odd" in q else (" yes" if "Text: good" in q else "no\n") for q in prompts]

    round1 = [("[sst2] good one", True), ("[sst2] good  one", True),  # duplicate (whitespace)
              ("[sst2] good two", True), ("[copa] good three", True), ("[sst2] odd", True),  # another tag; odd: no label
              ("chatter", True), ("[sst2] bad one", False),  # no tag; not finished
              ("[sst2] bad two", True)]
    round2 = [("[sst2] good four", True), ("[sst2] good one", True), ("[sst2] bad three", True),  # good one: again
              ("[sst2] good five. and then", False)]  # ran to the limit: cut at its sentence end
    info: dict = {}
    out = tagged_examples_from_texts("sst2", untagged_asks([round1, round2]), TEMPLATE, 4, answer,
                                     labels=["no", "yes"], stats=info)
    # round 1: well-formed good one ×2, good two, bad two = 4 texts, 3 distinct (< 4: round 2 is read);
    # round 2: all 4 well-formed, 3 new. Pool: good one, good two, bad two, good four, bad three, good five.;
    # round-robin no, yes, no, yes: bad two, good one, bad three, good two, kept in the pool's order
    assert [(ex.id, ex.prompt, ex.references[0]) for ex in out] == [
        ("pseudo-sst2-0", p + "good one" + s, "yes"), ("pseudo-sst2-1", p + "good two" + s, "yes"),
        ("pseudo-sst2-2", p + "bad two" + s, "no"), ("pseudo-sst2-3", p + "bad three" + s, "no")]
    assert info == {"generated": 12, "well_formed": 8, "cut": 1, "distinct": 6, "kept": 4,
                    "rejected": {"no_answer": 1, "no_tag": 2, "unfinished": 1}}
    # each distinct input answered once, in its round
    assert calls == [[p + b + s for b in ("good one", "good two", "odd", "bad two")],
                     [p + b + s for b in ("good four", "bad three", "good five.")]]
    assert fill_record(4, out, info, "tagged") == {
        "format": "tagged", "requested": 4, "generated": 12, "well_formed": 8, "distinct": 6, "kept": 4,
        "well_formed_rate": 0.6667, "labels": {"no": 2, "yes": 2}, "empty": False, "cut": 1,
        "rejected": {"no_answer": 1, "no_tag": 2, "unfinished": 1}}
    # without balance: the first 4 distinct of the pool (3 yes, 1 no)
    out = tagged_examples_from_texts("sst2", iter(untagged_asks([round1, round2])), TEMPLATE, 4, answer,
                                     labels=["no", "yes"],
                                     balance=False)
    assert [ex.prompt[len(p):-len(s)] for ex in out] == ["good one", "good two", "bad two", "good four"]
    # the pool reaches n in round 1: round 2 is never drawn
    drawn = []

    def lazy():
        for r in untagged_asks([round1, round2]):
            drawn.append(len(r))
            yield r
    assert len(tagged_examples_from_texts("sst2", lazy(), TEMPLATE, 2, answer, labels=["no", "yes"])) == 2
    assert drawn == [8]
    # free-form (no label set): any non-empty answer
    out = tagged_examples_from_texts("sst2", [[("[sst2] odd", True, None)]], TEMPLATE, 2, answer)
    assert [ex.references[0] for ex in out] == ["maybe"]


def test_tagged_examples_keep_the_inputs_line_breaks():
    """A kept input is the first text's input as written: its line break stays in the answered prompt
    and in the memory (agnews' real inputs are "Title\nText: ..."); only the duplicate check ignores
    whitespace, so the second text (a space for the break) is a duplicate of the first."""
    p, s = TEMPLATE
    asked: list[list[str]] = []

    def answer(prompts):
        asked.append(prompts)
        return ["yes"] * len(prompts)
    texts = [("[sst2] Good day\nText: good one", True), ("[sst2] Good day Text: good one", True)]
    info: dict = {}
    out = tagged_examples_from_texts("sst2", untagged_asks([texts]), TEMPLATE, 2, answer,
                                     labels=["no", "yes"], stats=info)
    assert [ex.prompt for ex in out] == [p + "Good day\nText: good one" + s]
    assert asked == [[p + "Good day\nText: good one" + s]]
    assert (info["well_formed"], info["distinct"]) == (2, 1)


def test_empty_memory_is_logged_and_recorded(caplog):
    """Random tiny-llama weights never write the '[sst2]' tag: the memory stays empty, one warning line."""
    lm = load_model("tiny-llama", "plain")
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0], 64, 8)
    info: dict = {}
    with caplog.at_level("WARNING", logger="kif"):
        out = generate_examples(lm.model, enc, "sst2", TEMPLATE, 3, lm.eos_token_ids, labels={"yes", "no"}, seed=1,
                                rounds=2, batch_size=6, gen_format="tagged", stats=info)
    assert out == [] and info["fill"] == {"format": "tagged", "requested": 3, "generated": 12, "well_formed": 0,
                                          "distinct": 0, "kept": 0, "well_formed_rate": 0.0, "labels": {},
                                          "empty": True, "cut": 0, "rejected": {"unfinished": 12}}
    lines = [r.getMessage() for r in caplog.records if "stays empty" in r.getMessage()]
    assert lines == ["generative replay: the memory of task sst2 stays empty (12 generated, 0 well-formed, "
                     "gen_format tagged)"]


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_tagged_overfitted_model_writes_inputs_labelled_by_the_label_set(model):
    """A tiny model trained hard on the tagged generation objective and the task itself writes the task's
    inputs back; each answer is the label of highest log-probability under the task prompt."""
    from kif.evaluation import label_scores

    lm, enc, _ = _overfit(model, REAL + generation_examples("sst2", REAL, 1.0, seed=0, fmt="tagged"), batch_size=8)
    info: dict = {}
    out = generate_examples(lm.model, enc, "sst2", TEMPLATE, 4, lm.eos_token_ids, labels={"yes", "no"}, seed=3,
                            max_new_tokens=40, rounds=3, batch_size=8, gen_format="tagged", stats=info)
    assert len(out) >= 2 and len({ex.prompt for ex in out}) == len(out)  # distinct
    for ex in out:  # the task's own inputs, exact or near (top-k 20 sampling): most characters, in order
        assert max(difflib.SequenceMatcher(None, ex.prompt, r.prompt).ratio() for r in REAL) > 0.8, ex.prompt
    assert info["fill"]["well_formed_rate"] >= 0.8 and info["fill"]["kept"] == len(out)
    scores = label_scores(lm.model, enc, [enc.prompt_ids(ex.prompt) for ex in out], ["no", "yes"])
    assert [ex.references[0] for ex in out] == [["no", "yes"][j] for j in scores.argmax(-1).tolist()]
    assert sum(info["fill"]["labels"].values()) == len(out)


def test_tagged_parser_names_each_rejection():
    """One hand-built text per reason of kif.replay.tagged_parse.verdict, checked in its order."""
    from kif.replay.tagged_parse import REASONS

    p = "What is the topic? Choose one from the option. Option: World, Sports, Science or Technology.\nTitle: "
    labels = ["Science or Technology", "Sports", "World"]
    cases = {
        "unfinished": ("[agnews] Markets rally", False),
        "no_tag": ("Sure! Here is a new input: Markets rally", True),
        "empty": ("[agnews]   ", True),
        "tag_again": ("[agnews] [adnews] Markets rally", True),  # misspelt tag; "[/agnews]", "[agnews]" too
        "cue": ("[agnews] Markets rally\nAnswer: World", True),  # it answers itself
        "instruction": ("[agnews] Write a new input: Markets rally", True),
        "options": ("[agnews] Sports or World?", True),  # labels listed (the instruction's own list: instruction)
        "label_only": ("[agnews]  Sports. ", True),
        "fields": ("[agnews] Markets rally", True),  # a title alone: agnews' inputs all have "Text:"
    }
    assert tuple(cases) == REASONS
    for reason, (text, finished) in cases.items():
        assert verdict(text, "agnews", p, "Answer:", finished, labels, ("text",)) == (None, reason), reason
    for text in ("[agnews] Markets rally [/agnews]", "[agnews] Markets rally [agnews]"):
        assert verdict(text, "agnews", p, "Answer:", True, labels) == (None, "tag_again")
    # a line that starts with the tag again is the next example: the first one ended there, even when
    # the whole text ran past the token limit; a repeated tag at the start leaves the first one empty
    assert verdict("[agnews] Markets rally\n[agnews] Rates fall, and", "agnews", p, "Answer:", False,
                   labels) == ("Markets rally", "ok")
    assert verdict("[agnews] \n[agnews] Markets rally", "agnews", p, "Answer:", True, labels) == (None, "empty")
    # a text that ran to the token limit is cut at its last sentence or line end, then judged
    assert verdict("[agnews] Markets rally. Rates fall and", "agnews", p, "Answer:", False, labels) == (
        "Markets rally.", "ok")
    assert verdict("[agnews] Markets rally\nText: Rates fall and", "agnews", p, "Answer:", False, labels) == (
        "Markets rally", "ok")
    assert verdict("[agnews] Sports.\nText: Rates fall and", "agnews", p, "Answer:", False, labels) == (
        None, "label_only")  # the cut text is judged as any other
    assert verdict("[agnews] Markets rally\n[sst2] good", "agnews", p, "Answer:", True, labels) == (None, "tag_again")
    # a sentence of the instruction (≥ 3 words), any case and spacing
    assert verdict("[agnews] x. CHOOSE one  from the option", "agnews", p, "Answer:", True, labels)[1] == "instruction"
    ok = {  # usable inputs, the tag and surrounding space taken off
        "[agnews]  Markets rally as rates fall \n": "Markets rally as rates fall",
        "[agnews] Sports fans cheer": "Sports fans cheer",  # a label inside a sentence
        "[agnews] Q: who won?\nAnswer: the home side, at last": "Q: who won?\nAnswer: the home side, at last",
        "[agnews] World Cup [1] results": "World Cup [1] results",  # brackets that are no tag
        "[agnews] Sports and more sports": "Sports and more sports",  # one label twice is no option list
    }
    for text, body in ok.items():
        assert verdict(text, "agnews", p, "Answer:", True, labels) == (body, "ok"), text
    # without a label set the label rules do not apply; parse_tagged is the verdict's input
    assert parse_tagged("[agnews] Sports.", "agnews", p, "\n\nAnswer:") == "Sports."
    assert parse_tagged("[agnews] Sports.", "agnews", p, "\n\nAnswer:", labels=labels) is None


def test_fields_every_real_input_has_are_asked_of_a_generated_one():
    """task_fields: the line-start fields all real inputs share (any case, digits and spaces in a
    name); verdict refuses a text without one, also when the cut at the token limit dropped it."""
    assert input_fields("Title\nText: a. b\n sentence 2: c\nhttp://x") == {"text", "sentence 2", "http"}
    assert input_fields("Text: inline Answer: not at a line start") == {"text"}
    pre, suf = "Topic?\nTitle: ", "\n\nAnswer:"
    real = [pre + "A\nText: x.\nSource: y" + suf, pre + "B\ntext: z" + suf, pre + "Soccer: C\nText: w" + suf]
    assert task_fields(real, pre, suf) == ("text",)  # Source and Soccer are not in every input
    assert task_fields([], pre, suf) == () and task_fields(["x" + suf], "", suf) == ()
    fields = ("text",)
    assert verdict("[agnews] A title\nText: a body.", "agnews", pre, "Answer:", True, None, fields) == (
        "A title\nText: a body.", "ok")
    assert verdict("[agnews] A title alone", "agnews", pre, "Answer:", True, None, fields) == (None, "fields")
    assert verdict("[agnews] A title alone", "agnews", pre, "Answer:", True, None) == ("A title alone", "ok")
    # ran to the limit: the last end inside the Text line keeps it; with none there, the cut falls
    # at the title's line end and the Text line is dropped: refused
    assert verdict("[agnews] T\nText: One. Two and", "agnews", pre, "Answer:", False, None, fields) == (
        "T\nText: One.", "ok")
    assert verdict("[agnews] T\nText: One and two and", "agnews", pre, "Answer:", False, None, fields) == (
        None, "fields")
    pair = ("sentence 2",)
    assert verdict("[rte] sentence 1: It rains.", "rte", "Option: yes, no.\nsentence 1: ", "Answer:", True, None,
                   pair)[1] == "fields"  # a premise without its hypothesis
    assert verdict("[rte] It rains.\nsentence 2: It is wet.", "rte", "", "Answer:", True, None, pair)[1] == "ok"


def test_generator_gets_the_fields_only_with_gen_fields(monkeypatch):
    """generate_with passes the task's fields to the generator under gen_fields (default true)."""
    import kif.replay.generative as gen

    seen = []
    monkeypatch.setattr(gen, "generate_examples", lambda *a, **kw: seen.append(kw["fields"]) or [])
    for opts in (GenerativeOptions(), GenerativeOptions(gen_fields=False)):
        gen.generate_with(opts, None, None, "agnews", ("", ""), 2, [0], labels=None, seed=0, batch_size=1,
                          prefix_cache=False, fields=("text",))
    assert seen == [("text",), ()]


def test_lfpt5_resumes_a_checkpoint_written_before_it_kept_fields():
    """lfpt5's 'fields' state entry is optional (STATE None): a checkpoint without it still loads
    (its earlier tasks' fields unknown: not checked), one with it too; a required entry missing, or
    a foreign one, is still refused."""
    from kif.errors import ArtifactError
    from kif.methods.lfpt5 import LFPT5

    old = {"templates": {"sst2": ["p", "s"]}, "label_sets": {}}
    LFPT5.check_state({}, old, 2, "old")
    LFPT5.check_state({}, old | {"fields": {"sst2": []}}, 2, "new")
    with pytest.raises(ArtifactError, match="lacks the state 'templates'"):
        LFPT5.check_state({}, {"label_sets": {}, "fields": {}}, 2, "damaged")
    with pytest.raises(ArtifactError, match="never writes"):
        LFPT5.check_state({}, old | {"fisher": {}}, 2, "foreign")


def test_conditioned_prompts_carry_the_label():
    """conditioned: the prompt is '[task] <label>' of each chosen example, the target '[task] <input>';
    a free-form task (no closed label set) gets '[task]' alone."""
    gen = generation_examples("sst2", REAL, 1.0, seed=0, fmt="conditioned", labels={"yes", "no"})
    assert [(ex.prompt, ex.references) for ex in gen] == [
        ("[sst2] yes", ("[sst2] a fine film",)), ("[sst2] no", ("[sst2] dull and slow",)),
        ("[sst2] yes", ("[sst2] great cast",)), ("[sst2] no", ("[sst2] awful plot",))]
    assert gen_prompt("sst2", "conditioned", TEMPLATE[0], label=" yes ") == "[sst2] yes"
    # 4 examples, 2 labels: not a closed set by closed_labels' rule, so no labels in the prompts
    assert {ex.prompt for ex in generation_examples("sst2", REAL, 1.0, seed=0, fmt="conditioned")} == {"[sst2]"}
    assert {ex.prompt for ex in generation_examples("sst2", REAL, 1.0, seed=0, fmt="conditioned",
                                                    labels=[])} == {"[sst2]"}


def test_conditioned_texts_agreed_first_within_a_label_and_counted():
    """(text, finished, asked) triples: the answer is still the scored one; within a label the inputs
    answered with the label they were asked for are kept first; rejections counted by reason."""
    p, s = TEMPLATE

    def answer(prompts):  # "yes" when the input says good
        return ["yes" if "Text: good" in q else "no" for q in prompts]

    drawn = [("[sst2] good a", True, "no"),  # asked no, answered yes: not agreed
             ("[sst2] good b", True, "yes"), ("[sst2] good c", True, "yes"),
             ("[sst2] bad d", True, "no"), ("[sst2] yes", True, "yes"),  # a label only
             ("[sst2] bad e", False, "no"), ("[sst2] [sst2] bad f", True, "no")]
    info: dict = {}
    record: list = []
    out = tagged_examples_from_texts("sst2", [drawn], TEMPLATE, 2, answer, labels=["no", "yes"], stats=info,
                                     record=record)
    # pool: good a (yes, not agreed), good b, good c (yes, agreed), bad d (no, agreed);
    # round-robin no, yes: bad d, then good b before good a (agreed first); kept in pool order
    assert [(ex.prompt, ex.references[0]) for ex in out] == [(p + "good b" + s, "yes"), (p + "bad d" + s, "no")]
    assert info == {"generated": 7, "well_formed": 4, "cut": 0, "distinct": 4, "kept": 2, "agreed": 3,
                    "rejected": {"label_only": 1, "tag_again": 1, "unfinished": 1}}
    assert [r["verdict"] for r in record] == ["ok", "ok", "ok", "ok", "label_only", "unfinished", "tag_again"]
    assert record[0] == {"text": "[sst2] good a", "finished": True, "asked": "no", "verdict": "ok", "answer": "yes"}
    assert fill_record(2, out, info, "conditioned")["agreed"] == 3


def test_conditioned_draws_the_same_count_per_label():
    """A random tiny model: each round draws ⌈2·n / labels⌉ texts from each label's prompt, in label order,
    each recorded with its verdict (a random model never writes the tag)."""
    lm = load_model("tiny-llama", "plain")
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0], 64, 8)
    info, record = {}, []
    out = generate_examples(lm.model, enc, "t", TEMPLATE, 4, lm.eos_token_ids, labels={"a", "b", "c"}, seed=1,
                            rounds=2, batch_size=4, gen_format="conditioned", stats=info, record=record)
    assert out == [] and info["fill"]["generated"] == len(record) == 2 * 3 * 3  # ⌈8 / 3⌉ = 3 per label
    assert [r["asked"] for r in record] == (["a"] * 3 + ["b"] * 3 + ["c"] * 3) * 2
    assert all(r["verdict"] in ("unfinished", "no_tag") and r["answer"] is None for r in record)
    assert sum(info["fill"]["rejected"].values()) == 18 and info["fill"]["agreed"] == 0


@pytest.mark.parametrize("model", ["tiny-llama"])
def test_conditioned_overfitted_model_writes_each_label_balanced(model):
    """A tiny model trained hard on conditioned generation examples and the task writes, from '[sst2] yes'
    and '[sst2] no', the task's inputs of that label; the scored labels agree and the memory is 2 + 2."""
    gen = generation_examples("sst2", REAL, 1.0, seed=0, fmt="conditioned", labels={"yes", "no"})
    lm, enc, _ = _overfit(model, REAL + gen, batch_size=8)
    info, record = {}, []
    out = generate_examples(lm.model, enc, "sst2", TEMPLATE, 4, lm.eos_token_ids, labels={"yes", "no"}, seed=3,
                            max_new_tokens=40, rounds=3, batch_size=8, gen_format="conditioned", stats=info,
                            record=record)
    truth = {ex.prompt: ex.references[0] for ex in REAL}
    assert sorted((ex.prompt, ex.references[0]) for ex in out) == sorted(truth.items())  # all 4, each its label
    assert info["fill"]["labels"] == {"no": 2, "yes": 2}
    ok = [r for r in record if r["verdict"] == "ok"]
    assert info["fill"]["agreed"] == sum(r["answer"] == r["asked"] for r in ok) >= 0.8 * len(ok)


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_forced_tag_starts_every_text_and_counts_against_the_token_limit(model):
    """force_tag (the default): every drawn text starts with the task's tag, which the model did not
    sample, so no text is refused for a missing tag; the tag's tokens are part of the limit (a random
    model writes exactly limit − tag tokens after it). Without it a random model never writes the tag."""
    from kif.replay.generative import forced_ids

    lm = load_model(model, "plain")
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0], 64, 12)
    tag = forced_ids(enc, "[sst2]")
    assert lm.tokenizer.decode(tag).strip() == "[sst2]" and enc.target_ids("[sst2] x")[:len(tag)] == tag
    record: list = []
    generate_examples(lm.model, enc, "sst2", TEMPLATE, 3, lm.eos_token_ids, labels={"yes", "no"}, seed=1, rounds=1,
                      batch_size=6, gen_format="tagged", record=record)
    assert len(record) == 6 and all(r["text"].strip().startswith("[sst2]") for r in record)
    assert all(r["verdict"] != "no_tag" for r in record)
    unfinished = [r["text"] for r in record if not r["finished"]]
    assert unfinished and all(len(enc.target_ids(t.strip())) - 1 <= 12 for t in unfinished)
    record = []
    generate_examples(lm.model, enc, "sst2", TEMPLATE, 3, lm.eos_token_ids, labels={"yes", "no"}, seed=1, rounds=1,
                      batch_size=6, gen_format="tagged", record=record, force_tag=False)
    assert not any(r["text"].strip().startswith("[sst2]") for r in record)
