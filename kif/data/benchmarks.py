"""Benchmarks: named sets of tasks plus their standard task orders.

Built-ins (``long_sequence``, ``superni``) read the layouts of ``shared/benchmarks``;
any other benchmark is a YAML file::

    name: mybench
    description: optional text
    tasks:
      qa:   {path: data/qa, metric: f1, layout: superni}   # folder with <split>.json[l][.gz]
      sent: {path: sent.jsonl, metric: accuracy, classification: true}  # one file, every split
      dst:                                                  # joint goal accuracy
        path: dst
        metric: set_match
        delimiter: ";"
        group_by: {field: turn_id}          # or {id_prefix_sep: "-"}
        prompt_template: "{instruction}\\n{input}"
        normalization: lower_strip          # this task's answer normalisation (else eval.normalization)
    orders:
      main: [qa, sent, dst]

Paths are relative to the YAML's folder (or absolute); ``layout`` defaults to ``auto``.
The README's "Custom benchmarks" section is the user's reference for every key.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from kif.data.locations import resolve_data_dir
from kif.data.loaders import LAYOUTS, Example, GroupBy, load_task_file, template_fields
from kif.errors import ConfigError, DataError
from kif.metrics import DEFAULT_NORMALIZATION, METRICS, NORMALIZATIONS, Metric
from kif.names import check_path_component

SPLITS = ("train", "dev", "test")
SPLIT_SUFFIXES = (".json.gz", ".json", ".jsonl.gz", ".jsonl")  # tried in this order
TASK_KEYS = {"path", "metric", "layout", "delimiter", "group_by", "prompt_template", "classification",
             "normalization"}
LONG_SEQUENCE_ORDERS = {
    "1": "mnli cb wic copa qqp boolq rte imdb yelp amazon sst2 dbpedia agnews multirc yahoo",
    "2": "multirc boolq wic mnli cb copa qqp rte imdb sst2 dbpedia agnews yelp amazon yahoo",
    "3": "yelp amazon mnli cb copa qqp rte imdb sst2 dbpedia agnews yahoo multirc boolq wic",
    "std1": "dbpedia amazon yahoo agnews",
    "std2": "dbpedia amazon agnews yahoo",
    "std3": "yahoo amazon agnews dbpedia",
}
SUPERNI_ORDERS = {
    "1": "task1572 task363 task1290 task181 task002 task1510 task639 task1729 task073 "
         "task1590 task748 task511 task591 task1687 task875",
    "2": "task748 task073 task1590 task639 task1572 task1687 task591 task363 task1510 "
         "task1729 task181 task511 task002 task1290 task875",
}
_SUPERNI_DIR = re.compile(r"^(task\d+)(_.*)?$")


@dataclass
class TaskSpec:
    """One task: ``path`` is a folder of ``<split>.json[l][.gz]`` files, or a single file
    used for every split.

    ``delimiter`` splits the items of ``set_match``; ``group_by`` makes the task score joint
    over groups (and sampling keep whole groups); ``prompt_template`` composes the prompt
    from item fields; ``classification``: the outputs form a closed label set, so a test
    label never seen in training is an error and ``eval.rank_labels`` applies;
    ``normalization``: the task's own answer normalisation, over the run's
    ``eval.normalization`` (None: the run's)."""

    name: str
    path: Path
    metric: str = "accuracy"
    layout: str = "auto"
    delimiter: str = ","
    group_by: Optional[GroupBy] = None
    prompt_template: Optional[str] = None
    classification: bool = False
    normalization: Optional[str] = None
    described_splits = ("train", "test")  # what `kif benchmarks NAME` reads (held-out tasks: test)

    def split_file(self, split: str) -> Path:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        if self.path.is_file():
            return self.path
        for suffix in SPLIT_SUFFIXES:
            if (self.path / f"{split}{suffix}").is_file():
                return self.path / f"{split}{suffix}"
        what = "folder" if self.path.is_dir() else "missing folder"
        raise DataError(f"{self.path}: no {split}.json, {split}.jsonl (or .gz) for task "
                        f"{self.name} ({what})")

    def load(self, split: str = "test") -> list[Example]:
        """One split's examples; ids must be unique in the test split (each is scored once)."""
        path = self.split_file(split)
        examples = load_task_file(path, self.layout, group_by=self.group_by,
                                  prompt_template=self.prompt_template)
        if split == "test":
            refuse_duplicate_ids(path, examples)
        return examples

    def scoring(self, normalization: str = DEFAULT_NORMALIZATION) -> Metric:
        """What ``evaluate_task`` scores with: the metric, its delimiter, the normalisation
        (the task's own, else the run's ``normalization``)."""
        return Metric(self.metric, self.delimiter, self.normalization or normalization)

    @property
    def metric_label(self) -> str:
        """The metric as results.json and a report name it, e.g. ``set_match ';', joint by
        field turn`` (the default delimiter is left out, as runs have always recorded it)."""
        return self.label()

    def label(self, show_default_delimiter: bool = False) -> str:
        label = self.metric
        if self.metric == "set_match" and (self.delimiter != "," or show_default_delimiter):
            label += f" {self.delimiter!r}"
        if self.normalization is not None:
            label += f", normalization {self.normalization}"
        if self.group_by is not None:
            label += f", joint by {self.group_by.describe()}"
        return label


@dataclass
class Benchmark:
    name: str
    tasks: dict[str, TaskSpec]
    orders: dict[str, list[str]]
    description: str = ""
    aliases: dict[str, str] = field(default_factory=dict)  # other name -> canonical name

    def canonical(self, task: str) -> str:
        """Canonical task name (e.g. ``task1572_samsum_summary`` -> ``task1572``)."""
        name = self.aliases.get(task, task)
        if name not in self.tasks:
            raise ConfigError(f"benchmark {self.name}: unknown task {task!r} "
                              f"(valid: {', '.join(self.tasks)})")
        return name


def _builtin_dir(data_dir: Path, folder: str) -> Path:
    root = Path(data_dir) / folder
    if not root.is_dir():
        raise DataError(f"{root}: benchmark folder not found; set KIF_DATA or data_dir")
    return root


def superni_folders(data_dir: Path, folder: str) -> tuple[Path, dict[str, Path]]:
    """``data_dir/folder`` and its task folders by short id (``task1572_...`` -> ``task1572``)."""
    root = _builtin_dir(data_dir, folder)
    folders: dict[str, Path] = {}
    for d in sorted(root.iterdir()):
        m = _SUPERNI_DIR.match(d.name)
        if d.is_dir() and m:
            folders.setdefault(m.group(1), d)
    return root, folders


def long_sequence(data_dir: Path) -> Benchmark:
    root = _builtin_dir(data_dir, "long_sequence")
    names = LONG_SEQUENCE_ORDERS["1"].split()
    names += sorted(d.name for d in root.iterdir() if d.is_dir() and d.name not in names)
    return Benchmark(
        "long_sequence", {n: TaskSpec(n, root / n, "accuracy", "flat", classification=True) for n in names},
        {k: v.split() for k, v in LONG_SEQUENCE_ORDERS.items()},
        "Long Sequence Benchmark: 15 classification tasks, accuracy (exact match)")


def superni(data_dir: Path) -> Benchmark:
    """Tasks are named by short id (``task1572``); folders carry the full name."""
    root, folders = superni_folders(data_dir, "superni")
    # Known tasks without a folder still get a spec, so the error comes when loading.
    names = SUPERNI_ORDERS["1"].split()
    names += sorted(n for n in folders if n not in names)
    tasks = {n: TaskSpec(n, folders.get(n, root / n), "rougeL", "superni") for n in names}
    return Benchmark(
        "superni", tasks, {k: v.split() for k, v in SUPERNI_ORDERS.items()},
        "SuperNI subset: 15 generation tasks, Rouge-L",
        aliases={d.name: n for n, d in folders.items()})


BUILTINS = {"long_sequence": long_sequence, "superni": superni}


def get_benchmark(name: str | Path, data_dir: str | Path | None = None) -> Benchmark:
    """A built-in benchmark by name, read from ``resolve_data_dir(data_dir)``, or a custom
    one from a YAML file path; a custom benchmark never needs a data folder (its paths are
    relative to the YAML), so ``data_dir`` is only resolved for a built-in."""
    if str(name) in BUILTINS:
        return BUILTINS[str(name)](resolve_data_dir(data_dir))
    p = Path(name).expanduser()
    if p.is_file():
        return load_benchmark_yaml(p)
    if p.suffix in (".yaml", ".yml") or os.sep in str(name):
        raise ConfigError(f"{p}: benchmark file not found")
    raise ConfigError(f"unknown benchmark {str(name)!r} (expected {', '.join(BUILTINS)} "
                      "or a path to a benchmark YAML file)")


def list_benchmarks(data_dir: Path) -> list[Benchmark]:
    """Built-in benchmarks whose folder exists under ``data_dir``."""
    return [fn(data_dir) for name, fn in BUILTINS.items() if (Path(data_dir) / name).is_dir()]


def describe_benchmark(bench: Benchmark) -> list[str]:
    """Lines listing ``bench``: every task with its metric, split sizes (and groups) and
    path, then the orders. Each task's train and test splits are read, and a classification
    task's labels checked, so a listing is also a validation: a bad file is a one-line
    error naming it."""
    lines = [f"{bench.name}: {bench.description}" if bench.description else bench.name]
    for name, task in bench.tasks.items():
        splits = {s: task.load(s) for s in task.described_splits}
        if task.classification:
            check_labels(task, label_set(splits["train"]), splits["test"])
        sizes = [f"{s} {len(ex)}" + (f" ({len({e.group for e in ex})} groups)" if task.group_by else "")
                 for s, ex in splits.items()]
        kind = ", classification" if task.classification else ""
        lines.append(f"  {name}: {task.label(show_default_delimiter=True)}{kind}; {', '.join(sizes)}; {task.path}")
    for oname, seq in bench.orders.items():
        lines.append(f"  order {oname}: {' '.join(seq)}")
    return lines


def resolve_sequence(bench: Benchmark, order: str | None, tasks: list[str] | None) -> list[str]:
    """The task sequence to train: an explicit ``tasks`` list wins over a named ``order``."""
    if tasks:
        seq = [bench.canonical(t) for t in tasks]
        dup = sorted({t for t in seq if seq.count(t) > 1})
        if dup:
            raise ConfigError(f"benchmark {bench.name}: task(s) listed twice: {', '.join(dup)}")
        return seq
    if order is not None:
        if str(order) not in bench.orders:
            raise ConfigError(f"benchmark {bench.name}: unknown order {order!r} "
                              f"(valid: {', '.join(bench.orders) or 'none'})")
        return list(bench.orders[str(order)])
    raise ConfigError(f"benchmark {bench.name}: give an order "
                      f"({', '.join(bench.orders) or 'none defined'}) or a task list")


def refuse_duplicate_ids(path: Path, examples: list[Example]) -> None:
    """Two test items with one id would be scored (and their predictions stored) twice."""
    seen = set()
    for e in examples:
        if e.id in seen:
            raise DataError(f"{path}: id {e.id!r} occurs more than once (each test item needs its own id)")
        seen.add(e.id)


def label_set(examples: list[Example]) -> list[str]:
    """Sorted distinct training targets: the candidate labels of a classification task."""
    return sorted({e.references[0] for e in examples})


def check_labels(task: TaskSpec, train_labels: list[str], test: list[Example]) -> None:
    """A classification task (closed label set: the built-in Long Sequence tasks, or a custom
    task with ``classification: true``) whose test labels never occur in training cannot be
    learned: say so. Free-form tasks are never checked, whatever their metric (an open-
    vocabulary exact match is what they need). ``train_labels``: ``label_set`` of the task's
    full training split."""
    if not task.classification:
        return
    unseen = sorted({e.references[0] for e in test} - set(train_labels))
    if unseen:
        raise DataError(f"{task.split_file('test')}: label(s) {unseen[:3]} of task '{task.name}' "
                        f"are absent from its training label set {train_labels[:5]}")


# ---- custom YAML benchmarks -----------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last silently)."""


def _no_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"{loader.name}: duplicate key {key!r} "
                              f"(line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _mapping(p: Path, value, key: str, allowed: set[str], required: set[str]) -> dict:
    """Check a YAML mapping's keys; ``key`` is its dotted location ("" = top level)."""
    where = f" in {key}" if key else ""
    if not isinstance(value, dict):
        raise ConfigError(f"{p}: {key or 'top level'} must be a mapping")
    unknown = sorted(map(str, set(value) - allowed))
    if unknown:
        raise ConfigError(f"{p}: unknown key(s){where}: {', '.join(unknown)} "
                          f"(allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(value))
    if missing:
        raise ConfigError(f"{p}: missing key(s){where}: {', '.join(missing)}")
    return value


def _task_spec(p: Path, tname: str, spec: dict) -> TaskSpec:
    """One validated task entry of a benchmark YAML (``p``)."""
    key = f"tasks.{tname}"
    if spec["metric"] not in METRICS:
        raise ConfigError(f"{p}: {key}.metric {spec['metric']!r} "
                          f"not one of {', '.join(METRICS)}")
    layout = spec.get("layout", "auto")
    if layout not in LAYOUTS:
        raise ConfigError(f"{p}: {key}.layout {layout!r} not one of {', '.join(LAYOUTS)}")
    if not isinstance(spec["path"], str) or not spec["path"]:
        raise ConfigError(f"{p}: {key}.path must be a non-empty string")
    tpath = p.parent / Path(spec["path"]).expanduser()  # absolute paths stay absolute
    if not tpath.exists():
        raise ConfigError(f"{p}: {key}.path {tpath} does not exist")
    delimiter = spec.get("delimiter", ",")
    if "delimiter" in spec and spec["metric"] != "set_match":
        raise ConfigError(f"{p}: {key}.delimiter only applies to metric set_match")
    if not isinstance(delimiter, str) or not delimiter:
        raise ConfigError(f"{p}: {key}.delimiter must be a non-empty string (quote it)")
    group_by = None
    if "group_by" in spec:
        g = _mapping(p, spec["group_by"], f"{key}.group_by", {"field", "id_prefix_sep"}, set())
        try:
            group_by = GroupBy(g.get("field"), g.get("id_prefix_sep"))
        except ConfigError as e:
            raise ConfigError(f"{p}: {key}.{e}") from None
    template = spec.get("prompt_template")
    if template is not None:
        if not isinstance(template, str):
            raise ConfigError(f"{p}: {key}.prompt_template must be a string")
        try:
            template_fields(template)
        except ValueError as e:
            raise ConfigError(f"{p}: {key}.prompt_template {template!r}: {e}") from None
    classification = spec.get("classification", False)
    if not isinstance(classification, bool):
        raise ConfigError(f"{p}: {key}.classification must be true or false")
    normalization = spec.get("normalization")
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise ConfigError(f"{p}: {key}.normalization {normalization!r} not one of {', '.join(NORMALIZATIONS)}")
    return TaskSpec(tname, tpath, spec["metric"], layout, delimiter, group_by, template, classification,
                    normalization)


def load_benchmark_yaml(path: Path) -> Benchmark:
    """Parse and validate a custom benchmark file; errors name the file and the key."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}: invalid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    doc = _mapping(p, doc, "", {"name", "description", "tasks", "orders"},
                   {"name", "tasks"})
    if not isinstance(doc["name"], str) or not doc["name"]:
        raise ConfigError(f"{p}: 'name' must be a non-empty string")
    if not isinstance(doc["tasks"], dict) or not doc["tasks"]:
        raise ConfigError(f"{p}: 'tasks' must be a non-empty mapping")
    tasks = {}
    for tname, spec in doc["tasks"].items():
        key = f"tasks.{tname}"
        if not isinstance(tname, str):
            raise ConfigError(f"{p}: task name {tname!r} must be a string (quote it)")
        check_path_component(tname, f"{p}: task name")  # it names tasks/NN_<task>/ and <task>.jsonl
        tasks[tname] = _task_spec(p, tname, _mapping(p, spec, key, TASK_KEYS, {"path", "metric"}))
    orders = doc.get("orders") or {}
    if not isinstance(orders, dict):
        raise ConfigError(f"{p}: 'orders' must be a mapping of name -> task list")
    for oname, seq in orders.items():
        key = f"orders.{oname}"
        if not isinstance(seq, list) or not seq or not all(isinstance(t, str) for t in seq):
            raise ConfigError(f"{p}: {key} must be a non-empty list of task names")
        bad = [t for t in seq if t not in tasks]
        if bad:
            raise ConfigError(f"{p}: {key} names unknown task(s) {', '.join(bad)} "
                              f"(tasks: {', '.join(tasks)})")
        if len(set(seq)) != len(seq):
            raise ConfigError(f"{p}: {key} lists a task twice")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{p}: 'description' must be a string")
    return Benchmark(doc["name"], tasks, {str(k): list(v) for k, v in orders.items()}, description)

