"""Loading a run configuration: the YAML file, ``--set key=value`` overrides, and every check,
the chosen method's included (``method``, ``method_args``, ``per_task``), before any data or
model is read; and the record a run keeps of its config (``OUT/config.yaml``), which resume
compares. Above both the schema (``kif.config``) and the methods' options, which it joins.

Every error names the file (or the ``--set`` flag) and the dotted key, in one line (see
``kif.errors``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .config import RunConfig
from .data.benchmarks import BUILTINS
from .errors import ConfigError, validation_message
from .guards import check_float_range
from .io import read_yaml
from .methods.options import parse_options
from .methods.registry import method_spec
from .per_task import check_values


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """``a.b=c`` sets raw['a']['b'] = yaml(c)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{source}: '{item}' is not key=value")
        set_key(raw, key, _parse_value(value), source)
    return raw


def set_key(raw: dict, key: str, value: Any, source: str) -> None:
    """raw[a][b] = value for the dotted key ``a.b`` (sections made as needed)."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: {key}: '{part}' is not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    raw: dict = {}
    source = str(path) if path else "--set"
    if path is not None:
        raw = read_yaml(path, "config file", error=ConfigError, mapping=True) or {}
        resolve_benchmark_paths(raw, Path(path).resolve().parent)
    raw = apply_overrides(raw, overrides or [])
    resolve_benchmark_paths(raw, Path.cwd())  # a --set path: relative to where kif runs
    return validate_config(raw, source, overrides or [])


def resolve_benchmark_paths(raw: dict, base: Path) -> None:
    """Make the benchmark YAML paths of a raw config (``benchmark``, ``eval.unseen``)
    absolute: relative to ``base`` (the config file's folder), so that a run resumes from
    any folder and its config.yaml records where the benchmark is. A relative path found
    only from the working directory (what kif did before) still works."""
    raw["benchmark"] = _benchmark_path(raw.get("benchmark"), base)
    if raw["benchmark"] is None:
        del raw["benchmark"]
    ev = raw.get("eval")
    unseen = ev.get("unseen") if isinstance(ev, dict) else None
    if isinstance(unseen, str):
        ev["unseen"] = _benchmark_path(unseen, base)
    elif isinstance(unseen, dict) and "benchmark" in unseen:
        unseen["benchmark"] = _benchmark_path(unseen["benchmark"], base)


def _benchmark_path(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value or value in BUILTINS:
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    for candidate in (base / p, Path.cwd() / p):
        if candidate.is_file():
            return str(candidate.resolve())
    looks_like_path = p.suffix in (".yaml", ".yml") or "/" in value or os.sep in value
    return str(base / p) if looks_like_path else value  # not found: the error names the file


def validate_config(raw: dict, source: str = "config", overrides: list[str] = ()) -> RunConfig:
    """The whole config, ``method_args`` included (against the chosen method's options),
    so that a typo stops the run before any data or model is read. An error in a key that
    an override set names that ``--set`` flag instead of ``source``."""
    blame = _blamer(source, overrides)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{blame(_err_key(err))}: {validation_message(err)}") from None
    opts = method_options(cfg, source, blame)
    # values that are 0 or inf in float32
    check_float_range(cfg.model_dump(mode="python", exclude={"method_args"}), source, blame=blame)
    check_float_range(opts.model_dump(mode="python"), source, "method_args.", blame)
    check_values(cfg, method_spec(cfg.method), source)
    return cfg


def method_options(cfg: RunConfig, source: str = "config", blame=None):
    """``cfg.method_args`` validated by the method's options (a built-in method's without
    importing its module, and so torch)."""
    spec = method_spec(cfg.method)
    return parse_options(spec.options, cfg.method_args, spec.name, blame or (lambda key: source))


def _err_key(err: ValidationError) -> str:
    return ".".join(str(p) for p in err.errors()[0]["loc"])


def _blamer(source: str, overrides: list[str]):
    """key -> "--set KEY=VALUE" when that flag set the key (or a section holding it), else ``source``."""
    def blame(key: str) -> str:
        for item in reversed(list(overrides)):
            k = item.partition("=")[0]
            if key == k or key.startswith(k + ".") or k.startswith(key + ".") and key:
                return f"--set {item}"
        return source
    return blame


def config_record(cfg: RunConfig) -> dict:
    """What a run records as its config (``OUT/config.yaml``) and compares on resume: every
    key, ``method_args`` with the method's defaults filled in, so that a default that changes
    between kif versions shows as a changed key instead of silently changing the run."""
    record = cfg.model_dump(mode="json")
    record["method_args"] = method_options(cfg).model_dump(mode="json")
    return record


def config_diff(a, b, prefix: str = "", defaults=None) -> list[str]:
    """Dotted keys whose values differ between two config records. With ``defaults`` (a
    record of the default config), a key that ``a`` lacks counts as equal when ``b`` holds
    its default."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            d = defaults.get(k, _ABSENT) if isinstance(defaults, dict) else _ABSENT
            if k not in a and d is not _ABSENT and b.get(k) == d:
                continue
            out += config_diff(a.get(k), b.get(k), f"{prefix}{k}.", d if isinstance(d, dict) else None)
        return out
    return [] if a == b else [prefix.rstrip(".")]


_ABSENT = object()


def config_changes(stored: dict, cfg: RunConfig) -> list[str]:
    """Keys in which ``cfg`` differs from a run's stored config record (what resume checks).
    A key the stored record lacks was added by a later kif and counts as unchanged while
    ``cfg`` leaves it at its default: a run started before the key existed stays resumable."""
    return config_diff(stored, config_record(cfg), defaults=config_record(RunConfig(method=cfg.method)))


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(config_record(cfg), sort_keys=False)
