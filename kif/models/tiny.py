"""Tiny randomly initialised models for tests and smoke runs.

They need no download: a byte-level tokenizer is built from the `tokenizers`
library (256 byte tokens + 4 specials, no merges) and the weights come from a
fixed-seed random init. Both are saved as ordinary Hugging Face directories, so
the rest of kif loads them exactly like a real checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import torch

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3
VOCAB_SIZE = len(SPECIALS) + 256


def byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # ByteLevel maps every byte to a printable unicode char; a BPE without merges
    # over those 256 chars is exactly a byte tokenizer.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def _config(kind: str):
    from transformers import LlamaConfig, T5Config

    if kind == "tiny-llama":
        return LlamaConfig(
            vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
        )
    if kind == "tiny-t5":
        return T5Config(
            vocab_size=VOCAB_SIZE, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
            num_heads=4, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0,
            feed_forward_proj="relu", tie_word_embeddings=True,
        )
    raise KeyError(kind)


def build_tiny(kind: str, dest: Path) -> Path:
    """Write a tiny random model + byte tokenizer to ``dest`` (seed 0: identical everywhere)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cfg = _config(kind)
    torch.manual_seed(0)
    auto = AutoModelForSeq2SeqLM if kind == "tiny-t5" else AutoModelForCausalLM
    model = auto.from_config(cfg)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    byte_tokenizer().save_pretrained(dest)
    return dest
