"""Generative replay (kif/replay/generative.py): LAMOL-style generation examples, filtering, and a
tiny model overfitted to a task writing that task's examples back."""
from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import torch

from kif.config import validate_config
from kif.data import Example
from kif.encoding import Encoder
from kif.models import load_model
from kif.replay.generative import (closed_labels, gen_prompt, generate_examples, generation_examples,
                                   generation_target, parse_example)
from kif.replay.pseudo import prompt_template
from kif.training import train_task

REAL = [Example(f"s-{i}", f"Is it good? Option: yes, no.\nText: {t}\nAnswer:", (a,))
        for i, (t, a) in enumerate([("a fine film", "yes"), ("dull and slow", "no"), ("great cast", "yes"),
                                    ("awful plot", "no")])]
REPO = Path(__file__).resolve().parents[1]
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


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_overfitted_model_writes_its_task_back(model):
    """A tiny model trained hard on the generation objective of 4 examples reproduces them."""
    cfg = validate_config({"model": model, "lora": {"enabled": False},
                           "train": {"epochs": 150, "batch_size": 4, "learning_rate": 3e-3, "precision": "fp32",
                                     "group_by_length": False, "logging_steps": 50},
                           "data": {"max_input_length": 64, "max_target_length": 48}})
    torch.manual_seed(0)
    lm = load_model(cfg.model, cfg.data.prompt_format)
    for p in lm.model.parameters():
        p.requires_grad_(True)
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0], 64, 48)
    stats = train_task(lm.model, enc, generation_examples("sst2", REAL, 1.0, seed=0), cfg.train, 0,
                       show_progress=False)
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
    assert len(sampled) == 4 and len({ex.prompt for ex in exact}) >= 2  # several distinct real examples
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
    assert len(exs) == 6 + 2 and all(ex.prompt == "__gen_t1__" and "\nAnswer: " in ex.references[0] for ex in exs[6:])
    stats = consolidate(m, 0, tmp_path / "k1")
    kept = m.memory.task_examples("t1")
    assert stats["memory_added"] == len(kept) <= 3
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


def test_pseudo_quality_counts_copies_and_near_duplicates(tmp_path, data_dir):
    """scripts/pseudo_quality.py on a hand-made run: one copy (same answer), one near-duplicate
    (one word changed), one new input; well-formed share from results.json."""
    import importlib.util
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
    (tmp_path / "results.json").write_text(json.dumps({"per_task": [{}, {"pseudo_generated": 10,
                                                                         "pseudo_well_formed": 4}]}))
    spec = importlib.util.spec_from_file_location("pq", REPO / "scripts" / "pseudo_quality.py")
    pq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pq)
    q = pq.quality(tmp_path)
    assert q["well_formed_share"] == 0.4
    assert q["tasks"] == {"sst2": {"samples": 3, "copies": 1, "copies_same_answer": 1, "near": 2}}
