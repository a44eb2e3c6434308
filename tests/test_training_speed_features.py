"""Speed switches must not change what is learnt: torch.compile, bf16 autocast, SDPA attention."""
import shutil

import pytest
import torch

from kif.config import TrainConfig
from kif.data import Example
from kif.encoding import Encoder
from kif.training import train_task


def _peft_tiny_llama(attn=None):
    from peft import LoraConfig, TaskType, get_peft_model

    from kif.models import load_model

    torch.manual_seed(0)
    lm = load_model("tiny-llama", attn_implementation=attn)
    # dropout 0: compiled and eager dropout draw different masks, so they would differ by design
    model = get_peft_model(lm.model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8,
                                                lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                                init_lora_weights="gaussian"))
    return model, lm.tokenizer


def _lora(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def _train(compiled: bool = False, precision: str = "fp32", attn=None, stats=None) -> dict[str, torch.Tensor]:
    model, tokenizer = _peft_tiny_llama(attn)
    enc = Encoder(tokenizer, False, False, 2)
    examples = [Example(str(i), f"question {i} {'x' * (i % 3)}. Answer:", ("yes" if i % 2 else "no",))
                for i in range(8)]
    cfg = TrainConfig(epochs=2, learning_rate=1e-2, batch_size=4, torch_compile=compiled, precision=precision,
                      logging_steps=100)
    out = train_task(model, enc, examples, cfg, seed=3, show_progress=False)
    if stats is not None:
        stats.update(out)
    return _lora(model)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile (inductor) needs a C compiler on CPU")
def test_compiled_training_matches_eager():
    init = _lora(_peft_tiny_llama()[0])
    eager, compiled = _train(), _train(compiled=True)
    moved = max(float((eager[k] - init[k]).abs().max()) for k in eager)
    worst = max(float((compiled[k] - eager[k]).abs().max()) for k in eager)
    # inductor fuses kernels (other summation order): equal up to float rounding, which is
    # 1000x below how far training moved the adapter
    assert moved > 1e-2
    assert worst < 1e-5 * max(1.0, moved / 1e-2), (worst, moved)


def test_bf16_autocast_keeps_lora_weights_fp32_and_learns_alike():
    fp32_stats, bf16_stats = {}, {}
    fp32 = _train(stats=fp32_stats)
    bf16 = _train(precision="bf16", stats=bf16_stats)
    assert all(t.dtype == torch.float32 for t in bf16.values())  # master weights stay fp32
    assert bf16_stats["loss"] == pytest.approx(fp32_stats["loss"], rel=0.03)
    for k in fp32:  # bf16 matmuls (8-bit mantissa): the same update to within a few percent
        assert float((bf16[k] - fp32[k]).norm() / fp32[k].norm()) < 0.05, k


def test_sdpa_and_eager_attention_train_the_same_adapter():
    sdpa, eager = _train(attn="sdpa"), _train(attn="eager")
    for k in sdpa:
        torch.testing.assert_close(sdpa[k], eager[k], atol=1e-5, rtol=1e-4)
