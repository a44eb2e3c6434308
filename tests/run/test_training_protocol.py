"""The harness's training protocol (issue 11, item 7): held-out validation examples, evaluation
every eval_steps, the best weights kept (load_best_model_at_end) and used by the method,
warm-up steps then linear decay."""
from __future__ import annotations

import pytest
import torch

from kif.config import TrainConfig
from kif.configure import validate_config
from kif.data import Example
from kif.encoding import Encoder, TrainCollator
from kif.errors import ConfigError
from kif.io import load_tensors
from kif.models import load_model
from kif.training import FeatureDataset, train_task, training_arguments
from kif.validation import KeepBest, Validator, hold_out, split_validation, validation_loss

from helpers import REPO, read_results, tiny_config


def examples(n: int, task: str = "t") -> list[Example]:
    return [Example(f"{task}-{i}", f"{task} item {i}. Answer:", ("yes" if i % 2 else "no",)) for i in range(n)]


def tiny(model: str = "tiny-llama"):
    torch.manual_seed(0)
    lm = load_model(model)
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0], 64, 8)
    return lm, enc


def lora_model(lm):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(lm.model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                               target_modules=["q_proj", "v_proj"]))


FAST = dict(epochs=1, batch_size=2, learning_rate=1e-2, precision="fp32", group_by_length=False, logging_steps=1)


# ---- config and schedule ------------------------------------------------------------------------

def test_defaults_keep_todays_behaviour():
    t = TrainConfig()
    assert (t.validation_samples, t.select_best, t.warmup_steps, t.warmup_ratio, t.lr_scheduler) == (
        0, False, 0, 0.0, "constant")


def test_warmup_steps_and_ratio_reach_the_trainer(tmp_path):
    args = training_arguments(TrainConfig(warmup_steps=50, lr_scheduler="linear"), str(tmp_path), 0, False)
    assert args.lr_scheduler_type == "linear"
    assert args.get_warmup_steps(1000) == 50  # TaSL: 50 steps, whatever the task length
    args = training_arguments(TrainConfig(warmup_ratio=0.1, lr_scheduler="linear"), str(tmp_path), 0, False)
    assert args.get_warmup_steps(80) == 8  # ceil(0.1 * 80)
    assert training_arguments(TrainConfig(), str(tmp_path), 0, False).get_warmup_steps(80) == 0


def test_linear_schedule_after_warmup_by_hand(tmp_path):
    """lr at step s (0-based, before the update): s/w·lr during warm-up, then linear to 0 at N."""
    from transformers import get_scheduler

    args = training_arguments(TrainConfig(warmup_steps=2, lr_scheduler="linear", learning_rate=1.0),
                              str(tmp_path), 0, False)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler(args.lr_scheduler_type, opt, args.get_warmup_steps(6), 6)
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0, 0.5, 1.0, 0.75, 0.5, 0.25])


@pytest.mark.parametrize("train,key", [
    ({"warmup_steps": 5, "warmup_ratio": 0.1, "lr_scheduler": "linear"}, "warmup_steps or warmup_ratio"),
    ({"warmup_steps": 5}, "constant has no warm-up"),
    ({"select_best": True}, "select_best needs validation_samples"),
    ({"select_metric": "bleu"}, "train.select_metric"),
    ({"validation_samples": -1}, "train.validation_samples"),
    ({"eval_steps": 0}, "train.eval_steps"),
])
def test_protocol_config_errors(train, key):
    with pytest.raises(ConfigError, match=key):
        validate_config({"train": train})


# ---- held-out examples --------------------------------------------------------------------------

def test_split_validation_disjoint_deterministic_ordered():
    exs = examples(10)
    rest, held = split_validation(exs, 3, seed=42)
    assert len(held) == 3 and len(rest) == 7
    assert {e.id for e in held}.isdisjoint(e.id for e in rest)
    assert {e.id for e in held} | {e.id for e in rest} == {e.id for e in exs}
    assert [e.id for e in rest] == [e.id for e in exs if e not in held]  # original order kept
    assert split_validation(exs, 3, seed=42) == (rest, held)
    assert split_validation(exs, 0, seed=42) == (exs, [])


def test_split_validation_keeps_groups_whole():
    exs = [Example(f"d{g}-{i}", f"g{g} {i}", ("x",), group=f"d{g}") for g in range(5) for i in range(2)]
    rest, held = split_validation(exs, 4, seed=0)
    assert len(held) == 4
    assert {e.group for e in held}.isdisjoint(e.group for e in rest)


def test_hold_out_leaving_nothing_is_a_config_error():
    with pytest.raises(ConfigError, match="train.validation_samples: 5 held out of task a's 5"):
        hold_out({"a": examples(5)}, 5, 0)


