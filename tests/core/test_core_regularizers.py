import pytest
import torch

from kif.core.regularizers import lora_pairs, orthogonal_regularizer
from kif.errors import ArtifactError


def test_eq5_default_unsquared_mean_value_and_gradient_by_hand():
    # The authors' (AdaLoRA's) form: mean over the LoRA matrices of ||Gram - I||_F, unsquared.
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], requires_grad=True)  # A Aᵀ - I = diag(0, 3): ||.||_F = 3
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], requires_grad=True)  # Bᵀ B - I = 0: ||.||_F = 0
    r = orthogonal_regularizer([(a, b)])
    assert r.item() == 1.5  # (3 + 0) / 2 matrices
    (0.1 * r).backward()  # kiflora's default weight
    # d||M||_F/dA with M = A Aᵀ - I: (M/||M|| + Mᵀ/||M||) A = 2 diag(0, 1) A = [[0,0,0],[0,4,0]]; / 2 matrices, x 0.1
    assert torch.allclose(a.grad, torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.2, 0.0]]))
    assert torch.equal(b.grad, torch.zeros(3, 2))  # an orthonormal factor: zero (sub)gradient, not NaN


def test_eq5_value_and_gradient_hand_example():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)  # A Aᵀ - I = diag(0, 3) -> 9
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]], requires_grad=True)  # Bᵀ B - I = [[0, 1], [1, 1]] -> 3
    r = orthogonal_regularizer([(a, b)], norm="squared", reduction="sum")
    assert r.item() == 12.0
    r.backward()
    eye = torch.eye(2)
    assert torch.allclose(a.grad, 4 * (a @ a.T - eye) @ a)  # = [[0, 0], [0, 24]]
    assert torch.allclose(a.grad, torch.tensor([[0.0, 0.0], [0.0, 24.0]]))
    assert torch.allclose(b.grad, 4 * b @ (b.T @ b - eye))


def test_eq5_norm_and_reduction_options_hand_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # ||A Aᵀ - I||²_F = 9, ||·||_F = 3
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # ||Bᵀ B - I||²_F = 3, ||·||_F = √3
    pairs = [(a, b), (torch.eye(2), torch.eye(2))]  # the second module is orthonormal: 0 and 0
    assert orthogonal_regularizer(pairs, norm="squared").item() == pytest.approx(12 / 4)  # mean of 4 terms
    assert orthogonal_regularizer(pairs, norm="squared", reduction="sum").item() == pytest.approx(12)
    assert orthogonal_regularizer(pairs).item() == pytest.approx((3 + 3 ** 0.5) / 4)  # default: frobenius, mean
    assert orthogonal_regularizer(pairs, "frobenius", "sum").item() == pytest.approx(3 + 3 ** 0.5)
    with pytest.raises(ValueError, match="norm"):
        orthogonal_regularizer(pairs, norm="l1")


def test_eq5_rectangular_sum_over_pairs():
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(2, 5, generator=g, requires_grad=True), torch.randn(3, 2, generator=g, requires_grad=True))
             for _ in range(2)]
    r = orthogonal_regularizer(pairs, norm="squared", reduction="sum")
    r.backward()
    eye = torch.eye(2)
    expected = sum(((a @ a.T - eye) ** 2).sum() + ((b.T @ b - eye) ** 2).sum() for a, b in pairs)
    assert torch.allclose(r, expected)
    for a, b in pairs:
        assert torch.allclose(a.grad, 4 * (a @ a.T - eye) @ a, atol=1e-5)
        assert torch.allclose(b.grad, 4 * b @ (b.T @ b - eye), atol=1e-5)
    assert orthogonal_regularizer([]).item() == 0.0


def test_lora_pairs_from_module_and_dict():
    class Lora(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.base = torch.nn.Linear(3, 4, bias=False)
            self.lora_A = torch.nn.ModuleDict({"default": torch.nn.Linear(3, 2, bias=False)})
            self.lora_B = torch.nn.ModuleDict({"default": torch.nn.Linear(2, 4, bias=False)})

    model = torch.nn.ModuleDict({"q": Lora(), "v": Lora()})
    pairs = list(lora_pairs(model))
    assert len(pairs) == 2
    assert pairs[0][0] is model["q"].lora_A["default"].weight and pairs[0][1] is model["q"].lora_B["default"].weight
    assert list(lora_pairs(model, adapter="other")) == []
    with pytest.raises(ArtifactError, match="only lora_A"):
        list(lora_pairs({"m.lora_A.default.weight": torch.zeros(2, 3)}))
