"""Issue 27, items 1-2: only installed code runs unless ``hub_kernels``; the attention kernels
of training (``train.attention_backend``); the padding layout of training batches; every
skipped step recorded with its batch lengths, and the right advice when the loss was finite
but its gradients were not."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from torch.nn.attention import SDPBackend

from kif.attention import backend_names, sdpa_backends
from kif.cli import main
from kif.configure import validate_config
from kif.data.loaders import Example
from kif.encoding import Encoder
from kif.errors import ConfigError, KifError
from kif.models import load_model
from kif.models.hub_kernels import kernel_record
from kif.training import train_task

from helpers import read_results, tiny_config

HAS_KERNELS = importlib.util.find_spec("kernels") is not None


# ---- item 1: hub kernels ---------------------------------------------------------------------

def test_loading_a_model_leaves_hub_kernels_off(monkeypatch):
    """transformers' own default is on (USE_HUB_KERNELS unset means YES, and from_pretrained
    kernelizes: ``use_kernels`` True); kif's load turns both switches off, and switching the
    model to training (which re-kernelizes a kernelized model) changes nothing."""
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    lm = load_model("tiny-llama")
    assert os.environ["USE_HUB_KERNELS"] == "0"
    assert lm.model.use_kernels is False
    lm.model.train()
    assert lm.model.use_kernels is False
    assert kernel_record(lm.model, False) == {"hub_kernels": False, "source": "installed", "hub_layers": []}


@pytest.mark.skipif(not HAS_KERNELS, reason="the kernels package is not installed")
def test_hub_kernels_opt_in_reaches_transformers(monkeypatch):
    """Opted in, the model is kernelized (on a CPU the mapping has no kernel for LLaMA's
    layers, so nothing is downloaded and the code is still the installed one)."""
    monkeypatch.setenv("USE_HUB_KERNELS", "0")  # the config wins over a stale environment
    lm = load_model("tiny-llama", hub_kernels=True)
    assert os.environ["USE_HUB_KERNELS"] == "1" and lm.model.use_kernels is True
    assert kernel_record(lm.model, True) == {"hub_kernels": True, "source": "installed", "hub_layers": []}
    load_model("tiny-llama")  # the next default load turns it off again
    assert os.environ["USE_HUB_KERNELS"] == "0"


def test_hub_kernels_is_a_checked_config_key(monkeypatch):
    assert validate_config({}).hub_kernels is False
    with pytest.raises(ConfigError, match="hub_kernels"):
        validate_config({"hub_kernels": "sometimes"})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kernels" else object())
    with pytest.raises(ConfigError, match="hub_kernels: .*kernels package"):
        validate_config({"hub_kernels": True})


# ---- item 2a: the attention kernels of training --------------------------------------------

def test_auto_leaves_cudnn_out_on_cuda_in_half_precision():
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    assert sdpa_backends("cuda", torch.bfloat16, "auto") == fused
    assert sdpa_backends("cuda", torch.float16, "auto") == fused
    assert backend_names(fused) == ["flash", "efficient", "math"]
    # fp32 (no cuDNN attention) and CPUs: torch's own choice, untouched
    assert sdpa_backends("cuda", torch.float32, "auto") is None
    assert sdpa_backends("cpu", torch.bfloat16, "auto") is None
    assert backend_names(None) == ["any"]
    # a named kernel is used alone, wherever
    assert sdpa_backends("cuda", torch.bfloat16, "cudnn") == [SDPBackend.CUDNN_ATTENTION]
    assert sdpa_backends("cpu", torch.float32, "math") == [SDPBackend.MATH]
    assert validate_config({}).train.attention_backend == "auto"
    with pytest.raises(ConfigError, match="train.attention_backend"):
        validate_config({"train": {"attention_backend": "cudnn2"}})


@pytest.fixture(scope="module")
def tiny():
    lm = load_model("tiny-llama")
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0], 64, 8)
    return lm, enc


def _examples(n: int) -> list[Example]:
    # prompts of 3 lengths, so that every batch of 4 holds padding
    return [Example(id=str(i), prompt="word " * (1 + i % 3 * 4) + "Answer:", references=("yes" if i % 2 else "no",))
            for i in range(n)]


def _fresh_lora(lm):
    from peft import LoraConfig, get_peft_model

    base = load_model("tiny-llama").model
    return get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))


def _train_cfg(**kw):
    return tiny_config(train={"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "logging_steps": 1, **kw}).train


def test_named_backend_is_applied_to_training(tiny):
    """The choice reaches the Trainer's loop: math trains; a kernel that torch has not for a
    CPU stops with one line naming the key (not torch's traceback)."""
    lm, enc = tiny
    stats = train_task(_fresh_lora(lm), enc, _examples(8), _train_cfg(attention_backend="math"), 1,
                       show_progress=False)
    assert stats["attention_backends"] == ["math"] and stats["skipped_batches"] == []
    with pytest.raises(ConfigError, match="train.attention_backend: efficient: .*use auto"):
        train_task(_fresh_lora(lm), enc, _examples(8), _train_cfg(attention_backend="efficient"), 1,
                   show_progress=False)


# ---- item 2b: the padding layout of training batches ----------------------------------------

def _seen_batches(model) -> tuple[list[dict], object]:
    seen: list[dict] = []

    def hook(module, args, kwargs):
        if module.training:
            seen.append({k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("target_only", [True, False])
def test_training_batches_are_left_padded_with_target_logits_only(tiny, target_only):
    """target_logits_only: pads on the left, every row ends on a real token, labels and logits
    only for the window of targets; otherwise pads on the right. Either way the mask covers
    each row's real tokens exactly."""
    lm, enc = tiny
    model = _fresh_lora(lm)
    seen, handle = _seen_batches(model)
    examples = _examples(8)
    train_task(model, enc, examples, _train_cfg(target_logits_only=target_only), 1, show_progress=False)
    handle.remove()
    assert len(seen) == 2
    lengths = sorted(len(enc.train_features(ex)["input_ids"]) for ex in examples)
    assert lengths[0] < lengths[-1]  # padding in the batches
    padded = 0
    for b in seen:
        mask = b["attention_mask"]
        rows = mask.sum(-1)
        padded += int((rows < mask.shape[1]).sum())
        for row, n in zip(mask, rows.tolist()):
            expect = [0] * (len(row) - n) + [1] * n if target_only else [1] * n + [0] * (len(row) - n)
            assert row.tolist() == expect
        if target_only:
            assert b["labels"].shape[1] == b["logits_to_keep"] < mask.shape[1]
            assert b["position_ids"][:, -1].tolist() == (rows - 1).tolist()  # real positions 0..n-1
        else:
            assert "logits_to_keep" not in b and b["labels"].shape == mask.shape
    assert padded > 0


# ---- item 2c/d: skipped steps recorded, and what to check ---------------------------------------

def _nan_grad_on(model, calls: set[int]):
    """Gradients of one LoRA weight become NaN on the given backward passes (1-based): the
    loss stays finite, as with the cuDNN fault."""
    p = next(p for n, p in model.named_parameters() if "lora_A" in n)
    count = {"n": 0}

    def hook(grad):
        count["n"] += 1
        return grad * float("nan") if count["n"] in calls else grad
    return p.register_hook(hook)


def test_skipped_step_is_recorded_with_its_batch(tiny):
    lm, enc = tiny
    model = _fresh_lora(lm)
    seen, handle = _seen_batches(model)
    _nan_grad_on(model, {2})
    stats = train_task(model, enc, _examples(12), _train_cfg(max_skipped_fraction=0.5), 1, show_progress=False)
    handle.remove()
    width = seen[1]["input_ids"].shape[1]  # the second step's batch
    assert stats["skipped_steps"] == 1
    assert stats["skipped_batches"] == [{"step": 2, "rows": 4, "padded_length": width, "loss_finite": True}]


def test_micro_batches_of_a_skipped_step_under_accumulation(tiny):
    lm, enc = tiny
    model = _fresh_lora(lm)
    seen, handle = _seen_batches(model)
    _nan_grad_on(model, {3})  # the first micro-batch of step 2
    stats = train_task(model, enc, _examples(16), _train_cfg(batch_size=2, grad_accum=2, max_skipped_fraction=0.5),
                       1, show_progress=False)
    handle.remove()
    shapes = [[2, b["input_ids"].shape[1]] for b in seen[2:4]]
    assert stats["skipped_batches"] == [{"step": 2, "rows": 4, "padded_length": max(n for _, n in shapes),
                                         "loss_finite": True, "micro_batches": shapes}]


def test_finite_loss_with_nan_gradients_points_at_the_backward_pass(tiny):
    lm, enc = tiny
    model = _fresh_lora(lm)
    _nan_grad_on(model, {1, 2, 3})
    with pytest.raises(KifError) as err:
        train_task(model, enc, _examples(12), _train_cfg(max_skipped_fraction=0.1), 1, show_progress=False,
                   progress_label="task 1/1 x")
    msg = str(err.value)
    assert "3 of 3 optimizer steps" in msg and "loss was finite" in msg
    assert "train.attention_backend (now auto: any" in msg and "learning_rate" not in msg


def test_run_records_skipped_steps_kernels_and_backends(tmp_path, data_dir, monkeypatch):
    """End to end: results.json holds, per task, the skipped step with its lengths and the
    attention kernels, and for the run the hub-kernel setting and the code used."""
    from kif.methods.seqlora import SeqLoRA

    original = SeqLoRA.before_task

    def before_task(self, k):
        original(self, k)
        if k == 0:
            _nan_grad_on(self.model, {1})
    monkeypatch.setattr(SeqLoRA, "before_task", before_task)
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: tiny-llama\ntasks: [cb, copa]\ndata: {train_samples: 16, test_samples: 4, "
                   "max_input_length: 128, max_target_length: 8}\ntrain: {epochs: 1, batch_size: 8, "
                   "max_skipped_fraction: 0.5}\neval: {batch_size: 8, max_new_tokens: 2}\n")
    assert main(["run", str(cfg), "-o", str(out), "-q"]) == 0
    res = read_results(out)
    first, second = res["per_task"]
    assert first["skipped_steps"] == 1 and second["skipped_steps"] == 0 and second["skipped_batches"] == []
    [entry] = first["skipped_batches"]
    assert entry["step"] == 1 and entry["rows"] == 8 and entry["loss_finite"] is True
    assert entry["padded_length"] >= 1
    assert first["attention_backends"] == second["attention_backends"] == ["any"]  # a CPU: torch's choice
    assert res["kernels"] == {"hub_kernels": False, "source": "installed", "hub_layers": []}
    if HAS_KERNELS:  # opted in: recorded (a CPU has no hub kernel for LLaMA: still installed code)
        monkeypatch.setenv("USE_HUB_KERNELS", "0")  # restored after the test, whatever the run sets
        assert main(["run", str(cfg), "-o", str(out), "-q", "--overwrite", "--set", "hub_kernels=true"]) == 0
        assert read_results(out)["kernels"] == {"hub_kernels": True, "source": "installed", "hub_layers": []}


def test_non_finite_loss_keeps_the_learning_rate_advice(tiny):
    """A loss that is itself NaN is a divergence, not a backward-pass fault: the usual advice."""
    lm, enc = tiny
    model = _fresh_lora(lm)
    emb = model.get_base_model().model.embed_tokens
    handle = emb.register_forward_hook(lambda m, a, out: out * float("nan") if m.training else out)
    with pytest.raises(KifError) as err:
        train_task(model, enc, _examples(8), _train_cfg(max_skipped_fraction=0.1), 1, show_progress=False)
    handle.remove()
    msg = str(err.value)
    assert "2 of 2 optimizer steps" in msg and "lower train.learning_rate" in msg
    assert "loss was finite" not in msg


def test_runs_from_before_the_new_keys_stay_resumable():
    """A stored config written before hub_kernels / train.attention_backend existed equals the
    same config now, while the new keys keep their defaults; setting one is a change."""
    from kif.configure import config_changes, config_record

    cfg = tiny_config()
    stored = config_record(cfg)
    del stored["hub_kernels"], stored["train"]["attention_backend"]
    assert config_changes(stored, cfg) == []
    assert config_changes(stored, tiny_config(train={"attention_backend": "math"})) == ["train.attention_backend"]
    assert config_changes(stored, tiny_config(method="kiflora"))[0] == "method"
    stored["train"]["attention_backend"] = "math"  # written, then compared as before
    assert config_changes(stored, cfg) == ["train.attention_backend"]
