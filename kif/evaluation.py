"""Batched greedy evaluation: one generate() call per batch, prompts sorted by length.

Sorting by length keeps padding (wasted compute) small; left padding lets a
decoder-only model continue every prompt from its last real token; generation stops
for the whole batch once every row has produced an EOS. The prompts of one task share
their instruction (15-66 % of the tokens on Long Sequence with SmolLM2's template), so
a decoder-only model encodes that shared prefix once and every batch starts from a copy
of its KV cache (``prefix_cache``).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
from dataclasses import dataclass

import torch

from . import dist
from .data import Example
from .encoding import IGNORE, Encoder, TrainCollator, pad
from .io import write_jsonl
from .torchutil import eval_autocast, eval_mode
from .metrics import Metric, get_metric, joint_score, score_each, score_task
from .names import check_path_component


@dataclass
class TaskEval:
    score: float
    predictions: list[dict]  # {id, prediction, references, score}


MIN_SHARED_PREFIX = 8  # tokens; below this a prefix cache saves less than it costs


@functools.cache
def _cache_kwarg() -> str:
    """Newer transformers 5.x call generate()'s ``past_key_values`` ``cache`` (old name deprecated)."""
    from transformers.utils import generic

    return "cache" if hasattr(generic, "_rename_kwargs_for_bc") else "past_key_values"


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """Length of the longest common prefix, leaving every prompt at least one token of its own."""
    if not prompts:
        return 0
    return max(0, min(len(os.path.commonprefix(prompts)), min(len(p) for p in prompts) - 1))


def _prefix_cache(model, prefix: list[int], device):
    """The KV cache of ``prefix`` (batch 1), or None where the model's cache cannot be reused
    this way (not a DynamicCache, or sliding-window layers)."""
    from transformers import DynamicCache

    out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True)
    cache = out.get(_cache_kwarg())
    sliding = getattr(cache, "is_sliding", None) or [False]
    if not isinstance(cache, DynamicCache) or any(sliding):
        return None
    return cache


@torch.no_grad()
def generate(model, encoder: Encoder, prompts: list[list[int]], eos_ids: list[int],
             batch_size: int = 32, max_new_tokens: int = 128, prefix_cache: bool = True) -> list[str]:
    """Greedy continuations of already-encoded prompts, in input order.

    Under ``accelerate launch`` each process generates its round-robin share of the batches
    (the same batches as one process would make, so the same predictions) and all of them
    get every text back.

    ``prefix_cache`` (decoder-only): the prompts' common prefix is encoded once; each batch
    is that prefix followed by the left-padded rest of its prompts, so the padding sits
    between the two, masked, and positions still count real tokens only. Off for a model
    that routes an input by the whole of it (``CLMethod.reuses_prefix_cache``)."""
    tok = encoder.tokenizer
    pad_id = tok.pad_token_id
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    done: dict[int, str] = {}
    with eval_mode(model):
        mine = dist.my_share(batches)
        n_prefix = shared_prefix_length(prompts) if prefix_cache and not encoder.is_seq2seq and mine else 0
        cache = _prefix_cache(model, prompts[0][:n_prefix], device) if n_prefix >= MIN_SHARED_PREFIX else None
        if cache is None:
            n_prefix = 0
        for idx in mine:
            batch = [prompts[i][n_prefix:] for i in idx]
            left = not encoder.is_seq2seq
            input_ids = pad(batch, pad_id, left=left).to(device)
            attention = pad([[1] * len(s) for s in batch], 0, left=left).to(device)
            extra = {}
            if cache is not None:
                head = torch.tensor([prompts[idx[0]][:n_prefix]] * len(idx), device=device)
                input_ids = torch.cat([head, input_ids], 1)
                attention = torch.cat([torch.ones_like(head), attention], 1)
                past = copy.deepcopy(cache)  # generate() appends to it
                past.batch_repeat_interleave(len(idx))
                extra[_cache_kwarg()] = past
            out = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=pad_id,
                                 **extra)
            new = out if encoder.is_seq2seq else out[:, input_ids.shape[1]:]
            for i, row in zip(idx, new.tolist()):
                done[i] = tok.decode(_until_eos(row, eos_ids), skip_special_tokens=True)
    done = dist.merge_from_all(done)
    return [done[i] for i in range(len(prompts))]


def _until_eos(ids: list[int], eos_ids: list[int]) -> list[int]:
    for j, t in enumerate(ids):
        if t in eos_ids:
            return ids[:j]
    return ids


def evaluate_task(model, encoder: Encoder, examples: list[Example], metric: str | Metric, eos_ids: list[int],
                  prompt_ids: list[list[int]] | None = None, batch_size: int = 32,
                  max_new_tokens: int = 128, prefix_cache: bool = True) -> TaskEval:
    prompts = prompt_ids if prompt_ids is not None else [encoder.prompt_ids(ex.prompt) for ex in examples]
    raw = generate(model, encoder, prompts, eos_ids, batch_size, max_new_tokens, prefix_cache)
    metric = get_metric(metric)  # a name, or a Metric with its delimiter and normalisation
    preds = [metric.answer(t) for t in raw]
    scores = score_each(metric, preds, [ex.references for ex in examples])
    rows = [{"id": ex.id, "prediction": p, "references": list(ex.references), "score": s}
            | ({"group": ex.group} if ex.group is not None else {}) for ex, p, s in zip(examples, preds, scores)]
    # grouped examples: joint over each group, collected after all batches (joint_score)
    return TaskEval(joint_score(scores, [ex.group for ex in examples]) if scores else 0.0, rows)


