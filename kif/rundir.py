"""One run folder (``kif run -o OUT``): its layout, and every read and write of its files.

::

    OUT/config.yaml             the run's config record (kif.configure.config_record)
    OUT/results.json            the results record (kif.results.Results), after every stage
    OUT/results.<...>.json      re-scored records (``kif rescore``), never over results.json
    OUT/checkpoints/after-NN/   the newest task boundary: method.safetensors, method.json,
                                results.json (what a resume trusts: kif.checkpoint)
    OUT/zero_shot/predictions/  the zero-shot row's predictions, ``<task>.jsonl``
    OUT/tasks/NN_<task>/        stage NN: adapter/, predictions/, unseen/, the method's files
    OUT/logs/NN_<task>/         the stage's training logs
    OUT/unseen/{zero_shot,after}/   the held-out tasks' predictions (eval.unseen)

Writes are atomic (:mod:`kif.io`), by the main process only; a file that cannot be read is one
ArtifactError naming it. Folders written by earlier kif versions have the same layout.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from contextlib import nullcontext
from pathlib import Path

from .config import RunConfig
from .configure import config_changes, dump_config
from .dist import is_main
from .errors import ArtifactError, KifError, OutputError
from .io import atomic_save_dir, atomic_save_tensors, atomic_write_text, load_tensors, read_json, read_yaml
from .lock import OutputLock
from .names import check_path_component
from .results import RESULTS_FILE, Results, load_results

log = logging.getLogger("kif")

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
# what kif writes in a run folder (``--overwrite`` removes exactly these)
ENTRIES = (CHECKPOINTS, "tasks", "zero_shot", "logs", "unseen", RESULTS_FILE, CONFIG)
MAX_CONFIG_BYTES = 1 << 20  # kif's config.yaml is a few KB


def task_dir_name(k: int, task: str) -> str:
    """``OUT/tasks/<this>``: stage k's folder (``01_cb``). A task name was checked to be one
    plain path component when its benchmark was read; checked again here, because a name
    that escaped would write outside the run folder."""
    return f"{k + 1:02d}_{check_path_component(task, 'task name')}"


class RunDir:
    """The run folder at ``path`` (nothing is read or created until asked)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_file, self.results_file = self.path / CONFIG, self.path / RESULTS_FILE

    # ---- layout --------------------------------------------------------------------------------
    def task_dir(self, k: int, task: str) -> Path:
        return self.path / "tasks" / task_dir_name(k, task)

    def task_dirs(self) -> list[tuple[str, Path]]:
        """(task, ``tasks/NN_<task>/``) of the stages done, in sequence order."""
        found = [(int(m[1]), m[2], p) for p in (self.path / "tasks").glob("*_*")
                 if p.is_dir() and (m := re.fullmatch(r"(\d+)_(.+)", p.name))]
        return [(task, p) for _, task, p in sorted(found)]

    def log_dir(self, k: int, task: str) -> Path:
        return self.path / "logs" / task_dir_name(k, task)

    def predictions(self, k: int | None, task: str = "") -> Path:
        """Where the row after stage ``k`` (None: the zero-shot row) keeps its predictions."""
        return (self.path / "zero_shot" if k is None else self.task_dir(k, task)) / "predictions"

    def unseen_predictions(self, k: int | None, task: str, last: bool) -> Path:
        """The held-out tasks' predictions before (``k`` None), after (``last``) or within the sequence."""
        if k is None or last:
            return self.path / "unseen" / ("zero_shot" if k is None else "after")
        return self.task_dir(k, task) / "unseen"

    def rescored_file(self, metric: str | None, normalization: str | None, per_example: bool) -> Path:
        """``OUT/results.<metric>[.<normalization>][.per_example].json`` (``kif rescore``)."""
        parts = [metric or "rescored"] + [normalization] * bool(normalization) + ["per_example"] * per_example
        return self.path / f"results.{'.'.join(parts)}.json"

    # ---- config ----------------------------------------------------------------------------------
    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_text(self.config_file, dump_config(cfg))

    def read_config(self, required: bool = False) -> dict | None:
        """The stored config record (a mapping); None when absent or empty, which a resume (``required``) refuses."""
        note = "; cannot check the run to resume" if required else ""
        if not required and not self.config_file.is_file():
            return None
        raw = read_yaml(self.config_file, "kif config", note=note, mapping=True, max_bytes=MAX_CONFIG_BYTES)
        if raw is None and required:
            raise ArtifactError(f"{self.config_file}: not a kif config (an empty file){note}")
        return raw

    def check_config(self, cfg: RunConfig, accept_change: bool, ran: str, advice: str) -> list[str]:
        """The keys in which ``cfg`` differs from the stored config record (kif.configure.config_changes);
        unless ``accept_change``, any is a KifError: "<config.yaml>: <ran> another config (keys); <advice>"."""
        changed = config_changes(_same_benchmark(self.read_config(required=True), cfg), cfg)
        if changed and not accept_change:
            raise KifError(f"{self.config_file}: {ran} another config ({', '.join(changed[:5])}); {advice}")
        return changed

    # ---- results ---------------------------------------------------------------------------------
    def read_results(self) -> Results:
        return load_results(self.results_file)

    def write_results(self, results: Results) -> None:
        results.write(self.results_file)

    def restore_results(self, record: Results, lock: str | None = None) -> None:
        """The checkpoint is the record: a results.json that is missing, unreadable or differs
        from ``record`` (hand-edited) is rewritten from it (holding the folder's lock, named
        ``lock``, when given); an intact one is left untouched, byte for byte."""
        try:
            if read_json(self.results_file, "results file") == record.to_dict():
                return
            why = "differed from the checkpoint"
        except ArtifactError:
            why = "was missing" if not self.results_file.exists() else "was unreadable"
        with OutputLock(self.path, lock) if lock else nullcontext():
            self.write_results(record)
        if is_main():
            log.warning("%s %s; rewritten from the checkpoint (the checkpoint is the record)", self.results_file, why)

    # ---- checkpoints -----------------------------------------------------------------------------
    @staticmethod
    def checkpoint_name(done: int) -> str:
        return f"after-{done:02d}"

    def checkpoint_dir(self, done: int) -> Path:
        return self.path / CHECKPOINTS / self.checkpoint_name(done)

    def latest_checkpoint(self) -> Path | None:
        found = sorted(p for p in (self.path / CHECKPOINTS).glob("after-*") if p.is_dir())
        return found[-1] if found else None

    def save_checkpoint(self, done: int, tensors: dict, meta: dict, results: dict) -> Path:
        """``after-NN/``, complete or absent (written under a temporary name); older ones are removed."""
        dest = self.checkpoint_dir(done)
        if not is_main():  # several processes: only the main one writes
            return dest

        def write(tmp: Path) -> None:
            atomic_save_tensors(tmp / "method.safetensors", tensors)
            (tmp / "method.json").write_text(json.dumps(meta, sort_keys=True, allow_nan=False))
            (tmp / RESULTS_FILE).write_text(json.dumps(results, indent=1, allow_nan=False))

        atomic_save_dir(dest, write)
        for old in dest.parent.glob("after-*"):  # keep only the newest
            if old.name != dest.name and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
        return dest

    def load_checkpoint(self, path: Path) -> tuple[dict, object, Results]:
        """(tensors, meta as read, validated results); a damaged file is an ArtifactError naming it."""
        tensors = load_tensors(path / "method.safetensors")
        meta, results = (read_json(path / name, "checkpoint file", note="; the run directory is damaged")
                         for name in ("method.json", RESULTS_FILE))
        return tensors, meta, Results.from_dict(results, str(path / RESULTS_FILE))

    # ---- the folder ------------------------------------------------------------------------------
    def check_no_symlinks(self) -> None:
        """kif writes and deletes only real files and folders inside its output: a symbolic link
        among its entries (e.g. ``tasks/`` pointing elsewhere) would have kif write through it, and
        ``--overwrite`` or a redone task delete the target's files. Refused in one line."""
        for name in ENTRIES:
            p = self.path / name
            inner = sorted(p.iterdir()) if p.is_dir() and not p.is_symlink() else []
            for q in [p] + inner:
                if q.is_symlink():
                    raise OutputError(f"{q}: is a symbolic link; kif never writes or deletes through links "
                                      "in its output folder (remove the link or choose another -o)")

    def discard(self) -> None:
        """``--overwrite``: remove what an earlier run wrote (links were refused before)."""
        if not is_main():
            return
        for name in ENTRIES:
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()


def _same_benchmark(stored: dict, cfg: RunConfig) -> dict:
    """A run started before benchmark paths were made absolute recorded the path as given
    (relative to the working directory then): the same file is the same benchmark."""
    old = stored.get("benchmark")
    if isinstance(old, str) and old != cfg.benchmark and not Path(old).is_absolute():
        try:
            if Path(old).resolve() == Path(cfg.benchmark).resolve() and Path(old).is_file():
                return {**stored, "benchmark": cfg.benchmark}
        except OSError:
            pass
    return stored
