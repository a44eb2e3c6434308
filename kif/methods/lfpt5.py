"""LFPT5 (Qin & Joty, ICLR 2022, "LFPT5: A Unified Framework for Lifelong Few-shot Language Learning
Based on Prompt Tuning of T5"): one soft prompt, trained through the whole sequence on two
objectives, with generative replay of the earlier tasks.

Sources: the paper (§3) and the authors' code, github.com/qcwthu/Lifelong-Fewshot-Language-Learning
(``Classification/Classification.sh``, ``Classification/model.py``); each choice names its source.

- **One prompt** of ``prompt_length`` tokens (300: ``--prompt_number 300``) in front of the frozen
  model's input (``kif.prompting.PromptedModel``), initialised from random vocabulary embeddings
  (seeded), and trained on every task in turn — paper, code.
- **Two objectives** (paper §3.2, after LAMOL): solve the task, and generate examples of it from
  a task-specific generation token: task k's data is mixed with ⌈λ·n⌉ generation examples,
  λ = ``gen_weight`` 0.25 (``--lm_lambda 0.25``). kif mixes examples instead of weighting a second
  loss on every example (the same share of the gradient in expectation) — kif. Their form is
  ``gen_format`` (``kif.replay.generative``): the paper's is ``lamol``, ``__gen_<task>__`` →
  ``<input><cue> <answer>`` (the cue: the task's own, e.g. "Answer:"); kif's default is
  ``tagged``, where the model writes only the input after the task's tag and a pseudo-sample's
  answer is the model's own answer to the rebuilt prompt (within the task's labels when it has a
  closed set), because SmolLM2 wrote almost no well-formed ``lamol`` samples
  (``docs/results/generative_replay/README.md``) — kif.
- **Generative replay** (paper §3.3): before task k ≥ 2, the model as it is (the prompt after task
  k−1) writes pseudo-samples of every earlier task from its generation token — filtered for well-
  formed ``input → answer`` pairs, deduplicated, seeded (``kif.replay.generative``) — and they are
  trained on with task k's data, together with their own generation examples (so the prompt
  keeps its ability to write the old tasks, as LAMOL). Count: the replay memory's size of task k
  per earlier task (2 % by default, ``memory_fraction``; LAMOL's γ = 0.2 of the new task split
  over the old ones was its full-data setting; LFPT5's few-shot runs replay as many pseudo-samples
  as real ones, ``memory_per_task`` sets a fixed count) — kif. Each task's instruction template
  (common prefix/suffix of its prompts) is kept to rebuild the pseudo prompts.
- **KL label consistency** (paper §3: a KL divergence between the previous and the current
  model keeps their labels consistent on the pseudo-samples; code ``model.py`` ``forward``):
  before task k ≥ 2 the prompt as task k−1 left it is copied into a frozen *teacher* (same
  frozen model, old prompt; never trained, bit-identical through task k). On every training
  batch, the rows that are pseudo-samples (solve rows, not their generation examples — code:
  ``ifmem == 0``, the rows of earlier tasks in the task batch) add

      kd_weight · Σ_{answer tokens t} KL(p_teacher(·|t) ‖ p_student(·|t))        (``answer_kl``)

  with p = softmax(logits) at temperature 1 (code: ``Softmax(dim=2)``, no temperature) and the
  sum over tokens and rows of the batch (code: ``kl_div(..., reduction='sum')``); kif sums over
  the answer tokens only (the code also over the padded decoder positions, whose labels are
  ignored by its own loss). kd_weight = 0.01 (``--kd_lamda 0.01``, Classification.sh). The code
  weighs the rest of the loss by (1 − λ): (1 − λ)(L + L_gen) + λ·KL; kif adds λ·KL to the loss
  (the same objective up to the factor 1 − λ = 0.99 and λ/(1 − λ) = 0.0101 for 0.01) — kif.
  The code builds its teacher parameter from the very tensor of the student prompt
  (``set_prompt_embedding``: two ``nn.Parameter`` of one tensor share its storage, and the
  checkpoint it loads is on the GPU already, so ``.to(device)`` copies nothing): as far as we
  can read it, its teacher follows the student and the term is ~0; kif keeps the real frozen
  copy the paper describes. The teacher runs without dropout (eval mode, no gradient) on the
  pseudo rows only, so the term costs one forward of those rows. A batch has no per-example
  flag in kif, so a pseudo row is recognised by its tokens (``feature_key``: the input ids and
  the answer ids); a real example with exactly the same tokens would count too (the same
  sequence). ``kd_weight: 0`` turns the term off; the per-task value applies (``per_task``).
- The learning rate is ``train.learning_rate`` (their script: 0.5; configs/table1/lfpt5.yaml).
- Artifacts: ``tasks/<k>/adapter/prompts.safetensors`` (``prompt``: [length, d], fp32): the
  run's adapter bytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from ..io import atomic_save_tensors
from ..prompting import PromptedModel, trainable_state, vocab_init
from ..replay import memory_size
from ..replay.generative import (add_pseudo_stats, closed_labels, generate_with, generation_examples,
                                 save_generations, save_pseudo)
from ..replay.pseudo import prompt_template
from ..replay.tagged_parse import task_fields
from ..data import Example
from ..encoding import IGNORE
from ..torchutil import eval_mode
from .base import CLMethod
from .options import LFPT5Options
from .registry import register


def answer_kl(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, seq2seq: bool) -> Tensor:
    """Σ over answer tokens of KL(p_teacher ‖ p_student), p = softmax of the logits (temperature 1), fp32.

    ``labels`` [B, T] mark the answer tokens (not IGNORE). Decoder-only logits are aligned with
    the input ids (position t predicts token t+1); seq2seq logits with the labels."""
    if not seq2seq:
        student_logits, teacher_logits, labels = student_logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
    answer = labels != IGNORE
    log_s = torch.log_softmax(student_logits[answer].float(), dim=-1)
    log_t = torch.log_softmax(teacher_logits[answer].float(), dim=-1)
    return torch.nn.functional.kl_div(log_s, log_t, log_target=True, reduction="sum")


def feature_key(input_ids: list[int], labels: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """What identifies a training row: its input ids and its answer ids (padding and IGNORE left out)."""
    return tuple(input_ids), tuple(t for t in labels if t != IGNORE)


def row_keys(input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> list[tuple]:
    """``feature_key`` of each row of a padded batch (left or right padding)."""
    return [feature_key([i for i, m in zip(ids, mask) if m], lab)
            for ids, mask, lab in zip(input_ids.tolist(), attention_mask.tolist(), labels.tolist())]


class SinglePrompt(nn.Module):
    """The prompt source: one prompt for every input."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.prompt = nn.Parameter(init)

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        return self.prompt


