"""Prompt-based baselines (kif/prompting.py, progprompt, l2p): the prompted model, the
mechanisms of each method, end-to-end runs on tiny-llama and tiny-t5, and crash/resume."""
import os
import subprocess
import sys

import pytest
import torch
import yaml
from torch import nn

from kif.encoding import Encoder, pad
from kif.io import load_tensors
from kif.methods import RunContext, get_method
from kif.methods.l2p import pool_query, select, surrogate_loss
from kif.methods.progprompt import ProgressivePrompts
from kif.models import load_model
from kif.prompting import PromptedModel
from kif.runner import run

from helpers import read_results, tiny_config

TASKS = ["cb", "copa", "sst2"]


class Fixed(nn.Module):
    """A prompt source returning a given tensor."""

    def __init__(self, rows):
        super().__init__()
        self.rows = nn.Parameter(rows)

    def forward(self, input_ids, attention_mask):
        return self.rows


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-t5"])
def lm(request):
    torch.manual_seed(0)
    return load_model(request.param)


def _batch(lm, texts, left):
    ids = [lm.tokenizer(t)["input_ids"] for t in texts]
    return ids, pad(ids, lm.tokenizer.pad_token_id, left=left), pad([[1] * len(s) for s in ids], 0, left=left)


# ---- the prompted model ---------------------------------------------------------------------------

def test_empty_prompt_is_the_bare_model(lm):
    base = lm.model.eval()
    model = PromptedModel(base, Fixed(torch.zeros(0, base.get_input_embeddings().weight.shape[1])))
    _, ids, mask = _batch(lm, ["the cat sat on the mat", "a b"], left=not lm.is_seq2seq)
    gen = dict(max_new_tokens=4, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, **gen),
                       base.generate(input_ids=ids, attention_mask=mask, **gen))
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        a, b = model(ids, mask, labels=labels), base(input_ids=ids, attention_mask=mask, labels=labels)
    assert torch.allclose(a.logits, b.logits, atol=1e-5) and torch.allclose(a.loss, b.loss, atol=1e-5)


def test_prompt_reaches_the_model_and_padding_changes_nothing(lm):
    """A strong prompt changes the output; a row generates the same alone and in a padded batch
    (decoder-only: left padding after the prompt, positions from the mask)."""
    base = lm.model.eval()
    d = base.get_input_embeddings().weight.shape[1]
    model = PromptedModel(base, Fixed(torch.randn(4, d, generator=torch.Generator().manual_seed(1)) * 3))
    texts = ["the cat sat on the mat today", "a b"]
    rows, ids, mask = _batch(lm, texts, left=not lm.is_seq2seq)
    gen = dict(max_new_tokens=6, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    batch = model.generate(input_ids=ids, attention_mask=mask, **gen)
    for i, row in enumerate(rows):
        alone = model.generate(input_ids=torch.tensor([row]), **gen)
        if lm.is_seq2seq:
            assert alone[0].tolist() == batch[i, :alone.shape[1]].tolist()
        else:  # [input_ids; new tokens], as generate(input_ids=...) returns
            assert alone[0, len(row):].tolist() == batch[i, ids.shape[1]:].tolist()
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        logits = model(ids, mask, labels=labels).logits
        bare = base(input_ids=ids, attention_mask=mask, labels=labels).logits
    assert logits.shape == bare.shape  # the prompt's positions are dropped (decoder-only)
    assert not torch.allclose(logits, bare, atol=1e-3)


def test_prompted_model_freezes_the_base(lm):
    model = PromptedModel(lm.model, Fixed(torch.zeros(2, lm.model.get_input_embeddings().weight.shape[1])))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["source.rows"]


# ---- ProgPrompt ---------------------------------------------------------------------------------------

def test_progressive_order_newest_first():
    """[P_3; P_2; P_1; x]: the current prompt, then the frozen ones, newest first (the
    authors' concat([prompt, previous_prompts]) and concat([new_prompt, previous_prompts]))."""
    src = ProgressivePrompts(2, "cpu")
    p1, p2, p3 = (torch.full((2, 2), float(v)) for v in (1, 2, 3))
    src.start(p1.clone(), None)
    assert torch.equal(src(None, None), p1)
    src.freeze_current()
    src.start(p2.clone(), None)
    assert torch.equal(src(None, None), torch.cat([p2, p1]))
    src.freeze_current()
    src.start(p3.clone(), None)
    assert torch.equal(src(None, None), torch.cat([p3, p2, p1]))
    assert [n for n, _ in src.named_parameters()] == ["current"]  # P_1, P_2 are buffers: never trained


def test_residual_mlp_prompt_is_stored_after_the_mlp():
    src = ProgressivePrompts(4, "cpu")
    torch.manual_seed(0)
    p = torch.randn(3, 4)
    src.start(p.clone(), 8)
    want = src.mlp(src.current).detach()
    assert not torch.allclose(want, p)
    src.freeze_current()
    assert torch.allclose(src.previous, want) and src.mlp is None and src.current is None


def _context(method, model, tmp_path, **overrides):
    cfg = tiny_config(method=method, model=model, tasks=TASKS, **overrides)
    lm = load_model(model)
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0],
                  cfg.data.max_input_length, cfg.data.max_target_length)
    return get_method(method)(RunContext(cfg, lm, enc, TASKS, tmp_path))


