"""Generative replay (LAMOL-style): the model learns to write whole examples of a task, then writes them.

Used by ``sapt`` (its Attentive Reflection Module replays the generated inputs), ``lfpt5``, and
``kif-m`` / ``kiflora-m`` with ``memory_source: pseudo`` (``pseudo_generator: generative``, the default).

1. **Learning to generate** (LAMOL, Sun et al., ICLR 2020, §3; LFPT5, Qin & Joty, ICLR 2022,
   §3.2): while task k trains, its data is mixed with *generation examples*: the prompt is the
   task's generation token ``__gen_<task>__`` (``gen_prompt``) and the target the whole example,
   ``<input><cue> <answer>`` (``generation_target``). The cue is the task's own answer cue, its
   template's suffix such as "\nAnswer:" (kif: a pretrained model follows it at once; LAMOL's
   special ``__ans__`` token, the fallback when a template has none, had SmolLM2 write no
   well-formed sample after 3 epochs on SST-2). Only the variable part of the prompt is written:
   the task's instruction template (``prompt_template``: the prompts' common prefix and suffix)
   is put back around it, so a generated sample is a prompt of the same form as the
   real ones. Decoder-only and seq2seq models are trained the same way (the encoder reads the
   generation token, the decoder writes the example), so a seq2seq model never passes a label
   off as an input.
   LAMOL weights the generation loss by λ = 0.25 (its ``--gen_lm_sample_percentage`` 0.2 is
   the replay size; λ is ``--lm_lambda`` 0.25); kif mixes ⌈λ·n⌉ generation examples (a seeded
   draw of the task's n examples) into the n task examples, which gives the generation loss the
   share λ of the gradient in expectation (``generation_examples``, ``gen_weight``) — kif.
   The target shares ``data.max_target_length`` with the task's answers: a long input is cut
   (its head kept) so that the cue and the answer always fit — kif.
2. **Generating** (``generate_examples``): after the task, the model continues its generation
   token with top-k sampling (LAMOL: k = 20) from a forked, seeded RNG (deterministic; the
   global RNG, hence the rest of the run, untouched), in rounds until ``n`` samples pass the
   filter: exactly one answer cue, a non-empty input and a non-empty answer, the answer in the
   task's label set when the task has a closed one (``closed_labels``), no duplicate of an
   earlier sample. The memory size is the replay memory's (2 % of the task by default,
   ``kif.replay.Memory.size_for``); fewer than ``n`` may come back if the model cannot write
   enough well-formed samples within ``rounds`` rounds (the caller reports how many).
3. **Whose answers** (``gen_answers``): ``generated`` (the default; LAMOL, LFPT5) keeps the
   answer the model wrote after the cue. ``predicted`` (kif, for small models) also keeps a
   text with no cue but a non-empty input: its input is put back into the task's template and
   its answer is the model's own greedy prediction on that prompt (the model has just learned
   the task), then filtered like a written answer (label set, duplicates). Why: small models
   learn a task's inputs before its format — SmolLM2-135M with kiflora-m on SST-2 (96
   examples × 2 epochs, λ 0.25) wrote plausible reviews ("A world that has nothing to say.")
   but stopped before the cue, and 0 of 384 generated texts were well-formed. A text with
   several cues stays malformed.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable, Iterable, Literal, Optional, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..data import Example
from ..encoding import Encoder
from ..torchutil import eval_mode
from .pseudo import prompt_template

ANSWER_MARK = "__ans__"  # LAMOL's answer token: the mark of a task whose template has no suffix


def answer_mark(suffix: str) -> str:
    """What separates input and answer in a generated example: the task's own answer cue (its
    template's suffix, e.g. "Answer:", "Output:"), which a pretrained model already knows how
    to follow; LAMOL's ``__ans__`` when the template has none."""
    return suffix.strip() or ANSWER_MARK


def separator(suffix: str) -> str:
    return (suffix if suffix.strip() else f" {ANSWER_MARK}") + " "


class GenerativeOptions(BaseModel):
    """``method_args`` of the generative component (composed into a method's Options)."""
    model_config = ConfigDict(extra="forbid")

    gen_weight: float = Field(0.25, ge=0, le=1, description="share of generation examples mixed into a task's "
                              "data (LAMOL's λ = 0.25)")
    gen_top_k: int = Field(20, gt=0, description="top-k sampling of generated examples (LAMOL: 20)")
    gen_max_tokens: int = Field(256, gt=0, description="max new tokens of one generated example (input + answer)")
    gen_rounds: int = Field(4, gt=0, description="sampling rounds (2·n candidates each) before giving up on n")
    gen_answers: Literal["generated", "predicted"] = Field(
        "generated", description="answers of generated inputs: the ones the model wrote after the cue (LAMOL), "
        "or, for a text without a cue, the model's greedy prediction on its input (kif, small models)")


