"""Which scaled-dot-product-attention kernels training may use (``train.attention_backend``).

Why not always torch's choice: on Hopper GPUs (H100/H200) torch >= 2.11 prefers the cuDNN
kernel for bf16/fp16 attention with an explicit mask, and its backward returns NaN
gradients for a query row whose log-sum-exp is below about -88.7 when the key length is
64 mod 128 (pytorch/pytorch issue 196678). A left-padded training batch always has such
rows: a pad position attends to nothing (``kif.encoding.TrainCollator``). On a
Long Sequence run every sequential method lost the same optimizer steps to it
(``../shared/results/h200-long-sequence-15``). The flash and memory-efficient kernels are
clean on the same inputs, so ``auto`` leaves cuDNN out on CUDA in half precision; math is
the fallback for inputs neither fused kernel takes. On a CPU, and on CUDA in fp32 (which
cuDNN's attention does not serve), ``auto`` is torch's own choice, untouched.

Applied with torch's public ``torch.nn.attention.sdpa_kernel`` around the Trainer's loop
only (forward and backward of training); evaluation keeps torch's choice. It acts on
models whose attention runs through SDPA (``attn_implementation`` sdpa, transformers'
default); eager attention has no kernel to choose.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
SETTINGS = ("auto", *BACKENDS)  # the values of train.attention_backend
_HALF = (torch.bfloat16, torch.float16)


def sdpa_backends(device_type: str, dtype: torch.dtype, setting: str) -> Optional[list[SDPBackend]]:
    """The SDPA kernels training may use, in torch's order of preference; None: torch's own
    choice among all of them. A named backend is used alone (torch raises when it cannot
    serve the inputs: a setting for diagnosis, not a silent fallback)."""
    if setting in BACKENDS:
        return [BACKENDS[setting]]
    if setting != "auto":
        raise ValueError(f"attention backend {setting!r} is not one of {', '.join(SETTINGS)}")
    if device_type == "cuda" and dtype in _HALF:
        return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return None


def backend_names(backends: Optional[list[SDPBackend]]) -> list[str]:
    """What results.json records: the kernels' names (``train.attention_backend`` values),
    or ``["any"]`` when torch chooses among all of them."""
    if backends is None:
        return ["any"]
    names = {b: n for n, b in BACKENDS.items()}
    return [names[b] for b in backends]


def training_attention(backends: Optional[list[SDPBackend]]):
    """The context that restricts SDPA to ``backends`` (nothing at all for None)."""
    return contextlib.nullcontext() if backends is None else sdpa_kernel(backends)
