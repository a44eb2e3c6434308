"""Every method's ``method_args`` schema, importable without torch.

PEFT's split: a method's options live here, its model code in ``kif/methods/<method>.py``
(whose class sets ``Options`` to the class here). Config validation imports this module to
check ``method_args`` and ``per_task.method_args`` before any model or data is read; a
method module imports torch (2+ s). One file rather than one per method: it is declarations
only, and it is the one place that lists every method's keys and defaults.

Field groups several methods share (the memory's, the generative replay's) are composed into
a method's options with :func:`compose`: their keys stay top-level ``method_args`` keys, as
users write them and as config.yaml records them, and no class inherits a group.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Optional

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      create_model, field_validator, model_validator)

from ..config import known_scheduler
from ..errors import ConfigError, validation_message


class MethodOptions(BaseModel):
    """Base of each method's ``method_args`` schema (unknown keys are errors). A schema is built
    when first used (``defer_build``): validation imports every method's options, uses one."""
    model_config = ConfigDict(extra="forbid", defer_build=True)
    # the keys the method reads again for each task (``CLMethod.task_opts``); a ``per_task`` value
    # of any other key would be ignored, so config validation refuses it (kif.per_task)
    per_task_keys: ClassVar[frozenset[str]] = frozenset()


def compose(base: type[MethodOptions], *groups: type[BaseModel]) -> type[MethodOptions]:
    """``base`` with the fields of ``groups`` added after its own, as top-level keys: a class to
    derive a method's options from (single inheritance; a group is a field table, not a base).
    A group's checks live in its fields' annotations (``Annotated[..., AfterValidator]``), so
    they come along."""
    fields: dict = {}
    for group in groups:
        for name, info in group.model_fields.items():
            if name in base.model_fields or name in fields:
                raise TypeError(f"{group.__name__}.{name} is already a key of {base.__name__}")
            fields[name] = (info.annotation, info)
    suffix = "".join(g.__name__.removesuffix("Options") for g in groups)
    return create_model(f"{base.__name__}With{suffix}", __base__=base, __module__=__name__, **fields)


def parse_options(options: type[MethodOptions], method_args: dict, method: str, where=lambda key: "config"):
    """``method_args`` validated by ``options``; a failure is one ConfigError line naming the key
    (``where(key)`` names its source: the config file or the ``--set`` flag). An unknown key is
    reported before a bad value, as the typo is the likelier mistake."""
    try:
        return options.model_validate(method_args)
    except ValidationError as err:
        unknown = [e for e in err.errors() if e["type"] == "extra_forbidden"]
        first = unknown[0] if unknown else err.errors()[0]
        key = ".".join(["method_args", *map(str, first["loc"])])
        msg = f"{key}: unknown key" if unknown else validation_message(err, "method_args")
        raise ConfigError(f"{where(key)}: {msg} (method '{method}')") from None


# ---- field groups -------------------------------------------------------------------------------

class MemoryOptions(BaseModel):
    """The memory's keys (``kif.replay.Memory``), shared by every method that keeps one."""
    model_config = ConfigDict(extra="forbid", defer_build=True)

    memory_fraction: float = Field(0.02, ge=0, le=1, description="fraction of each task's training set kept "
                                   "(paper: 2 %)")
    memory_per_task: Optional[int] = Field(None, ge=0, description="fixed samples per task; overrides "
                                           "memory_fraction")
    min_per_task: int = Field(1, ge=0, description="at least this many samples per task")


