"""train.torch_compile: the compiled training path must train the same adapter as eager."""
import shutil

import pytest
import torch

from kif.config import TrainConfig
from kif.data import Example
from kif.encoding import Encoder
from kif.training import train_task


def _peft_tiny_llama():
    from peft import LoraConfig, TaskType, get_peft_model

    from kif.models import load_model

    torch.manual_seed(0)
    lm = load_model("tiny-llama")
    # dropout 0: compiled and eager dropout draw different masks, so they would differ by design
    model = get_peft_model(lm.model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8,
                                                lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                                init_lora_weights="gaussian"))
    return model, lm.tokenizer


def _lora(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def _train(compiled: bool) -> dict[str, torch.Tensor]:
    model, tokenizer = _peft_tiny_llama()
    enc = Encoder(tokenizer, False, False, 2)
    examples = [Example(str(i), f"question {i} {'x' * (i % 3)}. Answer:", ("yes" if i % 2 else "no",))
                for i in range(8)]
    cfg = TrainConfig(epochs=2, learning_rate=1e-2, batch_size=4, torch_compile=compiled, logging_steps=100)
    train_task(model, enc, examples, cfg, seed=3, show_progress=False)
    return _lora(model)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile (inductor) needs a C compiler on CPU")
def test_compiled_training_matches_eager():
    init = _lora(_peft_tiny_llama()[0])
    eager, compiled = _train(False), _train(True)
    moved = max(float((eager[k] - init[k]).abs().max()) for k in eager)
    worst = max(float((compiled[k] - eager[k]).abs().max()) for k in eager)
    # inductor fuses kernels (other summation order): equal up to float rounding, which is
    # 1000x below how far training moved the adapter
    assert moved > 1e-2
    assert worst < 1e-5 * max(1.0, moved / 1e-2), (worst, moved)
