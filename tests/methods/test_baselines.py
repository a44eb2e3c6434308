"""Baseline CL methods (docs/method.md §8): mechanics on tiny models, driven through CLMethod hooks."""
from __future__ import annotations

import json
import math

import pytest
import torch

from kif.configure import validate_config
from kif.data import Example
from kif.encoding import Encoder
from kif.errors import ConfigError
from kif.io import dir_bytes
from kif.methods import RunContext, get_method
from kif.methods.ewc import ewc_penalty
from kif.replay import Memory, memory_size
from kif.methods.olora import l2_loss, orthogonality_loss
from kif.runner import consolidate
from kif.models import load_model
from kif.training import StepGuard, train_task

TASKS = ["t1", "t2", "t3"]


def make(method: str, tmp_path, model: str = "tiny-llama", method_args=None, **cfg):
    raw = {"method": method, "model": model, "method_args": method_args or {},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
           "train": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-2, "precision": "fp32",
                     "group_by_length": False, "logging_steps": 1},
           "data": {"max_input_length": 64, "max_target_length": 8}}
    raw.update(cfg)
    c = validate_config(raw)
    torch.manual_seed(0)
    lm = load_model(c.model, c.data.prompt_format)
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0],
                  c.data.max_input_length, c.data.max_target_length)
    return get_method(method)(RunContext(c, lm, enc, list(TASKS), tmp_path))


def examples(task: str, n: int) -> list[Example]:
    return [Example(f"{task}-{i}", f"{task} item {i}. Answer:", ("yes" if i % 2 else "no",)) for i in range(n)]


def train(m, k: int, exs, seed: int = 0, **kw):
    exs = m.train_examples(k, exs)
    m.before_task(k)
    stats = train_task(m.model, m.ctx.encoder, exs, m.ctx.cfg.train, seed, extra_loss=m.extra_loss,
                       step_hook=m.on_gradients, post_step_hook=m.on_step_end, show_progress=False, **kw)
    return exs, stats


def snapshot(params: dict) -> dict:
    return {n: p.detach().clone() for n, p in params.items()}


# ---- IncLoRA / O-LoRA -------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["inclora", "olora"])
def test_inclora_old_adapters_frozen_and_saved(method, tmp_path):
    m = make(method, tmp_path)
    train(m, 0, examples("t1", 4))
    consolidate(m, 0, tmp_path / "k1")
    task1 = snapshot(m.adapter_params("task1"))
    assert any(n.endswith("lora_B.task1.weight") and p.abs().sum() > 0 for n, p in task1.items())

    m.before_task(1)
    assert m.model.active_adapters == ["task1", "task2"]
    assert set(m.trainable()) == set(m.adapter_params("task2"))  # only the new adapter trains
    task2_init = snapshot(m.adapter_params("task2"))
    _, stats = train(m, 1, examples("t2", 4), seed=1)
    assert stats["steps"] == 2
    for n, p in m.adapter_params("task1").items():
        assert torch.equal(p, task1[n]), n  # bit-identical
    assert any(not torch.equal(p, task2_init[n]) for n, p in m.adapter_params("task2").items())

    consolidate(m, 1, tmp_path / "k2")
    saved = sorted(p.parent.name for p in (tmp_path / "k2" / "adapter").glob("*/adapter_model.safetensors"))
    assert saved == ["task1", "task2"]  # grows with the number of tasks
    assert [p.parent.name for p in (tmp_path / "k1" / "adapter").glob("*/adapter_model.safetensors")] == ["task1"]
    assert m.state_summary() == {"adapters": 2}


def test_inclora_forward_is_base_plus_sum_of_adapters(tmp_path):
    m = make("inclora", tmp_path)
    m.before_task(0)
    m.before_task(1)
    m.before_task(2)
    torch.manual_seed(1)
    with torch.no_grad():  # non-zero B everywhere, so every adapter contributes
        for n, p in m.model.named_parameters():
            if ".lora_B." in n:
                p.normal_(std=0.5)
    m.model.eval()
    layer = m.model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, layer.in_features)
    with torch.no_grad():
        want = layer.base_layer(x)
        for a in ["task1", "task2", "task3"]:
            want = want + layer.scaling[a] * layer.lora_B[a](layer.lora_A[a](x))
        assert torch.allclose(layer(x), want, atol=1e-6)

        ids = torch.tensor([[1, 50, 60, 70, 80]])
        all_logits = m.model(input_ids=ids).logits
        m.model.base_model.set_adapter(["task1", "task3"])  # drop task2: output changes
        assert not torch.allclose(m.model(input_ids=ids).logits, all_logits)
        with m.model.disable_adapter():
            base_logits = m.model(input_ids=ids).logits
        assert not torch.allclose(base_logits, all_logits)