def _train(method, k, data, start=True):
    from kif.training import train_task

    if start:
        method.before_task(k)
    stats = train_task(method.model, method.ctx.encoder, data, method.ctx.cfg.train, 42 + k,
                       extra_loss=method.extra_loss, step_hook=method.on_gradients,
                       post_step_hook=method.on_step_end, show_progress=False)
    method.after_task(k, method.ctx.out_dir)
    return stats


@pytest.mark.parametrize("residual_mlp", [False, True])
def test_progprompt_trains_only_the_new_prompt(tmp_path, data_dir, residual_mlp):
    from kif.data import get_benchmark

    bench = get_benchmark("long_sequence")
    m = _context("progprompt", "tiny-llama", tmp_path, train={"learning_rate": 0.3},
                 method_args={"prompt_length": 3, "residual_mlp": residual_mlp})
    base_before = {n: p.detach().clone() for n, p in m.model.base.named_parameters()}
    data = [bench.tasks[t].load("train")[:8] for t in TASKS[:2]]
    _train(m, 0, data[0])
    p1 = m.model.source.previous.clone()
    assert p1.shape == (3, m.model.embedding_dim)
    m.before_task(1)
    start2 = m.model.source.current.detach().clone()
    _train(m, 1, data[1], start=False)  # P_1 is bit-identical afterwards; P_2 moved, in front
    prev = m.model.source.previous
    assert prev.shape[0] == 6
    assert torch.equal(prev[3:], p1)
    assert not torch.equal(prev[:3], start2)
    for n, p in m.model.base.named_parameters():
        assert torch.equal(p, base_before[n]), n


def test_progprompt_task_id_inference_uses_the_prompts_up_to_the_task(tmp_path, data_dir):
    """``inference: task_id`` (issue 28): an input of task i is answered with [P_i; ...; P_1], the
    input it was trained with, so its logits after later tasks are bit-identical to those right
    after task i; ``all`` (the default) prepends the later prompts too and changes them."""
    from kif.data import get_benchmark

    bench = get_benchmark("long_sequence")
    m = _context("progprompt", "tiny-llama", tmp_path, train={"learning_rate": 0.3},
                 method_args={"prompt_length": 3, "inference": "task_id"},
                 per_task={"method_args": {"prompt_length": [3, 2, 3]}})
    data = [bench.tasks[t].load("train")[:8] for t in TASKS[:2]]
    enc = m.ctx.encoder
    ids = [enc.prompt_ids(ex.prompt) for ex in data[0][:2]]
    batch = pad(ids, enc.tokenizer.pad_token_id, left=True)
    mask = pad([[1] * len(x) for x in ids], 0, left=True)

    def logits():
        with torch.no_grad():
            return m.model(input_ids=batch, attention_mask=mask).logits[:, -1].clone()

    _train(m, 0, data[0])
    after_first = logits()
    _train(m, 1, data[1])
    assert m.lengths == [3, 2] and m.source.previous.shape[0] == 5
    with m.eval_task_context(0):
        assert m.source.previous.shape[0] == 3 and torch.equal(logits(), after_first)
    assert m.source.previous.shape[0] == 5  # restored
    assert not torch.equal(logits(), after_first)  # all prompts: the later P_2 changes task 1's answer
    with m.eval_task_context(1), m.eval_task_context(2):  # task 2 itself, and a task not learned yet: all
        assert m.source.previous.shape[0] == 5
    m.opts = m.opts.model_copy(update={"inference": "all"})
    with m.eval_task_context(0):
        assert m.source.previous.shape[0] == 5
    _, meta = m.extra_state()
    assert meta["lengths"] == [3, 2]


