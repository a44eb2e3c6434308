"""Per-task values (``per_task:``): a ``train`` key or a ``method_args`` option that differs
between the tasks of a sequence.

O-LoRA's published Long Sequence script, for one, trains MNLI for 2 epochs and every other
task for 1, and sets λ1 and λ2 task by task (``configs/table1/olora.yaml``)::

    per_task:
      train:
        epochs: {mnli: 2}                      # a map by task name
      method_args:
        lambda_1: [0, 0.5, 0.5, 5, 5]          # a list: one value per task, in sequence order
        lambda_2: {default: 0, rte: 0.3}       # `default`: every task the map leaves out

A task a map leaves out (and that has no ``default``) keeps the base value (``train.epochs``,
``method_args.lambda_1``). Map keys are task names as the sequence lists them (the names of
``tasks:``, or of the order, as ``kif benchmarks`` prints them). Every value is validated at
load like the key it replaces. A list of the wrong length or an unknown task name is a
one-line error naming the key: at load when the config fixes the sequence (``tasks``, or
an order of a built-in benchmark), else when the run resolves it, before any model loads.
A joint method (``mtl``: one stage on all tasks) takes no per-task values, and a method takes
per-task ``method_args`` only for the options it reads again at each task (its options'
``per_task_keys``): a per-task value of another would be silently ignored, so it is an error.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import ValidationError

from .config import TrainConfig
from .data.benchmarks import LONG_SEQUENCE_ORDERS, SUPERNI_ORDERS
from .errors import ConfigError

SECTIONS = ("train", "method_args")
DEFAULT = "default"
RUN_WIDE = {"validation_samples": "the held-out examples are drawn once, when the data is read"}


def _entries(cfg) -> list[tuple[str, str, Any]]:
    """(section, key, spec) for every per-task value of ``cfg``."""
    return [(s, key, spec) for s in SECTIONS for key, spec in getattr(cfg.per_task, s).items()]


def value_for(spec, k: int, names: tuple[str, ...]) -> tuple[bool, Any]:
    """(found, value) of task k (known by ``names``) in a list or map ``spec``."""
    if isinstance(spec, list):
        return True, spec[k]
    for name in names:
        if name in spec:
            return True, spec[name]
    return (True, spec[DEFAULT]) if DEFAULT in spec else (False, None)


def _names(cfg, k: int, task: str) -> tuple[str, ...]:
    """The names task k goes by: the resolved (canonical) one and the one ``tasks:`` gives."""
    given = cfg.tasks[k] if cfg.tasks and k < len(cfg.tasks) else task
    return (task, given) if given != task else (task,)


def task_config(cfg, k: int, task: str):
    """``cfg`` as task k (named ``task``) sees it: its ``per_task`` values applied."""
    over: dict[str, dict] = {s: {} for s in SECTIONS}
    for section, key, spec in _entries(cfg):
        found, value = value_for(spec, k, _names(cfg, k, task))
        if found:
            over[section][key] = value
    if not over["train"] and not over["method_args"]:
        return cfg
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=over["train"]),
                                  "method_args": {**cfg.method_args, **over["method_args"]}})


def check_values(cfg, method, source: str = "config") -> None:
    """At load: each per-task value has the form (list or map) and the type of the key it
    replaces; the method is not a joint one; the sequence, when the config fixes it, fits.
    ``method``: what validation knows of ``cfg.method`` (``kif.methods.registry.Spec``:
    its name, options and whether it is joint)."""
    entries = _entries(cfg)
    if not entries:
        return
    if method.joint:
        raise ConfigError(f"{source}: per_task: method '{method.name}' trains all tasks in one stage; "
                          "per-task values do not apply")
    base = {"train": cfg.train.model_dump(), "method_args": dict(cfg.method_args)}
    for section, key, spec in entries:
        where = f"per_task.{section}.{key}"
        if section == "train" and key not in TrainConfig.model_fields:
            raise ConfigError(f"{source}: {where}: unknown key")
        if section == "train" and key in RUN_WIDE:
            raise ConfigError(f"{source}: {where}: {RUN_WIDE[key]}; not a per-task value")
        if (section == "method_args" and key in method.options.model_fields
                and key not in method.options.per_task_keys):
            can = ", ".join(sorted(method.options.per_task_keys)) or "none"
            raise ConfigError(f"{source}: {where}: method '{method.name}' reads {key} once for the whole run; "
                              f"not a per-task value (per-task keys: {can})")
        if isinstance(spec, list) and spec:
            items = [(f"{where}[{i}]", v) for i, v in enumerate(spec)]
        elif isinstance(spec, dict) and spec:
            items = [(f"{where}.{name}", v) for name, v in spec.items()]
        else:
            raise ConfigError(f"{source}: {where}: give a list (one value per task, in order) "
                              "or a map {task: value} (with an optional 'default')")
        schema = TrainConfig if section == "train" else method.options
        for at, value in items:
            try:
                schema.model_validate({**base[section], key: value})
            except ValidationError as err:
                first = err.errors()[0]
                msg = ("unknown key" if first["type"] == "extra_forbidden"
                       else first["msg"].removeprefix("Value error, "))
                raise ConfigError(f"{source}: {at}: {msg}") from None
    seq = known_sequence(cfg)
    if seq is not None:
        check_sequence(cfg, seq, source)


def known_sequence(cfg) -> Optional[list[str]]:
    """The sequence as the config alone fixes it (``tasks``, or an order of a built-in
    benchmark), or None when only the benchmark's data can tell."""
    if cfg.tasks:
        return list(cfg.tasks)
    orders = {"long_sequence": LONG_SEQUENCE_ORDERS, "superni": SUPERNI_ORDERS}.get(cfg.benchmark, {})
    return orders[str(cfg.order)].split() if cfg.order is not None and str(cfg.order) in orders else None


def check_sequence(cfg, tasks: list[str], source: str = "config") -> None:
    """Every list has one value per task of ``tasks``; every map key (but ``default``) names
    one of them (or of ``cfg.tasks``, the names as given)."""
    named = set(tasks) | set(cfg.tasks or [])
    for section, key, spec in _entries(cfg):
        where = f"per_task.{section}.{key}"
        if isinstance(spec, list) and len(spec) != len(tasks):
            raise ConfigError(f"{source}: {where}: {len(spec)} values for a sequence of {len(tasks)} tasks "
                              f"({' '.join(tasks)})")
        if isinstance(spec, dict):
            unknown = [n for n in spec if n != DEFAULT and n not in named]
            if unknown:
                raise ConfigError(f"{source}: {where}: {unknown[0]!r} is not a task of the sequence "
                                  f"({' '.join(tasks)})")