def test_inclora_needs_lora(tmp_path):
    with pytest.raises(ConfigError, match="lora.enabled"):
        make("olora", tmp_path, lora={"enabled": False})


def test_orthogonality_loss_hand_numbers():
    a_old = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    orth = torch.tensor([[0, 0, 1.0, 0], [0, 0, 0, 2.0]])
    assert orthogonality_loss([(a_old, orth)]).item() == 0.0
    assert orthogonality_loss([(a_old, orth)], "squared").item() == 0.0
    a_new = torch.tensor([[3.0, 0, 0, 0], [0, -2.0, 1.0, 0]])  # overlap [[3, 0], [0, -2]]
    assert orthogonality_loss([(a_old, a_new)]).item() == 5.0
    assert orthogonality_loss([(a_old, a_new)], "squared").item() == 13.0
    assert orthogonality_loss([(a_old, a_new), (a_old, orth)]).item() == 5.0  # summed over pairs
    assert orthogonality_loss([]).item() == 0.0
    assert l2_loss([torch.tensor([3.0, 4.0]), torch.tensor([[1.0]])]).item() == 6.0  # 5 + 1, unsquared


def test_olora_extra_loss_zero_for_orthogonal_subspaces(tmp_path):
    m = make("olora", tmp_path, method_args={"lambda_1": 0.5})
    m.before_task(0)
    assert m.extra_loss(m.model) is None  # nothing to be orthogonal to yet
    m.before_task(1)
    n_modules = sum(1 for n in m.adapter_params("task1") if ".lora_A." in n)
    assert len(m._pairs) == n_modules == 4  # 2 layers x (q, v)
    with torch.no_grad():  # task1 rows on the first 4 coordinates, task2 on the next 4
        for n, p in m.model.named_parameters():
            if ".lora_A.task1." in n:
                p.zero_()
                p[:, :4] = torch.eye(4)
            elif ".lora_A.task2." in n:
                p.zero_()
                p[:, 4:8] = torch.eye(4)
    assert m.extra_loss(m.model).item() == 0.0
    with torch.no_grad():
        for n, p in m.model.named_parameters():
            if ".lora_A.task2." in n:
                p[0, 0] = 2.0  # one entry of overlap 2 per module
    loss = m.extra_loss(m.model)
    assert loss.item() == pytest.approx(0.5 * 2.0 * n_modules)
    loss.backward()  # gradient reaches the new A only
    assert all(p.grad is None for p in m.adapter_params("task1").values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.adapter_params("task2").values())


def test_olora_lambda2(tmp_path):
    m = make("olora", tmp_path, method_args={"lambda_1": 0.0, "lambda_2": 0.1})
    m.before_task(0)
    want = 0.1 * sum(p.detach().norm().item() for p in m.adapter_params("task1").values())
    assert m.extra_loss(m.model).item() == pytest.approx(want, rel=1e-5)


def test_method_args_unknown_key(tmp_path):
    with pytest.raises(ConfigError, match="method_args.lambda_3: unknown key"):
        make("olora", tmp_path, method_args={"lambda_3": 1})


# ---- EWC ----------------------------------------------------------------------------------------

def test_ewc_penalty_hand_numbers():
    theta_star = [torch.tensor([0.0, 3.0])]
    f = [torch.tensor([1.0, 2.0])]
    assert ewc_penalty([torch.tensor([0.0, 3.0])], f, theta_star, 10.0).item() == 0.0  # zero at θ*
    # λ/2 · (1·1² + 2·2²) = 5 · 9
    assert ewc_penalty([torch.tensor([1.0, 1.0])], f, theta_star, 10.0).item() == 45.0
    assert ewc_penalty([torch.tensor([1.0, 1.0])], [2 * f[0]], theta_star, 10.0).item() == 90.0  # ∝ F


