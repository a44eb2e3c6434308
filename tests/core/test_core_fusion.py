import math

import numpy as np
import pytest
import torch

from kif.core.fusion import (
    accumulate_importance,
    adaptive_fusion_weights,
    fuse,
    minmax_normalize,
    percentile,
    static_fusion_weights,
    top_fraction_mask,
    weight_ensemble,
)
from kif.core.units import SkillUnits
from kif.errors import ArtifactError

from helpers import REPO


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


def test_top_fraction_mask_rank_rule_ceil_and_ties():
    s = torch.tensor([1.0, 5.0, 5.0, 0.0, 5.0])
    rank = dict(threshold="rank")
    assert top_fraction_mask(s, 0.2, **rank).tolist() == [False, True, False, False, False]  # ceil(1.0) = 1; tie -> index 1
    assert top_fraction_mask(s, 0.3, **rank).tolist() == [False, True, True, False, False]  # ceil(1.5) = 2
    assert top_fraction_mask(s, 0.0, **rank).sum() == 0
    assert top_fraction_mask(s, 1.0, **rank).tolist() == [True, True, True, False, True]  # the zero is never "+"
    assert top_fraction_mask(torch.arange(100.0), 0.07, **rank).sum() == 7  # 0.07*100 = 7.000000000000001 -> 7
    assert top_fraction_mask(torch.arange(3.0), 0.2, **rank).tolist() == [False, False, True]  # ceil(0.6) = 1


def test_percentile_rule_is_numpys_percentile_with_strict_greater():
    s = torch.tensor([1.0, 5.0, 5.0, 0.0, 5.0])  # sorted 0 1 5 5 5; index 4*0.8 = 3.2 -> 5: nothing is > 5
    assert top_fraction_mask(s, 0.2).sum() == 0  # default rule: ties at the threshold are all "-"
    s = torch.tensor([0.0, 4.0, 1.0, 2.0, 3.0])  # index 3.2 -> 3 + 0.2*(4-3) = 3.2: only the 4
    assert percentile(s, 80).item() == pytest.approx(3.2)
    assert top_fraction_mask(s, 0.2).tolist() == [False, True, False, False, False]
    assert top_fraction_mask(s, 1.0).tolist() == [False, True, True, True, True]  # > min: the 0 stays "-"
    assert top_fraction_mask(s, 0.0).sum() == 0  # > max
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 7, 10, 96, 97, 100, 333):
        for x in (torch.rand(n, generator=g), torch.randint(0, 4, (n,), generator=g).float()):  # ties too
            for frac in (0.2, 0.1, 0.25, 0.5, 0.07):
                ref = np.percentile(x.double().numpy(), 100 - 100 * frac)
                assert percentile(x, 100 - 100 * frac).item() == ref  # bit-identical, not approx
                assert top_fraction_mask(x, frac).numpy().tolist() == (x.double().numpy() > ref).tolist()


def test_threshold_counts_at_96_units_and_zero_ties():
    s = torch.arange(1.0, 97.0)  # U = 96 distinct scores
    assert top_fraction_mask(s, 0.2, threshold="rank").sum() == 20  # ceil(19.2)
    assert top_fraction_mask(s, 0.2).sum() == 19  # percentile: index 95*0.8 = 76 -> s[76]; 77..95 are above
    assert top_fraction_mask(s, 0.2).sum() == int((s.numpy() > np.percentile(s.numpy(), 80)).sum())
    z = torch.tensor([0.0] * 8 + [3.0, 2.0])  # 80 % zeros: the top 20 % is exactly the two positive units
    for rule in ("percentile", "rank"):
        assert top_fraction_mask(z, 0.2, threshold=rule).tolist() == [False] * 8 + [True, True]
        assert top_fraction_mask(z, 0.5, threshold=rule).tolist() == [False] * 8 + [True, True]  # never a zero
        assert top_fraction_mask(torch.full((5,), 2.0), 0.2, threshold=rule).sum() == 0  # constant: no "+"
    with pytest.raises(ValueError, match="threshold"):
        top_fraction_mask(z, 0.2, threshold="quantile")


def test_static_fusion_eq15_four_branches():
    # top 50% of 4 units = 2 units each
    prev = torch.tensor([9.0, 8.0, 1.0, 0.0])  # + + - -
    cur = torch.tensor([9.0, 0.0, 8.0, 1.0])  # + - + -
    w = static_fusion_weights(prev, cur, top_fraction=0.5, gamma=0.3)
    assert torch.allclose(w, torch.tensor([0.3, 1.0, 0.0, 0.5]))
    w = static_fusion_weights(prev, cur, top_fraction=0.5)  # default γ = 0.7 (the authors' code)
    assert w.tolist() == torch.tensor([0.7, 1.0, 0.0, 0.5]).tolist()
    with pytest.raises(ValueError, match="gamma"):
        static_fusion_weights(prev, cur, gamma=1.5)


def authors_static_fusion(present_scores, previous_scores, present, previous):
    """The authors' static consolidation, restated from their description (TaSL code):
    min-max normalise both score lists, threshold each at np.percentile(., 80) with ">",
    then per tensor 0.3·present + 0.7·previous / previous / present / 0.5·present + 0.5·previous."""
    def norm(v):
        v = np.asarray(v, dtype=np.float64)
        return (v - v.min()) / (v.max() - v.min())

    cur, prev = norm(present_scores), norm(previous_scores)
    cur_t, prev_t = np.percentile(list(cur), 80), np.percentile(list(prev), 80)
    out = {}
    for i, key in enumerate(present):
        c, p = present[key], previous[key]
        if prev[i] > prev_t:
            out[key] = 0.3 * c + 0.7 * p if cur[i] > cur_t else p
        else:
            out[key] = c if cur[i] > cur_t else 0.5 * c + 0.5 * p
    return out


