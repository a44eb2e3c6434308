"""Per-task method options and train values (``per_task:``), and O-LoRA as published
(issue 11, item 6): task k's loss uses task k's λ1 and λ2, by hand."""
from __future__ import annotations

import json

import pytest
import torch

from kif.configure import load_config, validate_config
from kif.errors import ConfigError
from kif.models import load_model
from kif.encoding import Encoder
from kif.methods import RunContext, get_method
from kif.per_task import check_sequence, task_config

from helpers import REPO

TASKS = ["t1", "t2", "t3"]


def olora(tmp_path, per_task, **method_args):
    raw = {"method": "olora", "model": "tiny-llama", "method_args": method_args, "per_task": per_task,
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "train": {"precision": "fp32"},
           "data": {"max_input_length": 64, "max_target_length": 8}}
    cfg = validate_config(raw)
    torch.manual_seed(0)
    lm = load_model(cfg.model)
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0], 64, 8)
    return get_method("olora")(RunContext(cfg, lm, enc, list(TASKS), tmp_path))


def set_a(m, rows: dict[str, tuple[int, int]], extra: dict[str, float] | None = None):
    """Adapter task i's A rows = identity on coordinates [lo, hi); ``extra``: A[0, 0] of an adapter."""
    with torch.no_grad():
        for n, p in m.model.named_parameters():
            for name, (lo, hi) in rows.items():
                if f".lora_A.{name}." in n:
                    p.zero_()
                    p[:, lo:hi] = torch.eye(hi - lo)
                    if extra and name in extra:
                        p[0, 0] = extra[name]


# ---- O-LoRA: the right λ for the right task --------------------------------------------------------

def test_orthogonality_weight_of_task_k_is_task_ks(tmp_path):
    """λ1 = [0, 0.5, 5]: task 2's loss is 0.5·Σ|A1·A2ᵀ|, task 3's 5·(Σ|A1·A3ᵀ| + Σ|A2·A3ᵀ|)."""
    m = olora(tmp_path, {"method_args": {"lambda_1": [0, 0.5, 5]}}, lambda_1=1.0)
    modules = 4  # 2 layers x (q, v) of tiny-llama
    m.before_task(0)
    assert m.extra_loss(m.model) is None  # λ1 0 and nothing to be orthogonal to
    m.before_task(1)
    set_a(m, {"task1": (0, 4), "task2": (4, 8)}, {"task2": 2.0})  # overlap |2| per module with task1
    assert m.extra_loss(m.model).item() == pytest.approx(0.5 * 2.0 * modules)
    m.before_task(2)
    # task3's A: rows e8..e11 plus A[0, 0] = 3 -> overlap 3 with task1, 0 with task2, per module
    set_a(m, {"task1": (0, 4), "task2": (4, 8), "task3": (8, 12)}, {"task3": 3.0})
    assert m.extra_loss(m.model).item() == pytest.approx(5 * 3.0 * modules)
    assert m.task_opts(2).lambda_1 == 5 and m.opts.lambda_1 == 1.0  # the base value stays the base


def test_l2_weight_by_task_name_with_default(tmp_path):
    """λ2 = {default: 0.1, t2: 0.3}, λ1 0: the loss is λ2(task)·Σ||P||₂ over the new LoRA's tensors."""
    m = olora(tmp_path, {"method_args": {"lambda_2": {"default": 0.1, "t2": 0.3}}}, lambda_1=0.0)
    for k, lam in [(0, 0.1), (1, 0.3), (2, 0.1)]:
        m.before_task(k)
        new = m.adapter_params(f"task{k + 1}").values()
        want = lam * sum(p.detach().norm().item() for p in new)
        assert m.extra_loss(m.model).item() == pytest.approx(want, rel=1e-5)


def test_a_map_without_default_keeps_the_base_value(tmp_path):
    m = olora(tmp_path, {"method_args": {"lambda_1": {"t3": 5}}}, lambda_1=0.25)
    assert [m.task_opts(k).lambda_1 for k in range(3)] == [0.25, 0.25, 5]


# ---- resolution -------------------------------------------------------------------------------------

def test_task_config_list_map_default_and_train_values():
    cfg = validate_config({"method": "olora", "tasks": ["a", "b", "c"], "train": {"epochs": 1},
                           "per_task": {"train": {"epochs": {"b": 2}, "learning_rate": [1e-3, 2e-3, 3e-3]},
                                        "method_args": {"lambda_2": {"default": 0.1, "c": 0.3}}}})
    got = [(c.train.epochs, c.train.learning_rate, c.method_args.get("lambda_2"))
           for c in (task_config(cfg, k, t) for k, t in enumerate(["a", "b", "c"]))]
    assert got == [(1, 1e-3, 0.1), (2, 2e-3, 0.1), (1, 3e-3, 0.3)]
    assert cfg.train.epochs == 1  # the run config itself is untouched


def test_map_keys_may_use_the_names_tasks_gives():
    cfg = validate_config({"tasks": ["task1572_samsum_summary", "b"],
                           "per_task": {"train": {"epochs": {"task1572_samsum_summary": 3}}}})
    check_sequence(cfg, ["task1572", "b"])  # the resolved (canonical) names
    assert task_config(cfg, 0, "task1572").train.epochs == 3


# ---- validation at load -----------------------------------------------------------------------------

