import warnings

import pytest
import torch

from kif.core.importance import ImportanceTracker
from kif.errors import ArtifactError


def param(values, dtype=torch.float32):
    return torch.nn.Parameter(torch.tensor(values, dtype=dtype))


def step(tracker, p, grad):
    """One optimizer step that leaves the weights as they are: update() before it, after_step() after."""
    p.grad = None if grad is None else torch.tensor(grad, dtype=p.dtype)
    ok = tracker.update()
    tracker.after_step()
    return ok


W = [[1.0, -2.0], [0.5, 3.0]]
G = [[0.5, 1.0], [-4.0, -1.0]]  # w*g = [[0.5, -2], [-2, -3]]


@pytest.mark.parametrize("sensitivity, expected", [
    ("first", [[0.5, 2.0], [2.0, 3.0]]),  # eq. 8: |w g|
    ("second", [[0.375, 4.0], [4.0, 7.5]]),  # eq. 9: |wg - wg^2/2|: 0.5-0.125, -2-2, -2-2, -3-4.5
    ("grad", [[0.5, 1.0], [4.0, 1.0]]),  # ablation: |g|
])
def test_sensitivity_eq8_eq9_grad(sensitivity, expected):
    p = param(W)
    t = ImportanceTracker({"w": p}, sensitivity=sensitivity, smoothing=False)  # 1 step: s = I_1
    assert step(t, p, G)
    assert torch.equal(t.scores()["w"], torch.tensor(expected))


def test_smoothing_eq10_11_12_three_steps():
    p = param([1.0, 2.0])
    t = ImportanceTracker({"w": p}, alpha1=0.5, alpha2=0.5)
    # I_t = |w g| per element: elem0 = 2, 4, 0 ; elem1 = 2, 0, 6
    for g in ([2.0, 1.0], [4.0, 0.0], [0.0, 3.0]):
        assert step(t, p, g)
    # elem0: Ī = 1, 2.5, 1.25 ; Ū = 0.5, 0.25+0.75 = 1.0, 0.5+0.5*1.25 = 1.125 ; s = 1.40625
    # elem1: Ī = 1, 0.5, 3.25 ; Ū = 0.5, 0.25+0.25 = 0.5, 0.25+0.5*2.75 = 1.625 ; s = 5.28125
    sd = t.state_dict()
    assert torch.equal(sd["ibar.w"], torch.tensor([1.25, 3.25]))
    assert torch.equal(sd["ubar.w"], torch.tensor([1.125, 1.625]))
    assert torch.equal(t.scores()["w"], torch.tensor([1.40625, 5.28125]))
    assert t.steps == 3


def test_default_alphas_one_step():
    p = param([1.0])
    t = ImportanceTracker({"w": p})
    step(t, p, [2.0])  # I = 2: Ī = 0.15*2 = 0.3, Ū = 0.15*|2-0.3| = 0.255, s = 0.0765
    assert torch.allclose(t.scores()["w"], torch.tensor([0.0765]))


def test_no_smoothing_is_mean_of_I():
    p = param([1.0, 2.0])
    t = ImportanceTracker({"w": p}, smoothing=False)
    for g in ([2.0, 1.0], [4.0, 0.0], [0.0, 3.0]):
        step(t, p, g)
    assert torch.allclose(t.scores()["w"], torch.tensor([2.0, 8.0 / 3.0]))  # (2+4+0)/3, (2+0+6)/3


def test_bool_smoothing_keeps_its_meaning():
    p = param([1.0])
    assert ImportanceTracker({"w": p}, smoothing=True).smoothing == "ema"
    assert ImportanceTracker({"w": p}, smoothing=False).smoothing == "mean"
    assert ImportanceTracker({"w": p}).smoothing == "ema"


@pytest.mark.parametrize("index, expected", [
    (1, [4.0, 0.0]),  # default: the authors' first counted step (they skip step 0)
    (0, [2.0, 2.0]),
    (-1, [0.0, 6.0]),  # the last step
    (7, [0.0, 6.0]),  # a task shorter than the index keeps its last step
])
def test_single_step_keeps_one_steps_I(index, expected):
    # Table IV "s = I only": |w g| of ONE step, no EMA, no uncertainty.
    p = param([1.0, 2.0])
    t = ImportanceTracker({"w": p}, smoothing="single_step", single_step_index=index)
    for g in ([2.0, 1.0], [4.0, 0.0], [0.0, 3.0]):  # I_t = [2, 2], [4, 0], [0, 6]
        assert step(t, p, g)
    assert t.scores()["w"].tolist() == expected
    assert t.steps == 3 and "ubar.w" not in t.state_dict()


def test_single_step_gradient_ablation_and_default_index():
    # Table IV "s = |∇L|": |g| of the first counted step; weights do not enter.
    p = param([5.0, -7.0])
    t = ImportanceTracker({"w": p}, sensitivity="grad", smoothing="single_step")
    for g in ([0.5, -1.0], [-3.0, 0.25], [9.0, 9.0]):
        step(t, p, g)
    assert t.scores()["w"].tolist() == [3.0, 0.25]
    t.reset()
    assert not t.scores()["w"].any()
    step(t, p, [1.0, -2.0])  # a new task: its own step 0, then step 1
    step(t, p, [-4.0, 8.0])
    assert t.scores()["w"].tolist() == [4.0, 8.0]