def test_ewc_fisher_is_mean_squared_gradient(tmp_path):
    m = make("ewc", tmp_path, method_args={"fisher_samples": 3, "fisher_batch_size": 1})
    exs = examples("t1", 3)
    fisher = m.compute_fisher(exs, seed=0)
    # by hand: per-example gradients of the LM loss, squared, averaged
    params = m.trainable()
    want = {n: torch.zeros_like(p) for n, p in params.items()}
    m.model.eval()
    for ex in exs:
        f = m.ctx.encoder.train_features(ex)
        out = m.model(input_ids=torch.tensor([f["input_ids"]]), labels=torch.tensor([f["labels"]]))
        grads = torch.autograd.grad(out.loss, list(params.values()))
        for n, g in zip(params, grads):
            want[n] += g.square() / 3
    assert set(fisher) == set(params)
    for n in params:
        assert torch.allclose(fisher[n], want[n], rtol=1e-4, atol=1e-12), n
    assert sum(f.sum() for f in fisher.values()) > 0
    assert all(p.grad is None for p in params.values())  # leaves no gradients behind


def test_ewc_online_accumulation_and_penalty(tmp_path):
    m = make("ewc", tmp_path, method_args={"lambda_": 4.0, "gamma": 0.5})
    names = list(m.trainable())
    f1 = {n: torch.full_like(p, 2.0) for n, p in m.trainable().items()}
    m.consolidate(f1)
    m.before_task(1)
    assert m.extra_loss(m.model).item() == 0.0  # at θ*
    p0 = m.trainable()[names[0]]
    with torch.no_grad():
        p0[0, 0] += 3.0
    assert m.extra_loss(m.model).item() == pytest.approx(4.0 / 2 * 2.0 * 9.0)
    m.consolidate({n: torch.ones_like(t) for n, t in f1.items()})  # F = 0.5·2 + 1 = 2; θ* moves
    assert torch.equal(m.fisher[names[0]], torch.full_like(f1[names[0]], 2.0))
    assert torch.equal(m.anchor[names[0]], p0.detach())


def test_ewc_after_task_runs_fisher(tmp_path):
    m = make("ewc", tmp_path, method_args={"fisher_samples": 2})
    train(m, 0, examples("t1", 4))
    stats = consolidate(m, 0, tmp_path / "k1")
    assert stats["fisher_mean"] > 0 and (tmp_path / "k1" / "adapter" / "adapter_model.safetensors").is_file()
    _, st = train(m, 1, examples("t2", 4))
    assert st["loss"] is not None and m.extra_loss(m.model).item() > 0  # weights moved away from θ*


# ---- Replay / Memory ----------------------------------------------------------------------------

def test_memory_sizes():
    assert memory_size(1000, 0.02, None, 1) == 20
    assert memory_size(8, 0.02, None, 1) == 1  # at least one
    assert memory_size(100, 0.07, None, 1) == 7  # not 8 from 7.000000000000001
    assert memory_size(101, 0.02, None, 1) == 3  # ceil(2.02)
    assert memory_size(10, 0.02, per_task=4, min_per_task=1) == 4
    assert memory_size(3, 0.5, per_task=10, min_per_task=1) == 3  # never more than the task has
    assert memory_size(0, 0.02, None, 1) == 0


def test_replay_mixes_memory_in_configured_proportion(tmp_path):
    m = make("replay", tmp_path, method_args={"memory_fraction": 0.02})
    t1, t2, t3 = examples("t1", 100), examples("t2", 50), examples("t3", 8)
    assert m.train_examples(0, t1) == t1
    consolidate(m, 0, tmp_path / "k1")
    got = m.train_examples(1, t2)
    assert len(got) == 50 + 2 and got[:50] == t2 and set(got[50:]) <= set(t1)
    consolidate(m, 1, tmp_path / "k2")
    got = m.train_examples(2, t3)
    mem = got[8:]
    assert len(mem) == 2 + 1 and sum(e in t1 for e in mem) == 2 and sum(e in t2 for e in mem) == 1
    assert m.state_summary() == {"memory": {"t1": 2, "t2": 1}}


def test_memory_deterministic_and_state_dict():
    a, b = Memory(0.1, None, 1, seed=7), Memory(0.1, None, 1, seed=7)
    t = examples("t1", 50)
    assert a.add("t1", t) == b.add("t1", t)
    assert a.add("t1", t) != Memory(0.1, None, 1, seed=8).add("t1", t)
    kept = a.task_examples("t1")
    assert [t.index(e) for e in kept] == sorted(t.index(e) for e in kept)  # original order
    a.add("t2", examples("t2", 10), select=False)
    state = json.loads(json.dumps(a.state_dict()))  # plain JSON
    c = Memory.from_state_dict(state)
    assert c.examples_before(2) == a.examples_before(2) and c.examples_before(1) == kept
    assert c.sizes() == {"t1": 5, "t2": 10} and len(c) == 15


# ---- Weight-Ensemble / EMA ----------------------------------------------------------------------

