"""LFPT5 (Qin & Joty, ICLR 2022, "LFPT5: A Unified Framework for Lifelong Few-shot Language Learning
Based on Prompt Tuning of T5"): one soft prompt, trained through the whole sequence on two
objectives, with generative replay of the earlier tasks.

Sources: the paper (§3) and the authors' code, github.com/qcwthu/Lifelong-Fewshot-Language-Learning
(``Classification/Classification.sh``, ``Classification/model.py``); each choice names its source.

- **One prompt** of ``prompt_length`` tokens (300: ``--prompt_number 300``) in front of the frozen
  model's input (``kif.prompting.PromptedModel``), initialised from random vocabulary embeddings
  (seeded), and trained on every task in turn — paper, code.
- **Two objectives** (paper §3.2, after LAMOL): solve the task, and generate examples of it from
  a task-specific generation token: task k's data is mixed with ⌈λ·n⌉ generation examples
  ``__gen_<task>__`` → ``<input><cue> <answer>`` (the cue: the task's own, e.g. "Answer:";
  ``kif.replay.generative``), λ = ``gen_weight``
  0.25 (``--lm_lambda 0.25``). kif mixes examples instead of weighting a second loss on every
  example (the same share of the gradient in expectation) — kif.
- **Generative replay** (paper §3.3): before task k ≥ 2, the model as it is (the prompt after task
  k−1) writes pseudo-samples of every earlier task from its generation token — filtered for well-
  formed ``input → answer`` pairs, deduplicated, seeded (``kif.replay.generative``) — and they are
  trained on with task k's data, together with their own generation examples (so the prompt
  keeps its ability to write the old tasks, as LAMOL). Count: the replay memory's size of task k
  per earlier task (2 % by default, ``memory_fraction``; LAMOL's γ = 0.2 of the new task split
  over the old ones was its full-data setting; LFPT5's few-shot runs replay as many pseudo-samples
  as real ones, ``memory_per_task`` sets a fixed count) — kif. Each task's instruction template
  (common prefix/suffix of its prompts) is kept to rebuild the pseudo prompts.
- The KL (label-consistency) distillation term of the paper (``--kd_lamda 0.01``) is not
  implemented (kif: a known gap; ``kd_weight`` is refused unless 0).
- The learning rate is ``train.learning_rate`` (their script: 0.5; configs/table1/lfpt5.yaml).
- Artifacts: ``tasks/<k>/adapter/prompts.safetensors`` (``prompt``: [length, d], fp32): the
  run's adapter bytes.
"""
from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field, field_validator
from torch import nn

from ..io import atomic_save_tensors
from ..prompting import PromptedModel, trainable_state, vocab_init
from ..replay import MemoryOptions
from ..replay.generative import GenerativeOptions, closed_labels, generate_examples, generation_examples
from ..replay.pseudo import prompt_template
from ..data import Example
from .base import CLMethod, MethodOptions
from .registry import register


class LFPT5Options(MemoryOptions, GenerativeOptions, MethodOptions):
    prompt_length: int = Field(300, gt=0, description="soft-prompt tokens (LFPT5's --prompt_number 300)")
    kd_weight: float = Field(0.0, description="KL label-consistency term on pseudo-samples (paper: 0.01); "
                             "not implemented, must be 0")

    @field_validator("kd_weight")
    @classmethod
    def _no_kd(cls, v: float) -> float:
        if v != 0:
            raise ValueError("the KL distillation term is not implemented in kif's lfpt5; set kd_weight: 0")
        return v


