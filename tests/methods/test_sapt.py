"""SAPT (kif/methods/sapt.py): attention over per-task LoRA blocks (SALS) and its reflection (ARM)."""
from __future__ import annotations

import json

import random

import pytest
import torch

from kif.data import Example
from kif.io import dir_bytes, load_tensors
from kif.runner import consolidate, run
from kif.validation import validation_loss

from helpers import REPO, read_results, tiny_config
from test_baselines import make, snapshot, train

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _prompts(letters: str, answer: str, task: str, n: int = 8) -> list[Example]:
    r = random.Random(task)
    return [Example(f"{task}-{i}", "".join(r.choice(letters) for _ in range(4)), (answer,)) for i in range(n)]


def _lora_layer(model):
    return next(m for m in model.modules() if isinstance(getattr(m, "lora_B", None), torch.nn.ModuleDict)
                and hasattr(m, "base_layer"))


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_attention_weights_sum_to_one_and_weight_the_blocks(model, tmp_path):
    m = make("sapt", tmp_path, model=model)
    for k in range(3):
        m.before_task(k)
    assert m.model.active_adapters == ["task1", "task2", "task3"] and len(m.selection.keys) == 3
    prompts = [ex.prompt for ex in _prompts("abcdwxyz", "yes", "p", 5)]
    a = m.attention(prompts)
    assert a.shape == (5, 3) and torch.allclose(a.sum(-1), torch.ones(5), atol=1e-6) and (a > 0).all()
    # a forward pass routes its batch: one weight row per example, summing to 1
    batch = m.ctx.encoder.train_features(Example("x", prompts[0], ("yes",)))
    m.model(**{k: torch.tensor([v]) for k, v in batch.items()})
    assert m._weights.shape == (1, 3) and torch.allclose(m._weights.sum(-1), torch.ones(1), atol=1e-6)
    if model == "tiny-llama":  # only the prompt is pooled: the weights equal attention() on the prompt alone
        assert torch.allclose(m._weights, a[:1], atol=1e-6)
    # each LoRA layer computes W0·x + Σ_k a_k · s_k · B_k A_k x (hand-computed here)
    layer = _lora_layer(m.model)
    with torch.no_grad():
        for name in ("task1", "task2", "task3"):
            layer.lora_B[name].weight.normal_()
    x = torch.randn(2, 5, layer.base_layer.in_features)
    w = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
    m._weights = w
    with torch.no_grad():
        got = layer(x)
        want = layer.base_layer(x) + sum(
            w[:, k].view(2, 1, 1) * layer.scaling[n] * (x @ layer.lora_A[n].weight.T @ layer.lora_B[n].weight.T)
            for k, n in enumerate(("task1", "task2", "task3")))
    assert torch.allclose(got, want, atol=1e-5)


