"""train.gradient_checkpointing: the memory saving changes no number (issue 27 item 6).

The quickstart's 4.7 GB peak on CPU was the training step's activations (batch 8 x up to 256
tokens x 30 layers, kept for the backward; benchmarks/README.md "Memory"). Checkpointing keeps
each layer's input only and recomputes the layer in the backward, with the same dropout masks.
"""
import json
from pathlib import Path

import torch
from peft import LoraConfig, TaskType, get_peft_model

from kif.config import TrainConfig
from kif.data import Example
from kif.encoding import Encoder
from kif.models import load_model
from kif.runner import run
from kif.training import train_task

from helpers import tiny_config


def examples(n: int) -> list[Example]:
    return [Example(f"t-{i}", f"item {i}. Answer:", ("yes" if i % 2 else "no",)) for i in range(n)]


def _lora_model():
    torch.manual_seed(0)
    lm = load_model("tiny-llama")
    cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8, lora_dropout=0.1,
                     target_modules=["q_proj", "v_proj"])
    model = get_peft_model(lm.model, cfg)
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, lm.use_chat_template, lm.eos_token_ids[0], 64, 8)
    return model, enc


def test_checkpointing_keeps_less_for_the_backward_and_gives_the_same_weights():
    exs = examples(8)
    out = {}
    for on in (False, True):
        model, enc = _lora_model()
        saved = []  # bytes autograd keeps for the backward (checkpointing: each layer's input only)

        def pack(t):
            saved.append(t.numel() * t.element_size())
            return t

        cfg = TrainConfig(epochs=1, batch_size=4, learning_rate=5e-3, gradient_checkpointing=on)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            stats = train_task(model, enc, exs, cfg, seed=3, show_progress=False)
        out[on] = (sum(saved), stats["loss"], {n: p.detach().clone() for n, p in model.named_parameters()
                                               if p.requires_grad})
    assert out[True][0] < 0.5 * out[False][0], (out[True][0], out[False][0])
    assert out[True][1] == out[False][1]
    assert out[True][2].keys() == out[False][2].keys()
    for name, p in out[False][2].items():
        assert torch.equal(p, out[True][2][name]), name  # bit for bit, dropout (p 0.1) included


def test_checkpointing_run_gives_identical_results_and_adapters(tmp_path):
    runs = {}
    for on in (False, True):
        cfg = tiny_config(method="kiflora", tasks=["cb", "copa"], train={"gradient_checkpointing": on})
        runs[on] = tmp_path / str(on)
        run(cfg, runs[on], show_progress=False)
    a, b = (json.loads((runs[k] / "results.json").read_text()) for k in (False, True))
    for key in ("matrix", "AP", "FWT", "BWT", "adapter_bytes"):
        assert a[key] == b[key], key
    assert [p["loss"] for p in a["per_task"]] == [p["loss"] for p in b["per_task"]]
    files = sorted(p.relative_to(runs[False]) for p in runs[False].rglob("*.safetensors"))
    assert len(files) >= 4
    for rel in files:
        assert (runs[False] / rel).read_bytes() == (runs[True] / rel).read_bytes(), rel


def test_a_run_recorded_before_the_key_existed_resumes_without_a_config_change():
    from kif.configure import config_changes, config_record

    cfg = tiny_config()
    old = json.loads(json.dumps(config_record(cfg)))
    del old["train"]["gradient_checkpointing"]  # as kif wrote config.yaml before this key
    assert config_changes(old, cfg) == []
    on = tiny_config(train={"gradient_checkpointing": True})
    assert config_changes(old, on) == ["train.gradient_checkpointing"]