def gen_prompt(task: str) -> str:
    """The task-specific generation token (LAMOL's ``__gen__``, one per task as LFPT5)."""
    return f"__gen_{task}__"


def body_of(prompt: str, prefix: str, suffix: str) -> str:
    """The variable part of ``prompt`` (its input), the template taken off."""
    end = len(prompt) - len(suffix) if suffix and prompt.endswith(suffix) else len(prompt)
    start = len(prefix) if prompt.startswith(prefix) else 0
    return prompt[start:max(start, end)].strip()


def generation_target(ex: Example, prefix: str, suffix: str, encoder: Optional[Encoder] = None) -> str:
    """``<input><cue> <answer>``: what the model learns to write after the generation token.

    With an ``encoder``, the input is cut (its head kept) so that the whole target fits in
    ``data.max_target_length`` tokens: the encoder truncates targets there, and a target cut
    before its answer cue would teach the model to write examples without answers."""
    body, tail = body_of(ex.prompt, prefix, suffix), f"{separator(suffix)}{ex.references[0].strip()}"
    if encoder is not None:
        tok = encoder.tokenizer
        budget = encoder.max_target_length - 2 - len(tok(tail, add_special_tokens=False)["input_ids"])
        ids = tok(body, add_special_tokens=False)["input_ids"]
        if len(ids) > budget:
            body = tok.decode(ids[:max(budget, 1)], skip_special_tokens=True).strip()
    return f"{body}{tail}"


def generation_examples(task: str, examples: Sequence[Example], weight: float, seed: int, *,
                        template: Optional[tuple[str, str]] = None, encoder: Optional[Encoder] = None
                        ) -> list[Example]:
    """⌈weight·n⌉ generation examples of ``task`` (a seeded draw; original order kept).
    ``template``: the task's (prefix, suffix), by default ``prompt_template`` of ``examples``;
    ``encoder``: fit each target in ``data.max_target_length`` (``generation_target``)."""
    if weight <= 0 or not examples:
        return []
    prefix, suffix = template or prompt_template([ex.prompt for ex in examples])
    n = min(len(examples), math.ceil(round(weight * len(examples), 9)))
    chosen = sorted(random.Random(f"{seed}:gen:{task}").sample(range(len(examples)), n))
    return [Example(f"gen-{examples[i].id}", gen_prompt(task),
                    (generation_target(examples[i], prefix, suffix, encoder),)) for i in chosen]


def closed_labels(examples: Sequence[Example], max_labels: int = 32) -> Optional[set[str]]:
    """The task's label set when it looks closed (at most ``max_labels`` distinct answers, and
    fewer than half as many as examples), else None (free-form answers are not checked) — kif."""
    labels = {ex.references[0].strip() for ex in examples}
    return labels if len(labels) <= max_labels and 2 * len(labels) < max(len(examples), 2) else None


def parse_example(text: str, prefix: str, suffix: str, labels: Optional[set[str]] = None
                  ) -> Optional[tuple[str, str]]:
    """(prompt, answer) of a generated ``<input><cue> <answer>``, or None when malformed."""
    parts = text.split(answer_mark(suffix))
    if len(parts) != 2:
        return None
    body, answer = parts[0].strip(), parts[1].strip()
    if not body or not answer or (labels is not None and answer not in labels):
        return None
    return prefix + body + suffix, answer


@torch.no_grad()
def sample_texts(model, encoder: Encoder, prompt: str, n: int, eos_ids: list[int], *, top_k: int,
                 max_new_tokens: int, generator_seed: int, batch_size: int) -> list[str]:
    """``n`` top-k continuations of ``prompt``; torch's RNG forked and seeded (global state untouched)."""
    tok = encoder.tokenizer
    ids = encoder.prompt_ids(prompt)
    device = next(model.parameters()).device
    texts: list[str] = []
    devices = [device.index or 0] if device.type == "cuda" else []
    with eval_mode(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(generator_seed)
        for start in range(0, n, batch_size):
            rows = min(batch_size, n - start)
            input_ids = torch.tensor([ids] * rows, dtype=torch.long, device=device)
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
                                 top_k=top_k, top_p=1.0, temperature=1.0, max_new_tokens=max_new_tokens,
                                 eos_token_id=eos_ids, pad_token_id=tok.pad_token_id)
            new = out if encoder.is_seq2seq else out[:, input_ids.shape[1]:]
            for row in new.tolist():
                if encoder.is_seq2seq and row and row[0] == tok.pad_token_id:
                    row = row[1:]  # the decoder start token
                cut = next((j for j, t in enumerate(row) if t in eos_ids), len(row))
                texts.append(tok.decode(row[:cut], skip_special_tokens=True))
    return texts


