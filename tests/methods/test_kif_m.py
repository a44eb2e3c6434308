"""KIF-M / KIFLoRA-M (docs/method.md §5): the replay stage after fusion, on tiny models (CPU)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from kif.core.fusion import top_fraction_mask
from kif.data import get_benchmark
from kif import runner
from kif.methods.kif import KIF, KIFLoRA
from kif.replay import prompt_template, pseudo_samples
from kif.runner import consolidate
from kif.metrics import cl_metrics

from helpers import REPO, read_results
from test_baselines import examples, make, snapshot, train


def _method(method, tmp_path, model="tiny-llama", cfg=None, **args):
    return make(method, tmp_path, model=model, method_args={"memory_per_task": 3, **args}, **(cfg or {}),
                train={"epochs": 1, "batch_size": 2, "learning_rate": 1e-2, "precision": "fp32",
                       "group_by_length": False, "logging_steps": 1, "weight_decay": 0.1})


def _spy(m, monkeypatch):
    """Record what the replay stage sees and does: weights, tracker, the examples it trains on."""
    seen = {}
    orig_stage, orig_train = m.replay_stage, runner.train_task

    def stage(k, frozen):
        seen.update(k=k, frozen=frozen, before=snapshot(m.trainable()), steps=m.tracker.steps,
                    scores={n: t.clone() for n, t in m.tracker.scores().items()})
        out = orig_stage(k, frozen)
        end = out.end

        def spied_end():  # the runner has trained the stage
            end()
            seen.update(after=snapshot(m.trainable()), steps_after=m.tracker.steps,
                        scores_after=m.tracker.scores())
        out.end = spied_end
        return out

    def train_task(model, encoder, exs, cfg, seed, **kw):
        seen.update(train_ids=[ex.id for ex in exs], train_cfg=cfg, seed=seed)
        return orig_train(model, encoder, exs, cfg, seed, **kw)

    monkeypatch.setattr(m, "replay_stage", stage)
    monkeypatch.setattr(runner, "train_task", train_task)  # the runner trains the replay stage
    return seen


def _two_tasks(m, tmp_path):
    train(m, 0, examples("t1", 6))
    s0 = consolidate(m, 0, tmp_path / "k1")
    train(m, 1, examples("t2", 6), seed=1)
    s1 = consolidate(m, 1, tmp_path / "k2")
    return s0, s1


@pytest.mark.parametrize("method,model,base", [("kif-m", "tiny-llama", KIF), ("kiflora-m", "tiny-llama", KIFLoRA),
                                               ("kiflora-m", "tiny-t5", KIFLoRA)])
def test_replay_stage_freezes_current_units_exactly(method, model, base, tmp_path, monkeypatch):
    # the larger frozen set (every "+" unit of I(U_k), by rank) makes the exactness check non-trivial
    m = _method(method, tmp_path, model, frozen_units="current_top", threshold="rank")
    assert isinstance(m, base)
    seen = _spy(m, monkeypatch)
    s0, s1 = _two_tasks(m, tmp_path)
    assert "replay_examples" not in s0 and "frozen_units" not in s0  # no replay stage at k = 0
    assert seen["k"] == 1

    # the frozen set is the top 20 % (by rank) of the current task's unit scores, mapped onto entries
    n_units = len(m.units)
    assert s1["frozen_units"] == math.ceil(0.2 * n_units)
    frozen, before, after = seen["frozen"], seen["before"], seen["after"]
    assert sum(int(f.any()) for f in frozen.values()) >= 1
    n_frozen = sum(int(f.sum()) for f in frozen.values())
    assert 0 < n_frozen < sum(f.numel() for f in frozen.values())
    if method == "kiflora-m":  # a rank-1 unit: row i of A and column i of B, never a whole tensor
        assert all(not f.all() for n, f in frozen.items() if f.any())
    for n in before:
        f = frozen[n]
        assert torch.equal(after[n][f], before[n][f]), n  # bit-identical (AdamW weight decay 0.1)
    changed = sum(int((after[n][~frozen[n]] != before[n][~frozen[n]]).sum()) for n in before)
    assert changed > 0  # everything else trains

    # the tracker is not touched by the replay stage
    assert seen["steps_after"] == seen["steps"] > 0
    assert all(torch.equal(seen["scores_after"][n], t) for n, t in seen["scores"].items())
    # f̂_k^m is the model, the saved adapter and the fusion partner of the next task
    for n, p in m.trainable().items():
        assert torch.equal(p, after[n]) and torch.equal(m.fused_prev[n], after[n])
    assert (tmp_path / "k2" / "adapter_fused" / "adapter_config.json").is_file()
    assert (tmp_path / "k2" / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "k1" / "adapter_fused").exists()


@pytest.mark.parametrize("include_current", [False, True])
def test_replay_trains_on_exactly_the_memory(include_current, tmp_path, monkeypatch):
    m = _method("kif-m", tmp_path, include_current=include_current, replay_epochs=2, replay_learning_rate=5e-3)
    seen = _spy(m, monkeypatch)
    _, s1 = _two_tasks(m, tmp_path)
    mem1, mem2 = m.memory.task_examples("t1"), m.memory.task_examples("t2")
    assert len(mem1) == len(mem2) == 3 and all(ex.id.startswith("t1-") for ex in mem1)
    want = [ex.id for ex in mem1 + (mem2 if include_current else [])]
    assert seen["train_ids"] == want == m.last_replay["examples"]
    assert s1["replay_examples"] == len(want)
    assert s1["replay_steps"] == 2 * math.ceil(len(want) / 2)  # 2 epochs, batch 2
    assert seen["train_cfg"].epochs == 2 and seen["train_cfg"].learning_rate == 5e-3
    assert seen["seed"] == m.ctx.cfg.seed + 1000 + 1
    assert s1["memory_total"] == 6 and m.state_summary()["memory"] == {"t1": 3, "t2": 3}


@pytest.mark.parametrize("frozen_units", [None, "task_specific", "current_only"])
def test_task_specific_freezes_cur_plus_prev_minus(frozen_units, tmp_path):
    args = {} if frozen_units is None else {"frozen_units": frozen_units}
    m = _method("kiflora-m", tmp_path, **args)  # default: the paper's task-specific units
    assert m.opts.replay_mode == "stage" and m.opts.threshold == "percentile"
    cur, prev = torch.arange(10.0), torch.arange(10.0).flip(0)
    cur[0] = 100.0  # 80th percentile: cur 8.2 -> "+" = {0, 9}; prev 7.2 -> "+" = {0, 1}
    assert m.frozen_mask(cur, prev).nonzero().flatten().tolist() == [9]  # prev- cur+
    m.opts.frozen_units = "current_top"
    assert m.frozen_mask(cur, prev).nonzero().flatten().tolist() == [0, 9]
    assert m.frozen_mask(cur, prev).tolist() == top_fraction_mask(cur, 0.2).tolist()
    m.opts.threshold = "rank"  # ceil(0.2·10) = 2 either way here
    assert m.frozen_mask(cur, prev).nonzero().flatten().tolist() == [0, 9]


@pytest.mark.parametrize("source", ["real", "pseudo"])
def test_mixed_mode_trains_on_task_data_and_memory_in_one_stage(source, tmp_path, monkeypatch):
    """The released KIF-M: M_{<k} joins task k's data; no replay stage, nothing frozen."""
    m = _method("kif-m", tmp_path, cfg={"eval": {"max_new_tokens": 4}}, replay_mode="mixed",
                memory_source=source, pseudo_generator="continue", pseudo_input_tokens=8)
    seen = _spy(m, monkeypatch)
    exs1, st1 = train(m, 0, examples("t1", 6))
    s0 = consolidate(m, 0, tmp_path / "k1")
    assert [ex.id for ex in exs1] == [f"t1-{i}" for i in range(6)]  # nothing stored yet
    mem1 = [ex.id for ex in m.memory.task_examples("t1")]
    assert len(mem1) == 3 and s0["memory_added"] == 3
    before = snapshot(m.trainable())
    exs2, st2 = train(m, 1, examples("t2", 6), seed=1)
    assert [ex.id for ex in exs2] == [f"t2-{i}" for i in range(6)] + mem1  # D_2 ∪ M_1, one training stage
    assert st2["steps"] == math.ceil(9 / 2) == m.tracker.steps  # the tracker scored the mixed stage
    assert all(not torch.equal(p, before[n]) for n, p in m.trainable().items() if ".lora_B." in n)  # nothing frozen
    s1 = consolidate(m, 1, tmp_path / "k2")
    assert "k" not in seen and "replay_examples" not in s1 and "frozen_units" not in s1  # no replay stage
    assert not (tmp_path / "k2" / "adapter_fused").exists()
    assert s1["memory_total"] == 6 and m.memory.sizes() == {"t1": 3, "t2": 3}
    # fusion as KIF: the model is f̂_2, the next task's fusion partner
    assert all(torch.equal(p, m.fused_prev[n]) for n, p in m.trainable().items())
    assert (tmp_path / "k2" / "fusion_weights.safetensors").is_file()


