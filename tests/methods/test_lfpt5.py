"""LFPT5 (kif/methods/lfpt5.py): one soft prompt, two objectives, generative replay of earlier tasks."""
from __future__ import annotations

import json
import math

import pytest
import torch

from kif.data import Example
from kif.io import load_tensors
from kif.methods import lfpt5 as lfpt5_module
from kif.replay import generative
from kif.runner import consolidate, run

from helpers import read_results, tiny_config
from test_baselines import examples, make, train


def _method(tmp_path, model="tiny-llama", **args):
    """LFPT5 with the papers' generation format (``gen_format: lamol``; kif's default is ``tagged``)."""
    return make("lfpt5", tmp_path, model=model,
                method_args={"prompt_length": 4, "memory_per_task": 2, "gen_max_tokens": 16, "gen_format": "lamol",
                             **args})


def test_trains_both_objectives_and_replays_what_it_generated(tmp_path, monkeypatch):
    m = _method(tmp_path)
    base = {n: p.detach().clone() for n, p in m.model.base.named_parameters()}
    prompt0 = m.model.source.prompt.detach().clone()
    exs, _ = train(m, 0, examples("t1", 6))
    # objective 1: the task's examples; objective 2: ⌈0.25·6⌉ = 2 generation examples from its token
    assert [ex.id for ex in exs[:6]] == [f"t1-{i}" for i in range(6)]
    gen = exs[6:]
    assert len(gen) == 2 and all(ex.prompt == "__gen_t1__" for ex in gen)
    assert {ex.references[0] for ex in gen} <= {f"{i}. Answer: {'yes' if i % 2 else 'no'}" for i in range(6)}
    assert not torch.equal(m.model.source.prompt, prompt0)  # the prompt trained
    assert all(torch.equal(p, base[n]) for n, p in m.model.base.named_parameters())  # the model did not
    consolidate(m, 0, tmp_path / "k1")
    after_task1 = m.model.source.prompt.detach().clone()

    calls = []

    def fake(model, encoder, task, template, n, eos_ids, **kw):  # stands in for what the model writes
        calls.append((task, template, n, kw["labels"], model.source.prompt.detach().clone()))
        return [Example(f"pseudo-{task}-0", f"{template[0]}7{template[1]}", ("yes",)),
                Example(f"pseudo-{task}-1", f"{template[0]}8{template[1]}", ("no",))]

    monkeypatch.setattr(generative, "generate_examples", fake)  # what generate_with calls
    exs, _ = train(m, 1, examples("t2", 6), seed=1)
    # before task 2 the model as task 1 left it writes task 1's pseudo-samples (template and labels kept)
    assert len(calls) == 1
    task, template, n, labels, prompt = calls[0]
    assert (task, template, n, labels) == ("t1", ("t1 item ", ". Answer:"), 2, {"yes", "no"})
    assert torch.equal(prompt, after_task1)
    ids = [ex.id for ex in exs]
    assert ids[:6] == [f"t2-{i}" for i in range(6)] and "pseudo-t1-0" in ids and "pseudo-t1-1" in ids
    replay_gen = [ex for ex in exs if ex.prompt == "__gen_t1__"]  # it keeps learning to write task 1
    assert len(replay_gen) == 1 and replay_gen[0].references[0] in {"7. Answer: yes", "8. Answer: no"}
    stats = consolidate(m, 1, tmp_path / "k2")
    assert stats["pseudo_trained"] == {"t1": 2}
    saved = load_tensors(tmp_path / "k2" / "adapter" / "prompts.safetensors")
    assert torch.equal(saved["prompt"], m.model.source.prompt.detach().float()) and saved["prompt"].shape == (4, 64)


# ---- KL label consistency (kd_weight) ---------------------------------------------------------

def _kl(p_teacher, p_student):
    return sum(pt * math.log(pt / ps) for pt, ps in zip(p_teacher, p_student))


def _logits(p):
    """Logits whose softmax is ``p``."""
    return torch.tensor(p).log()


