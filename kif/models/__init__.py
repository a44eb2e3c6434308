"""Model loading: built-in names, local directories, hub ids."""
from .registry import BUILTIN_MODELS, LoadedModel, cache_dir, check_target_modules, load_model, model_path

__all__ = ["BUILTIN_MODELS", "LoadedModel", "cache_dir", "check_target_modules", "load_model", "model_path"]