def rank_labels(model, encoder: Encoder, prompts: list[list[int]], labels: list[str],
                batch_size: int = 32) -> list[str]:
    """Classification by ranking: the label whose tokens (+ EOS) get the highest total
    log-probability after the prompt. One teacher-forced forward pass per (prompt, label)
    pair, batched; no decoding. Reported next to generation accuracy (the paper's metric)."""
    scores = label_scores(model, encoder, prompts, labels, batch_size)
    return [labels[j] for j in scores.argmax(-1).tolist()]


@torch.no_grad()
def label_scores(model, encoder: Encoder, prompts: list[list[int]], labels: list[str],
                 batch_size: int = 32) -> torch.Tensor:
    """[n_prompts, n_labels] total log p(label tokens + EOS | prompt); shared out like ``generate``."""
    targets = [encoder.target_ids(lab) for lab in labels]
    pairs = [(i, j) for i in range(len(prompts)) for j in range(len(labels))]
    scores = torch.full((len(prompts), len(labels)), float("-inf"))
    device = next(model.parameters()).device
    collate = TrainCollator(encoder.tokenizer.pad_token_id)
    with eval_mode(model):
        done: dict[tuple[int, int], float] = {}
        for chunk in dist.my_share([pairs[s:s + batch_size] for s in range(0, len(pairs), batch_size)]):
            feats = []
            for i, j in chunk:
                if encoder.is_seq2seq:
                    feats.append({"input_ids": prompts[i], "labels": targets[j]})
                else:
                    feats.append({"input_ids": prompts[i] + targets[j],
                                  "labels": [IGNORE] * len(prompts[i]) + targets[j]})
            batch = {k: v.to(device) for k, v in collate(feats).items()}
            logits = model(**batch).logits.float()
            labels_t = batch["labels"]
            if not encoder.is_seq2seq:  # position t predicts token t+1
                logits, labels_t = logits[:, :-1], labels_t[:, 1:]
            logp = torch.log_softmax(logits, -1)
            mask = labels_t != IGNORE
            tok = logp.gather(-1, labels_t.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            total = (tok * mask).sum(-1).cpu()
            for pair, s in zip(chunk, total.tolist()):
                done[pair] = s
    for (i, j), s in dist.merge_from_all(done).items():
        scores[i, j] = s
    return scores


class SequenceEvaluator:
    """Evaluates the model on the tasks of a sequence and writes one predictions file per task.

    Built once per run: every task's test prompts are encoded here, once. ``evaluate``
    returns the scores of the wanted tasks (None elsewhere) and, with ``eval.rank_labels``,
    the label-ranking accuracy of the classification tasks.
    """

    def __init__(self, cfg, encoder: Encoder, tasks: list[str], test: dict, metrics: dict, labels: dict,
                 eos_ids: list[int], classification: dict | None = None):
        """``metrics``: per task a metric name or a ``Metric`` (delimiter, normalisation);
        ``classification``: per task whether it has a label set to rank (default: accuracy
        tasks)."""
        self.cfg, self.encoder, self.tasks, self.test = cfg.eval, encoder, tasks, test
        self.metrics = {t: get_metric(m) for t, m in metrics.items()}
        self.labels, self.eos_ids = labels, eos_ids
        self.classification = classification or {t: self.metrics[t].name == "accuracy" for t in tasks}
        self.prompts = {t: [encoder.prompt_ids(ex.prompt) for ex in test[t]] for t in tasks}

    def wanted_after(self, k: int, n_stages: int) -> set[int]:
        """Which tasks to evaluate after stage k. ``eval.mode: minimal`` keeps only what
        AP/FWT/BWT need: a[k][k], a[k][k+1] and the whole last row (plus the first task
        with ``eval.track_first``)."""
        if self.cfg.mode == "full" or k == n_stages - 1:
            return set(range(len(self.tasks)))
        return {k, k + 1} | ({0} if self.cfg.track_first else set())

    def evaluate(self, model, pred_dir, wanted: set[int], task_context=None,
                 reuses_prefix_cache: bool = True) -> tuple[list, list]:
        """How the method routes evaluation (``CLMethod``'s evaluation contract): ``task_context(i)``,
        a context manager the model is evaluated on task i under (a method that uses the task
        identity at inference, e.g. ProgPrompt's ``inference: task_id``); ``reuses_prefix_cache``:
        False for a model whose answer to a prompt prefix depends on the rest of the prompt."""
        row, ranked = [], []
        for i, t in enumerate(self.tasks):
            if i not in wanted:
                row.append(None)
                ranked.append(None)
                continue
            ranking = self.cfg.rank_labels and self.classification[t]
            with task_context(i) if task_context else contextlib.nullcontext(), \
                    eval_autocast(self.cfg.precision, model):
                res = evaluate_task(model, self.encoder, self.test[t], self.metrics[t], self.eos_ids,
                                    self.prompts[t], self.cfg.batch_size, self.cfg.max_new_tokens,
                                    self.cfg.prefix_cache and reuses_prefix_cache)
                picks = rank_labels(model, self.encoder, self.prompts[t], self.labels[t],
                                    self.cfg.batch_size) if ranking else None
            row.append(res.score)  # full precision: AP/FWT/BWT use it; reports round for display
            r = None
            if ranking:
                for rec, pick in zip(res.predictions, picks):
                    rec["ranked"] = pick
                r = score_task(self.metrics[t], picks, [ex.references for ex in self.test[t]])
            ranked.append(r)
            write_jsonl(pred_dir / f"{check_path_component(t, 'task name')}.jsonl", res.predictions)
        return row, ranked