def test_answer_kl_by_hand():
    """Σ over answer tokens of KL(teacher ‖ student), softmax at temperature 1; decoder-only logits
    at position t score token t+1, seq2seq logits score their own position."""
    t1, s1 = [0.5, 0.5], [0.25, 0.75]
    t2, s2 = [0.2, 0.8], [0.6, 0.4]
    teacher = torch.stack([_logits(t1), _logits(t2), _logits([0.9, 0.1])])[None]  # [1, 3, 2]
    student = torch.stack([_logits(s1), _logits(s2), _logits([0.1, 0.9])])[None]
    want = _kl(t1, s1) + _kl(t2, s2)  # 0.5·ln(4/3) + (0.2·ln(1/3) + 0.8·ln 2)
    assert want == pytest.approx(0.5 * math.log(4 / 3) + 0.2 * math.log(1 / 3) + 0.8 * math.log(2))
    # decoder-only: labels of positions 1, 2 are the answer -> logits of positions 0, 1
    got = lfpt5_module.answer_kl(student, teacher, torch.tensor([[-100, 4, 5]]), seq2seq=False)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # seq2seq: labels 0, 1 are the answer, position 2 is padding
    got = lfpt5_module.answer_kl(student, teacher, torch.tensor([[4, 5, -100]]), seq2seq=True)
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert lfpt5_module.answer_kl(teacher, teacher, torch.tensor([[4, 5, 6]]), seq2seq=True).item() == 0.0


def _task2_ready(tmp_path, monkeypatch, **args):
    """Task 1 trained; task 2's data (with two pseudo-samples of task 1) and teacher prepared."""
    m = _method(tmp_path, **args)
    train(m, 0, examples("t1", 6))
    consolidate(m, 0, tmp_path / "k1")
    after_task1 = m.model.source.prompt.detach().clone()

    def fake(model, encoder, task, template, n, eos_ids, **kw):
        return [Example(f"pseudo-{task}-0", f"{template[0]}7{template[1]}", ("yes",)),
                Example(f"pseudo-{task}-1", f"{template[0]}8{template[1]}", ("no",))]

    monkeypatch.setattr(generative, "generate_examples", fake)  # what generate_with calls
    exs = m.train_examples(1, examples("t2", 6))
    m.before_task(1)
    return m, exs, after_task1


def _batch(m, exs):
    from kif.encoding import TrainCollator

    return TrainCollator(m.ctx.encoder.tokenizer.pad_token_id)([m.ctx.encoder.train_features(ex) for ex in exs])


def test_kd_term_on_pseudo_rows_only(tmp_path, monkeypatch):
    m, exs, after_task1 = _task2_ready(tmp_path, monkeypatch)
    assert m.opts.kd_weight == 0.01  # LFPT5's --kd_lamda
    teacher = m.teacher.source.prompt
    assert torch.equal(teacher, after_task1) and not teacher.requires_grad
    assert teacher.data_ptr() != m.model.source.prompt.data_ptr()  # a copy, not the student's storage
    pseudo = next(ex for ex in exs if ex.id == "pseudo-t1-0")
    real = next(ex for ex in exs if ex.id == "t2-1")
    m.model.train()

    # student == teacher: the term is 0
    m.model(**_batch(m, [real, pseudo]))
    assert abs(m.extra_loss(m.model).item()) < 1e-6

    with torch.no_grad():  # the student moves away from the teacher
        m.model.source.prompt.add_(torch.randn(m.model.source.prompt.shape, generator=torch.Generator().manual_seed(1)))
    batch = _batch(m, [real, pseudo])
    student = m.model(**batch).logits
    term = m.extra_loss(m.model)
    # by hand, on the pseudo row (1) only: the teacher is the same model with the prompt after task 1
    with torch.no_grad():
        moved = m.model.source.prompt.detach().clone()
        m.model.source.prompt.copy_(after_task1)
        m.model.eval()
        teacher_logits = m.model(**batch).logits
        m.model.source.prompt.copy_(moved)
        m.model.train()
    labels = batch["labels"][1]
    want = 0.0
    for t in range(1, labels.shape[0]):
        if labels[t] != -100:  # an answer token, scored by position t-1
            p_t = torch.softmax(teacher_logits[1, t - 1].double(), -1)
            p_s = torch.softmax(student[1, t - 1].detach().double(), -1)
            want += float((p_t * (p_t / p_s).log()).sum())
    assert want > 0 and term.item() == pytest.approx(0.01 * want, rel=1e-4)
    term.backward()  # it trains the prompt
    assert m.model.source.prompt.grad is not None and m.model.source.prompt.grad.abs().sum() > 0
    m.model.zero_grad()

    # a batch of real rows only: no term; generation rows of the pseudo-samples are not pseudo rows
    gen = next(ex for ex in exs if ex.prompt == "__gen_t1__")
    m.model(**_batch(m, [real, gen]))
    assert m.extra_loss(m.model).item() == 0.0
    # evaluation (no grad) never feeds the term
    with torch.no_grad():
        m.model(**_batch(m, [pseudo]))
    assert m.extra_loss(m.model) is None


