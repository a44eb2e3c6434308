"""Progressive Prompts (Razdaibiedina et al., ICLR 2023): a new soft prompt per task,
prepended together with the frozen prompts of the earlier tasks; the base model is frozen.

Input of task k (1-based) is [P_k; P_{k-1}; …; P_1; x] (the paper's eq. for the input of
task k; the authors' ``T5_codebase/t5_continual.py`` builds it as
``concat([prompt, previous_prompts, inputs_embeds])`` and, after each task,
``previous_prompts = concat([new_prompt, previous_prompts])``: the newest prompt first).
Only P_k trains; P_1..P_{k-1} are buffers (no gradient, no optimizer state), so they stay
bit-identical.

- Initialisation: each prompt from the embeddings of random vocabulary tokens (their
  ``init_new_prompt``), drawn from a generator seeded with ``seed + k``, so a resumed run
  draws the same prompt.
- ``residual_mlp: true``: the prompt is trained through P' = MLP(P) + P (their ``ResMLP``,
  bottleneck 800 = their default ``bottleneck_size``); at the end of the task P' is stored
  and the MLP dropped (their ``progress_previous_prompts``: "prompt has already passed MLP").
- Inference (results.json ``prompt_inference``):
  ``all`` (default): the whole concatenation learned so far, for every input, no task identity
  -- what the authors' T5 code does when it scores the test sets (``curr_prompt =
  previous_prompts`` after each task).
  ``task_id``: an input of task i gets the prompts up to its own task, [P_i; …; P_1], the
  input it was trained with (task-aware inference: the input's task is given at test time;
  the authors' T5 code does not score this way). The base model and P_1..P_i are frozen,
  so a seen task's answers never change after it is learned (a_{K,i} = a_{i,i}; BWT 0 by
  construction). A task not learned yet (the FWT
  entries a_{i−1,i}) and an unseen input (``eval.unseen``) get the whole concatenation.
  The evaluator passes the task through ``eval_task_context``.
- Defaults: prompt length 10 per task and learning rate 0.3 for T5 (the authors' README
  command: ``--prefix_len 10 --lr 0.3 --num_epochs 10``); the learning rate is
  ``train.learning_rate`` (configs/table1/progprompt.yaml).
- Artifacts: ``tasks/<k>/adapter/prompts.safetensors`` (``prompts``: [k·length, d], newest
  first, fp32) — the run's adapter bytes.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_save_tensors
from ..prompting import PromptedModel, ResidualMLP, trainable_state, vocab_init
from .base import CLMethod
from .options import ProgPromptOptions
from .registry import register


class ProgressivePrompts(nn.Module):
    """The prompt source: [current; previous] where ``previous`` holds the frozen prompts,
    newest first."""

    def __init__(self, dim: int, device):
        super().__init__()
        self.register_buffer("previous", torch.zeros(0, dim, device=device))
        self.current: nn.Parameter | None = None
        self.mlp: ResidualMLP | None = None

    def current_prompt(self) -> torch.Tensor | None:
        if self.current is None:
            return None
        return self.mlp(self.current) if self.mlp is not None else self.current

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        cur = self.current_prompt()
        return self.previous if cur is None else torch.cat([cur, self.previous.to(cur.dtype)], 0)

    @contextlib.contextmanager
    def only_oldest(self, n_tokens: int):
        """Within the block, the frozen prompts are the oldest ``n_tokens`` rows only (the last ones:
        ``previous`` is newest first); restored afterwards."""
        full = self.previous
        self.previous = full[full.shape[0] - n_tokens:]
        try:
            yield
        finally:
            self.previous = full

    def start(self, init: torch.Tensor, mlp_bottleneck: int | None) -> None:
        self.current = nn.Parameter(init.to(self.previous.device))
        self.mlp = ResidualMLP(init.shape[1], mlp_bottleneck).to(self.previous.device) if mlp_bottleneck else None

    @torch.no_grad()
    def freeze_current(self) -> None:
        """P_k (through its MLP) joins the frozen prompts, in front."""
        if self.current is None:
            return
        if self.mlp is not None:
            self.mlp.eval()
        new = self.current_prompt().detach().float()
        self.previous = torch.cat([new, self.previous], 0)
        self.current, self.mlp = None, None


@register
class ProgPrompt(CLMethod):
    STATE = {"previous": 0, "tasks": 0, "lengths": 0}  # what extra_state writes (CLMethod.STATE)
    name = "progprompt"
    description = "Progressive Prompts: a new soft prompt per task, prepended to the frozen earlier ones"
    Options = ProgPromptOptions
    reuses_prefix_cache = False  # a PromptedModel (kif.prompting): a bare prefix's cache does not apply

    def __init__(self, ctx):
        super().__init__(ctx)
        self.lengths: list[int] = []  # prompt tokens of each learned task, oldest first

    def setup_model(self, base):
        dim = base.get_input_embeddings().weight.shape[1]
        return PromptedModel(base, ProgressivePrompts(dim, base.get_input_embeddings().weight.device))

    @property
    def source(self) -> ProgressivePrompts:
        return self.model.source

    def before_task(self, k: int) -> None:
        opts = self.task_opts(k)
        gen = torch.Generator().manual_seed(self.ctx.cfg.seed + k)
        init = vocab_init(self.model.base.get_input_embeddings().weight, opts.prompt_length, gen)
        with torch.random.fork_rng(devices=[]):  # the MLP's init: the same in a resumed run
            torch.manual_seed(self.ctx.cfg.seed + k)
            self.source.start(init, opts.mlp_bottleneck if opts.residual_mlp else None)

    def after_task(self, k: int, task_dir: Path) -> dict:
        before = int(self.source.previous.shape[0])
        self.source.freeze_current()
        self.lengths.append(int(self.source.previous.shape[0]) - before)  # P_k's tokens (per_task lengths differ)
        return {"prompt_tokens": int(self.source.previous.shape[0])}

    def eval_task_context(self, i: int):
        """``inference: task_id``: task i (0-based, learned) is answered with [P_i; …; P_1] only."""
        if self.opts.inference != "task_id" or i >= len(self.lengths):
            return contextlib.nullcontext()
        return self.source.only_oldest(sum(self.lengths[:i + 1]))

    def state_summary(self) -> dict:
        return {"prompt_inference": self.opts.inference, "prompt_tokens": int(self.source.previous.shape[0])}

    # --- resume: the frozen prompts are the whole state between tasks ------------------------
    def _model_state(self):
        return trainable_state(self.model)

    def extra_state(self):
        return {"previous": self.source.previous.detach()}, {"tasks": int(self.source.previous.shape[0]),
                                                             "lengths": list(self.lengths)}

    def load_extra_state(self, tensors, meta):
        self.source.previous = tensors["previous"].to(self.source.previous.device, torch.float32).clone()
        self.lengths = list(meta["lengths"])  # declared in STATE, so a checkpoint without it was refused

    def save_adapter(self, dest: Path) -> None:
        atomic_save_tensors(dest / "prompts.safetensors", {"prompts": self.source.previous})