class SinglePrompt(nn.Module):
    """The prompt source: one prompt for every input."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.prompt = nn.Parameter(init)

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        return self.prompt


@register
class LFPT5(CLMethod):
    name = "lfpt5"
    description = ("LFPT5: one soft prompt learns each task and to generate it; pseudo-samples of earlier "
                   "tasks are generated before each new one and trained on with it")
    Options = LFPT5Options

    def setup_model(self, base):
        emb = base.get_input_embeddings().weight
        init = vocab_init(emb, self.opts.prompt_length, torch.Generator().manual_seed(self.ctx.cfg.seed))
        return PromptedModel(base, SinglePrompt(init.to(emb.device)))

    def __init__(self, ctx):
        super().__init__(ctx)
        self.templates: dict[str, list[str]] = {}  # task -> [prefix, suffix] of its prompts
        self.label_sets: dict[str, list[str]] = {}  # task -> its closed label set (if it has one)
        self.last_pseudo: dict[str, list[str]] = {}  # task -> ids of the pseudo-samples trained on

    # --- generative replay -----------------------------------------------------------------
    def pseudo_samples(self, k: int, n_new: int) -> tuple[list[Example], dict]:
        """Pseudo-samples of tasks 0..k-1, written by the model as it is now; and stats."""
        o, ctx, cfg = self.opts, self.ctx, self.ctx.cfg
        out, stats = [], {"pseudo_generated": 0, "pseudo_well_formed": 0}
        for i, task in enumerate(ctx.tasks[:k]):
            prefix, suffix = self.templates.get(task, ["", ""])
            info: dict = {}
            labels = self.label_sets.get(task)
            samples = generate_examples(self.model, ctx.encoder, task, (prefix, suffix), self._size(n_new),
                                        ctx.lm.eos_token_ids, labels=set(labels) if labels else None,
                                        seed=cfg.seed + 2000 + 100 * k + i, top_k=o.gen_top_k,
                                        max_new_tokens=o.gen_max_tokens, rounds=o.gen_rounds,
                                        batch_size=cfg.eval.batch_size, stats=info)
            stats["pseudo_generated"] += info.get("generated", 0)
            stats["pseudo_well_formed"] += info.get("well_formed", 0)
            out += samples
        return out, stats

    def _size(self, n: int) -> int:
        from ..replay import memory_size

        o = self.opts
        return memory_size(n, o.memory_fraction, o.memory_per_task, o.min_per_task)

    def _generation(self, task: str, examples: list[Example], seed: int) -> list[Example]:
        """Generation examples of ``task`` with its stored template (robust for few pseudo-samples)."""
        if not examples or self.opts.gen_weight <= 0:
            return []
        return generation_examples(task, examples, self.opts.gen_weight, seed,
                                   template=tuple(self.templates[task]), encoder=self.ctx.encoder)

    def train_examples(self, k: int, examples: list) -> list:
        task = self.ctx.tasks[k]
        self.templates[task] = list(prompt_template([ex.prompt for ex in examples]))
        labels = closed_labels(examples)
        if labels is not None:
            self.label_sets[task] = sorted(labels)
        seed = self.ctx.cfg.seed + k
        out = list(examples) + self._generation(task, list(examples), seed)
        pseudo, self._pseudo_stats = self.pseudo_samples(k, len(examples))
        for t in self.ctx.tasks[:k]:
            mine = [ex for ex in pseudo if ex.id.startswith(f"pseudo-{t}-")]
            self.last_pseudo[t] = [ex.id for ex in mine]
            out += mine + self._generation(t, mine, seed)
        return out

    def after_task(self, k: int, task_dir: Path) -> dict:
        stats = dict(getattr(self, "_pseudo_stats", {}))
        stats["pseudo_trained"] = {t: len(ids) for t, ids in self.last_pseudo.items()}
        return stats

    # --- state ---------------------------------------------------------------------------------
    def state_summary(self) -> dict:
        return {"prompt_tokens": self.opts.prompt_length}

    def _model_state(self):
        return trainable_state(self.model)

    def extra_state(self):
        return {}, {"templates": self.templates, "label_sets": self.label_sets}

    def load_extra_state(self, tensors, meta):
        self.templates = {t: list(v) for t, v in meta.get("templates", {}).items()}
        self.label_sets = {t: list(v) for t, v in meta.get("label_sets", {}).items()}

    def save_adapter(self, dest: Path) -> None:
        atomic_save_tensors(dest / "prompts.safetensors", {"prompt": self.model.source.prompt.detach().float()})