def test_static_fusion_defaults_equal_the_authors_fused_weights_bit_for_bit():
    names = [f"layer{i}.lora_{ab}.weight" for i in range(5) for ab in "AB"]  # U = 10 matrix units
    g = torch.Generator().manual_seed(3)
    prev = {n: torch.randn(3, 4, generator=g) for n in names}
    cur = {n: torch.randn(3, 4, generator=g) for n in names}
    # 80th percentile of 10 scores = index 7.2: the top two are "+". Units 0 (+/+), 1 (+/-), 2 (-/+), rest -/-.
    prev_scores = torch.tensor([9.0, 8.0, 1.0, 0.5, 0.0, 2.0, 3.0, 1.5, 0.2, 0.1])
    cur_scores = torch.tensor([7.0, 0.3, 6.0, 0.5, 0.0, 1.0, 2.0, 0.4, 0.2, 0.1]) * 1e-3  # raw, unnormalised
    units = SkillUnits.matrix_level(cur)
    fused, w = fuse(units, prev, cur, prev_scores, cur_scores, mode="static")  # defaults: γ 0.7, percentile
    assert w.tolist() == pytest.approx([0.7, 1.0, 0.0] + [0.5] * 7)
    ref = authors_static_fusion(cur_scores.tolist(), prev_scores.tolist(), cur, prev)
    for n in names:
        assert torch.equal(fused[n], ref[n]), n  # exact, not allclose


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


def test_fusion_weights_script_counts_units_by_weight(tmp_path):
    """scripts/fusion_weights.py: share of units that keep the past / sit near ½ / take the new."""
    import importlib.util
    from pathlib import Path

    from safetensors.torch import save_file

    task = tmp_path / "tasks" / "02_b"
    task.mkdir(parents=True)
    # 8 units over two tensors: 2 past (0.7, 1.0), 4 near ½ (0.5, 0.5, 0.46, 0.54), 2 new (0.0, 0.3)
    save_file({"a": torch.tensor([0.7, 1.0, 0.5, 0.5]), "b": torch.tensor([0.46, 0.54, 0.0, 0.3])},
              str(task / "fusion_weights.safetensors"))
    spec = importlib.util.spec_from_file_location("fw", REPO / "scripts" / "fusion_weights.py")
    fw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fw)
    s = fw.weight_stats(task / "fusion_weights.safetensors")
    assert s["units"] == 8 and s["mean"] == pytest.approx(4.0 / 8)
    assert (s["past"], s["near_half"], s["new"]) == pytest.approx((0.25, 0.5, 0.25))
    # the small summary a published cell keeps: sorted w = 0, .3, .46, .5, .5, .54, .7, 1
    j = fw.run_summary(tmp_path)
    assert j["run"] == tmp_path.name and list(j["tasks"]) == ["02_b"]
    t = j["tasks"]["02_b"]
    assert t["quantiles"]["0.0"] == 0.0 and t["quantiles"]["1.0"] == 1.0
    assert t["quantiles"]["0.5"] == pytest.approx(0.5)  # between the 4th and 5th of 8: 0.5 and 0.5
    # bins of 0.05: 0 -> bin 0, .3 -> 6, .46 -> 9, .5 .5 -> 10, .54 -> 10, .7 -> 14, 1 -> 19 (the last bin)
    counts = t["histogram"]["counts"]
    assert sum(counts) == 8 and counts[0] == 1 and counts[6] == 1 and counts[9] == 1
    assert counts[10] == 3 and counts[14] == 1 and counts[19] == 1
    # publish_sweep writes it next to the cell's results.json
    spec = importlib.util.spec_from_file_location("ps", REPO / "scripts" / "publish_sweep.py")
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)
    src = tmp_path / "sweep"
    (src / "kif_x").mkdir(parents=True)
    (tmp_path / "tasks").rename(src / "kif_x" / "tasks")
    (src / "kif_x" / "results.json").write_text('{"finished": true}')
    (src / "kif_x" / "config.yaml").write_text("method: kif\n")
    (src / "kif_x" / "tasks" / "02_b" / "pseudo.jsonl").write_text('{"id": "pseudo-b-0"}\n')  # a generated memory
    (src / "kif_x" / "checkpoints").mkdir()
    (src / "kif_x" / "checkpoints" / "state.pt").write_text("x")
    assert ps.publish(src, tmp_path / "pub") == ["kif_x"]
    assert (tmp_path / "pub" / "kif_x" / "tasks" / "02_b" / "pseudo.jsonl").read_text() == '{"id": "pseudo-b-0"}\n'
    assert sorted(p.name for p in (tmp_path / "pub" / "kif_x").rglob("*") if p.is_file()) == [
        "config.yaml", "fusion_weights.json", "pseudo.jsonl", "results.json"]  # never the weights or checkpoints
    import json
    published = json.loads((tmp_path / "pub" / "kif_x" / "fusion_weights.json").read_text())
    assert published["tasks"]["02_b"]["histogram"]["counts"] == counts