# ---- validation metric --------------------------------------------------------------------------

def test_validation_loss_is_the_trainers_eval_loss(tmp_path):
    """Same examples, same batches: kif's loss equals ``Trainer.evaluate()``'s eval_loss."""
    from transformers import Trainer, TrainingArguments

    lm, enc = tiny()
    feats = [enc.train_features(ex) for ex in examples(5)]
    ours = validation_loss(lm.model, enc, feats, batch_size=2)
    trainer = Trainer(model=lm.model, args=TrainingArguments(str(tmp_path), per_device_eval_batch_size=2,
                                                             report_to=[], remove_unused_columns=False),
                      eval_dataset=FeatureDataset(feats), data_collator=TrainCollator(enc.tokenizer.pad_token_id))
    assert ours == pytest.approx(trainer.evaluate()["eval_loss"], rel=1e-5)
    # by hand: batches of 2, 2, 1 weighted by their rows
    collate = TrainCollator(enc.tokenizer.pad_token_id)
    with torch.no_grad():
        parts = [lm.model(**collate(feats[s:s + 2])).loss.item() for s in (0, 2, 4)]
    assert ours == pytest.approx((2 * parts[0] + 2 * parts[1] + parts[2]) / 5, rel=1e-6)


def test_score_validator_is_the_task_metric():
    from kif.evaluation import evaluate_task

    lm, enc = tiny()
    held = examples(4)
    eval_cfg = validate_config({"eval": {"batch_size": 2, "max_new_tokens": 3}}).eval
    v = Validator("score", enc, [(held, "accuracy")], lm.eos_token_ids, 2, eval_cfg)
    assert v.greater_is_better and v.n_examples == 4
    want = evaluate_task(lm.model, enc, held, "accuracy", lm.eos_token_ids, batch_size=2, max_new_tokens=3).score
    assert v(lm.model) == want


# ---- keeping the best weights ---------------------------------------------------------------------

class Scripted:
    """A validator returning fixed values, copying the trainable weights at each call."""

    def __init__(self, values, greater_is_better=False):
        self.values, self.greater_is_better = list(values), greater_is_better
        self.kind, self.n_examples, self.seen = "loss", 0, []

    def __call__(self, model):
        self.seen.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return self.values[len(self.seen) - 1]


def _train(values, greater=False, **cfg):
    lm, enc = tiny()
    model = lora_model(lm)
    v = Scripted(values, greater)
    stats = train_task(model, enc, examples(8), TrainConfig(**{**FAST, **cfg}), 0, show_progress=False, validator=v)
    now = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return stats, v, now


def _same(a, b) -> bool:
    return all(torch.equal(a[n], b[n]) for n in a)


def test_best_weights_kept_lower_loss_tie_keeps_earlier():
    # 8 examples, batch 2: 4 steps, evaluated after each; the loss is lowest at step 2 and
    # ties it at step 4 (a tie does not replace the best, as in the Trainer)
    stats, v, now = _train([0.9, 0.2, 0.5, 0.2], eval_steps=1, validation_samples=1, select_best=True)
    assert stats["steps"] == 4 and len(v.seen) == 4
    assert _same(now, v.seen[1]) and not _same(now, v.seen[3])
    assert stats["best_step"] == 2 and stats["best_validation"] == 0.2
    assert stats["validation_history"] == [[1, 0.9], [2, 0.2], [3, 0.5], [4, 0.2]]


def test_best_weights_kept_higher_score():
    stats, v, now = _train([10, 30, 20, 25], greater=True, eval_steps=1, validation_samples=1, select_best=True)
    assert stats["best_step"] == 2 and _same(now, v.seen[1])


def test_only_multiples_of_eval_steps_are_candidates():
    stats, v, now = _train([0.3, 0.1], eval_steps=2, validation_samples=1, select_best=True)
    assert [s for s, _ in stats["validation_history"]] == [2, 4]
    assert stats["best_step"] == 4 and _same(now, v.seen[1])


def test_no_selection_keeps_the_last_weights_and_reports_history():
    stats, v, now = _train([0.1, 0.9, 0.9, 0.9], eval_steps=1, validation_samples=1, select_best=False)
    assert _same(now, v.seen[3]) and "best_step" not in stats
    assert len(stats["validation_history"]) == 4


def test_task_shorter_than_eval_steps_keeps_the_last_weights():
    stats, v, _ = _train([], eval_steps=40, validation_samples=1, select_best=True)
    assert v.seen == [] and stats["best_step"] is None and stats["validation_history"] == []