class GenerativeOptions(BaseModel):
    """The generative component's keys (``kif.replay.generative``)."""
    model_config = ConfigDict(extra="forbid", defer_build=True)

    gen_weight: float = Field(0.25, ge=0, le=1, description="share of generation examples mixed into a task's "
                              "data (LAMOL's λ = 0.25)")
    gen_top_k: int = Field(20, gt=0, description="top-k sampling of generated examples (LAMOL: 20)")
    gen_max_tokens: int = Field(256, gt=0, description="max new tokens of one generated example (input + answer)")
    gen_rounds: int = Field(4, gt=0, description="sampling rounds (2·n candidates each) before giving up on n")
    gen_answers: Literal["generated", "predicted"] = Field(
        "generated", description="gen_format lamol: answers of generated inputs: the ones the model wrote after "
        "the cue (LAMOL), or, for a text without a cue, the model's greedy prediction on its input (kif, small "
        "models). gen_format tagged always answers with the model's task path")
    gen_format: Literal["conditioned", "tagged", "lamol"] = Field(
        "tagged", description="conditioned (kif): the model writes '[task] <input>' after '[task] <label>', "
        "one prompt per label of a closed label set ('[task]' alone for a free-form task), the answer is its "
        "label-constrained answer to the rebuilt prompt (an option: measured worse on SmolLM2); tagged (kif, the "
        "default): the same from one prompt '[task] Write a new input for this task.' + the instruction; "
        "lamol (LAMOL/LFPT5): it writes '<input><cue> <answer>' after __gen_<task>__")
    gen_balance: bool = Field(True, description="keep the generated samples round-robin over the labels (kif)")
    gen_force_tag: bool = Field(True, description="gen_format tagged / conditioned: start every generated text "
                                "with the task's tag and sample only the input after it (kif); false: the model "
                                "writes the tag itself and a text without it is refused")
    gen_instruction: bool = Field(True, description="gen_format tagged: the generation prompt carries the task's "
                                  "instruction after the request (kif); false: '[task] Write a new input for this "
                                  "task.' alone")
    gen_fields: bool = Field(True, description="gen_format tagged / conditioned: refuse a generated input that lacks "
                             "a line-start field every real input of its task has ('Text:' for agnews, "
                             "'sentence 2:' for a sentence pair) (kif); false: not checked, as before")


def _warmup_needs_a_schedule(v: int, info: ValidationInfo) -> int:
    if v and info.data.get("replay_lr_scheduler") == "constant":
        raise ValueError("replay_lr_scheduler constant has no warm-up; use constant_with_warmup or linear")
    return v


class MemoryReplayOptions(BaseModel):
    """KIF-M's replay keys (``kif.methods.kif_m``), beside the memory's and the generative ones."""
    model_config = ConfigDict(extra="forbid", defer_build=True)

    memory_source: Literal["real", "pseudo"] = Field("real", description="stored real samples, or pseudo-"
                                                     "samples generated by the model (SAPT/LAMOL style)")
    replay_mode: Literal["stage", "mixed"] = Field(
        "stage", description="stage: a replay stage after fusion, task-specific units frozen (the paper, §V); "
        "mixed: M_{<k} mixed into task k's data, nothing frozen (the authors' released code)")
    include_current: bool = Field(False, description="stage mode: replay M_{<=k} instead of the paper's M_{<k}")
    frozen_units: Literal["task_specific", "current_only", "current_top"] = Field(
        "task_specific", description="stage mode, units frozen: task_specific (= current_only) is '+' for I(U_k) "
        "and '-' for I(Û_{k-1}) (the paper's task-specific units); current_top: every '+' unit of I(U_k)")
    replay_epochs: float = Field(1, gt=0)
    replay_learning_rate: Optional[float] = Field(None, gt=0, description="null: train.learning_rate")
    # The replay stage's own schedule (kif: the paper gives none for it). It is 1-2 optimizer steps
    # at Table I's batch 128: train.*'s 50 warm-up steps would give it lr 0 (issue 28).
    replay_lr_scheduler: Annotated[str, AfterValidator(known_scheduler)] = Field(
        "constant", description="the replay stage's scheduler (a transformers name, as train.lr_scheduler); "
        "not inherited from train.*")
    replay_warmup_steps: Annotated[int, AfterValidator(_warmup_needs_a_schedule)] = Field(
        0, ge=0, description="the replay stage's warm-up steps (not train.*'s)")
    pseudo_input_tokens: int = Field(128, gt=0, description="max tokens of a generated pseudo input")
    pseudo_top_k: int = Field(20, gt=0, description="top-k sampling of pseudo inputs (LAMOL: 20)")
    pseudo_generator: Literal["generative", "continue"] = Field(
        "generative", description="pseudo memory: generative = the model also learns to write whole examples "
        "from a task token (LAMOL, gen_weight) and writes them after the task (kif.replay.generative); "
        "continue = the model continues the task's instruction (kif.replay.pseudo; the earlier default)")


# ---- baselines ----------------------------------------------------------------------------------