def test_two_task_toy_routes_each_task_to_its_block(tmp_path):
    """Task 1 ("abcd" inputs) then task 2 ("wxyz" inputs) with task 1's inputs replayed by the ARM:
    afterwards each task's inputs go to its own block; task 1's block and key are bit-identical."""
    m = make("sapt", tmp_path, method_args={"memory_per_task": 4, "gen_weight": 0},
             lora={"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ALL_LINEAR},
             train={"epochs": 15, "batch_size": 4, "learning_rate": 1e-2, "precision": "fp32",
                    "group_by_length": False, "logging_steps": 1})
    a, b = _prompts("abcd", "yes", "t1", 8), _prompts("wxyz", "no", "t2", 8)
    feats_a = [m.ctx.encoder.train_features(e) for e in a]
    train(m, 0, a)
    s0 = consolidate(m, 0, tmp_path / "k1")
    assert s0["attention_target"] == [1.0]  # one block: all weight on it
    loss_a = validation_loss(m.model, m.ctx.encoder, feats_a, 8)
    # the toy model cannot write its task yet: stand in task 1's real inputs as its "generated" memory
    m.memory.add("t1", a[:4], select=False)
    block1, key1 = snapshot(m.adapter_params("task1")), m.selection.keys[0].detach().clone()
    _, st = train(m, 1, b, seed=1)
    assert len(m._replay) == 1 and m._replay[0][1].tolist() == [1.0, 0.0]  # task 1's target, padded
    assert st["regularizer_loss"] > 0  # the reflection term was in the loss
    for n, p in m.adapter_params("task1").items():
        assert torch.equal(p, block1[n]), n
    assert torch.equal(m.selection.keys[0], key1) and not m.selection.keys[0].requires_grad
    wa, wb = m.attention([e.prompt for e in a]).mean(0), m.attention([e.prompt for e in b]).mean(0)
    assert wa[0] > 0.9 and wb[1] > 0.9, (wa, wb)
    assert validation_loss(m.model, m.ctx.encoder, feats_a, 8) == pytest.approx(loss_a, abs=1e-3)  # kept task 1
    s1 = consolidate(m, 1, tmp_path / "k2")
    assert len(s1["attention_target"]) == 2 and s1["attention_target"][1] > 0.9
    saved = sorted(p.name for p in (tmp_path / "k2" / "adapter").iterdir() if p.name != "README.md")
    assert saved == ["selection.safetensors", "task1", "task2"]
    sel = load_tensors(tmp_path / "k2" / "adapter" / "selection.safetensors")
    assert torch.equal(sel["keys.0"], key1) and sel["trans_input.0.weight"].shape == (100, 64)


def test_per_task_kl_weight_turns_the_reflection_off_for_that_task(tmp_path):
    """per_task.method_args.kl_weight applies to the task in training (SAPT's Long Sequence script
    replays nothing while it learns dbpedia and five other tasks): 0 on t2 leaves the ARM term out
    of t2's loss although t1's memory is there; on t3 the base weight (2) is back."""
    m = make("sapt", tmp_path, method_args={"memory_per_task": 4, "gen_weight": 0},
             per_task={"method_args": {"kl_weight": {"t2": 0}}})
    a, b, c = _prompts("abcd", "yes", "t1", 4), _prompts("wxyz", "no", "t2", 4), _prompts("efgh", "no", "t3", 4)
    train(m, 0, a)
    consolidate(m, 0, tmp_path / "k1")
    m.memory.add("t1", a, select=False)
    _, st = train(m, 1, b)
    assert len(m._replay) == 1 and m._kl_weight == 0 and "regularizer_loss" not in st  # no extra term at all
    consolidate(m, 1, tmp_path / "k2")
    m.memory.add("t2", b, select=False)
    _, st = train(m, 2, c)
    assert len(m._replay) == 2 and m._kl_weight == 2.0 and st["regularizer_loss"] > 0


def test_table1_config_replays_where_the_authors_script_does():
    """configs/table1/sapt.yaml: no ARM replay while learning the six tasks SAPT's Long Sequence
    script runs with --data_replay_freq -1, kl_ratio 2 on the others."""
    from kif.configure import load_config
    from kif.per_task import known_sequence, task_config

    cfg = load_config(str(REPO / "configs" / "table1" / "sapt.yaml"), [])
    off = {t for k, t in enumerate(known_sequence(cfg)) if task_config(cfg, k, t).method_args["kl_weight"] == 0}
    assert off == {"cb", "copa", "boolq", "imdb", "dbpedia", "multirc"} and cfg.method_args["kl_weight"] == 2.0


def test_end_to_end_tiny_t5(tmp_path):
    out = tmp_path / "run"
    res = run(tiny_config(method="sapt", model="tiny-t5"), out, show_progress=False)
    assert res["finished"] and len(res["matrix"]) == 3 and res["adapters"] == 3
    adapter = out / "tasks" / "03_sst2" / "adapter"
    assert (adapter / "selection.safetensors").is_file() and (adapter / "task3").is_dir()
    assert res["adapter_bytes"] == dir_bytes(adapter) > 0
    for t in res["per_task"]:
        assert t["pseudo_generated"] > 0 and 0 <= t["memory_added"] <= 1  # ⌈2 % of 16⌉ at most
        assert sum(t["attention_target"]) == pytest.approx(1.0, abs=1e-4)
    # every text drawn for task k's memory, with its verdict, in task k's folder
    for k, (task, t) in enumerate(zip(["cb", "copa", "sst2"], res["per_task"])):
        rows = [json.loads(line) for line in (out / "tasks" / f"0{k + 1}_{task}" / "generations.jsonl").open()]
        assert len(rows) == t["pseudo_generated"]
        assert sum(r["verdict"] == "ok" for r in rows) == t["pseudo_well_formed"]


def test_kill_and_resume_matches_uninterrupted(tmp_path, data_dir):
    """tiny-llama end to end through `kif run`; a run killed in task 3 resumes to the same results."""
    from helpers import kif_run, write_config

    cfg = write_config(tmp_path / "cfg.yaml", method="sapt")
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert kif_run(cfg, ref).returncode == 0
    want = read_results(ref)
    assert want["finished"] and want["adapters"] == 3 and set(want["memory"]) <= {"cb", "copa", "sst2"}
    # 16 examples + ⌈0.25·16⌉ = 4 generation examples, batch 8: 3 steps per task; step 8 is task 3's second
    assert [t["train_examples"] for t in want["per_task"]] == [20, 20, 20]
    assert kif_run(cfg, out, fault="train_step:8").returncode == -9
    resumed = kif_run(cfg, out)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr
    got = read_results(out)
    assert got["matrix"] == want["matrix"] and got["memory"] == want["memory"]
    assert [t["loss"] for t in got["per_task"]] == [t["loss"] for t in want["per_task"]]
    for name in ("task1/adapter_model.safetensors", "task3/adapter_model.safetensors", "selection.safetensors"):
        a = load_tensors(out / "tasks" / "03_sst2" / "adapter" / name)
        b = load_tensors(ref / "tasks" / "03_sst2" / "adapter" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in b), name


def test_state_round_trip_continues_identically(tmp_path):
    """After task 1 (with a pseudo memory, so task 2 runs the ARM), a method restored from
    ``state_dict`` trains task 2 to the same weights, keys and query MLP as the original."""
    def fresh(sub):
        return make("sapt", tmp_path / sub, method_args={"memory_per_task": 4, "gen_weight": 0},
                    train={"epochs": 2, "batch_size": 4, "learning_rate": 1e-2, "precision": "fp32",
                           "group_by_length": False, "logging_steps": 1})

    a, b = _prompts("abcd", "yes", "t1", 8), _prompts("wxyz", "no", "t2", 8)
    m = fresh("a")
    train(m, 0, a)
    consolidate(m, 0, tmp_path / "k1")
    m.memory.add("t1", a[:4], select=False)
    tensors, meta = m.state_dict()
    tensors = {n: t.clone() for n, t in tensors.items()}
    m2 = fresh("b")
    m2.load_state_dict(tensors, meta)
    assert m2.memory.state_dict() == m.memory.state_dict() and torch.equal(m2.targets[0], m.targets[0])
    _, s1 = train(m, 1, b, seed=1)
    _, s2 = train(m2, 1, b, seed=1)
    assert s1["regularizer_loss"] == s2["regularizer_loss"] > 0 and s1["loss"] == s2["loss"]
    w1, w2 = m.snapshot_trainable(), m2.snapshot_trainable()
    assert w1.keys() == w2.keys() and all(torch.equal(w1[n], w2[n]) for n in w1)
    assert all(torch.equal(p, q) for p, q in zip(m.selection.parameters(), m2.selection.parameters()))