def test_keep_best_restores_only_at_train_end():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    kb = KeepBest([p], lambda m: float(p.item()), 1, greater_is_better=True, restore=True)
    state = type("S", (), {"global_step": 1})()
    kb.on_step_end(None, state, None)
    with torch.no_grad():
        p.fill_(0.5)  # worse
    state.global_step = 2
    kb.on_step_end(None, state, None)
    assert p.item() == 0.5
    kb.on_train_end(None, state, None)
    assert p.item() == 1.0 and kb.best_step == 1


# ---- through the runner ---------------------------------------------------------------------------

def _held_out_ids(cfg) -> dict:
    from kif.runner import load_sequence_data

    data = load_sequence_data(cfg)
    assert all(len(data.validation[t]) == 4 and len(data.train[t]) == 12 for t in data.tasks)
    return data, {t: {ex.id for ex in data.validation[t]} for t in data.tasks}


@pytest.mark.parametrize("method", ["replay", "kif-m"])
def test_held_out_examples_never_trained_on_or_replayed(method, tmp_path, data_dir, monkeypatch):
    import kif.runner
    import kif.training

    cfg = tiny_config(method=method, tasks=["cb", "copa"], train={"validation_samples": 4, "eval_steps": 2},
                      method_args={"memory_fraction": 0.5})
    data, held = _held_out_ids(cfg)
    seen: list[str] = []
    real = kif.training.train_task

    def recording(model, encoder, exs, *a, **kw):
        seen.extend(ex.id for ex in exs)
        return real(model, encoder, exs, *a, **kw)

    monkeypatch.setattr(kif.runner, "train_task", recording)  # task stages and KIF-M's replay stage
    kif.runner.run(cfg, tmp_path / "out", show_progress=False)
    all_held = set().union(*held.values())
    assert seen and all_held.isdisjoint(seen)
    assert {i for t in data.tasks for i in (ex.id for ex in data.train[t])} <= set(seen)
    res = read_results(tmp_path / "out")
    assert res["n_train"] == {"cb": 12, "copa": 12}
    assert [s["validation_examples"] for s in res["per_task"]] == [4, 4]


def test_best_checkpoint_is_the_one_fused(tmp_path, data_dir, monkeypatch):
    """Validation prefers step 1 of every task: the adapter KIF fuses (adapter_trained) is
    the step-1 weights, not the last ones; the importance tracker saw every step."""
    import kif.runner

    snaps: list[dict] = []

    def scripted(self, model):
        snaps.append({n.replace(".default", ""): p.detach().clone()
                      for n, p in model.named_parameters() if ".lora_" in n})
        return [0.1, 0.5, 0.7][(len(snaps) - 1) % 3]  # 12 examples / batch 4: 3 steps a task

    monkeypatch.setattr(Validator, "__call__", scripted)
    cfg = tiny_config(method="kif", tasks=["cb", "copa"],
                      train={"batch_size": 4, "validation_samples": 4, "eval_steps": 1, "select_best": True})
    kif.runner.run(cfg, tmp_path / "out", show_progress=False)
    res = read_results(tmp_path / "out")
    assert [s["best_step"] for s in res["per_task"]] == [1, 1]
    assert [s["steps"] for s in res["per_task"]] == [3, 3]
    assert [s["importance_steps"] for s in res["per_task"]] == [3, 3]
    for k, tdir in enumerate(sorted((tmp_path / "out" / "tasks").iterdir())):
        trained = load_tensors(tdir / "adapter_trained" / "adapter_model.safetensors")
        best, last = snaps[3 * k], snaps[3 * k + 2]
        for name, t in trained.items():
            key = next(n for n in best if n.endswith(name.split("base_model.model.")[-1]))
            assert torch.equal(t, best[key])
        assert any(not torch.equal(best[n], last[n]) for n in best)


# ---- shipped configs ------------------------------------------------------------------------------