@pytest.mark.parametrize("per_task,message", [
    ({"method_args": {"lambda_1": [0.5, 5]}}, "per_task.method_args.lambda_1: 2 values for a sequence of 3 tasks"),
    ({"method_args": {"lambda_1": {"yahoo": 5}}}, "per_task.method_args.lambda_1: 'yahoo' is not a task"),
    ({"method_args": {"lambda_1": {"cb": -1}}}, "per_task.method_args.lambda_1.cb: Input should be greater"),
    ({"method_args": {"lambda_1": [0, "x", 1]}}, r"per_task.method_args.lambda_1\[1\]: Input should be"),
    ({"method_args": {"lambda_3": {"cb": 1}}}, "per_task.method_args.lambda_3.cb: unknown key"),
    ({"method_args": {"lambda_1": 0.5}}, "per_task.method_args.lambda_1: give a list"),
    ({"train": {"epoch": {"cb": 2}}}, "per_task.train.epoch: unknown key"),
    ({"train": {"epochs": {"cb": 0}}}, "per_task.train.epochs.cb: Input should be greater than 0"),
    ({"model": {}}, "per_task.model: unknown key"),
    ({"train": {"validation_samples": [1, 2, 3]}}, "per_task.train.validation_samples: the held-out examples"),
])
def test_per_task_errors_at_load(per_task, message):
    raw = {"method": "olora", "tasks": ["cb", "copa", "wic"], "per_task": per_task}
    with pytest.raises(ConfigError, match=message):
        validate_config(raw)


def test_builtin_order_checked_at_load_without_data(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: olora\nbenchmark: long_sequence\norder: '1'\n"
                    "data_dir: /nonexistent\nper_task: {method_args: {lambda_1: [0.5, 5]}}\n")
    with pytest.raises(ConfigError, match="2 values for a sequence of 15 tasks"):
        load_config(path)


def test_joint_method_takes_no_per_task_values():
    with pytest.raises(ConfigError, match="per_task: method 'mtl' trains all tasks in one stage"):
        validate_config({"method": "mtl", "tasks": ["cb"], "per_task": {"train": {"epochs": [2]}}})


# ---- through the runner ----------------------------------------------------------------------------

def tiny_bench(tmp_path):
    for name in ("a", "b"):
        rows = [{"input": f"{name} item {i}. Answer:", "output": "yes" if i % 2 else "no"} for i in range(8)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "bench.yaml").write_text(
        "name: tiny\ntasks:\n  a: {path: a.jsonl, metric: accuracy}\n  b: {path: b.jsonl, metric: accuracy}\n"
        "orders:\n  main: [a, b]\n")
    return str(tmp_path / "bench.yaml")


def run_cfg(tmp_path, per_task, method="olora"):
    return validate_config({
        "method": method, "model": "tiny-llama", "benchmark": tiny_bench(tmp_path), "order": "main",
        "per_task": per_task, "lora": {"r": 4, "alpha": 8},
        "data": {"max_input_length": 64, "max_target_length": 8, "test_samples": 2},
        "train": {"epochs": 1, "batch_size": 4, "precision": "fp32", "learning_rate": 1e-3},
        "eval": {"batch_size": 4, "max_new_tokens": 2}})


def test_sequence_known_only_at_run_is_checked_before_the_model_loads(tmp_path):
    from kif.runner import load_sequence_data

    cfg = run_cfg(tmp_path, {"method_args": {"lambda_1": [0.5, 5, 5]}})  # the YAML's order: not known at load
    with pytest.raises(ConfigError, match="per_task.method_args.lambda_1: 3 values for a sequence of 2 tasks"):
        load_sequence_data(cfg)
    cfg = run_cfg(tmp_path, {"train": {"epochs": {"c": 2}}})
    with pytest.raises(ConfigError, match="'c' is not a task of the sequence"):
        load_sequence_data(cfg)


def test_per_task_epochs_reach_the_trainer(tmp_path):
    from kif.runner import run

    res = run(run_cfg(tmp_path, {"train": {"epochs": {"b": 2}}, "method_args": {"lambda_1": [0, 5]}}),
              tmp_path / "out", show_progress=False)
    assert [s["steps"] for s in res["per_task"]] == [2, 4]  # 8 examples, batch 4: 2 steps an epoch


# ---- the shipped O-LoRA configs ------------------------------------------------------------------

def test_olora_configs_reproduce_the_published_script():
    """configs/paper/olora_long_sequence_order3.yaml = O-LoRA's long_olora/hyparam.sh task by task;
    configs/table1/olora.yaml carries the same values over to order 1."""
    from pathlib import Path

    from kif.per_task import known_sequence

    root = REPO / "configs"
    script = {  # task: (lamda_1, lamda_2, epochs) as hyparam.sh passes them, in its order
        "yelp": (0, 0, 1), "amazon": (0.5, 0, 1), "mnli": (0.5, 0, 2), "cb": (0.5, 0, 1), "copa": (0.5, 0.1, 1),
        "qqp": (0.5, 0.1, 1), "rte": (0.5, 0.3, 1), "imdb": (0.5, 0, 1), "sst2": (0.5, 0.1, 1),
        "dbpedia": (5, 0, 1), "agnews": (5, 0, 1), "yahoo": (5, 0.1, 1), "multirc": (5, 0, 1),
        "boolq": (5, 0.1, 1), "wic": (5, 0.3, 1)}
    for name, order in [("paper/olora_long_sequence_order3.yaml", list(script)), ("table1/olora.yaml", None)]:
        cfg = load_config(root / name)
        seq = known_sequence(cfg)
        assert order is None or seq == order
        assert (cfg.train.learning_rate, cfg.train.lr_scheduler, cfg.train.validation_samples) == (1e-3, "constant", 0)
        for k, t in enumerate(seq):
            c = task_config(cfg, k, t)
            lam1 = list(script.values())[k][0]  # λ1 by position, λ2 and epochs by task
            assert (c.method_args["lambda_1"], c.method_args["lambda_2"], c.train.epochs) == (
                lam1, script[t][1], script[t][2]), (name, t)