def test_progprompt_task_id_run_keeps_each_tasks_answers(tmp_path, data_dir):
    """Through the runner: under task_id a learned task's predictions never change (BWT 0 by construction)."""
    cfg = tiny_config(method="progprompt", train={"learning_rate": 0.3}, method_args={"inference": "task_id"})
    res = run(cfg, tmp_path / "out", show_progress=False)
    assert res["prompt_inference"] == "task_id" and res["BWT"] == 0
    tasks = tmp_path / "out" / "tasks"
    for i, t in enumerate(TASKS[:2]):
        first = (tasks / f"{i + 1:02d}_{t}" / "predictions" / f"{t}.jsonl").read_text()
        assert (tasks / "03_sst2" / "predictions" / f"{t}.jsonl").read_text() == first, t


# ---- L2P ------------------------------------------------------------------------------------------------

def test_l2p_selects_the_nearest_keys_by_cosine():
    keys = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0], [-1.0, 0, 0]])
    query = torch.tensor([[2.0, 0.2, 0.0],   # cos: k0 .995, k3 .778, k1 .0995, k2 0, k4 -.995
                          [0.0, 0.0, -5.0]])  # cos: k0 0, k1 0, k3 0, k4 0, k2 -1
    idx, sim = select(query, keys * torch.tensor([[3.0], [0.5], [1.0], [7.0], [2.0]]), 2)  # norms don't matter
    assert idx[0].tolist() == [0, 3]
    assert torch.allclose(sim[0], torch.tensor([2 / (4.04 ** 0.5), 2.2 / (4.04 ** 0.5 * 2 ** 0.5)]))
    assert -1 < sim[1, 0] <= 0 and 2 not in idx[1].tolist()  # the opposite key is never picked


def test_l2p_surrogate_loss_pulls_the_selected_keys_to_the_query():
    keys = nn.Parameter(torch.tensor([[1.0, 1.0, 0], [0, 1.0, 1.0], [-1.0, 0, 1.0]]))
    query = torch.tensor([[1.0, 0.0, 0.0]])
    idx, sim = select(query, keys, 1)
    assert idx.tolist() == [[0]]
    loss = surrogate_loss(sim, 0.5)
    assert loss.item() == pytest.approx(-0.5 / 2 ** 0.5)
    loss.backward()
    assert keys.grad[1:].abs().sum() == 0  # unselected keys get no pull
    before = torch.nn.functional.cosine_similarity(keys[0:1].detach(), query).item()
    with torch.no_grad():
        keys -= 0.5 * keys.grad
    after = torch.nn.functional.cosine_similarity(keys[0:1].detach(), query).item()
    assert after > before


def test_l2p_query_pools_real_tokens_whatever_the_padding():
    h = torch.arange(12, dtype=torch.float).reshape(1, 4, 3).repeat(2, 1, 1)
    right, left = torch.tensor([[1, 1, 0, 0]]), torch.tensor([[0, 0, 1, 1]])
    assert pool_query(h[:1], right, "mean").tolist() == [[1.5, 2.5, 3.5]]
    assert pool_query(h[:1], left, "last").tolist() == [[9.0, 10.0, 11.0]]
    assert pool_query(h[:1], right, "last").tolist() == [[3.0, 4.0, 5.0]]