def _is_sweep(path) -> bool:
    """A sweep file (``grid:``), not a run config: its cells are its base config plus the grid."""
    import yaml

    return "grid" in (yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def test_paper_and_table1_configs_use_the_harness_protocol():
    from pathlib import Path

    from kif.configure import load_config

    root = REPO / "configs"
    paths = sorted((root / "paper").glob("*.yaml")) + sorted((root / "table1").glob("*.yaml"))
    paths = [p for p in paths if not _is_sweep(p)]  # a sweep's cells are its base config's, checked here
    assert len(paths) >= 16
    for path in paths:
        t = load_config(path).train
        if "olora" in path.name:  # O-LoRA's own published protocol (tests/methods/test_olora_per_task.py)
            assert (t.validation_samples, t.select_best, t.lr_scheduler, t.warmup_steps) == (0, False, "constant", 0)
            continue
        if "sapt" in path.name:  # SAPT's own published protocol: best by exact match, constant rate
            assert (t.validation_samples, t.select_best, t.select_metric, t.lr_scheduler, t.warmup_steps) == (
                100, True, "score", "constant", 0)
            continue
        assert (t.validation_samples, t.eval_steps, t.select_best, t.select_metric, t.warmup_steps,
                t.lr_scheduler) == (100, 40, True, "loss", 50, "linear"), path.name


# ---- the learning rate each stage actually gets (kif.schedule_check, issue 28) ----------------------

@pytest.mark.parametrize("train, lrs, flags", [
    # 3 steps (6 examples, batch 2). lr at step s before the update: s/w during warm-up, then linear to 0.
    ({"warmup_steps": 2, "lr_scheduler": "linear"}, [0.0, 0.5, 1.0], ["warmup_over_half"]),
    ({"warmup_steps": 5, "lr_scheduler": "linear"}, [0.0, 0.2, 0.4], ["fewer_steps_than_warmup", "warmup_over_half"]),
    ({"warmup_steps": 50, "lr_scheduler": "linear", "epochs": 1 / 3}, [0.0],  # 1 step: KIF-M's old replay stage
     ["lr_all_zero", "fewer_steps_than_warmup", "warmup_over_half"]),
    ({"warmup_ratio": 0.3, "lr_scheduler": "linear"}, [0.0, 1.0, 0.5], []),  # ceil(0.3·3) = 1 step
    ({}, [1.0, 1.0, 1.0], []),  # kif's default: constant, no warm-up
])
def test_schedule_check_by_hand(train, lrs, flags, caplog):
    import logging

    lm, enc = tiny()
    model = lora_model(lm)
    cfg = TrainConfig(**{"epochs": 1, "batch_size": 2, "learning_rate": 1.0, "precision": "fp32",
                         "group_by_length": False, **train})
    with caplog.at_level(logging.WARNING, logger="kif"):
        stats = train_task(model, enc, examples(6), cfg, 0, show_progress=False, progress_label="task 1/1 t")
    assert stats["steps"] == len(lrs)
    assert (stats["lr_min"], stats["lr_max"]) == pytest.approx((min(lrs), max(lrs)))
    assert stats.get("schedule_flags", []) == flags
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("task 1/1 t:")]
    assert len(lines) == (1 if flags else 0)  # one line per stage, the most severe finding
    if flags == ["warmup_over_half"]:
        assert lines == ["task 1/1 t: the 2 warm-up steps cover 67 % of the 3 optimizer steps (peak lr 1); "
                         "train.warmup_ratio scales the warm-up with the task"]


def test_every_config_claiming_the_table1_protocol_has_its_training_block():
    """Issue 28: a config whose header claims the "paper settings" (configs/table1/'s run settings) trains
    exactly as configs/table1/kiflora.yaml (the whole validated `train` block: lr, batch, epochs, held-out
    set, selection, warm-up, scheduler). The configs/ablations/ ones all claim it (Tables IV-V are compared
    with Table I's KIFLoRA)."""
    from pathlib import Path

    from kif.configure import load_config

    root = REPO / "configs"
    reference = load_config(root / "table1" / "kiflora.yaml").train

    def claims(path: Path) -> bool:
        header = "".join(line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                         if line.startswith("#")).lower()
        return "paper settings" in header  # the Table I configs' own words, and the ablations'

    ablations = sorted((root / "ablations").glob("*.yaml"))
    assert len(ablations) == 9 and all(claims(p) for p in ablations)
    claiming = [p for p in sorted(root.rglob("*.yaml")) if claims(p) and not _is_sweep(p)]
    assert len(claiming) >= 24
    for path in claiming:
        assert load_config(path).train == reference, path.relative_to(root)


def test_table4_ablates_kiflora():
    """The paper's Table IV rows are KIFLoRA's (full 72.29; "(i) sensitivity only, as in Eq. (9)");
    the same ablation on KIF is an extra, named so."""
    from pathlib import Path

    from kif.configure import load_config

    root = REPO / "configs" / "ablations"
    rows = {p.stem: load_config(p) for p in root.glob("table4_*.yaml")}
    assert sorted(rows) == ["table4_full", "table4_s_I_single_step", "table4_s_grad_single_step"]
    assert {c.method for c in rows.values()} == {"kiflora"}
    args = {k: (c.method_args.get("sensitivity"), c.method_args.get("smoothing")) for k, c in rows.items()}
    assert args == {"table4_full": ("second", "ema"), "table4_s_I_single_step": ("second", "single_step"),
                    "table4_s_grad_single_step": ("grad", "single_step")}
    assert {load_config(p).method for p in root.glob("extra_kif_table4_*.yaml")} == {"kif"}
