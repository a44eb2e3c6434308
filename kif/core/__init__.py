"""Pure-torch core of KIF: skill units, importance, fusion, regularisers (docs/method.md §2-4)."""

from kif.core.fusion import (
    accumulate_importance,
    adaptive_fusion_weights,
    fuse,
    minmax_normalize,
    static_fusion_weights,
    top_fraction_mask,
    weight_ensemble,
)
from kif.core.importance import SENSITIVITIES, ImportanceTracker
from kif.core.regularizers import lora_pairs, orthogonal_regularizer
from kif.core.units import SkillUnits, clean_param_name, lora_role

__all__ = [
    "SENSITIVITIES",
    "ImportanceTracker",
    "SkillUnits",
    "accumulate_importance",
    "adaptive_fusion_weights",
    "clean_param_name",
    "fuse",
    "lora_pairs",
    "lora_role",
    "minmax_normalize",
    "orthogonal_regularizer",
    "static_fusion_weights",
    "top_fraction_mask",
    "weight_ensemble",
]