def test_state_round_trip(tmp_path):
    m = _method("kiflora-m", tmp_path)
    _two_tasks(m, tmp_path)
    tensors, meta = m.state_dict()
    json.dumps(meta)  # the checkpoint's meta is JSON
    m2 = _method("kiflora-m", tmp_path / "b")
    m2.load_state_dict(tensors, meta)
    assert m2.memory.state_dict() == m.memory.state_dict()
    assert [ex.id for ex in m2.replay_examples(2)] == [ex.id for ex in m.replay_examples(2)]
    assert set(m2.fused_prev) == set(m.fused_prev)
    assert all(torch.equal(m2.fused_prev[n], t) for n, t in m.fused_prev.items())
    assert torch.equal(m2.accumulated, m.accumulated)
    assert all(torch.equal(p, m.trainable()[n]) for n, p in m2.trainable().items())


# ---- pseudo-samples ----------------------------------------------------------------------------

def _prompts(data_dir, bench, task, n=8):
    return [ex.prompt for ex in get_benchmark(bench, data_dir).tasks[task].load("train")[:n]]


def test_prompt_template(data_dir):
    prefix, suffix = prompt_template(_prompts(data_dir, "long_sequence", "cb"))
    assert prefix.startswith("What is the logical relationship")
    assert "Option: entailment, contradiction, neutral.\n" in prefix
    assert suffix == "\nAnswer:"
    task = next(iter(get_benchmark("superni", data_dir).tasks))
    prefix, suffix = prompt_template(_prompts(data_dir, "superni", task))
    assert prefix.startswith("Definition: ") and prefix.rstrip().endswith("Input:")
    assert suffix.endswith("\nOutput:") and not suffix.strip().startswith("Input")
    assert prompt_template(["Do X. Option: a, b.\nText: hi\nAnswer:"] * 3) == ("Do X. Option: a, b.\n", "\nAnswer:")
    assert prompt_template([]) == ("", "")


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
@pytest.mark.parametrize("bench,task", [("long_sequence", "sst2"), ("superni", None)])
def test_pseudo_samples_well_formed(model, bench, task, tmp_path, data_dir):
    task = task or next(iter(get_benchmark("superni", data_dir).tasks))
    m = _method("kif-m", tmp_path, model)
    prompts = _prompts(data_dir, bench, task)
    prefix, suffix = prompt_template(prompts)
    rng = torch.get_rng_state()
    kw = dict(input_tokens=12, output_tokens=4, seed=3, batch_size=5)
    out = pseudo_samples(m.model, m.ctx.encoder, task, prompts, 5, m.ctx.lm.eos_token_ids, **kw)
    assert torch.equal(torch.get_rng_state(), rng)  # the run's RNG stream is untouched
    assert [ex.id for ex in out] == [f"pseudo-{task}-{i}" for i in range(5)]
    for ex in out:
        assert isinstance(ex.prompt, str) and ex.prompt.strip()
        assert ex.prompt.startswith(prefix) and ex.prompt.endswith(suffix)
        assert isinstance(ex.references, tuple) and len(ex.references) == 1 and isinstance(ex.references[0], str)
    again = pseudo_samples(m.model, m.ctx.encoder, task, prompts, 5, m.ctx.lm.eos_token_ids, **kw)
    assert again == out  # seeded sampling
    assert len({ex.prompt for ex in out}) > 1  # sampled, not five copies of one greedy input
    assert pseudo_samples(m.model, m.ctx.encoder, task, prompts, 0, m.ctx.lm.eos_token_ids) == []