@pytest.mark.parametrize("timing, expected", [
    ("after_step", [4.0, 0.0]),  # the authors: |w_2·g_1| = |[1, 0.5]·[4, 0]|
    ("before_step", [0.0, 0.0]),  # kif's earlier reading: w_1 = [0, 0] (as LoRA's B before any lr > 0)
])
def test_single_step_reads_weights_after_the_optimizer_step(timing, expected):
    # Step 0 under warm-up has lr 0: the weights stay [0, 0] (LoRA B at init). Step 1 moves them
    # to [1, 0.5]; its gradient is [4, 0]. Index 1 keeps step 1: |w·g| with w read before
    # (w_1 = [0, 0]: all zero) or after (w_2 = [1, 0.5]: [4, 0]) the optimizer step.
    p = param([0.0, 0.0])
    t = ImportanceTracker({"w": p}, smoothing="single_step", single_step_timing=timing)
    for g, w_next in (([2.0, 1.0], [0.0, 0.0]), ([4.0, 0.0], [1.0, 0.5]), ([3.0, 3.0], [5.0, 5.0])):
        p.grad = torch.tensor(g)
        assert t.update()
        with torch.no_grad():
            p.copy_(torch.tensor(w_next))  # the optimizer step
        t.after_step()
    assert t.scores()["w"].tolist() == expected


def test_single_step_timing_is_checked():
    with pytest.raises(ValueError, match="single_step_timing"):
        ImportanceTracker({}, smoothing="single_step", single_step_timing="during")


def test_single_step_skipped_nonfinite_step_does_not_count():
    p = param([1.0])
    t = ImportanceTracker({"w": p}, smoothing="single_step")
    step(t, p, [1.0])
    with pytest.warns(UserWarning):
        assert step(t, p, [float("nan")]) is False
    step(t, p, [3.0])  # the second *counted* step
    step(t, p, [5.0])
    assert t.scores()["w"].tolist() == [3.0]


def test_none_grad_is_zero_gradient():
    p, q = param([1.0]), param([2.0])
    t = ImportanceTracker({"p": p, "q": q}, smoothing=False)
    p.grad = torch.tensor([3.0])
    assert step(t, q, None)
    p.grad = torch.tensor([1.0])
    assert t.update()
    s = t.scores()
    assert s["p"].tolist() == [2.0] and s["q"].tolist() == [0.0]  # mean(3, 1), no grad -> 0


def test_nonfinite_grad_skipped_counted_warned_once():
    p, q = param([1.0, 2.0]), param([1.0])
    t = ImportanceTracker({"p": p, "q": q})
    p.grad, q.grad = torch.tensor([1.0, 2.0]), torch.tensor([1.0])
    t.update()
    before = t.state_dict()
    q.grad = torch.tensor([float("nan")])
    with pytest.warns(UserWarning, match="non-finite"):
        assert t.update() is False
    q.grad = torch.tensor([float("inf")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        assert t.update() is False
    assert (t.steps, t.skipped, t.skipped_total) == (1, 2, 2)
    after = t.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("ibar", "ubar")))
    t.reset()
    assert (t.steps, t.skipped, t.skipped_total) == (0, 0, 2)
    assert not t.scores()["p"].any()


def test_bf16_params_fp32_state():
    p = param([[1.0, -2.0], [0.5, 3.0]], dtype=torch.bfloat16)
    t = ImportanceTracker({"w": p}, smoothing=False)
    step(t, p, G)
    s = t.scores()["w"]
    assert s.dtype == torch.float32 and t.state_dict()["ibar.w"].dtype == torch.float32
    assert torch.equal(s, torch.tensor([[0.5, 2.0], [2.0, 3.0]]))


def test_update_does_not_touch_params_or_grads():
    p = param([1.0, -2.0])
    t = ImportanceTracker({"w": p}, sensitivity="grad")
    step(t, p, [-1.0, 3.0])
    assert p.grad.tolist() == [-1.0, 3.0] and p.tolist() == [1.0, -2.0]


def test_state_dict_round_trip():
    p = param([1.0, 2.0])
    a = ImportanceTracker({"w": p}, sensitivity="second")
    step(a, p, [0.5, -1.0])
    step(a, p, [0.1, 2.0])
    b = ImportanceTracker({"w": p}, sensitivity="second")
    b.load_state_dict(a.state_dict())
    assert b.steps == 2
    step(a, p, [1.0, 1.0])
    b.update()  # same grad still on p
    assert torch.equal(a.scores()["w"], b.scores()["w"])
    with pytest.raises(ArtifactError, match="ubar"):
        ImportanceTracker({"w": p}, smoothing=False).load_state_dict(a.state_dict())
    with pytest.raises(ArtifactError, match="shape"):
        ImportanceTracker({"w": param([1.0])}).load_state_dict(a.state_dict())


def test_chunked_update_matches_single_batch(monkeypatch):
    import kif.core.importance as imp

    ps = {f"w{i}": param([float(i + 1)] * (i + 1)) for i in range(4)}
    grads = {k: torch.full_like(v, 0.5) for k, v in ps.items()}
    big = ImportanceTracker(ps)
    monkeypatch.setattr(imp, "_CHUNK", 2)
    small = ImportanceTracker(ps)
    assert len(small._chunks) > 1
    for k, v in ps.items():
        v.grad = grads[k]
    big.update(), small.update()
    for k in ps:
        assert torch.equal(big.scores()[k], small.scores()[k])


def test_bad_args():
    with pytest.raises(ValueError):
        ImportanceTracker({}, sensitivity="third")
    with pytest.raises(ValueError, match="smoothing"):
        ImportanceTracker({}, smoothing="median")
    with pytest.raises(ValueError, match="single_step_index"):
        ImportanceTracker({}, smoothing="single_step", single_step_index=-2)
    with pytest.raises(ValueError):
        ImportanceTracker({}, alpha1=1.0)