class OLoRAOptions(MethodOptions):
    per_task_keys = frozenset({"lambda_1", "lambda_2", "orth_norm"})  # OLoRA.extra_loss
    lambda_1: float = Field(0.5, ge=0, description="weight of the orthogonality loss (O-LoRA scripts: "
                             "0.5; Long Sequence: 0.5, 5 from task 10, per_task)")
    lambda_2: float = Field(0.0, ge=0, description="weight of the L2 norm of the new LoRA (O-LoRA "
                             "scripts: 0; Long Sequence: 0 / 0.1 / 0.3 per task, per_task)")
    orth_norm: Literal["l1", "squared"] = Field(
        "l1", description="l1: sum |A_old·A_newᵀ| (authors' code); squared: sum of squares (paper)")


class EWCOptions(MethodOptions):
    lambda_: float = Field(5000.0, ge=0, description="penalty weight λ in λ/2·Σ F(θ−θ*)²")
    fisher_samples: int = Field(64, gt=0, description="training examples of the task used for the Fisher")
    fisher_batch_size: int = Field(1, gt=0, description="examples per gradient (1: per-example Fisher)")
    gamma: float = Field(1.0, ge=0, le=1, description="online decay of the old Fisher: F = γ·F_old + F_new")


class EMAOptions(MethodOptions):
    decay: Optional[float] = Field(None, ge=0, le=1, description="a fixed EMA decay d per optimizer step; "
                                   "replaces half_life (kif's earlier key; d = 0.999 was its default)")
    half_life: Optional[float] = Field(
        0.55, gt=0, description="the pre-task average weighs ½ after this fraction of each task's optimizer "
        "steps: d = 0.5^(1/(half_life·steps)); 0.55 = d 0.999 at the paper's T5 regime (1,250 steps a task)")

    @field_validator("half_life")  # runs only when half_life is given
    @classmethod
    def _one_of(cls, v, info):
        if v is not None and info.data.get("decay") is not None:
            raise ValueError("set decay (per step) or half_life (per task), not both")
        return v

    @model_validator(mode="after")
    def _decay_replaces_half_life(self):
        if self.decay is not None:
            self.half_life = None
        return self


class WeightEnsembleOptions(MethodOptions):
    lambda_: float = Field(0.5, ge=0, le=1, description="weight λ of the previous fused model in eq. 14")


class ReplayOptions(compose(MethodOptions, MemoryOptions)):
    pass


class L2POptions(MethodOptions):
    pool_size: int = Field(10, gt=0, description="M, prompts in the pool (official L2P: 10)")
    prompt_length: int = Field(5, gt=0, description="L_p, tokens per prompt (official L2P: 5)")
    top_k: int = Field(5, gt=0, description="N, prompts selected per input (official L2P: 5)")
    key_loss_weight: float = Field(0.1, ge=0, description="λ of the surrogate loss (pull_constraint_coeff 0.1)")
    query: Literal["mean", "last"] = Field("mean", description="pooling of the frozen model's last hidden states")

    @model_validator(mode="after")
    def _top_k_fits(self):
        if self.top_k > self.pool_size:
            raise ValueError(f"top_k ({self.top_k}) must not exceed pool_size ({self.pool_size})")
        return self


class ProgPromptOptions(MethodOptions):
    per_task_keys = frozenset({"prompt_length", "residual_mlp", "mlp_bottleneck"})  # each task's new prompt
    prompt_length: int = Field(10, gt=0, description="soft-prompt tokens per task (authors' README: 10)")
    residual_mlp: bool = Field(False, description="train each prompt through P' = MLP(P) + P (their ResMLP)")
    mlp_bottleneck: int = Field(800, gt=0, description="the residual MLP's hidden size (their default 800)")
    inference: Literal["all", "task_id"] = Field(
        "all", description="prompts used at inference: all learned so far (the authors' T5 code), or task_id: "
        "an input of task i gets [P_i; ...; P_1], the prompts up to its own task")


class LFPT5Options(compose(MethodOptions, GenerativeOptions, MemoryOptions)):
    per_task_keys = frozenset({"kd_weight"})
    prompt_length: int = Field(300, gt=0, description="soft-prompt tokens (LFPT5's --prompt_number 300)")
    kd_weight: float = Field(0.01, ge=0, description="weight of the KL label-consistency term on the pseudo-"
                             "samples, KL(teacher ‖ student) summed over answer tokens (LFPT5's --kd_lamda 0.01); "
                             "0: off")


