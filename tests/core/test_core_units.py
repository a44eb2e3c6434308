import pytest
import torch

from kif.core.units import SkillUnits, clean_param_name
from kif.errors import ArtifactError

P = "base_model.model.model.layers.0.self_attn."


def lora_params(r=2, d_in=3, d_out=4):
    """Two LoRA modules (q, v) with a plain trainable matrix in between, PEFT-style names."""
    g = torch.Generator().manual_seed(0)
    return {
        P + "q_proj.lora_A.default.weight": torch.randn(r, d_in, generator=g),
        P + "q_proj.lora_B.default.weight": torch.randn(d_out, r, generator=g),
        "base_model.model.score.weight": torch.randn(2, 3, generator=g),
        P + "v_proj.lora_A.default.weight": torch.randn(r, d_in, generator=g),
        P + "v_proj.lora_B.default.weight": torch.randn(d_out, r, generator=g),
    }


def test_clean_param_name():
    assert clean_param_name(P + "q_proj.lora_A.default.weight") == "model.layers.0.self_attn.q_proj.lora_A.weight"
    t5 = "base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_B.default.weight"
    assert clean_param_name(t5) == "encoder.block.0.layer.0.SelfAttention.q.lora_B.weight"
    assert clean_param_name("model.layers.0.self_attn.q_proj.weight") == "model.layers.0.self_attn.q_proj.weight"
    # only the named adapter is stripped; "defaults" is not "default"
    assert clean_param_name("x.lora_A.task2.weight", adapter="task2") == "x.lora_A.weight"
    assert clean_param_name("x.lora_A.task2.weight") == "x.lora_A.task2.weight"
    assert clean_param_name("x.lora_A.defaults.weight") == "x.lora_A.defaults.weight"


def test_matrix_level_names_and_shapes():
    u = SkillUnits.matrix_level({"base_model.model.a.weight": torch.Size([2, 3]), "b.lora_A.default.weight": (1, 3)})
    assert u.kind == "matrix" and len(u) == 2
    assert u.names == ["a.weight", "b.lora_A.weight"]


def test_lora_rank1_names_order():
    u = SkillUnits.lora_rank1(lora_params())
    q, v = "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"
    assert u.kind == "lora_rank1"
    assert u.names == [f"{q}.lora#0", f"{q}.lora#1", "score.weight", f"{v}.lora#0", f"{v}.lora#1"]


def test_lora_rank1_errors():
    p = lora_params()
    del p[P + "v_proj.lora_B.default.weight"]
    with pytest.raises(ArtifactError, match="v_proj.*no lora_B"):
        SkillUnits.lora_rank1(p)
    p = lora_params()
    p[P + "q_proj.lora_B.default.weight"] = torch.zeros(4, 3)  # rank 3 vs A's rank 2
    with pytest.raises(ArtifactError, match="q_proj"):
        SkillUnits.lora_rank1(p)


def test_unit_scores_matrix_eq6():
    u = SkillUnits.matrix_level({"a": (2, 2), "b": (3,)})
    s = u.unit_scores({"a": torch.tensor([[1.0, 2.0], [3.0, 6.0]]), "b": torch.tensor([0.0, 1.0, 5.0])})
    assert s.dtype == torch.float32
    assert torch.equal(s, torch.tensor([3.0, 2.0]))  # 12/4, 6/3


def test_unit_scores_rank1_eq6_factored_equals_outer_mean():
    sa = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])  # s(A): [r=2, in=3]
    sb = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # s(B): [out=2, r=2]
    u = SkillUnits.lora_rank1({"m.lora_A.weight": sa, "m.lora_B.weight": sb})
    s = u.unit_scores({"m.lora_A.weight": sa, "m.lora_B.weight": sb})
    # unit 0: mean(B[:,0]) = 2, mean(A[0]) = 2 -> 4 ; unit 1: mean(B[:,1]) = 1, mean(A[1]) = 2 -> 2
    assert torch.allclose(s, torch.tensor([4.0, 2.0]))
    outer = torch.stack([torch.outer(sb[:, i], sa[i]).mean() for i in range(2)])
    assert torch.allclose(s, outer)