def test_pseudo_memory_in_the_method(tmp_path, monkeypatch):
    """The earlier pseudo path (``pseudo_generator: continue``): the model continues the instruction."""
    m = _method("kiflora-m", tmp_path, cfg={"eval": {"max_new_tokens": 4}}, memory_source="pseudo",
                pseudo_generator="continue", pseudo_input_tokens=8)
    seen = _spy(m, monkeypatch)
    _, s1 = _two_tasks(m, tmp_path)
    assert [ex.id for ex in m.memory.task_examples("t1")] == [f"pseudo-t1-{i}" for i in range(3)]
    assert seen["train_ids"] == [f"pseudo-t1-{i}" for i in range(3)] and s1["memory_added"] == 3


# ---- end to end ----------------------------------------------------------------------------------

def _check_run(out, method):
    res = read_results(out)
    assert res["method"] == method and res["tasks_completed"] == 3 and res["finished"]
    assert len(res["matrix"]) == 3 and all(len(r) == 3 and all(0 <= v <= 100 for v in r) for r in res["matrix"])
    assert {k: res[k] for k in ("AP", "FWT", "BWT")} == cl_metrics(res["matrix"])
    assert res["memory"] == {"cb": 1, "copa": 1, "sst2": 1}  # ceil(2 % of 16) = 1
    assert [t.get("replay_examples") for t in res["per_task"]] == [None, 1, 2]
    for k, t in enumerate(res["tasks"]):
        tdir = out / "tasks" / f"{k + 1:02d}_{t}"
        assert (tdir / "adapter" / "adapter_config.json").is_file()
        assert (tdir / "adapter_fused").is_dir() == (k > 0)
    return res


