"""Runs grouped for statistics over seeds: arms × task orders × seeds.

Works on the dicts :func:`kif.report.tables.load_run` returns (results.json plus ``run_dir``).
A run's seed is ``results["seed"]`` when present, else the ``seed`` of its ``config.yaml``.
Only finished runs are grouped. Runs of one method whose configs differ in other keys than
seed / order / tasks / data_dir (e.g. a learning-rate axis) are separate arms, named by the
keys that differ.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

from ..errors import KifError
from ..methods.registry import method_spec
from .tables import is_joint, run_config

SAMPLE_KEYS = {"seed", "order", "tasks", "data_dir"}  # what varies between the samples of one arm
Order = tuple  # the task sequence, (task, ...)
Sample = Union[int, tuple]  # the seed, or ("run", name) for a run without a known seed (it pairs with nothing)


@dataclass(frozen=True)
class Arm:
    """A method on a benchmark and model, with the setting (``variant``: ``key=value, ...`` of the
    config keys that differ between its runs; "" when none) its runs share."""

    benchmark: Optional[str]
    model: Optional[str]
    method: Optional[str]
    variant: str = ""

    @property
    def where(self) -> tuple:
        return (self.benchmark, self.model)


@dataclass
class Grouping:
    """``runs[arm][order][sample]``: the finished runs; ``labels``: each arm's name in the report
    (model and benchmark added where several are there); ``config``: each arm's first run's
    flattened config.yaml (its variant's keys are the same in all its runs); ``order_labels``:
    each order's name; ``skipped``: (run name, why) of the runs left out."""

    runs: dict[Arm, dict[Order, dict[Sample, dict]]] = field(default_factory=dict)
    labels: dict[Arm, str] = field(default_factory=dict)
    config: dict[Arm, dict] = field(default_factory=dict)
    order_labels: dict[Order, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def has_seeds(self) -> bool:
        """Whether some arm has ≥ 2 seeds on one order (then the report aggregates)."""
        return any(len(seeds) >= 2 for orders in self.runs.values() for seeds in orders.values())


def is_complete(run: dict) -> bool:
    return is_joint(run) or run.get("tasks_completed", len(run["matrix"])) >= len(run["tasks"])


def run_seed(run: dict, config: dict | None = None):
    """The run's seed: results.json's ``seed`` if it has one, else config.yaml's (None if neither)."""
    return run["seed"] if run.get("seed") is not None else (run_config(run.get("run_dir")) if config is None else config).get("seed")


def _flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def order_label(run: dict) -> str:
    return str(run["order"]) if run.get("order") is not None else "→".join(run["tasks"])


def sample_names(samples) -> list[str]:
    """Seeds as strings, in order; runs without a known seed (by name) last."""
    return [s[1] if isinstance(s, tuple) else str(s) for s in sorted(samples, key=lambda s: (isinstance(s, tuple), str(s)))]


def group_runs(runs: Sequence[dict]) -> Grouping:
    """The finished runs of ``runs`` by arm, order (the task sequence) and seed; a second run
    with the seed of one already there is left out."""
    g = Grouping(skipped=[(r.get("run_name", r.get("run_dir")), "unfinished") for r in runs if not is_complete(r)])
    by_method: dict[tuple, list[dict]] = {}
    for r in runs:
        if is_complete(r):
            by_method.setdefault((r.get("benchmark"), r.get("model"), r.get("method")), []).append(r)
    for key, rs in by_method.items():
        configs = [run_config(r.get("run_dir")) for r in rs]
        flats = [{k: v for k, v in _flat(c).items() if k.split(".")[0] not in SAMPLE_KEYS} for c in configs]
        varying = sorted(k for k in set().union(*flats) if len({repr(f.get(k)) for f in flats}) > 1)
        for r, c, f in zip(rs, configs, flats):
            arm = Arm(*key, ", ".join(f"{k}={f.get(k)}" for k in varying))
            order = tuple(r["tasks"])
            if r.get("order") is not None or order not in g.order_labels:
                g.order_labels[order] = order_label(r)
            seed = run_seed(r, c)
            sample = seed if seed is not None else ("run", r.get("run_name", r.get("run_dir")))
            g.config.setdefault(arm, f)
            cell = g.runs.setdefault(arm, {}).setdefault(order, {})
            if sample in cell:
                g.skipped.append((r.get("run_name", r.get("run_dir")),
                                  f"same seed as {cell[sample].get('run_name')} (kept that one)"))
                continue
            cell[sample] = r
    several_models = len({a.model for a in g.runs}) > 1
    several_benchmarks = len({a.benchmark for a in g.runs}) > 1
    for a in g.runs:
        extra = [str(x) for x, several in ((a.model, several_models), (a.benchmark, several_benchmarks)) if several]
        g.labels[a] = str(a.method) + (f" [{a.variant}]" if a.variant else "") + (f" ({', '.join(extra)})" if extra else "")
    return g


@functools.lru_cache(maxsize=None)
def _options_class(method: str):
    """The registered method's Options class (None for a method kif cannot import here)."""
    try:
        return method_spec(method).options  # a built-in's without importing its module (torch)
    except (KifError, ImportError):
        return None


def is_default(method: str, opts: dict) -> bool:
    """Whether ``opts`` (method_args keys -> values as config.yaml has them) are the method's
    defaults, compared after validation (YAML's 1.0 is the default 1) in JSON form."""
    options = _options_class(method)
    if options is None or not opts:
        return False
    try:
        given = options.model_validate(opts).model_dump(mode="json")
    except ValueError:  # not valid for this method: not its default either
        return False
    defaults = options().model_dump(mode="json")
    return all(k in defaults and given.get(k) == defaults[k] for k in opts)


def reference_arm(g: Grouping, method: str, where: tuple | None = None) -> Arm | None:
    """The arm that stands for ``method`` (on ``where`` = (benchmark, model), if given): its only
    arm; else the one arm whose varying ``method_args`` are the method's defaults (e.g. KIFLoRA's
    adaptive fusion next to a static-fusion ablation); else None."""
    arms = [a for a in g.runs if a.method == method and (where is None or a.where == tuple(where))]
    if len(arms) <= 1:
        return arms[0] if arms else None
    configs = [g.config[a] for a in arms]
    varying = {k for c in configs for k in c if k.startswith("method_args.")
               and len({repr(c2.get(k)) for c2 in configs}) > 1}

    def at_default(arm) -> bool:  # a varying option the config leaves out is at its default
        opts = {k.split(".", 1)[1]: v for k, v in g.config[arm].items() if k in varying}
        return bool(varying) and (not opts or is_default(method, opts))

    found = [a for a in arms if at_default(a)]
    return found[0] if len(found) == 1 else None


def reference_arms(g: Grouping, references: Sequence[str]) -> dict[tuple, Arm | None]:
    """{((benchmark, model), reference method): its :func:`reference_arm` there}."""
    return {(where, m): reference_arm(g, m, where) for where in {a.where for a in g.runs} for m in references}


def paired_by_order(g: Grouping, arm: Arm, ref: Arm) -> dict[Order, list[tuple[dict, dict]]]:
    """{order: [(run of ``arm``, run of ``ref``) for each seed both finished on it]}; orders
    without a pair are left out (a run without a known seed pairs with nothing)."""
    theirs = g.runs[ref]
    out = {}
    for o, seeds in g.runs[arm].items():
        pairs = [(seeds[s], theirs[o][s]) for s in seeds
                 if o in theirs and s in theirs[o] and not isinstance(s, tuple)]
        if pairs:
            out[o] = pairs
    return out
