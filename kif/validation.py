"""Model selection on held-out examples (``train.validation_samples``, ``eval_steps``,
``select_best``): the held-out split, the scorer and the callback that keeps the best weights.

The protocol of the KIF authors' scripts (TaSL: 100 held-out examples, evaluation every 40
steps, ``load_best_model_at_end`` on the eval loss) and of SAPT's (on exact match / Rouge-L),
both built on O-LoRA's harness, whose own scripts keep the last model; see ``KeepBest``.
Sits between evaluation (it scores with ``evaluate_task``) and training (``train_task`` runs
``KeepBest``).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from transformers import TrainerCallback

from .data import sample
from .encoding import Encoder, TrainCollator
from .errors import ConfigError
from .evaluation import evaluate_task
from .torchutil import eval_autocast, eval_mode


def split_validation(examples: Sequence, n: int, seed: int) -> tuple[list, list]:
    """(train, validation): ``n`` examples held out of ``examples`` (TaSL: ``train_test_split(
    test_size=100, seed=42)`` of each task's training file), drawn by ``kif.data.sample`` so a
    grouped task loses whole groups; both keep the original order. ``n`` = 0: nothing held out."""
    if n <= 0:
        return list(examples), []
    held = sample(examples, n, seed + 7919)  # its own stream: not the draw of data.train_samples
    ids = {id(ex) for ex in held}
    return [ex for ex in examples if id(ex) not in ids], held


def hold_out(train: dict[str, list], n: int, seed: int) -> tuple[dict[str, list], dict[str, list]]:
    """``split_validation`` for every task of ``train`` (task -> examples): (train, validation).
    A task left with nothing to train on is a config error naming ``train.validation_samples``."""
    split = {t: split_validation(exs, n, seed) for t, exs in train.items()}
    for t, (rest, _) in split.items():
        if n and not rest:
            raise ConfigError(f"train.validation_samples: {n} held out of task {t}'s {len(train[t])} "
                              "training examples leaves none to train on")
    return {t: s[0] for t, s in split.items()}, {t: s[1] for t, s in split.items()}


@torch.no_grad()
def validation_loss(model, encoder: Encoder, features: list[dict], batch_size: int) -> float:
    """The Trainer's ``eval_loss``: each batch's mean target-token loss (model in eval mode:
    no dropout), weighted by the batch's rows, over the examples in order."""
    collate = TrainCollator(encoder.tokenizer.pad_token_id)
    device = next(model.parameters()).device
    total = 0.0
    with eval_mode(model):
        for s in range(0, len(features), batch_size):
            chunk = features[s:s + batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk).items()}
            total += model(**batch).loss.float().item() * len(chunk)
    return total / len(features)


class Validator:
    """Scores the model on held-out examples: ``kind`` ``loss`` (lower is better: TaSL's
    selection, the Trainer's default metric under ``load_best_model_at_end``) or ``score``
    (higher is better: the task's metric on greedy generations, SAPT's
    ``eval_exact_match_for_<task>`` / ``eval_rougeL_for_<task>``; a joint stage takes the mean
    over its tasks). ``sets`` holds (examples, metric) per task."""

    def __init__(self, kind: str, encoder: Encoder, sets: list[tuple[list, object]], eos_ids: list[int],
                 batch_size: int, eval_cfg=None, precision: str = "fp32", reuses_prefix_cache: bool = True):
        self.kind, self.encoder, self.eos_ids, self.batch_size = kind, encoder, eos_ids, batch_size
        self.prefix_cache = eval_cfg is not None and eval_cfg.prefix_cache and reuses_prefix_cache
        self.sets = [(list(exs), metric) for exs, metric in sets if exs]
        self.eval_cfg, self.precision = eval_cfg, precision
        self.greater_is_better = kind == "score"
        self.n_examples = sum(len(exs) for exs, _ in self.sets)
        if kind == "loss":
            self._features = [encoder.train_features(ex) for exs, _ in self.sets for ex in exs]
        else:
            self._prompts = [[encoder.prompt_ids(ex.prompt) for ex in exs] for exs, _ in self.sets]

    def __call__(self, model) -> float:
        with eval_autocast(self.precision, model):
            if self.kind == "loss":
                return validation_loss(model, self.encoder, self._features, self.batch_size)
            e = self.eval_cfg
            scores = [evaluate_task(model, self.encoder, exs, metric, self.eos_ids, prompts, e.batch_size,
                                    e.max_new_tokens, self.prefix_cache).score
                      for (exs, metric), prompts in zip(self.sets, self._prompts)]
        return sum(scores) / len(scores)


def make_validator(cfg, encoder: Encoder, sets: list[tuple[list, object]], eos_ids: list[int],
                   reuses_prefix_cache: bool = True):
    """The ``Validator`` of a stage from the run config ``cfg`` (``train.select_metric``; the
    loss in batches of ``train.batch_size``, generation as ``eval`` and as the method routes it),
    or None when nothing is held out."""
    if not cfg.train.validation_samples or not any(exs for exs, _ in sets):
        return None
    return Validator(cfg.train.select_metric, encoder, sets, eos_ids, cfg.train.batch_size, cfg.eval,
                     cfg.eval.precision, reuses_prefix_cache)


class KeepBest(TrainerCallback):
    """Evaluates every ``eval_steps`` optimizer steps and, with ``restore``, ends training on
    the weights of the best evaluation: the Trainer's ``evaluation_strategy="steps"`` +
    ``load_best_model_at_end``, with the trainable weights copied in memory (LoRA: a few MB)
    instead of checkpoints on disk.

    As the Trainer: a value must be strictly better to replace the best (a tie keeps the
    earlier step); only evaluated steps are candidates, so the steps after the last multiple
    of ``eval_steps`` are dropped when an earlier evaluation was better, and a task shorter
    than ``eval_steps`` keeps its last weights. (TaSL's LLaMA script saves at every
    evaluation, 40 steps; its T5 script evaluates every 40 but saves, hence selects, every
    400 steps: ``eval_steps: 400`` reproduces that.) Only the weights return: a method's
    own state (KIF's importance, an EMA) has seen every step, as in the authors' code, where
    the importance tracker runs through the whole training and fusion reads the weights
    ``load_best_model_at_end`` left.
    """

    def __init__(self, params: list[torch.nn.Parameter], validator: Callable, eval_steps: int,
                 greater_is_better: bool, restore: bool, model=None):
        self.params, self.validator, self.eval_steps = params, validator, eval_steps
        self.greater, self.restore, self.model = greater_is_better, restore, model
        self.history: list[tuple[int, float]] = []
        self.best_step: Optional[int] = None
        self.best_value: Optional[float] = None
        self._best: Optional[list[torch.Tensor]] = None

    def _better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value > self.best_value if self.greater else value < self.best_value

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.eval_steps:
            return
        value = float(self.validator(self.model if self.model is not None else model))
        self.history.append((state.global_step, value))
        if self.restore and self._better(value):
            self.best_step, self.best_value = state.global_step, value
            self._best = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def on_train_end(self, args, state, control, **kwargs):
        if self.restore and self._best is not None:
            for p, saved in zip(self.params, self._best):
                p.copy_(saved)
            self._best = None

    def stats(self, metric: str, n_examples: int) -> dict:
        out = {"validation_metric": metric, "validation_examples": n_examples,
               "validation_history": [[s, round(v, 6)] for s, v in self.history]}
        if self.restore:
            out["best_step"] = self.best_step  # None: no evaluation happened, the last weights stay
            out["best_validation"] = None if self.best_value is None else round(self.best_value, 6)
        return out