# kiflora-m + tiny-llama + pseudo memory runs through `kif run` in the resume test below; these pin the
# earlier pseudo path (`continue`: exactly one sample per task); the default (generative) path runs end to
# end in tests/methods/test_generative_replay.py
@pytest.mark.parametrize("method,model,source", [("kif-m", "tiny-llama", "real"), ("kif-m", "tiny-t5", "pseudo"),
                                                 ("kiflora-m", "tiny-t5", "real")])
def test_cli_run(method, model, source, tmp_path, data_dir):
    from kif.cli import main

    out = tmp_path / "run"
    args = ["run", "-q", "-o", str(out), "--set", f"method={method}", "--set", f"model={model}",
            "--set", "tasks=[cb,copa,sst2]", "--set", "data.train_samples=16", "--set", "data.test_samples=4",
            "--set", "data.max_input_length=128", "--set", "train.epochs=1", "--set", "eval.max_new_tokens=4",
            "--set", f"method_args.memory_source={source}", "--set", "method_args.pseudo_input_tokens=16",
            "--set", "method_args.pseudo_generator=continue"]
    assert main(args) == 0
    _check_run(out, method)


def test_kill_in_next_task_and_resume_matches_uninterrupted(tmp_path, data_dir):
    """The memory (here pseudo-samples) and f̂_k^m come back from the checkpoint exactly."""
    from kif.io import load_tensors
    from helpers import kif_run, write_config

    cfg = write_config(tmp_path / "cfg.yaml", method="kiflora-m",
                     method_args={"memory_source": "pseudo", "pseudo_generator": "continue",
                                  "pseudo_input_tokens": 16})
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert kif_run(cfg, ref).returncode == 0
    _check_run(ref, "kiflora-m")
    # 2 steps per task + 1 replay step at task 2: the 6th optimizer step is task 3's first
    assert kif_run(cfg, out, fault="train_step:6").returncode == -9
    resumed = kif_run(cfg, out)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr
    got, want = read_results(out), read_results(ref)
    assert got["matrix"] == want["matrix"] and got["memory"] == want["memory"]
    assert [t.get("replay_loss") for t in got["per_task"]] == [t.get("replay_loss") for t in want["per_task"]]
    for name in ("adapter", "adapter_fused"):
        a = load_tensors(out / "tasks" / "03_sst2" / name / "adapter_model.safetensors")
        b = load_tensors(ref / "tasks" / "03_sst2" / name / "adapter_model.safetensors")
        assert all(torch.equal(a[n], b[n]) for n in b)


