"""Resume: a run continues from its newest checkpoint (:meth:`kif.rundir.RunDir.save_checkpoint`,
after the zero-shot row and after every task; a task interrupted anywhere is redone from its
fixed seed, with the same result) only once the stored config, the task counter, the results
record and the tensors all agree (:func:`checkpoint_to_resume`)."""
from __future__ import annotations

from pathlib import Path

from .config import RunConfig
from .errors import ArtifactError, KifError
from .guards import non_finite_names
from .methods import get_method
from .results import Results
from .rundir import RunDir


def checkpoint_to_resume(run_dir: RunDir, cfg: RunConfig, overwrite: bool, accept_config_change: bool,
                         tasks: list[str]) -> tuple[dict, dict, Results] | None:
    """Decide between a fresh start and a resume; returns the checkpoint to resume from
    (tensors, meta, Results) or None. A damaged or inconsistent checkpoint fails here, before
    the model loads; ``overwrite`` deletes nothing yet (the runner does, once all has loaded)."""
    run_dir.check_no_symlinks()
    if overwrite:
        return None
    latest = run_dir.latest_checkpoint()
    if latest is None:
        if run_dir.results_file.exists():
            raise KifError(f"{run_dir.results_file}: present but no checkpoint to resume from; "
                           "pass --overwrite to start afresh or choose another -o")
        return None
    run_dir.check_config(cfg, accept_config_change, "the run in this directory used",
                         "pass --overwrite to start afresh, or --accept-config-change to resume anyway")
    tensors, meta, results = run_dir.load_checkpoint(latest)
    validate_checkpoint(latest, tensors, meta, results, method=cfg.method, model=cfg.model, tasks=tasks,
                        joint=bool(get_method(cfg.method).joint))
    return tensors, meta, results


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
    if path.name != RunDir.checkpoint_name(done):
        raise ArtifactError(f"{mfile}: 'stages_done' is {done} but the checkpoint is {path.name}")

    for field, want in (("method", method), ("model", model), ("tasks", list(tasks)), ("joint", joint)):
        if getattr(results, field) != want:  # not even --accept-config-change changes these mid-run
            raise ArtifactError(f"{rfile}: '{field}' is {getattr(results, field)!r}, expected {want!r}; the "
                                "checkpoint does not belong to this run (use --overwrite or another -o)")
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
    for name in tensors:
        if not name.startswith(("model.", "method.")):
            raise ArtifactError(f"{path / 'method.safetensors'}: unexpected tensor {name!r}")
    nan = non_finite_names(tensors)
    if nan:
        raise ArtifactError(f"{path / 'method.safetensors'}: {nan[0]} holds NaN/inf; kif never saves "
                            "such a state, the file was altered")
    return done
