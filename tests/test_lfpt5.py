"""LFPT5 (kif/methods/lfpt5.py): one soft prompt, two objectives, generative replay of earlier tasks."""
from __future__ import annotations

import pytest
import torch

from kif.data import Example
from kif.io import load_tensors
from kif.methods import lfpt5 as lfpt5_module
from kif.runner import consolidate, run

from helpers import read_results, tiny_config
from test_baselines import examples, make, train


def _method(tmp_path, model="tiny-llama", **args):
    return make("lfpt5", tmp_path, model=model,
                method_args={"prompt_length": 4, "memory_per_task": 2, "gen_max_tokens": 16, **args})


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

    monkeypatch.setattr(lfpt5_module, "generate_examples", fake)
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


def test_kd_term_is_refused():
    from kif.errors import ConfigError

    with pytest.raises(ConfigError):
        tiny_config(method="lfpt5", method_args={"kd_weight": 0.01})


@pytest.mark.parametrize("model", ["tiny-t5"])
def test_end_to_end(model, tmp_path):
    out = tmp_path / "run"
    res = run(tiny_config(method="lfpt5", model=model, method_args={"prompt_length": 8, "gen_max_tokens": 32}),
              out, show_progress=False)
    assert res["finished"] and len(res["matrix"]) == 3
    assert res["adapter_bytes"] == (out / "tasks" / "03_sst2" / "adapter" / "prompts.safetensors").stat().st_size
    assert [t["train_examples"] for t in res["per_task"]][0] == 16 + 4
    assert res["per_task"][2]["pseudo_generated"] > 0


def test_kill_and_resume_matches_uninterrupted(tmp_path, data_dir):
    from test_resume import _kif, _write_cfg

    cfg = _write_cfg(tmp_path / "cfg.yaml", method="lfpt5", method_args={"prompt_length": 8, "gen_max_tokens": 32})
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert _kif(cfg, ref).returncode == 0
    want = read_results(ref)
    assert want["finished"]
    steps = sum(t["steps"] for t in want["per_task"][:2])
    assert _kif(cfg, out, fault=f"train_step:{steps + 2}").returncode == -9  # in task 3
    resumed = _kif(cfg, out)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr
    got = read_results(out)
    assert got["matrix"] == want["matrix"]
    assert [t["loss"] for t in got["per_task"]] == [t["loss"] for t in want["per_task"]]
    a = load_tensors(out / "tasks" / "03_sst2" / "adapter" / "prompts.safetensors")
    b = load_tensors(ref / "tasks" / "03_sst2" / "adapter" / "prompts.safetensors")
    assert torch.equal(a["prompt"], b["prompt"])