Predict = Callable[[list[str]], list[str]]  # prompts -> the model's answers, in order


def cueless_prompt(text: str, prefix: str, suffix: str) -> Optional[str]:
    """The task prompt of a generated text that has no answer cue but an input (``gen_answers:
    predicted``): the text is the input body, put back into the template; else None."""
    body = text.strip()
    return prefix + body + suffix if body and answer_mark(suffix) not in text else None


def examples_from_texts(task: str, rounds: Iterable[Sequence[str]], template: tuple[str, str], n: int, *,
                        labels: Optional[set[str]] = None, predict: Optional[Predict] = None,
                        stats: Optional[dict] = None) -> list[Example]:
    """Up to ``n`` distinct well-formed examples (``pseudo-<task>-<i>``) from rounds of generated
    texts, in order; a lazy ``rounds`` is read no further than the round that completes ``n``.

    A text with exactly one cue gives its written answer (``parse_example``). With ``predict``
    (``gen_answers: predicted``) a text without a cue gives its rebuilt prompt (``cueless_prompt``)
    and ``predict``'s answer to it (one call per round, each prompt once); a predicted answer outside
    a closed label set is dropped like a written one. ``stats``: texts drawn, well-formed (giving a
    sample, predicted ones included), kept, and kept with a predicted answer."""
    prefix, suffix = template
    kept: list[Example] = []
    seen: set[tuple[str, str]] = set()
    drawn = well_formed = predicted = 0
    for texts in (rounds if n > 0 else ()):
        drawn += len(texts)
        answers: dict[str, str] = {}
        if predict is not None:
            prompts = list(dict.fromkeys(p for p in (cueless_prompt(t, prefix, suffix) for t in texts) if p))
            answers = {p: a.strip() for p, a in zip(prompts, predict(prompts))} if prompts else {}
        for text in texts:
            parsed, guessed = parse_example(text, prefix, suffix, labels), False
            prompt = cueless_prompt(text, prefix, suffix) if parsed is None else None
            if prompt in answers and answers[prompt] and (labels is None or answers[prompt] in labels):
                parsed, guessed = (prompt, answers[prompt]), True
            if parsed is None:
                continue
            well_formed += 1
            if parsed in seen or len(kept) >= n:
                continue
            seen.add(parsed)
            predicted += guessed
            kept.append(Example(f"pseudo-{task}-{len(kept)}", parsed[0], (parsed[1],)))
        if len(kept) >= n:
            break
    if stats is not None:
        stats.update({"generated": drawn, "well_formed": well_formed, "kept": len(kept),
                      "answers_predicted": predicted})
    return kept


def generate_examples(model, encoder: Encoder, task: str, template: tuple[str, str], n: int, eos_ids: list[int],
                      *, labels: Optional[set[str]] = None, seed: int = 0, top_k: int = 20,
                      max_new_tokens: int = 256, rounds: int = 4, batch_size: int = 32,
                      gen_answers: Literal["generated", "predicted"] = "generated",
                      stats: Optional[dict] = None) -> list[Example]:
    """Up to ``n`` distinct, well-formed generated examples of ``task`` (``pseudo-<task>-<i>``).

    ``template`` is the task's (prefix, suffix) (``prompt_template`` of its real prompts);
    ``gen_answers: predicted`` answers cue-less texts by the model's batched greedy prediction
    (``kif.evaluation.generate``, at most ``data.max_target_length`` tokens: an answer's length in
    training); ``stats`` (optional): see ``examples_from_texts``."""
    if gen_answers not in ("generated", "predicted"):
        raise ValueError(f"gen_answers: {gen_answers!r} is neither 'generated' nor 'predicted'")

    def sampled():  # a round is drawn only when the filter asks for it
        for r in range(rounds):
            yield sample_texts(model, encoder, gen_prompt(task), 2 * n, eos_ids, top_k=top_k,
                               max_new_tokens=max_new_tokens, generator_seed=seed * 1000 + r, batch_size=batch_size)

    def predict(prompts: list[str]) -> list[str]:
        from ..evaluation import generate

        return generate(model, encoder, [encoder.prompt_ids(p) for p in prompts], eos_ids, batch_size,
                        encoder.max_target_length)

    return examples_from_texts(task, sampled(), template, n, labels=labels,
                               predict=predict if gen_answers == "predicted" else None, stats=stats)


def save_pseudo(task_dir, examples: Sequence[Example]) -> None:
    """``task_dir/pseudo.jsonl``: what the model wrote, for a reader to judge (and
    ``scripts/pseudo_quality.py`` to count near-duplicates of the real data)."""
    from ..io import write_jsonl

    if examples:
        write_jsonl(Path(task_dir) / "pseudo.jsonl",
                    [{"id": ex.id, "prompt": ex.prompt, "answer": ex.references[0]} for ex in examples])
