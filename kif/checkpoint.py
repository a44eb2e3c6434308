"""Task-boundary checkpoints: what a killed run needs to continue with identical numbers.

After the zero-shot row and after every task, ``OUT/checkpoints/after-NN/`` receives the
method's state (tensors in safetensors, the rest in JSON) and the results so far. The
directory is written under a temporary name and renamed, so it either exists complete or
not at all; the newest one is the commit point. Training a task starts from a fixed
seed, so a task interrupted anywhere is redone from its start and gives the same result.

A checkpoint is checked in full before a resume touches anything (:func:`validate_checkpoint`):
its task counter, its results record, its tensors and the config must all agree.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from .dist import is_main
from .errors import ArtifactError, OutputError
from .io import atomic_save_dir, atomic_save_tensors, load_tensors
from .metrics import CL_NAMES

DIRNAME = "checkpoints"
# what kif writes in a run directory (``--overwrite`` removes exactly these)
RUN_ENTRIES = ("checkpoints", "tasks", "zero_shot", "logs", "unseen", "results.json", "config.yaml")


def _name(done: int) -> str:
    return f"after-{done:02d}"


def save_checkpoint(out_dir: Path, done: int, tensors: dict, meta: dict, results: dict) -> Path:
    root = Path(out_dir) / DIRNAME
    dest = root / _name(done)
    if not is_main():  # several processes: only the main one writes
        return dest

    def write(tmp: Path) -> None:
        atomic_save_tensors(tmp / "method.safetensors", tensors)
        (tmp / "method.json").write_text(json.dumps(meta, sort_keys=True, allow_nan=False))
        (tmp / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False))

    atomic_save_dir(dest, write)
    for old in root.glob("after-*"):  # keep only the newest
        if old.name != dest.name and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
    return dest


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = Path(out_dir) / DIRNAME
    found = sorted(p for p in root.glob("after-*") if p.is_dir()) if root.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """(tensors, meta, results); a damaged checkpoint is an ArtifactError naming the file."""
    tensors = load_tensors(path / "method.safetensors")
    out = []
    for name in ("method.json", "results.json"):
        f = path / name
        try:
            out.append(json.loads(f.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ArtifactError(f"{f}: missing from the checkpoint; the run directory is damaged") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{f}: corrupt ({exc.__class__.__name__}); the run directory is damaged") from None
        except RecursionError:
            raise ArtifactError(f"{f}: nested too deeply; the run directory is damaged") from None
        except OSError as exc:
            raise ArtifactError(f"{f}: cannot read ({exc.strerror or exc})") from None
    return tensors, out[0], out[1]


# ---- validation: before a resume touches anything ----------------------------------------------

def validate_checkpoint(path: Path, tensors: dict, meta, results, *, method: str, model: str,
                        tasks: list[str], joint: bool) -> int:
    """Check that the checkpoint at ``path`` is one consistent state of the run the config
    describes; returns its stage counter. ``results`` is the validated
    :class:`kif.results.Results`; ``tasks`` the config's task sequence. Any disagreement is
    an ArtifactError naming the file and the field (exit 2, nothing written)."""
    mfile, rfile = path / "method.json", path / "results.json"
    if not isinstance(meta, dict):
        raise ArtifactError(f"{mfile}: expected a JSON object, got {type(meta).__name__}")
    n_stages = 1 if joint else len(tasks)
    done = meta.get("stages_done")
    if isinstance(done, bool) or not isinstance(done, int) or not 0 <= done <= n_stages:
        raise ArtifactError(f"{mfile}: 'stages_done' must be a whole number from 0 to {n_stages}, got {done!r}")
    if not isinstance(meta.get("method", {}), dict):
        raise ArtifactError(f"{mfile}: 'method' must be a JSON object, got {type(meta['method']).__name__}")
    if path.name != _name(done):
        raise ArtifactError(f"{mfile}: 'stages_done' is {done} but the checkpoint is {path.name}")

    def bad(field: str, want, got) -> ArtifactError:
        return ArtifactError(f"{rfile}: '{field}' is {got!r}, expected {want!r}; the checkpoint does not "
                             "belong to this run (use --overwrite or another -o)")

    for field, want in (("method", method), ("model", model), ("tasks", list(tasks)), ("joint", joint)):
        if getattr(results, field) != want:  # not even --accept-config-change changes these mid-run
            raise bad(field, want, getattr(results, field))
    completed = (len(tasks) if done else 0) if joint else done
    for field, got, want in (("tasks_completed", results.tasks_completed, completed),
                             ("finished", results.finished, done == n_stages),
                             ("matrix", len(results.matrix), done), ("per_task", len(results.per_task), done),
                             ("matrix_ranked", len(results.matrix_ranked or []), done if results.matrix_ranked
                              is not None else 0)):
        if got != want:
            what = f"has {got} rows" if field.startswith(("matrix", "per_task")) else f"is {got!r}"
            raise ArtifactError(f"{rfile}: '{field}' {what}, expected {want!r}: method.json says {done} of "
                                f"{n_stages} stages are done; the run directory is damaged")
    for field in ("metrics", "n_train", "n_test"):
        keys = set(getattr(results, field) or {})
        if keys and keys != set(tasks):
            raise ArtifactError(f"{rfile}: '{field}' names tasks {sorted(keys)}, the run has {sorted(tasks)}")
    check_scores(results, str(rfile))
    for name in tensors:
        if not name.startswith(("model.", "method.")):
            raise ArtifactError(f"{path / 'method.safetensors'}: unexpected tensor {name!r}")
    from .torchutil import non_finite  # torch: not when the report reads checkpoint.check_scores

    nan = non_finite(tensors)
    if nan:
        raise ArtifactError(f"{path / 'method.safetensors'}: {nan[0]} holds NaN/inf; kif never saves "
                            "such a state, the file was altered")
    return done


def check_scores(results, source: str) -> None:
    """Scores are numbers in [0, 100] (or null where not evaluated); timings and sizes are
    finite and not negative. Anything else (inf, 1e308, -5) is an ArtifactError naming the field.
    ``results``: a :class:`kif.results.Results` or its dict."""
    get = results.get if isinstance(results, dict) else (lambda key: getattr(results, key, None))
    data = results if isinstance(results, dict) else results.model_dump(mode="python")  # json mode hides inf
    _finite_everywhere(data, source)
    unseen = data.get("unseen") or {}
    points = [("before", unseen.get("before")), ("after", unseen.get("after"))]
    points += [(f"after_each[{i}]", p) for i, p in enumerate(unseen.get("after_each") or [])]
    for point, p in points:
        for part in ("per_task", "per_category"):
            for t, v in ((p or {}).get(part) or {}).items():
                if v is not None and not 0 <= v <= 100:
                    raise ArtifactError(f"{source}: 'unseen.{point}.{part}.{t}' must be a score from 0 to 100, "
                                        f"got {v!r}")
    rows = [("zero_shot", get("zero_shot")), ("zero_shot_ranked", get("zero_shot_ranked"))]
    rows += [(f"matrix[{j}]", r) for j, r in enumerate(get("matrix") or [])]
    rows += [(f"matrix_ranked[{j}]", r) for j, r in enumerate(get("matrix_ranked") or [])]
    for name, row in rows:
        for i, v in enumerate(row or []):
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 100):
                raise ArtifactError(f"{source}: '{name}[{i}]' must be a score from 0 to 100 (or null), got {v!r}")
    for name in CL_NAMES:
        v = get(name)
        if v is not None and not -100 <= v <= 100:
            raise ArtifactError(f"{source}: '{name}' must be between -100 and 100, got {v!r}")
    for key, v in (get("timings") or {}).items():
        if not (math.isfinite(v) and 0 <= v < 1e10):  # 1e10 s = 300 years
            raise ArtifactError(f"{source}: 'timings.{key}' must be a plausible number of seconds, got {v!r}")
    size = get("adapter_bytes")
    if size is not None and not 0 <= size < 2**53:
        raise ArtifactError(f"{source}: 'adapter_bytes' must be a plausible size, got {size!r}")


# ---- the run directory ---------------------------------------------------------------------------

def check_no_symlinks(out_dir: Path) -> None:
    """kif writes and deletes only real files and folders inside its output: a symbolic link
    among its entries (e.g. ``tasks/`` pointing elsewhere) would have kif write through it, and
    ``--overwrite`` or a redone task delete the target's files. Refused in one line."""
    for name in RUN_ENTRIES:
        p = out_dir / name
        inner = sorted(p.iterdir()) if p.is_dir() and not p.is_symlink() else []
        for q in [p] + inner:
            if q.is_symlink():
                raise OutputError(f"{q}: is a symbolic link; kif never writes or deletes through links "
                                  "in its output folder (remove the link or choose another -o)")


def discard_run(out_dir: Path) -> None:
    """``--overwrite``: remove what an earlier run wrote (links were refused before)."""
    if not is_main():
        return
    for name in RUN_ENTRIES:
        p = out_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _finite_everywhere(x, source: str, key: str = "") -> None:
    """No NaN or infinity anywhere in a results record (Python's json reads ``Infinity``)."""
    if isinstance(x, float) and not math.isfinite(x):
        raise ArtifactError(f"{source}: '{key}' must be a finite number, got {x!r}")
    if isinstance(x, dict):
        for k, v in x.items():
            _finite_everywhere(v, source, f"{key}.{k}" if key else str(k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            _finite_everywhere(v, source, f"{key}[{i}]")