def test_l2p_training_moves_keys_and_prompts_not_the_base(tmp_path, data_dir):
    from kif.data import get_benchmark

    m = _context("l2p", "tiny-t5", tmp_path, train={"learning_rate": 0.05},
                 method_args={"pool_size": 4, "top_k": 2, "prompt_length": 2})
    base_before = {n: p.detach().clone() for n, p in m.model.base.named_parameters()}
    keys0, prompts0 = m.model.source.keys.detach().clone(), m.model.source.prompts.detach().clone()
    stats = _train(m, 0, get_benchmark("long_sequence").tasks["cb"].load("train")[:8])
    assert stats["regularizer_loss"] < 0  # −λ·Σcos of the chosen keys
    picked = [i for i, c in enumerate(m.pool.counts.tolist()) if c]
    assert len(picked) >= 2 and sum(m.pool.counts.tolist()) == 8 * 2
    moved = (m.model.source.keys.detach() - keys0).abs().sum(1)
    assert all(moved[i] > 0 for i in picked) and all(moved[i] == 0 for i in range(4) if i not in picked)
    assert not torch.equal(m.model.source.prompts.detach(), prompts0)
    for n, p in m.model.base.named_parameters():
        assert torch.equal(p, base_before[n]), n


def test_l2p_top_k_above_pool_is_a_config_error():
    from kif.errors import ConfigError

    with pytest.raises(ConfigError, match="top_k"):
        tiny_config(method="l2p", method_args={"pool_size": 2, "top_k": 3})


# ---- end to end through the runner ------------------------------------------------------------------

@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
@pytest.mark.parametrize("method", ["progprompt", "l2p"])
def test_runs_end_to_end(method, model, tmp_path, data_dir):
    cfg = tiny_config(method=method, model=model, train={"learning_rate": 0.3})
    res = run(cfg, tmp_path / "out", show_progress=False)
    assert res["finished"] and len(res["matrix"]) == 3
    files = [load_tensors(tmp_path / "out" / "tasks" / f"{k + 1:02d}_{t}" / "adapter" / "prompts.safetensors")
             for k, t in enumerate(TASKS)]
    size = (tmp_path / "out" / "tasks" / "03_sst2" / "adapter" / "prompts.safetensors").stat().st_size
    assert res["adapter_bytes"] == size  # the prompts are what a user keeps
    dim = files[0]["prompts"].shape[-1]
    if method == "progprompt":
        assert res["prompt_inference"] == "all"
        assert [f["prompts"].shape[0] for f in files] == [10, 20, 30]
        # the earlier prompts stay bit-identical, behind the new one
        assert torch.equal(files[1]["prompts"][10:], files[0]["prompts"])
        assert torch.equal(files[2]["prompts"][10:], files[1]["prompts"])
        assert size > 30 * dim * 4
    else:
        assert res["prompt_inference"] == "query_top_k"
        assert files[0]["prompts"].shape == (10, 5, dim) and files[0]["keys"].shape == (10, dim)
        assert not torch.equal(files[0]["keys"], files[2]["keys"])  # the pool keeps training
        assert all(sum(p["prompt_selections"]) == 16 * 5 for p in res["per_task"])
    assert all(p["loss"] is not None for p in res["per_task"])


# ---- crash and resume ---------------------------------------------------------------------------------

def _kif(cfg, out, fault=None):
    env = {k: v for k, v in os.environ.items() if k != "KIF_FAULT"}
    if fault:
        env["KIF_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "kif.cli", "run", str(cfg), "-o", str(out), "-q"],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("method,args", [("progprompt", {"residual_mlp": True, "mlp_bottleneck": 16}),
                                         ("l2p", {})])
def test_kill_and_resume_matches_uninterrupted(method, args, tmp_path, data_dir):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(method=method, train={"learning_rate": 0.3},
                                              method_args=args).model_dump(mode="json")))
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert _kif(cfg, ref).returncode == 0
    killed = _kif(cfg, out, fault="train_step:3")  # task 2's first step (2 steps per task)
    assert killed.returncode == -9, killed.stderr
    resumed = _kif(cfg, out)
    assert resumed.returncode == 0, resumed.stderr
    got, want = read_results(out), read_results(ref)
    assert got["resumed"] == 1 and got["matrix"] == want["matrix"]
    assert [p["loss"] for p in got["per_task"]] == [p["loss"] for p in want["per_task"]]
    for k, t in enumerate(TASKS):
        a = load_tensors(out / "tasks" / f"{k + 1:02d}_{t}" / "adapter" / "prompts.safetensors")
        b = load_tensors(ref / "tasks" / f"{k + 1:02d}_{t}" / "adapter" / "prompts.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in b)