def _set_all(params: dict, value: float):
    with torch.no_grad():
        for p in params.values():
            p.fill_(value)


def test_weight_ensemble_eq14(tmp_path):
    m = make("weight-ensemble", tmp_path, method_args={"lambda_": 0.25})
    params = m.trainable()
    _set_all(params, 1.0)
    consolidate(m, 0, tmp_path / "k1")  # k = 1 initialises
    assert all(torch.all(p == 1.0) for p in params.values())
    _set_all(params, 3.0)
    consolidate(m, 1, tmp_path / "k2")
    assert all(torch.allclose(p, torch.full_like(p, 0.25 * 1 + 0.75 * 3)) for p in params.values())  # 2.5
    _set_all(params, 5.0)
    consolidate(m, 2, tmp_path / "k3")
    assert all(torch.allclose(p, torch.full_like(p, 0.25 * 2.5 + 0.75 * 5)) for p in params.values())
    assert (tmp_path / "k3" / "adapter" / "adapter_model.safetensors").is_file()


def test_ema_two_steps_by_hand(tmp_path):
    d = 0.9
    m = make("ema", tmp_path, method_args={"decay": d})
    params = m.trainable()
    _set_all(params, 1.0)
    m.before_task(0)  # EMA starts at the weights before training: 1
    _set_all(params, 2.0)
    m.on_step_end()
    _set_all(params, 4.0)
    m.on_step_end()
    consolidate(m, 0, tmp_path / "k1")
    want = d * d * 1 + d * (1 - d) * 2 + (1 - d) * 4
    assert all(torch.allclose(p, torch.full_like(p, want)) for p in params.values())


def record_steps(m, params) -> list:
    """Snapshots of ``params`` right after each optimizer step (before the method's own hook)."""
    seen, orig = [], m.on_step_end

    def record():
        seen.append(snapshot(params))
        orig()

    m.on_step_end = record
    return seen


def test_ema_wired_after_optimizer_step(tmp_path):
    d = 0.5
    m = make("ema", tmp_path, method_args={"decay": d})
    params = m.trainable()
    p0 = snapshot(params)
    seen = record_steps(m, params)
    train(m, 0, examples("t1", 4))
    assert len(seen) == 2 and m.updates == 2
    n = next(n for n in params if ".lora_B." in n)
    assert not torch.equal(seen[0][n], p0[n])  # the hook saw the weights after the step
    consolidate(m, 0, tmp_path / "k1")
    want = d * d * p0[n] + d * (1 - d) * seen[0][n] + (1 - d) * seen[1][n]
    assert torch.allclose(params[n], want)


def test_ema_half_life_per_task_by_hand(tmp_path):
    # half_life 0.5 of a 2-step task (4 examples, batch 2): d = 0.5^(1/(0.5·2)) = 0.5
    m = make("ema", tmp_path, method_args={"half_life": 0.5})
    params = m.trainable()
    p0 = snapshot(params)
    seen = record_steps(m, params)
    _, stats = train(m, 0, examples("t1", 4))
    assert stats["steps"] == 2 == m.task_steps and m.decay == 0.5
    s0 = consolidate(m, 0, tmp_path / "k1")
    assert s0["ema_decay"] == 0.5 and s0["ema_planned_steps"] == 2
    n = next(n for n in params if ".lora_B." in n)
    want = 0.25 * p0[n] + 0.25 * seen[0][n] + 0.5 * seen[1][n]  # the pre-task weights keep ½^2
    assert torch.allclose(params[n], want)
    train(m, 1, examples("t2", 8), seed=1)  # 4 steps: d = 0.5^(1/2), still ½ at mid-task
    assert m.task_steps == 4 and m.decay == pytest.approx(0.5 ** 0.5)


def test_ema_decay_and_half_life_are_exclusive():
    with pytest.raises(ConfigError, match="method_args.half_life: .*not both"):
        validate_config({"method": "ema", "method_args": {"decay": 0.99, "half_life": 0.5}})
    with pytest.raises(ConfigError, match="method_args.half_life"):
        validate_config({"method": "ema", "method_args": {"half_life": 0}})
    assert validate_config({"method": "ema", "method_args": {"decay": 0.999}}).method_args == {"decay": 0.999}