def test_teacher_stays_bit_identical_while_task_2_trains(tmp_path, monkeypatch):
    from kif.training import train_task

    m, exs, after_task1 = _task2_ready(tmp_path, monkeypatch)
    stats = train_task(m.model, m.ctx.encoder, exs, m.ctx.cfg.train, 1, extra_loss=m.extra_loss,
                       show_progress=False)
    assert torch.equal(m.teacher.source.prompt, after_task1)  # bit-identical through task 2
    assert not torch.equal(m.model.source.prompt, after_task1)  # while the student trained
    assert stats["regularizer_loss"] is not None and stats["regularizer_loss"] >= 0
    out = consolidate(m, 1, tmp_path / "k2")
    assert out["kd_rows"] == 2  # each pseudo-sample once in 1 epoch


def test_resumed_method_continues_with_the_same_teacher(tmp_path, monkeypatch):
    """A method restored from the checkpoint after task 1 trains task 2 (KL term on) to the same prompt:
    the teacher is rebuilt from the restored prompt. (The tiny models of the `kif run` crash test write no
    well-formed pseudo-sample, so the term is exercised here.)"""
    def fake(model, encoder, task, template, n, eos_ids, **kw):
        return [Example(f"pseudo-{task}-0", f"{template[0]}7{template[1]}", ("yes",))]

    a = _method(tmp_path / "a")
    train(a, 0, examples("t1", 6))
    consolidate(a, 0, tmp_path / "a" / "k1")
    tensors, meta = a.state_dict()
    b = _method(tmp_path / "b")
    b.load_state_dict(tensors, meta)
    monkeypatch.setattr(generative, "generate_examples", fake)  # what generate_with calls
    runs = []
    for m in (a, b):
        _, stats = train(m, 1, examples("t2", 6), seed=1)
        runs.append((m.model.source.prompt.detach().clone(), stats["loss"], consolidate(m, 1, tmp_path / "k2")))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert runs[0][2]["kd_rows"] == runs[1][2]["kd_rows"] == 1


def test_kd_off(tmp_path, monkeypatch):
    m, _, _ = _task2_ready(tmp_path, monkeypatch, kd_weight=0)
    assert m.teacher is None
    m.model.train()
    m.model(**_batch(m, examples("t2", 2)))
    assert m.extra_loss(m.model) is None
    from kif.errors import ConfigError

    with pytest.raises(ConfigError):
        tiny_config(method="lfpt5", method_args={"kd_weight": -0.1})


@pytest.mark.parametrize("model", ["tiny-t5"])
def test_end_to_end(model, tmp_path):
    out = tmp_path / "run"
    res = run(tiny_config(method="lfpt5", model=model, method_args={"prompt_length": 8, "gen_max_tokens": 32}),
              out, show_progress=False)
    assert res["finished"] and len(res["matrix"]) == 3
    assert res["adapter_bytes"] == (out / "tasks" / "03_sst2" / "adapter" / "prompts.safetensors").stat().st_size
    assert [t["train_examples"] for t in res["per_task"]][0] == 16 + 4
    assert res["per_task"][2]["pseudo_generated"] > 0
    # before task 3 it wrote the memories of tasks 1 and 2: every text drawn, with its task and verdict
    rows = [json.loads(line) for line in (out / "tasks" / "03_sst2" / "generations.jsonl").open()]
    assert [r["task"] for r in rows] == sorted((r["task"] for r in rows), key=["cb", "copa"].index)
    assert {r["task"] for r in rows} == {"cb", "copa"} and len(rows) == res["per_task"][2]["pseudo_generated"]
    assert sum(r["verdict"] == "ok" for r in rows) == res["per_task"][2]["pseudo_well_formed"]


def test_kill_and_resume_matches_uninterrupted(tmp_path, data_dir):
    from helpers import kif_run, write_config

    cfg = write_config(tmp_path / "cfg.yaml", method="lfpt5", method_args={"prompt_length": 8, "gen_max_tokens": 32})
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert kif_run(cfg, ref).returncode == 0
    want = read_results(ref)
    assert want["finished"]
    steps = sum(t["steps"] for t in want["per_task"][:2])
    assert kif_run(cfg, out, fault=f"train_step:{steps + 2}").returncode == -9  # in task 3
    resumed = kif_run(cfg, out)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr
    got = read_results(out)
    assert got["matrix"] == want["matrix"]
    assert [t["loss"] for t in got["per_task"]] == [t["loss"] for t in want["per_task"]]
    a = load_tensors(out / "tasks" / "03_sst2" / "adapter" / "prompts.safetensors")
    b = load_tensors(ref / "tasks" / "03_sst2" / "adapter" / "prompts.safetensors")
    assert torch.equal(a["prompt"], b["prompt"])