# ---- the replay stage's own schedule (issue 28) ------------------------------------------------------

def _table1_run(method, tmp_path, *extra):
    """configs/table1/<method>.yaml as it stands (train block: 10 epochs, lr 3e-4, batch 128, 50 warm-up
    steps then linear, held-out selection), on the tiny model and the fixture data. Two changes: 4 held-out
    examples (the fixture has 24 a task, not 1,000) and a real memory: the pseudo memory comes from the
    generator (tests/methods/test_generative_replay.py), and a tiny random model may write none, which would
    leave no replay stage to check."""
    from pathlib import Path

    from kif.configure import load_config
    from kif.runner import run

    path = REPO / "configs" / "table1" / f"{method}.yaml"
    cfg = load_config(path, ["model=tiny-llama", "tasks=[cb,copa,sst2]", "data.train_samples=24",
                             "data.test_samples=4", "data.max_input_length=128", "train.validation_samples=4",
                             "train.precision=fp32", "eval.max_new_tokens=4", "eval.batch_size=8",
                             "method_args.memory_source=real", *extra])
    assert (cfg.train.warmup_steps, cfg.train.lr_scheduler, cfg.train.batch_size) == (50, "linear", 128)
    out = tmp_path / method
    return run(cfg, out, show_progress=False), out


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.parametrize("method", ["kif-m", "kiflora-m"])
def test_table1_replay_stage_trains(method, tmp_path, caplog):
    """Before issue 28 the replay stage inherited train.*'s 50 warm-up steps: its 1 step (batch 128) ran
    at lr 0 and f̂_k^m was f̂_k. Now it has a constant lr (replay_lr_scheduler, no warm-up) and moves."""
    res, out = _table1_run(method, tmp_path)
    replays = res["per_task"][1:]
    assert [t["replay_steps"] for t in replays] == [1, 1] and [t["replay_examples"] for t in replays] == [1, 2]
    for k, t in enumerate(replays, start=1):
        assert t["replay_lr_min"] == t["replay_lr_max"] == 3e-4  # every replay step: the configured lr
        assert "replay_schedule_flags" not in t and t["replay_warmup_steps"] == 0
        tdir = out / "tasks" / f"{k + 1:02d}_{res['tasks'][k]}"
        fused, replayed = _adapter(tdir / "adapter_fused"), _adapter(tdir / "adapter")
        assert any(not torch.equal(fused[n], replayed[n]) for n in fused), k
    # the tasks themselves: 10 steps under a 50-step warm-up, flagged as such
    assert res["per_task"][0]["schedule_flags"] == ["fewer_steps_than_warmup", "warmup_over_half"]
    assert res["per_task"][0]["lr_min"] == 0.0 and res["per_task"][0]["lr_max"] == pytest.approx(3e-4 * 9 / 50)


def test_inherited_warmup_is_flagged_and_trains_nothing(tmp_path, caplog):
    """The old behaviour, asked for explicitly: a replay stage of 1 step under 50 warm-up steps has lr 0.
    It is flagged in results.json and warned about in one log line; f̂_k^m equals f̂_k bit for bit."""
    import logging

    with caplog.at_level(logging.WARNING, logger="kif"):
        res, out = _table1_run("kif-m", tmp_path, "method_args.replay_lr_scheduler=linear",
                               "method_args.replay_warmup_steps=50")
    t = res["per_task"][1]
    assert t["replay_schedule_flags"] == ["lr_all_zero", "fewer_steps_than_warmup", "warmup_over_half"]
    assert t["replay_lr_max"] == 0.0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("replay 2/3")]
    assert lines == ["replay 2/3: all 1 optimizer steps had learning rate 0 (warm-up 50 steps): this stage "
                     "trained nothing"]
    tdir = out / "tasks" / "02_copa"
    fused, replayed = _adapter(tdir / "adapter_fused"), _adapter(tdir / "adapter")
    assert all(torch.equal(fused[n], replayed[n]) for n in fused)