def test_step_guard_post_hook_skips_non_finite_steps():
    p = torch.nn.Parameter(torch.zeros(2))
    calls = []
    guard = StepGuard([p], post_hook=lambda: calls.append(1))
    state = type("State", (), {"global_step": 0})()  # the Trainer's, before the step is counted
    p.grad = torch.tensor([1.0, 2.0])
    guard.on_pre_optimizer_step(None, state, None)
    guard.on_optimizer_step(None, state, None)
    state.global_step = 1
    p.grad = torch.tensor([float("nan"), 0.0])
    with pytest.warns(UserWarning, match="optimizer step 2"):
        guard.on_pre_optimizer_step(None, state, None)
    guard.on_optimizer_step(None, state, None)
    assert calls == [1] and guard.skipped == 1
    assert [e["step"] for e in guard.skipped_batches] == [2]


# ---- end to end (runner) ------------------------------------------------------------------------

E2E_SETS = ["tasks=[copa,sst2]", "data.train_samples=8", "data.test_samples=4", "train.epochs=1",
            "eval.max_new_tokens=4", "data.max_input_length=96", "train.batch_size=4", "lora.r=4"]


def _e2e(method, model, tmp_path, data_dir):
    from kif.configure import load_config
    from kif.runner import run

    cfg = load_config(None, [f"method={method}", f"model={model}", f"data_dir={data_dir}", *E2E_SETS])
    return run(cfg, tmp_path / "run", show_progress=False)


@pytest.mark.parametrize("method", ["inclora", "olora", "ewc", "replay", "weight-ensemble", "ema"])
def test_e2e_sequence(method, tmp_path, data_dir):
    res = _e2e(method, "tiny-llama", tmp_path, data_dir)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["tasks_completed"] == 2 and len(on_disk["matrix"]) == 2 and not on_disk["joint"]
    assert all(len(row) == 2 for row in on_disk["matrix"])
    assert on_disk["AP"] == pytest.approx(res["AP"]) and on_disk["BWT"] is not None
    adapters = sorted(p.relative_to(tmp_path / "run" / "tasks").parent.as_posix()
                      for p in (tmp_path / "run" / "tasks").rglob("adapter_model.safetensors"))
    tasks_dir = tmp_path / "run" / "tasks"
    assert on_disk["adapter_bytes"] == dir_bytes(tasks_dir / "02_sst2" / "adapter") > 0

    def weights(d):
        return sum(p.stat().st_size for p in (tasks_dir / d).rglob("adapter_model.safetensors"))

    if method in ("inclora", "olora"):  # K adapters: storage grows with the tasks
        assert adapters == ["01_copa/adapter/task1", "02_sst2/adapter/task1", "02_sst2/adapter/task2"]
        assert weights("02_sst2") == 2 * weights("01_copa") and on_disk["adapters"] == 2
        assert on_disk["adapter_bytes"] > dir_bytes(tasks_dir / "01_copa" / "adapter")
    else:  # one adapter per task dir
        assert adapters == ["01_copa/adapter", "02_sst2/adapter"]
        assert weights("02_sst2") == weights("01_copa")


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_e2e_mtl_joint(model, tmp_path, data_dir):
    res = _e2e("mtl", model, tmp_path, data_dir)
    assert res["joint"] and len(res["matrix"]) == 1 and len(res["matrix"][0]) == 2
    assert res["AP"] == pytest.approx(sum(res["matrix"][0]) / 2)
    assert res["FWT"] is None and res["BWT"] is None and res["tasks_completed"] == 2
    assert res["per_task"][0]["train_examples"] == 16 and res["per_task"][0]["task"] == "joint"
    assert (tmp_path / "run" / "tasks" / "01_joint" / "adapter" / "adapter_model.safetensors").is_file()
    assert math.isfinite(res["per_task"][0]["loss"])


def test_regularizer_reported_apart_from_the_task_loss(tmp_path):
    """A constant regulariser (3.0, no gradient) leaves training unchanged: the logged loss
    is the plain run's + 3, split back into task_loss and regularizer_loss."""
    def run(extra):
        m = make("seqlora", tmp_path, train={"epochs": 1, "batch_size": 2, "grad_accum": 2,
                                             "learning_rate": 1e-2, "precision": "fp32",
                                             "group_by_length": False, "logging_steps": 1})
        return train_task(m.model, m.ctx.encoder, examples("t1", 8), m.ctx.cfg.train, 0, extra_loss=extra,
                          show_progress=False)

    plain = run(None)
    with_reg = run(lambda model: torch.tensor(3.0))
    assert "regularizer_loss" not in plain
    assert with_reg["regularizer_loss"] == pytest.approx(3.0)
    assert with_reg["loss"] == pytest.approx(plain["loss"] + 3.0, rel=1e-5)
    assert with_reg["task_loss"] == pytest.approx(plain["loss"], rel=1e-5)
