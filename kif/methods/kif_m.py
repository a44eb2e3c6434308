"""KIF-M and KIFLoRA-M: KIF / KIFLoRA with memory replay (docs/method.md §5).

Two ways to replay, ``replay_mode``:

- ``stage`` (default; the paper's §V): a replay stage after fusion, with the current
  task-specific units frozen -- steps 1-4 below.
- ``mixed`` (the authors' released KIF-M code): the memory of the earlier tasks M_{<k} is
  mixed into task k's training data and trained in the same stage; nothing is frozen, there
  is no second stage. The importance tracker then scores the mixed training (as theirs does),
  and fusion follows as in KIF.

``stage``: after task k (0-based) is trained, ``after_task``:

1. runs KIF's fusion (eq. 13-17), giving f̂_k (for k = 0, f̂_0 = f_0);
2. stores the memory of task k: a ``memory_fraction`` of its training set (≥ ``min_per_task``;
   ``Memory``), either real samples (``memory_source: real``) or as many pseudo-samples
   written by the freshly trained model f_k before fusion (``pseudo``; f_k is the model that
   knows task k best). The pseudo memory comes from the generative-replay component
   (``pseudo_generator: generative``, the default): the model also learns, during task k, to
   write whole examples from the task's generation token (LAMOL, ``gen_weight`` λ = 0.25) and
   the memory is what it writes, filtered and deduplicated (``kif.replay.generative``; fewer
   than asked if it writes too few well-formed ones; results.json: ``pseudo_generated``,
   ``pseudo_well_formed``). ``pseudo_generator: continue`` keeps the earlier path: a model that
   never learned to write inputs continues the task's instruction (``kif.replay.pseudo``);
3. for k ≥ 1, the replay stage: fine-tunes f̂_k on the memory of the earlier tasks M_{<k}
   (as the paper states; ``include_current: true`` adds task k's own memory) for
   ``replay_epochs``: ``extra_stage``, which the runner trains and times (``replay_s``; seed
   ``seed + 1000 + k``; the learning
   rate ``replay_learning_rate`` or ``train.learning_rate``, on the stage's own schedule
   ``replay_lr_scheduler`` / ``replay_warmup_steps``, default constant with no warm-up: kif's
   choice, the paper gives none; train.*'s 50 warm-up steps gave Table I's 1-2 replay steps
   lr 0, docs/method.md §5), while the current task-specific
   units are frozen (each "+" set is eq. 15's top ``top_fraction`` under ``threshold``):
     ``frozen_units: task_specific`` (default; alias ``current_only``) — eq. 15's "prev− cur+",
                                      the paper's task-specific units: "+" for I(U_k), "−" for
                                      I(Û_{k−1}) (the scores fusion used);
     ``frozen_units: current_top``  — every "+" unit of I(U_k) (kif's earlier default).
   Every other trainable parameter updates. The importance tracker is not updated during
   the replay stage (I(U_k) stays the task's own score), and KIF's eq. 5 loss stays on.

   Freezing is exact (bit-identical entries): a gradient hook on each parameter zeroes the
   frozen entries' gradients during backward, so gradient clipping and the optimizer's
   moments see zeros; after every optimizer step the frozen entries are copied back from a
   snapshot, which undoes decoupled weight decay (AdamW moves a weight with a zero gradient
   when weight_decay > 0). A rank-1 unit i is row i of lora_A and column i of lora_B; a
   matrix unit is the whole tensor.
4. f̂_k^m, the model after replay, is what is evaluated, saved as ``adapter/``, initialises
   task k+1, and is the "previous fused model" f̂_k that fusion at task k+1 interpolates with
   f_{k+1} (``fused_prev``): it is the model task k+1 was trained from. The pre-replay f̂_k
   is kept as ``adapter_fused/`` (tasks 2..K).

Resume: the memory is part of ``extra_state`` (JSON), next to KIF's state.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..core.fusion import top_fraction_mask
from ..core.units import clean_param_name
from ..replay import Memory, pseudo_samples
from ..replay.generative import (add_pseudo_stats, closed_labels, generate_with, generation_examples,
                                 save_generations, save_pseudo)
from ..replay.pseudo import prompt_template
from ..replay.tagged_parse import task_fields
from .base import ExtraStage
from .kif import KIF, KIFLoRA
from .options import KIFLoRAMOptions, KIFMOptions
from .registry import register


class MemoryReplayMixin:
    """The replay stage of §5 on top of a KIF method (see the module docstring)."""
    STATE = {"memory": 0}  # what extra_state adds (CLMethod.STATE)

    def __init__(self, ctx):
        super().__init__(ctx)
        o = self.opts
        self.memory = Memory.from_options(o, ctx.cfg.seed)
        self._current: list = []
        self._frozen: Optional[dict[str, torch.Tensor]] = None  # set by after_task when a replay stage follows
        self.last_replay: dict = {}
        self._gen_stats: dict = {}
        self._written: list = []  # the pseudo memory of the last task, for tasks/<k>/pseudo.jsonl
        self._drawn: list = []  # every text drawn for it, for tasks/<k>/generations.jsonl

    def train_examples(self, k: int, examples: list) -> list:
        self._current = list(examples)  # task k's own data: its memory is drawn from these
        examples = super().train_examples(k, examples)
        if self._generative():  # LAMOL: learn to write the task's examples while learning it
            examples = list(examples) + generation_examples(self.ctx.tasks[k], self._current, self.opts.gen_weight,
                                                            self.ctx.cfg.seed + k, encoder=self.ctx.encoder,
                                                            fmt=self.opts.gen_format,
                                                            instruction=self.opts.gen_instruction)
        if self.opts.replay_mode == "mixed":  # the released code: D_k ∪ M_{<k}, one stage
            examples = list(examples) + self.memory.examples_before(k)
        return examples

    # --- memory ------------------------------------------------------------------------
    def _generative(self) -> bool:
        return self.opts.memory_source == "pseudo" and self.opts.pseudo_generator == "generative"

    def store_memory(self, k: int) -> list:
        """Task k's memory from ``self._current`` (its training examples), with the model as it is now;
        ``self._gen_stats``: how many examples the generative path drew and how many were well-formed."""
        o, ctx = self.opts, self.ctx
        self._gen_stats, self._written, self._drawn = {}, [], []
        task = ctx.tasks[k]
        if o.memory_source == "real":
            return self.memory.add(task, self._current)
        n = self.memory.size_for(len(self._current))
        cfg = ctx.cfg
        if self._generative():
            prompts = [ex.prompt for ex in self._current]
            template = prompt_template(prompts)
            samples = generate_with(o, self.model, ctx.encoder, task, template, n, ctx.lm.eos_token_ids,
                                    labels=closed_labels(self._current), seed=cfg.seed + 2000 + k,
                                    batch_size=cfg.eval.batch_size, prefix_cache=self.reuses_prefix_cache,
                                    stats=self._gen_stats, record=self._drawn,
                                    fields=task_fields(prompts, *template))
            self._written = samples
            return self.memory.add(task, samples, select=False)
        samples = pseudo_samples(self.model, ctx.encoder, task, [ex.prompt for ex in self._current], n,
                                 ctx.lm.eos_token_ids, input_tokens=o.pseudo_input_tokens,
                                 output_tokens=cfg.eval.max_new_tokens, top_k=o.pseudo_top_k,
                                 seed=cfg.seed + 2000 + k, batch_size=cfg.eval.batch_size,
                                 prefix_cache=self.reuses_prefix_cache)
        self._written = samples
        return self.memory.add(task, samples, select=False)

    def replay_examples(self, k: int) -> list:
        tasks = self.ctx.tasks[:k + 1] if self.opts.include_current else self.ctx.tasks[:k]
        return [ex for t in tasks for ex in self.memory.task_examples(t)]

    # --- frozen units ----------------------------------------------------------------------
    def frozen_mask(self, current: torch.Tensor, prev: Optional[torch.Tensor]) -> torch.Tensor:
        """[U] bool: the current task-specific units (``frozen_units``)."""
        o = self.opts
        cur = top_fraction_mask(current, o.top_fraction, o.threshold).cpu()
        if o.frozen_units in ("task_specific", "current_only") and prev is not None:
            cur &= ~top_fraction_mask(prev, o.top_fraction, o.threshold).cpu()
        return cur

    def frozen_entries(self, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Trainable param name -> bool tensor of its shape, True where the entry is frozen."""
        per_param = self.units.broadcast(mask.float())
        out = {}
        for n, p in self.trainable().items():
            m = per_param[clean_param_name(n, self.units.adapter)].to(p.device)
            out[n] = m.expand(p.shape).bool().clone()
        return out

    def replay_stage(self, k: int, frozen: dict[str, torch.Tensor]) -> ExtraStage:
        """The replay stage on the replay memory with ``frozen`` entries held fixed: the runner
        trains it (``extra_stage``); ``end`` removes the gradient masks, restores the frozen
        entries and keeps the model as f̂_k^m, the next fusion's partner (``fused_prev``)."""
        cfg, o = self.ctx.cfg, self.opts
        examples = self.replay_examples(k)
        self.last_replay = {"examples": [ex.id for ex in examples]}
        params = {n: p for n, p in self.trainable().items() if frozen[n].any()} if examples else {}
        snapshot = {n: p.detach().clone() for n, p in params.items()}

        def mask_grad(m):
            return lambda g: g.masked_fill(m, 0)

        def restore() -> None:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(torch.where(frozen[n], snapshot[n], p))

        hooks = [p.register_hook(mask_grad(frozen[n])) for n, p in params.items()]

        def end() -> None:
            for h in hooks:
                h.remove()
            restore()
            self.fused_prev = {n: p.detach().clone() for n, p in self.trainable().items()}  # f̂_k^m

        tcfg = cfg.train.model_copy(update={"epochs": o.replay_epochs,
                                            "learning_rate": o.replay_learning_rate or cfg.train.learning_rate,
                                            "lr_scheduler": o.replay_lr_scheduler, "warmup_ratio": 0.0,
                                            "warmup_steps": o.replay_warmup_steps})
        # no step_hook: the importance tracker scores task k's own training only
        return ExtraStage("replay", examples, tcfg, cfg.seed + 1000 + k, extra_loss=self.extra_loss,
                          post_step_hook=restore, end=end)

    def extra_stage(self, k: int) -> Optional[ExtraStage]:
        frozen, self._frozen = self._frozen, None
        return None if frozen is None else self.replay_stage(k, frozen)

    # --- the task boundary -------------------------------------------------------------------
    def after_task(self, k: int, task_dir: Path) -> dict:
        prev_scores = self.accumulated  # I(Û_{k−1}), before KIF updates it
        current = self.units.unit_scores(self.tracker.scores())  # I(U_k), as KIF computes it
        pseudo = self.opts.memory_source == "pseudo"
        kept = self.store_memory(k) if pseudo else None  # written by f_k, before fusion
        stats = super().after_task(k, task_dir)  # fusion -> f̂_k in the model, fused_prev
        if not pseudo:
            kept = self.store_memory(k)
        stats.update({"memory_added": len(kept), "memory_total": len(self.memory)})
        save_pseudo(task_dir, self._written)  # empty for a real memory
        save_generations(task_dir, self._drawn)
        if self._gen_stats:
            add_pseudo_stats(stats, self.ctx.tasks[k], self._gen_stats, self.opts.gen_answers)
        if k == 0 or self.opts.replay_mode == "mixed":
            return stats
        self.save_adapter(task_dir / "adapter_fused")  # f̂_k before replay
        mask = self.frozen_mask(current, prev_scores)
        self._frozen = self.frozen_entries(mask)  # for extra_stage: the replay stage, which the runner trains
        stats["frozen_units"] = int(mask.sum())
        return stats

    def state_summary(self) -> dict:
        return {**super().state_summary(), "memory": self.memory.sizes()}

    def extra_state(self):
        tensors, meta = super().extra_state()
        return tensors, {**meta, "memory": self.memory.state_dict()}

    def load_extra_state(self, tensors, meta):
        super().load_extra_state(tensors, meta)
        if "memory" in meta:
            self.memory = Memory.from_state_dict(meta["memory"])


@register
class KIFM(MemoryReplayMixin, KIF):
    name = "kif-m"
    description = ("KIF + memory replay (§5): after fusion, fine-tune on the memory of earlier tasks, "
                   "task-specific units frozen (replay_mode: mixed = the released code's mixing)")
    Options = KIFMOptions


@register
class KIFLoRAM(MemoryReplayMixin, KIFLoRA):
    name = "kiflora-m"
    description = ("KIFLoRA + memory replay (§5): after fusion, fine-tune on the memory of earlier tasks, "
                   "task-specific units frozen (replay_mode: mixed = the released code's mixing)")
    Options = KIFLoRAMOptions
