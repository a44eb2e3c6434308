import math

import pytest
import torch

from kif.core.fusion import (
    accumulate_importance,
    adaptive_fusion_weights,
    fuse,
    minmax_normalize,
    static_fusion_weights,
    top_fraction_mask,
    weight_ensemble,
)
from kif.core.units import SkillUnits
from kif.errors import ArtifactError


def test_minmax_normalize():
    assert minmax_normalize(torch.tensor([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]
    assert minmax_normalize(torch.tensor([5.0, 5.0])).tolist() == [0.0, 0.0]  # constant -> zeros
    assert minmax_normalize(torch.tensor([7.0])).tolist() == [0.0]


def test_accumulate_importance_eq13():
    first = torch.tensor([2.0, 4.0, 3.0])
    assert torch.equal(accumulate_importance(None, first), first)  # I(Û_1) = I(U_1), unnormalised
    # Norm(prev) = [0, 1, .5], Norm(cur=[1, 0, 3]) = [1/3, 0, 1]
    acc = accumulate_importance(first, torch.tensor([1.0, 0.0, 3.0]), beta=0.7)
    assert torch.allclose(acc, torch.tensor([0.3 * (1 / 3), 0.7, 0.35 + 0.3]))
    # constant current task scores: no NaN, contributes nothing
    acc = accumulate_importance(first, torch.full((3,), 1e-3), beta=0.7)
    assert torch.allclose(acc, torch.tensor([0.0, 0.7, 0.35]))
    with pytest.raises(ArtifactError):
        accumulate_importance(first, torch.zeros(4))


def test_top_fraction_mask_ceil_and_ties():
    s = torch.tensor([1.0, 5.0, 5.0, 0.0, 5.0])
    assert top_fraction_mask(s, 0.2).tolist() == [False, True, False, False, False]  # ceil(1.0) = 1; tie -> index 1
    assert top_fraction_mask(s, 0.3).tolist() == [False, True, True, False, False]  # ceil(1.5) = 2
    assert top_fraction_mask(s, 0.0).sum() == 0 and top_fraction_mask(s, 1.0).all()
    assert top_fraction_mask(torch.arange(100.0), 0.07).sum() == 7  # 0.07*100 = 7.000000000000001 -> 7
    assert top_fraction_mask(torch.arange(3.0), 0.2).tolist() == [False, False, True]  # ceil(0.6) = 1


def test_static_fusion_eq15_four_branches():
    # top 50% of 4 units = 2 units each
    prev = torch.tensor([9.0, 8.0, 1.0, 0.0])  # + + - -
    cur = torch.tensor([9.0, 0.0, 8.0, 1.0])  # + - + -
    w = static_fusion_weights(prev, cur, top_fraction=0.5, gamma=0.3)
    assert torch.allclose(w, torch.tensor([0.3, 1.0, 0.0, 0.5]))


def test_adaptive_fusion_eq16_17():
    w = adaptive_fusion_weights(torch.tensor([0.3]), torch.tensor([0.15]), temperature=0.15, normalize=False)
    assert math.isclose(w.item(), 1 / (1 + math.exp(-1)), rel_tol=1e-6)  # exp(2)/(exp(2)+exp(1))
    big = adaptive_fusion_weights(torch.tensor([1e4, 0.0, 1e4]), torch.tensor([0.0, 1e4, 1e4]), normalize=False)
    assert big.isfinite().all() and big.tolist() == [1.0, 0.0, 0.5]
    # normalised: prev -> [0, 1], cur -> [1, 0]
    w = adaptive_fusion_weights(torch.tensor([1.0, 3.0]), torch.tensor([5.0, 2.0]), temperature=0.5)
    assert torch.allclose(w, torch.sigmoid(torch.tensor([-2.0, 2.0])))


def test_weight_ensemble_eq14():
    out = weight_ensemble({"a": torch.tensor([1.0, 3.0])}, {"a": torch.tensor([3.0, 1.0])}, lam=0.25)
    assert out["a"].tolist() == [2.5, 1.5]
    with pytest.raises(ArtifactError, match="'b'"):
        weight_ensemble({"a": torch.zeros(1)}, {"a": torch.zeros(1), "b": torch.zeros(1)}, 0.5)


def tiny_lora():
    names = ["q.lora_A.weight", "q.lora_B.weight", "v.lora_A.weight", "v.lora_B.weight"]
    shapes = [(2, 3), (4, 2), (2, 3), (4, 2)]
    prev = {n: torch.full(s, 1.0) for n, s in zip(names, shapes)}
    cur = {n: torch.full(s, 3.0) for n, s in zip(names, shapes)}
    return SkillUnits.lora_rank1(prev), prev, cur


def test_fuse_static_end_to_end():
    units, prev, cur = tiny_lora()  # units q#0 q#1 v#0 v#1
    ps, cs = torch.tensor([9.0, 8.0, 1.0, 0.0]), torch.tensor([9.0, 0.0, 8.0, 1.0])
    fused, w = fuse(units, prev, cur, ps, cs, mode="static", top_fraction=0.5, gamma=0.5)
    assert w.tolist() == [0.5, 1.0, 0.0, 0.5]
    # value = w*1 + (1-w)*3 = 3 - 2w -> [2, 1, 3, 2]
    assert torch.equal(fused["q.lora_A.weight"], torch.tensor([[2.0] * 3, [1.0] * 3]))
    assert torch.equal(fused["q.lora_B.weight"], torch.tensor([[2.0, 1.0]] * 4))
    assert torch.equal(fused["v.lora_A.weight"], torch.tensor([[3.0] * 3, [2.0] * 3]))
    assert torch.equal(fused["v.lora_B.weight"], torch.tensor([[3.0, 2.0]] * 4))


def test_fuse_adaptive_end_to_end():
    units, prev, cur = tiny_lora()
    ps, cs = torch.tensor([0.0, 1.0, 2.0, 4.0]), torch.tensor([4.0, 4.0, 0.0, 2.0])
    fused, w = fuse(units, prev, cur, ps, cs, temperature=0.15)
    expected_w = torch.sigmoid((torch.tensor([0.0, 0.25, 0.5, 1.0]) - torch.tensor([1.0, 1.0, 0.0, 0.5])) / 0.15)
    assert torch.allclose(w, expected_w)
    assert torch.allclose(fused["v.lora_A.weight"][1], (3 - 2 * expected_w[3]).expand(3))
    assert torch.allclose(fused["q.lora_B.weight"][:, 0], (3 - 2 * expected_w[0]).expand(4))
    with pytest.raises(ArtifactError):
        fuse(units, prev, cur, ps[:3], cs[:3])
    with pytest.raises(ValueError):
        fuse(units, prev, cur, ps, cs, mode="ema")
