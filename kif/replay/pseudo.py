"""Generated pseudo-samples of a finished task (KIF-M's ``memory_source: pseudo``, docs/method.md §5).

LAMOL/LFPT5/SAPT style: the model that has just learned a task writes samples of it,
so no real training sample has to be stored.

1. The task's prompt template is read off its training prompts: ``prefix`` is their
   longest common prefix (the instruction, e.g. Long Sequence's "What is the sentiment
   ... Option: Good, Bad.\\nText: ", or SuperNI's "Definition: ...\\n\\nNow complete the
   following example -\\nInput: "), ``suffix`` the longest common suffix of what is left
   ("\\nAnswer:", "\\nOutput:"). Only the template (instruction text) is used, never an
   input or an output of a real sample.
2. Inputs: the model continues ``prefix`` (raw text, no chat template: a continuation, as
   LAMOL) with top-k sampling — greedy decoding would write the same input n times. The
   sampling RNG is forked and seeded, so it is deterministic and leaves the global RNG
   (hence the rest of the run) untouched. A continuation is cut where it starts writing
   the answer marker (``suffix``) itself.
3. Outputs: pseudo prompt = prefix + input + suffix, answered greedily through the normal
   prompt path (``Encoder.prompt_ids`` + ``kif.evaluation.generate``), cleaned like a
   prediction.
"""
from __future__ import annotations

import os

import torch

from ..data import Example
from ..encoding import Encoder
from ..evaluation import generate
from ..metrics import clean_prediction
from ..torchutil import eval_mode


def prompt_template(prompts: list[str]) -> tuple[str, str]:
    """(prefix, suffix) shared by all ``prompts``; they never overlap.

    With a single distinct prompt there is no variable part to find: the prefix is its
    first line (the Long Sequence instruction line; the "Definition: ..." of SuperNI up to
    its first newline) and the suffix its last line when that starts with nothing else.
    """
    distinct = list(dict.fromkeys(prompts))
    if not distinct:
        return "", ""
    if len(distinct) == 1:
        p = distinct[0]
        cut = p.find("\n")
        prefix = p[:cut + 1] if cut >= 0 else ""
        rest = p[len(prefix):]
        last = rest.rfind("\n")
        return prefix, (rest[last:] if last >= 0 else "")
    prefix = os.path.commonprefix(distinct)
    rests = [p[len(prefix):] for p in distinct]
    suffix = os.path.commonprefix([r[::-1] for r in rests])[::-1]
    return prefix, suffix


def _cut_at_marker(body: str, suffix: str) -> str:
    marker = suffix.strip()
    if marker and marker in body:
        body = body[:body.index(marker)]
    return body.rstrip()


@torch.no_grad()
def sample_inputs(model, encoder: Encoder, prefix: str, n: int, eos_ids: list[int], *, max_new_tokens: int = 128,
                  top_k: int = 20, seed: int = 0, batch_size: int = 32) -> list[str]:
    """``n`` sampled continuations of ``prefix`` (top-k), decoded; deterministic given ``seed``."""
    tok = encoder.tokenizer
    ids = tok(prefix or "Input:")["input_ids"][: encoder.max_input_length]
    device = next(model.parameters()).device
    with eval_mode(model):
        texts: list[str] = []
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for start in range(0, n, batch_size):
                rows = min(batch_size, n - start)
                input_ids = torch.tensor([ids] * rows, dtype=torch.long, device=device)
                out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                     do_sample=True, top_k=top_k, top_p=1.0, temperature=1.0,
                                     max_new_tokens=max_new_tokens, eos_token_id=eos_ids,
                                     pad_token_id=tok.pad_token_id)
                new = out if encoder.is_seq2seq else out[:, input_ids.shape[1]:]
                for row in new.tolist():
                    cut = next((j for j, t in enumerate(row) if t in eos_ids), len(row))
                    texts.append(tok.decode(row[:cut], skip_special_tokens=True))
    return texts


def pseudo_samples(model, encoder: Encoder, task: str, prompts: list[str], n: int, eos_ids: list[int], *,
                   input_tokens: int = 128, output_tokens: int = 128, top_k: int = 20, seed: int = 0,
                   batch_size: int = 32, prefix_cache: bool = True) -> list[Example]:
    """``n`` generated samples of ``task`` whose real prompts are ``prompts`` (used for the template only).

    Every sample is ``Example(f"pseudo-{task}-{i}", prompt, (output,))`` with a non-empty
    prompt; ``output`` may be empty if the model answers with EOS at once. ``prefix_cache``: the
    method's ``reuses_prefix_cache`` (the greedy outputs).
    """
    if n <= 0:
        return []
    prefix, suffix = prompt_template(prompts)
    bodies = sample_inputs(model, encoder, prefix, n, eos_ids, max_new_tokens=input_tokens, top_k=top_k,
                           seed=seed, batch_size=batch_size)
    pseudo_prompts = []
    for body in bodies:
        p = prefix + _cut_at_marker(body, suffix) + suffix
        pseudo_prompts.append(p if p.strip() else (prefix or "Input:") + " ...")
    raw = generate(model, encoder, [encoder.prompt_ids(p) for p in pseudo_prompts], eos_ids, batch_size,
                   output_tokens, prefix_cache)
    return [Example(f"pseudo-{task}-{i}", p, (clean_prediction(o),))
            for i, (p, o) in enumerate(zip(pseudo_prompts, raw))]