def test_unit_scores_key_and_shape_checks():
    u = SkillUnits.matrix_level({"a": (2,)})
    with pytest.raises(ArtifactError, match="missing parameter 'a'"):
        u.unit_scores({"b": torch.zeros(2)})
    with pytest.raises(ArtifactError, match="unexpected parameter 'b'"):
        u.unit_scores({"a": torch.zeros(2), "b": torch.zeros(2)})
    with pytest.raises(ArtifactError, match="shape"):
        u.unit_scores({"a": torch.zeros(3)})
    # raw PEFT keys and cleaned keys address the same unit
    u = SkillUnits.matrix_level({"base_model.model.x.lora_A.default.weight": (2,)})
    assert u.unit_scores({"x.lora_A.weight": torch.ones(2)}).tolist() == [1.0]


def test_interpolate_rank1_rows_and_columns():
    a_name, b_name = "m.lora_A.weight", "m.lora_B.weight"
    u = SkillUnits.lora_rank1({a_name: (2, 3), b_name: (4, 2)})
    prev = {a_name: torch.ones(2, 3), b_name: torch.ones(4, 2)}
    cur = {a_name: torch.zeros(2, 3), b_name: torch.zeros(4, 2)}
    out = u.interpolate(prev, cur, torch.tensor([0.25, 0.0]))
    # unit 0 -> row 0 of A and column 0 of B get 0.25*1 + 0.75*0; unit 1 keeps cur exactly
    assert torch.equal(out[a_name], torch.tensor([[0.25] * 3, [0.0] * 3]))
    assert torch.equal(out[b_name], torch.tensor([[0.25, 0.0]] * 4))


def test_interpolate_full_example_matches_formula():
    p = lora_params()
    c = {k: v * -2 + 1 for k, v in p.items()}
    u = SkillUnits.lora_rank1(p)
    w = torch.tensor([0.1, 0.7, 0.4, 1.0, 0.0])  # q#0, q#1, score, v#0, v#1
    out = u.interpolate(p, c, w)
    assert list(out) == list(c)
    for mod, (i0, i1) in (("q_proj", (0, 1)), ("v_proj", (3, 4))):
        ka, kb = P + f"{mod}.lora_A.default.weight", P + f"{mod}.lora_B.default.weight"
        wi = w[[i0, i1]]
        assert torch.allclose(out[ka], wi[:, None] * p[ka] + (1 - wi[:, None]) * c[ka])
        assert torch.allclose(out[kb], wi[None, :] * p[kb] + (1 - wi[None, :]) * c[kb])
    ks = "base_model.model.score.weight"
    assert torch.allclose(out[ks], 0.4 * p[ks] + 0.6 * c[ks])


def test_interpolate_matrix_dtype_and_checks():
    u = SkillUnits.matrix_level({"a": (2,), "b": (2,)})
    prev = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([2.0, 2.0])}
    cur = {"a": torch.tensor([3.0, 1.0], dtype=torch.bfloat16), "b": torch.tensor([0.0, 4.0], dtype=torch.bfloat16)}
    out = u.interpolate(prev, cur, torch.tensor([0.5, 0.25]))
    assert out["a"].dtype == torch.bfloat16
    assert out["a"].tolist() == [2.0, 2.0] and out["b"].tolist() == [0.5, 3.5]
    with pytest.raises(ArtifactError, match="missing parameter 'b'"):
        u.interpolate(prev, {"a": cur["a"]}, torch.tensor([0.5, 0.5]))
    with pytest.raises(ArtifactError, match=r"\[2\] vector"):
        u.interpolate(prev, cur, torch.tensor([0.5]))


def test_scores_dict_round_trip_and_errors(tmp_path):
    u = SkillUnits.lora_rank1(lora_params())
    s = torch.arange(5, dtype=torch.float32)
    d = u.scores_to_dict(s)
    assert d["score.weight"].shape == () and d["score.weight"].item() == 2.0
    assert torch.equal(u.scores_from_dict(d), s)
    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file(d, tmp_path / "s.safetensors")  # no shared-storage complaint
    assert torch.equal(u.scores_from_dict(safetensors.load_file(tmp_path / "s.safetensors")), s)
    missing = dict(d)
    del missing["score.weight"]
    with pytest.raises(ArtifactError, match="missing unit 'score.weight'"):
        u.scores_from_dict(missing)
    with pytest.raises(ArtifactError, match="unexpected unit 'extra'"):
        u.scores_from_dict({**d, "extra": torch.tensor(1.0)})