class SAPTOptions(compose(MethodOptions, GenerativeOptions, MemoryOptions)):
    per_task_keys = frozenset({"kl_weight"})  # SAPT's script replays on some tasks only
    trans_hidden_dim: int = Field(100, gt=0, description="hidden size of the query MLP (SAPT run_llama.py: 100)")
    temperature: Optional[float] = Field(None, gt=0, description="attention temperature τ; null: √d "
                                         "(SAPT attn_temperature 1)")
    kl_weight: float = Field(2.0, ge=0, description="ARM replay weight (SAPT kl_ratio: 2 in its Long Sequence "
                             "LLaMA script)")
    reflection_target: Literal["attention", "onehot"] = Field(
        "attention", description="ARM target of an earlier task: its mean attention weights after it was learned "
        "(SAPT's code), or its own block (one-hot)")
    target_samples: int = Field(200, gt=0, description="task inputs averaged into its ARM target")


# ---- KIF (docs/method.md) -----------------------------------------------------------------------

class KIFOptions(MethodOptions):
    """Every choice of KIF. Sources: the paper, the authors' released code (TaSL repository),
    or kif where both are silent; kif/core docstrings and docs/method.md say which is which."""
    units: Literal["matrix", "lora_rank1"] = Field("matrix", description="skill unit granularity (§2)")
    sensitivity: Literal["first", "second", "grad"] = Field("first", description="eq. 8 / eq. 9 / |grad| ablation")
    smoothing: Literal["ema", "mean", "single_step"] = Field(
        "ema", description="eq. 10-12 (ema; true); single_step: I_t of one step, no EMA/uncertainty (the "
        "authors' Table IV ablations); mean: mean I_t over the task (false)")
    single_step_index: int = Field(1, ge=-1, description="smoothing single_step: the counted step kept "
                                   "(0-based; 1 = the authors' first counted step; -1 = the last)")
    single_step_timing: Literal["after_step", "before_step"] = Field(
        "after_step", description="smoothing single_step: read w after optimizer.step() (w_{t+1}, g_t; the "
        "authors' code) or before it (w_t, g_t; kif's earlier reading)")
    alpha1: float = Field(0.85, ge=0, lt=1)
    alpha2: float = Field(0.85, ge=0, lt=1)
    beta: float = Field(0.7, ge=0, le=1, description="eq. 13 weight of past importance")
    fusion: Literal["static", "adaptive"] = "static"
    top_fraction: float = Field(0.2, ge=0, le=1, description="eq. 15: share of units that count as important")
    threshold: Literal["percentile", "rank"] = Field(
        "percentile", description="the top-fraction rule: score > np.percentile(scores, 100(1-f)) (the authors' "
        "code) or exactly ceil(f·U) by rank (kif's earlier rule); neither marks a lowest/zero-score unit")
    gamma: float = Field(0.7, ge=0, le=1, description="eq. 15 weight of the past for task-shared units "
                         "(paper: unstated; the authors' code: 0.7)")
    temperature: float = Field(0.15, gt=0, description="eq. 16-17 τ (paper 0.15; the authors' script 0.25)")
    ortho_weight: float = Field(0.0, ge=0, description="weight of the orthogonal regulariser eq. 5")
    ortho_norm: Literal["squared", "frobenius"] = Field(
        "frobenius", description="eq. 5 terms: Frobenius norm, unsquared (the authors' code and AdaLoRA's, for "
        "which the weight 0.1 was tuned) or squared (eq. 5 as printed)")
    ortho_reduction: Literal["mean", "sum"] = Field(
        "mean", description="combine the per-matrix eq. 5 terms by their mean (the authors' code, AdaLoRA) or sum")

    @field_validator("smoothing", mode="before")
    @classmethod
    def _bool_smoothing(cls, v):
        """The key was a bool before single_step existed: true = ema, false = mean."""
        return ("ema" if v else "mean") if isinstance(v, bool) else v


class KIFLoRAOptions(KIFOptions):
    units: Literal["matrix", "lora_rank1"] = "lora_rank1"
    sensitivity: Literal["first", "second", "grad"] = "second"
    fusion: Literal["static", "adaptive"] = "adaptive"
    ortho_weight: float = Field(0.1, ge=0, description="eq. 5 weight (paper: unstated; the authors' code 0.1, "
                                "with the unsquared norm and the mean over matrices)")


REPLAY_GROUPS = (GenerativeOptions, MemoryOptions, MemoryReplayOptions)  # KIF-M's keys beside KIF's (§5)


class KIFMOptions(compose(KIFOptions, *REPLAY_GROUPS)):
    pass


class KIFLoRAMOptions(compose(KIFLoRAOptions, *REPLAY_GROUPS)):
    pass
