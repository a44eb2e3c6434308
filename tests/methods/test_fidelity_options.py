"""Issue 11 options (the authors' protocol by default, every deviation named): validated at
config load, and wired from method_args into kif/core, checked on hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from kif.configure import method_options, validate_config
from kif.core import lora_pairs, orthogonal_regularizer
from kif.errors import ConfigError
from kif.methods import kif as kif_module
from kif.methods.ema import decay_for_half_life, planned_steps

from test_baselines import examples, make, train


def opts(method, **args):
    return method_options(validate_config({"method": method, "method_args": args}))


@pytest.mark.parametrize("method,args,key", [
    ("kif", {"smoothing": "median"}, "smoothing"),
    ("kif", {"smoothing": "single_step", "single_step_index": -2}, "single_step_index"),
    ("kif", {"threshold": "quantile"}, "threshold"),
    ("kif", {"gamma": 1.5}, "gamma"),
    ("kiflora", {"ortho_norm": "l1"}, "ortho_norm"),
    ("kif-m", {"replay_mode": "joint"}, "replay_mode"),
    ("kiflora-m", {"frozen_units": "all"}, "frozen_units"),
    ("ema", {"half_life": -1}, "half_life"),
    ("kif", {"smoothing": "single_step", "single_step_timing": "during"}, "single_step_timing"),
    ("kif-m", {"replay_lr_scheduler": "warm"}, "replay_lr_scheduler"),
    ("kiflora-m", {"replay_warmup_steps": 5}, "replay_warmup_steps"),  # a constant schedule has no warm-up
])
def test_bad_values_stop_at_config_load(method, args, key):
    with pytest.raises(ConfigError, match=rf"method_args\.{key}:") as err:
        validate_config({"method": method, "method_args": args})
    assert "\n" not in str(err.value)


def test_defaults_are_the_authors_protocol():
    k = opts("kif")
    assert (k.smoothing, k.single_step_index, k.threshold, k.gamma, k.top_fraction) == ("ema", 1, "percentile", 0.7, 0.2)
    lo = opts("kiflora")  # eq. 5 as the authors ran it: unsquared, mean over matrices, weight 0.1
    assert (lo.ortho_norm, lo.ortho_reduction, lo.ortho_weight) == ("frobenius", "mean", 0.1)
    m = opts("kiflora-m")
    assert (m.replay_mode, m.frozen_units, m.threshold) == ("stage", "task_specific", "percentile")
    e = opts("ema")
    assert (e.decay, e.half_life) == (None, 0.55)


def test_old_keys_keep_working():
    assert opts("kif", smoothing=True).smoothing == "ema"
    assert opts("kif", smoothing=False).smoothing == "mean"
    assert opts("kiflora", ortho_norm="squared").ortho_norm == "squared"
    assert opts("kif-m", frozen_units="current_only").frozen_units == "current_only"
    assert opts("ema", decay=0.999).decay == 0.999 and opts("ema", decay=0.999).half_life is None


def test_half_life_arithmetic_by_hand():
    d = decay_for_half_life(0.25, 8)  # ½ after 2 of 8 steps: d = 0.5^(1/2)
    assert d == pytest.approx(0.7071067811865476) and d ** 2 == pytest.approx(0.5)
    assert d ** 8 == pytest.approx(1 / 16)  # 4 half-lives in the task
    # the paper's T5 regime: 1,000 examples, batch 8, 10 epochs = 1,250 steps; d = 0.999 there has
    # half-life ln ½ / ln 0.999 = 692.8 steps = 0.554 of the task, and half_life 0.55 gives d ≈ 0.999
    assert planned_steps(1000, 8, 1, 10) == 1250
    assert math.log(0.5) / math.log(0.999) / 1250 == pytest.approx(0.5543, abs=1e-4)
    assert decay_for_half_life(0.55, 1250) == pytest.approx(0.999, abs=1e-5)
    assert decay_for_half_life(0.55, 1250) ** 1250 == pytest.approx(0.5 ** (1 / 0.55))  # 28.4 % at task end
    # batch 128: 80 steps; a fixed 0.999 keeps 92 % of the pre-task weights, the half-life 28.4 %
    assert planned_steps(1000, 128, 1, 10) == 80 and 0.999 ** 80 == pytest.approx(0.923, abs=1e-3)
    assert decay_for_half_life(0.55, 80) ** 80 == pytest.approx(0.2836, abs=1e-4)
    with pytest.raises(ValueError):
        decay_for_half_life(0.0, 10)


def test_planned_steps_by_hand():
    assert planned_steps(900, 8, 1, 10) == 1130  # 113 batches
    assert planned_steps(10, 2, 2, 1) == 3  # 5 batches, accumulation 2: ⌈5/2⌉
    assert planned_steps(10, 2, 1, 1, processes=2) == 3  # ⌈5/2⌉ batches per process
    assert planned_steps(10, 2, 1, 1.5) == 8  # ⌈1.5·5⌉
    assert planned_steps(1, 8, 4, 1) == 1


def test_kif_passes_options_to_tracker_and_fusion(tmp_path, monkeypatch):
    m = make("kif", tmp_path, method_args={"smoothing": "single_step", "sensitivity": "grad",
                                           "single_step_index": 0, "threshold": "rank", "gamma": 0.6})
    assert (m.tracker.smoothing, m.tracker.sensitivity, m.tracker.single_step_index) == ("single_step", "grad", 0)
    seen = {}
    orig = kif_module.fuse

    def spy(*a, **hp):
        seen.update(hp)
        return orig(*a, **hp)

    monkeypatch.setattr(kif_module, "fuse", spy)
    for k in range(2):
        train(m, k, examples(f"t{k}", 4), seed=k)
        m.after_task(k, tmp_path / f"k{k}")
    assert seen == {"top_fraction": 0.2, "gamma": 0.6, "threshold": "rank"}
    assert set(m.last_w.tolist()) <= {torch.tensor(0.6).item(), 1.0, 0.0, 0.5}  # fp32 weights


def test_kiflora_default_eq5_term_by_hand(tmp_path):
    m = make("kiflora", tmp_path)  # lora r = 4; B starts at zero: ||BᵀB − I||_F = ||−I_4||_F = 2
    pairs = list(lora_pairs(m.model))
    a_terms = [torch.linalg.matrix_norm(a @ a.T - torch.eye(4), "fro") for a, _ in pairs]
    want = 0.1 * (sum(a_terms) + 2.0 * len(pairs)) / (2 * len(pairs))
    got = m.extra_loss(m.model)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert got.item() == pytest.approx(0.1 * orthogonal_regularizer(pairs, "frobenius", "mean").item(), rel=1e-6)


@pytest.mark.parametrize("timing", ["after_step", "before_step"])
def test_single_step_score_on_the_first_task_under_warmup(timing, tmp_path):
    """Issue 28: with a linear warm-up, step 0 has lr 0, so at step 1 LoRA's B is still its zero
    init. Read before the step (kif's earlier timing) |w·g| is 0 for every entry; read after it
    (the authors' timing, the default) lora_B's entries score |B_2·g_1| > 0 (lora_A's gradient is
    Bᵀ(...) = 0 at B = 0, so A still scores 0)."""
    m = make("kif", tmp_path, method_args={"smoothing": "single_step", "single_step_timing": timing},
             train={"epochs": 1, "batch_size": 2, "learning_rate": 1e-2, "precision": "fp32",
                    "group_by_length": False, "warmup_steps": 2, "lr_scheduler": "linear"})
    _, stats = train(m, 0, examples("t1", 6))
    assert stats["lr_min"] == 0.0 and stats["steps"] == 3  # step 0 at lr 0
    scores = m.tracker.scores()
    b = [s for n, s in scores.items() if "lora_B" in n]
    a = [s for n, s in scores.items() if "lora_A" in n]
    assert b and a and not any(s.any() for s in a)
    if timing == "before_step":
        assert not any(s.any() for s in b)
    else:
        assert all(s.any() for s in b)
        assert (m.units.unit_scores(scores) > 0).sum() == len(b)  # exactly the lora_B matrices score
