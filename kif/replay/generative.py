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
   (its head kept) so that the cue and the answer always fit — kif. The cut is at a token count,
   so it often falls mid-sentence (SmolLM2's tokenizer at 64 tokens: 43.5 % of agnews' 1,000
   training inputs, 72.4 % of dbpedia's, 98.5 % of imdb's; ``scripts/generation_targets.py``).
   Cutting at the last sentence end instead was measured and not adopted: it left 25 % of
   agnews' targets a bare title, and after a short training the model then wrote bare labels
   (``docs/results/generative_replay/``, fourth measurement). A text the model writes past the
   limit is cut at a sentence end instead (``kif.replay.tagged_parse.verdict``).
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
4. **Format** (``gen_format``). ``lamol`` (the papers': LAMOL, LFPT5; SAPT's generator is LAMOL's)
   is 1-3 above: the model writes ``<input><cue> <answer>`` after ``__gen_<task>__``.
   ``tagged`` (kif's default) and ``conditioned`` (kif, an option) split the two jobs: the
   model writes only the input, ``[<task>] <input>`` (``generation_target``), and the task's own
   answer path labels it.
   - The generation prompt (through the model's chat template, as every prompt): ``conditioned``:
     ``[<task>] <label>``, the training example's label, for a task with a closed label set
     (``closed_labels``, or the set the caller passes), ``[<task>]`` alone for a free-form task;
     ``tagged``: ``[<task>] Write a new input for this task.\n<prefix>`` (``gen_prompt``).
   - Generating: ``tagged`` draws 2·n texts a round from its one prompt; ``conditioned`` draws
     ⌈2·n / L⌉ from each of the L label prompts, so every label is asked for equally often. The
     task's tag is put at the start of every text before sampling (``gen_force_tag``, the default;
     ``forced_ids``): the model samples only the input, so no text is lost to a missing or misspelt
     tag, which SmolLM2 wrote in 19 % of its texts on sst2 (``docs/results/generative_replay/``).
   - The parser (``kif.replay.tagged_parse.verdict``) keeps a text only if it ended with the end
     token within ``data.max_target_length`` tokens (the longest target trained on) or, having run
     to that limit, has a sentence or line end to be cut at (``sentence_head``), starts with
     the asked task's tag, has a non-empty input, and the input holds no tag-like bracketed word,
     no answer cue followed by (at most) a label, no sentence of the instruction or of the
     generation request, no list of labels, and is not a label alone; every refusal is counted
     by its reason.
   - The answer is the model's answer to the rebuilt prompt ``prefix + input + suffix`` — the
     prompt evaluation asks: for a closed label set, the label of highest log-probability
     (``kif.evaluation.label_scores``: constrained to the label strings, so never outside the
     set); for a free-form task, its greedy answer (empty: malformed). In ``conditioned`` the
     label asked for is not forced on the input: an input the model scores as another label is
     kept with that label, and counted as not ``agreed``.
   - Duplicates (same whitespace-normalised input) are dropped; the ``n`` kept are taken round-
     robin over the labels in label order (``balanced``, ``gen_balance``; within a label the
     agreed inputs first), so the memory is as balanced as the drawn samples allow.
   Why: SmolLM2-135M-Instruct wrote SST-2-like inputs after a short training but almost never
   the cue and the label (0 of 384 well-formed, ``docs/results/generative_replay/``): the input
   is what it learns first, the label is what it learns the task for. Labelling with the task
   path also makes a label the model's best guess, not a sample from top-k 20. ``conditioned``
   was built because the tagged prompt's instruction was echoed into inputs (its option list, the
   request) and a tagged memory holds only the labels the model happens to write (dbpedia: 6 of
   14); on SmolLM2 after a short training it was worse (agnews: 30.7 % well-formed, the model
   often wrote no tag or ran past the token limit: ``docs/results/generative_replay/``), so it
   is an option, not the default.
"""
from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Callable, Iterable, Literal, Optional, Sequence, get_args

import torch

from ..data import Example
from ..encoding import Encoder
from ..evaluation import generate, label_scores
from ..io import write_jsonl
from ..torchutil import eval_mode, fraction_count
from .pseudo import prompt_template
from .tagged_parse import REQUEST, body_of, task_tag, verdict

log = logging.getLogger("kif")
ANSWER_MARK = "__ans__"  # LAMOL's answer token: the mark of a task whose template has no suffix


def answer_mark(suffix: str) -> str:
    """What separates input and answer in a generated example: the task's own answer cue (its
    template's suffix, e.g. "Answer:", "Output:"), which a pretrained model already knows how
    to follow; LAMOL's ``__ans__`` when the template has none."""
    return suffix.strip() or ANSWER_MARK


def separator(suffix: str) -> str:
    return (suffix if suffix.strip() else f" {ANSWER_MARK}") + " "


GenFormat = Literal["conditioned", "tagged", "lamol"]
FORMATS = get_args(GenFormat)


def gen_prompt(task: str, fmt: GenFormat = "lamol", prefix: str = "", label: Optional[str] = None) -> str:
    """The generation prompt of ``task``: LAMOL's task token ``__gen_<task>__`` (one per task, as
    LFPT5); the ``tagged`` request with the task's instruction (``prefix``, the template's); or the
    ``conditioned`` ``[<task>] <label>`` (``[<task>]`` without a label: a free-form task)."""
    if fmt == "lamol":
        return f"__gen_{task}__"
    if fmt == "conditioned":
        return task_tag(task) + (f" {label.strip()}" if label is not None else "")
    instruction = prefix.strip()
    return f"{task_tag(task)} {REQUEST}" + (f"\n{instruction}" if instruction else "")


def generation_target(ex: Example, prefix: str, suffix: str, encoder: Optional[Encoder] = None, *,
                      fmt: GenFormat = "lamol", task: str = "") -> str:
    """What the model learns to write after the generation prompt: ``<input><cue> <answer>``
    (``lamol``) or ``[<task>] <input>`` (``tagged``).

    With an ``encoder``, the input is cut (its head kept) so that the whole target fits in
    ``data.max_target_length`` tokens: the encoder truncates targets there, and a target cut
    before its answer cue would teach the model to write examples without answers (a tagged
    target cut there would teach it to stop without the end token)."""
    body = body_of(ex.prompt, prefix, suffix)
    head, tail = ((f"{task_tag(task)} ", "") if fmt != "lamol"
                  else ("", f"{separator(suffix)}{ex.references[0].strip()}"))
    if encoder is not None:
        tok = encoder.tokenizer
        fixed = len(tok(head + tail, add_special_tokens=False)["input_ids"]) if head + tail else 0
        budget = encoder.max_target_length - 2 - fixed
        ids = tok(body, add_special_tokens=False)["input_ids"]
        if len(ids) > budget:
            body = tok.decode(ids[:max(budget, 1)], skip_special_tokens=True).strip()
    return f"{head}{body}{tail}"


def generation_examples(task: str, examples: Sequence[Example], weight: float, seed: int, *,
                        template: Optional[tuple[str, str]] = None, encoder: Optional[Encoder] = None,
                        fmt: GenFormat = "lamol", labels: Optional[Iterable[str]] = None,
                        instruction: bool = True) -> list[Example]:
    """⌈weight·n⌉ generation examples of ``task`` (a seeded draw; original order kept).
    ``template``: the task's (prefix, suffix), by default ``prompt_template`` of ``examples``;
    ``encoder``: fit each target in ``data.max_target_length`` (``generation_target``).
    ``conditioned``: each prompt carries its example's answer when the task has a closed label set
    (``labels``, by default ``closed_labels`` of ``examples``; the generator must use the same set).
    ``instruction`` (``tagged``): the prompt carries the task's instruction after the request."""
    if weight <= 0 or not examples:
        return []
    prefix, suffix = template or prompt_template([ex.prompt for ex in examples])
    n = min(len(examples), fraction_count(len(examples), weight))
    chosen = sorted(random.Random(f"{seed}:gen:{task}").sample(range(len(examples)), n))
    closed = (set(labels) if labels is not None else closed_labels(examples)) if fmt == "conditioned" else None

    def prompt(ex: Example) -> str:
        answer = ex.references[0].strip()
        return gen_prompt(task, fmt, prefix if instruction else "",
                          label=answer if closed is not None and answer in closed else None)

    return [Example(f"gen-{examples[i].id}", prompt(examples[i]),
                    (generation_target(examples[i], prefix, suffix, encoder, fmt=fmt, task=task),))
            for i in chosen]


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


def forced_ids(encoder: Encoder, head: str) -> list[int]:
    """The token ids that every target starting with ``head`` (a task's tag) starts with, to be put
    before sampling; [] when the tokenizer merges ``head`` with what follows (nothing is forced)."""
    ids = encoder.target_ids(head)[:-1]  # without the end token
    return ids if encoder.target_ids(head + " x")[:len(ids)] == ids else []


@torch.no_grad()
def sample_texts(model, encoder: Encoder, prompt: str, n: int, eos_ids: list[int], *, top_k: int,
                 max_new_tokens: int, generator_seed: int, batch_size: int,
                 finished: Optional[list[bool]] = None, forced: Sequence[int] = ()) -> list[str]:
    """``n`` top-k continuations of ``prompt``; torch's RNG forked and seeded (global state untouched).
    ``finished`` (optional) gets, per text, whether it ended with an end token. ``forced``: token ids
    every continuation starts with (the first tokens of the answer, e.g. the task tag), part of the
    text returned and of the ``max_new_tokens``."""
    tok = encoder.tokenizer
    ids, forced = encoder.prompt_ids(prompt), list(forced)
    device = next(model.parameters()).device
    texts: list[str] = []
    devices = [device.index or 0] if device.type == "cuda" else []
    start_id = None
    if encoder.is_seq2seq:  # the decoder's start token: T5's is its pad token (a wrapper may hide the config)
        start_id = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
        start_id = tok.pad_token_id if start_id is None else start_id
    with eval_mode(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(generator_seed)
        for start in range(0, n, batch_size):
            rows = min(batch_size, n - start)
            input_ids = torch.tensor([ids + ([] if encoder.is_seq2seq else forced)] * rows, dtype=torch.long,
                                     device=device)
            extra = ({"decoder_input_ids": torch.tensor([[start_id] + forced] * rows, device=device)}
                     if encoder.is_seq2seq and forced else {})
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
                                 top_k=top_k, top_p=1.0, temperature=1.0,
                                 max_new_tokens=max(1, max_new_tokens - len(forced)),
                                 eos_token_id=eos_ids, pad_token_id=tok.pad_token_id, **extra)
            new = out if encoder.is_seq2seq else out[:, len(ids):]  # the forced ids included
            for row in new.tolist():
                if encoder.is_seq2seq and row and row[0] == start_id:
                    row = row[1:]  # the decoder start token
                cut = next((j for j, t in enumerate(row) if t in eos_ids), None)
                texts.append(tok.decode(row[:cut], skip_special_tokens=True))
                if finished is not None:
                    finished.append(cut is not None)
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


def balanced(candidates: Sequence[tuple[str, str]], n: int, label_order: Optional[Sequence[str]] = None
             ) -> list[tuple[str, str]]:
    """``n`` of the (prompt, answer) ``candidates`` taken round-robin over the answers (in
    ``label_order``, then first appearance), each answer's candidates in their order: the counts
    are as equal as the candidates allow; the result keeps the candidates' order."""
    groups: dict[str, list[int]] = {lab: [] for lab in (label_order or ())}
    for i, (_, answer) in enumerate(candidates):
        groups.setdefault(answer, []).append(i)
    queues = [list(reversed(g)) for g in groups.values() if g]
    chosen: list[int] = []
    while len(chosen) < n and queues:
        for q in queues:
            if len(chosen) < n and q:
                chosen.append(q.pop())
        queues = [q for q in queues if q]
    return [candidates[i] for i in sorted(chosen)]


Drawn = tuple[str, bool, Optional[str]]  # (text, ended with the end token, the label its prompt asked for)


def tagged_examples_from_texts(task: str, rounds: Iterable[Sequence[Drawn]], template: tuple[str, str],
                               n: int, answer: Predict, *, labels: Optional[Sequence[str]] = None,
                               balance: bool = True, stats: Optional[dict] = None,
                               record: Optional[list] = None, fields: Sequence[str] = ()) -> list[Example]:
    """Up to ``n`` distinct examples (``pseudo-<task>-<i>``) from rounds of drawn texts, ``(text,
    finished, asked label)`` (``None``: a tagged prompt asks for none); rounds are read until ``n``
    distinct well-formed inputs are found (or none is left).

    A text is well-formed when ``verdict`` (``kif.replay.tagged_parse``; ``fields``: the line-start
    fields every real input has, ``task_fields``) gives an input and ``answer``
    (called once per round on the new distinct inputs' prompts) gives a non-empty answer, inside
    ``labels`` when given.
    Duplicates (same whitespace-normalised input) are dropped, the first kept as written (its line
    breaks too: "Title\nText: …" as agnews' real inputs); the ``n`` kept are ``balanced`` over
    the labels with ``balance`` (within a label, inputs whose answer is the label their prompt asked
    for first), else the first ``n``. ``stats``: texts drawn, well-formed, ``cut`` (well-formed texts
    that ran to the token limit, cut by ``verdict`` at a sentence end or the next example), distinct,
    ``agreed`` (well-formed texts answered with the label asked; conditioned only) and ``rejected``
    (reason -> count; ``no_answer``: an answer outside the label set, or empty). ``record`` gets one dict per
    drawn text (text, finished, asked, verdict, answer), for ``generations.jsonl``."""
    prefix, suffix = template
    pool: list[tuple[str, str, bool]] = []
    answered: dict[str, Optional[str]] = {}  # normalised input -> its answer (None: malformed)
    drawn = well_formed = agreed = cut = 0
    rejected: dict[str, int] = {}
    conditioned = False
    for items in (rounds if n > 0 else ()):
        drawn += len(items)
        conditioned = conditioned or any(a is not None for _, _, a in items)
        verdicts = [verdict(t, task, prefix, answer_mark(suffix), f, labels, fields) for t, f, _ in items]
        keys = [" ".join(b.split()) if b else None for b, _ in verdicts]
        new: dict[str, str] = {}  # a new key -> its first text's input, line breaks kept (as in real inputs)
        for (body, _), key in zip(verdicts, keys):
            if key and key not in answered:
                new.setdefault(key, body)
        if new:
            for key, a in zip(new, answer([prefix + body + suffix for body in new.values()])):
                a = a.strip()
                answered[key] = a if a and (labels is None or a in labels) else None
        firsts: set[str] = set()
        for (text, finished, asked), (_, why), key in zip(items, verdicts, keys):
            got = answered.get(key) if key else None
            why = why if why != "ok" else ("ok" if got is not None else "no_answer")
            if why == "ok":
                well_formed += 1
                cut += not finished
                agreed += got == asked
                if key in new and key not in firsts:
                    firsts.add(key)
                    pool.append((prefix + new[key] + suffix, got, got == asked))
            else:
                rejected[why] = rejected.get(why, 0) + 1
            if record is not None:
                record.append({"text": text, "finished": finished, "asked": asked, "verdict": why, "answer": got})
        if len(pool) >= n:
            break
    if balance:
        ranked = sorted(range(len(pool)), key=lambda i: not pool[i][2])  # agreed first, each in pool order
        picked = balanced([(pool[i][0], pool[i][1]) for i in ranked], n, labels)
        where = {p: i for i, (p, _, _) in enumerate(pool)}
        kept = sorted(picked, key=lambda c: where[c[0]])
    else:
        kept = [(p, a) for p, a, _ in pool[:n]]
    if stats is not None:
        stats.update({"generated": drawn, "well_formed": well_formed, "cut": cut, "distinct": len(pool),
                      "kept": len(kept), "rejected": dict(sorted(rejected.items()))})
        if conditioned:
            stats["agreed"] = agreed
    return [Example(f"pseudo-{task}-{i}", p, (a,)) for i, (p, a) in enumerate(kept)]


def fill_record(requested: int, examples: Sequence[Example], info: dict, fmt: GenFormat) -> dict:
    """The fill rate of one task's generated memory, for results.json: requested, drawn, well-
    formed, distinct, kept, the kept samples' label counts, and ``empty`` when none was kept."""
    labels: dict[str, int] = {}
    for ex in examples:
        labels[ex.references[0]] = labels.get(ex.references[0], 0) + 1
    generated = info.get("generated", 0)
    out = {"format": fmt, "requested": requested, "generated": generated,
           "well_formed": info.get("well_formed", 0), "distinct": info.get("distinct", info.get("well_formed", 0)),
           "kept": len(examples), "well_formed_rate": round(info.get("well_formed", 0) / generated, 4)
           if generated else None, "labels": dict(sorted(labels.items())), "empty": requested > 0 and not examples}
    out.update({key: info[key] for key in ("cut", "agreed", "rejected") if key in info})
    return out


def generate_examples(model, encoder: Encoder, task: str, template: tuple[str, str], n: int, eos_ids: list[int],
                      *, labels: Optional[set[str]] = None, seed: int = 0, top_k: int = 20,
                      max_new_tokens: int = 256, rounds: int = 4, batch_size: int = 32,
                      gen_answers: Literal["generated", "predicted"] = "generated",
                      gen_format: GenFormat = "lamol", balance: bool = True,
                      stats: Optional[dict] = None, record: Optional[list] = None,
                      prefix_cache: bool = True, force_tag: bool = True, instruction: bool = True,
                      fields: Sequence[str] = ()) -> list[Example]:
    """Up to ``n`` distinct, well-formed generated examples of ``task`` (``pseudo-<task>-<i>``).

    ``template`` is the task's (prefix, suffix) (``prompt_template`` of its real prompts).
    ``lamol``: ``gen_answers: predicted`` answers cue-less texts by the model's batched greedy
    prediction (``kif.evaluation.generate``, at most ``data.max_target_length`` tokens: an answer's
    length in training). ``tagged`` / ``conditioned``: a text is at most ``min(max_new_tokens,
    data.max_target_length)`` tokens (the longest target trained on) and its answer is the label of
    highest log-probability (``labels`` given) or the greedy answer. ``conditioned`` draws a round's
    2·n texts from one prompt per label (⌈2·n / labels⌉ each, label order; the seeds
    ``(seed·1000 + round)·1000 + label index``). ``stats`` (optional): the counts and ``fill``, the
    ``fill_record``; ``record`` (tagged formats): every drawn text and its verdict. An empty memory
    (``n`` > 0, nothing kept) is logged, one line. ``prefix_cache``:
    the method's ``reuses_prefix_cache`` (greedy answers). ``force_tag`` (tagged formats): every text
    starts with the task's tag, put there before sampling (``forced_ids``), so the model samples only
    the input — kif; without it the model must write the tag itself, and a text without it is refused.
    ``instruction`` (``tagged``): the generation prompt carries the task's instruction, as it did in
    training (``generation_examples``). ``fields`` (tagged formats): the line-start fields every real
    input of the task has (``kif.replay.tagged_parse.task_fields``); a text without one is refused."""
    if gen_answers not in ("generated", "predicted"):
        raise ValueError(f"gen_answers: {gen_answers!r} is neither 'generated' nor 'predicted'")
    if gen_format not in FORMATS:
        raise ValueError(f"gen_format: {gen_format!r} is not one of {', '.join(FORMATS)}")

    def predict(prompts: list[str]) -> list[str]:
        return generate(model, encoder, [encoder.prompt_ids(p) for p in prompts], eos_ids, batch_size,
                        encoder.max_target_length, prefix_cache)

    info: dict = {}
    if gen_format == "lamol":
        def sampled():  # a round is drawn only when the filter asks for it
            for r in range(rounds):
                yield sample_texts(model, encoder, gen_prompt(task), 2 * n, eos_ids, top_k=top_k,
                                   max_new_tokens=max_new_tokens, generator_seed=seed * 1000 + r,
                                   batch_size=batch_size)

        out = examples_from_texts(task, sampled(), template, n, labels=labels,
                                  predict=predict if gen_answers == "predicted" else None, stats=info)
    else:
        order = sorted(labels) if labels is not None else None
        limit = min(max_new_tokens, encoder.max_target_length)
        if gen_format == "tagged":
            prompts: list[tuple[Optional[str], str]] = [(None, gen_prompt(task, "tagged",
                                                                          template[0] if instruction else ""))]
        else:
            prompts = [(lab, gen_prompt(task, "conditioned", label=lab)) for lab in order or [None]]
        per_prompt = math.ceil(2 * n / len(prompts))
        forced = forced_ids(encoder, task_tag(task)) if force_tag else []

        def tagged_rounds():
            for r in range(rounds):
                drawn: list[tuple] = []
                for j, (asked, prompt) in enumerate(prompts):
                    done: list[bool] = []
                    texts = sample_texts(model, encoder, prompt, per_prompt, eos_ids, top_k=top_k,
                                         max_new_tokens=limit, batch_size=batch_size, finished=done, forced=forced,
                                         generator_seed=seed * 1000 + r if gen_format == "tagged"
                                         else (seed * 1000 + r) * 1000 + j)
                    drawn += [(t, f, asked) for t, f in zip(texts, done)]
                yield drawn

        def answer(prompts: list[str]) -> list[str]:
            if order is None:
                return predict(prompts)
            scores = label_scores(model, encoder, [encoder.prompt_ids(p) for p in prompts], order, batch_size)
            return [order[j] for j in scores.argmax(-1).tolist()]

        out = tagged_examples_from_texts(task, tagged_rounds(), template, n, answer, labels=order,
                                         balance=balance, stats=info, record=record, fields=fields)
    info["fill"] = fill_record(n, out, info, gen_format)
    if info["fill"]["empty"]:
        log.warning("generative replay: the memory of task %s stays empty (%d generated, %d well-formed, "
                    "gen_format %s)", task, info["fill"]["generated"], info["fill"]["well_formed"], gen_format)
    if stats is not None:
        stats.update(info)
    return out


def generate_with(opts, model, encoder: Encoder, task: str, template: tuple[str, str], n: int,
                  eos_ids: list[int], *, labels: Optional[set[str]], seed: int, batch_size: int,
                  prefix_cache: bool, stats: Optional[dict] = None, record: Optional[list] = None,
                  fields: Sequence[str] = ()) -> list[Example]:
    """``generate_examples`` under a method's generator keys (``gen_*``,
    ``kif.methods.options.GenerativeOptions``): the one call kif-m, lfpt5 and sapt make. ``fields``:
    the task's (``task_fields`` of its real prompts), checked with ``gen_fields``."""
    return generate_examples(model, encoder, task, template, n, eos_ids, labels=labels, seed=seed,
                             top_k=opts.gen_top_k, max_new_tokens=opts.gen_max_tokens, rounds=opts.gen_rounds,
                             batch_size=batch_size, gen_answers=opts.gen_answers, gen_format=opts.gen_format,
                             balance=opts.gen_balance, force_tag=opts.gen_force_tag,
                             instruction=opts.gen_instruction, stats=stats, record=record, prefix_cache=prefix_cache,
                             fields=fields if opts.gen_fields else ())


def add_pseudo_stats(stats: dict, task: str, info: dict, gen_answers: str) -> dict:
    """Add one task's generation ``info`` (``generate_examples``' ``stats``) to a results.json stage
    record: ``pseudo_generated`` and ``pseudo_well_formed`` summed over tasks, ``pseudo_fill`` per task,
    ``pseudo_answers_predicted`` (``gen_answers: predicted``) summed."""
    stats["pseudo_generated"] = stats.get("pseudo_generated", 0) + info.get("generated", 0)
    stats["pseudo_well_formed"] = stats.get("pseudo_well_formed", 0) + info.get("well_formed", 0)
    if "fill" in info:
        stats.setdefault("pseudo_fill", {})[task] = info["fill"]
    if gen_answers == "predicted":
        stats["pseudo_answers_predicted"] = stats.get("pseudo_answers_predicted", 0) + info.get("answers_predicted", 0)
    return stats


def save_pseudo(task_dir, examples: Sequence[Example]) -> None:
    """``task_dir/pseudo.jsonl``: what the model wrote, for a reader to judge (and
    ``scripts/pseudo_quality.py`` to count near-duplicates of the real data)."""
    if examples:
        write_jsonl(Path(task_dir) / "pseudo.jsonl",
                    [{"id": ex.id, "prompt": ex.prompt, "answer": ex.references[0]} for ex in examples])


def save_generations(task_dir, record: Sequence[dict]) -> None:
    """``task_dir/generations.jsonl``: every text drawn for the memory (tagged formats), with the
    label its prompt asked for, its verdict (``ok`` or the reason refused) and its answer, so that a
    parser can be judged, or changed and re-applied, without generating again."""
    if record:
        write_jsonl(Path(task_dir) / "generations.jsonl", list(record))