@register
class LFPT5(CLMethod):
    STATE = {"templates": 0, "label_sets": 0, "fields": None}  # extra_state (CLMethod.STATE; fields: added later)
    name = "lfpt5"
    description = ("LFPT5: one soft prompt learns each task and to generate it; pseudo-samples of earlier "
                   "tasks are generated before each new one and trained on with it")
    Options = LFPT5Options
    reuses_prefix_cache = False  # a PromptedModel (kif.prompting): a bare prefix's cache does not apply

    def setup_model(self, base):
        emb = base.get_input_embeddings().weight
        init = vocab_init(emb, self.opts.prompt_length, torch.Generator().manual_seed(self.ctx.cfg.seed))
        return PromptedModel(base, SinglePrompt(init.to(emb.device)))

    def __init__(self, ctx):
        super().__init__(ctx)
        self.templates: dict[str, list[str]] = {}  # task -> [prefix, suffix] of its prompts
        self.label_sets: dict[str, list[str]] = {}  # task -> its closed label set (if it has one)
        self.fields: dict[str, list[str]] = {}  # task -> the line-start fields all its inputs have (task_fields)
        self.last_pseudo: dict[str, list[str]] = {}  # task -> ids of the pseudo-samples trained on
        # KL label consistency: the frozen teacher of the task in training, its pseudo rows, the batch seen
        self.teacher: Optional[PromptedModel] = None
        self._kd_weight = 0.0
        self._pseudo_keys: set[tuple] = set()
        self._batch: Optional[tuple[Tensor, Tensor, Tensor, Tensor]] = None
        self._kd_rows = 0
        self.model.register_forward_hook(self._keep_batch, with_kwargs=True)

    # --- generative replay -----------------------------------------------------------------
    def pseudo_samples(self, k: int, n_new: int) -> tuple[list[Example], dict]:
        """Pseudo-samples of tasks 0..k-1, written by the model as it is now; and stats."""
        o, ctx, cfg = self.opts, self.ctx, self.ctx.cfg
        out, stats = [], {"pseudo_generated": 0, "pseudo_well_formed": 0}
        self._pseudo_drawn = []  # every text drawn (tagged formats), each with its task: generations.jsonl
        for i, task in enumerate(ctx.tasks[:k]):
            prefix, suffix = self.templates.get(task, ["", ""])
            info: dict = {}
            drawn: list = []
            labels = self.label_sets.get(task)
            samples = generate_with(o, self.model, ctx.encoder, task, (prefix, suffix), self._size(n_new),
                                    ctx.lm.eos_token_ids, labels=set(labels) if labels else None,
                                    seed=cfg.seed + 2000 + 100 * k + i, batch_size=cfg.eval.batch_size,
                                    prefix_cache=self.reuses_prefix_cache, stats=info, record=drawn,
                                    fields=self.fields.get(task, ()))
            self._pseudo_drawn += [{"task": task, **row} for row in drawn]
            add_pseudo_stats(stats, task, info, o.gen_answers)
            out += samples
        return out, stats

    def _size(self, n: int) -> int:
        o = self.opts
        return memory_size(n, o.memory_fraction, o.memory_per_task, o.min_per_task)

    def _generation(self, task: str, examples: list[Example], seed: int) -> list[Example]:
        """Generation examples of ``task`` with its stored template (robust for few pseudo-samples)."""
        if not examples or self.opts.gen_weight <= 0:
            return []
        return generation_examples(task, examples, self.opts.gen_weight, seed,
                                   template=tuple(self.templates[task]), encoder=self.ctx.encoder,
                                   fmt=self.opts.gen_format, labels=self.label_sets.get(task, []),
                                   instruction=self.opts.gen_instruction)

    def train_examples(self, k: int, examples: list) -> list:
        task = self.ctx.tasks[k]
        prompts = [ex.prompt for ex in examples]
        self.templates[task] = list(prompt_template(prompts))
        self.fields[task] = list(task_fields(prompts, *self.templates[task]))
        labels = closed_labels(examples)
        if labels is not None:
            self.label_sets[task] = sorted(labels)
        seed = self.ctx.cfg.seed + k
        out = list(examples) + self._generation(task, list(examples), seed)
        pseudo, self._pseudo_stats = self.pseudo_samples(k, len(examples))
        self._pseudo_written = pseudo
        for t in self.ctx.tasks[:k]:
            mine = [ex for ex in pseudo if ex.id.startswith(f"pseudo-{t}-")]
            self.last_pseudo[t] = [ex.id for ex in mine]
            out += mine + self._generation(t, mine, seed)
        enc = self.ctx.encoder
        self._pseudo_keys = {feature_key(**enc.train_features(ex)) for ex in pseudo}
        return out

    # --- KL label consistency (see the module docstring) ------------------------------------
    def before_task(self, k: int) -> None:
        self._kd_weight, self._kd_rows, self._batch = self.task_opts(k).kd_weight, 0, None
        self.teacher = None
        if k >= 1 and self._kd_weight > 0 and self._pseudo_keys:
            frozen = SinglePrompt(self.model.source.prompt.detach().clone())  # the prompt after task k-1
            frozen.prompt.requires_grad_(False)
            self.teacher = PromptedModel(self.model.base, frozen)

    def _keep_batch(self, module, args, kwargs, output) -> None:
        """Forward hook: the training batch and the student's logits, for ``extra_loss``."""
        if self.teacher is None or not module.training or not torch.is_grad_enabled():
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and kwargs.get("labels") is not None:
            mask = kwargs.get("attention_mask")
            self._batch = (ids, torch.ones_like(ids) if mask is None else mask, kwargs["labels"], output.logits)

    def extra_loss(self, model) -> Optional[Tensor]:
        """kd_weight · Σ KL(teacher ‖ student) over the answer tokens of the batch's pseudo rows."""
        batch, self._batch = self._batch, None
        if self.teacher is None or batch is None or not self.model.training:
            return None
        ids, mask, labels, logits = batch
        rows = [i for i, key in enumerate(row_keys(ids, mask, labels)) if key in self._pseudo_keys]
        if not rows:  # a zero, so the reported regulariser is the mean over every batch
            return logits.new_zeros((), dtype=torch.float32)
        self._kd_rows += len(rows)
        idx = torch.tensor(rows, device=ids.device)
        with torch.no_grad(), eval_mode(self.teacher):
            teacher_logits = self.teacher(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx]).logits
        return self._kd_weight * answer_kl(logits[idx], teacher_logits, labels[idx], self.model.is_seq2seq)

    def after_task(self, k: int, task_dir: Path) -> dict:
        stats = dict(getattr(self, "_pseudo_stats", {}))
        stats["pseudo_trained"] = {t: len(ids) for t, ids in self.last_pseudo.items()}
        save_pseudo(task_dir, getattr(self, "_pseudo_written", []))  # written before this task, trained on in it
        save_generations(task_dir, getattr(self, "_pseudo_drawn", []))
        if self.teacher is not None:
            stats["kd_rows"] = self._kd_rows  # pseudo rows the KL term was computed on, over all epochs
        return stats

    # --- state ---------------------------------------------------------------------------------
    def state_summary(self) -> dict:
        return {"prompt_tokens": self.opts.prompt_length}

    def _model_state(self):
        return trainable_state(self.model)

    def extra_state(self):
        return {}, {"templates": self.templates, "label_sets": self.label_sets, "fields": self.fields}

    def load_extra_state(self, tensors, meta):
        self.templates = {t: list(v) for t, v in meta.get("templates", {}).items()}
        self.label_sets = {t: list(v) for t, v in meta.get("label_sets", {}).items()}
        self.fields = {t: list(v) for t, v in meta.get("fields", {}).items()}  # a checkpoint before it: none

    def save_adapter(self, dest: Path) -> None:
        atomic_save_tensors(dest / "prompts.safetensors", {"prompt": self.model.source.prompt.detach().float()})
