"""Crash safety: SIGKILL at several points, resume, and get the numbers of an uninterrupted run."""

import pytest
import torch

from kif.io import load_tensors

from helpers import kif_run, read_results, tiny_config, write_config

pytestmark = pytest.mark.slow  # whole runs: `pytest -m "not slow"` leaves them out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("ref")
    cfg = write_config(tmp / "cfg.yaml", method="kiflora")
    proc = kif_run(cfg, tmp / "out")
    assert proc.returncode == 0, proc.stderr
    return cfg, tmp / "out"


def _fused(out):
    return load_tensors(out / "tasks" / "03_sst2" / "adapter" / "adapter_model.safetensors")


# 16 train samples / batch 8 = 2 optimizer steps per task; 3 evaluations per row
@pytest.mark.parametrize("fault", ["train_step:3", "eval:4", "fusion:2", "write:3"])
def test_kill_and_resume_matches_uninterrupted(fault, reference, tmp_path):
    cfg, ref_out = reference
    out = tmp_path / "out"
    killed = kif_run(cfg, out, fault=fault)
    assert killed.returncode == -9, killed.stderr  # SIGKILL really happened
    resumed = kif_run(cfg, out)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    got, want = read_results(out), read_results(ref_out)
    assert got["zero_shot"] == want["zero_shot"]
    assert got["matrix"] == want["matrix"]
    assert (got["AP"], got["FWT"], got["BWT"]) == (want["AP"], want["FWT"], want["BWT"])
    assert got["resumed"] == 1 and got["finished"]
    from kif.provenance import source_commit  # the code that started it and the code that resumed it
    assert got["kif_commit"] == source_commit() and got["kif_commit_resumes"] == [source_commit()]
    a, b = _fused(out), _fused(ref_out)
    assert all(torch.equal(a[n], b[n]) for n in b)
    for k, t in enumerate(["cb", "copa", "sst2"]):
        sa = load_tensors(out / "tasks" / f"{k + 1:02d}_{t}" / "scores_accumulated.safetensors")
        sb = load_tensors(ref_out / "tasks" / f"{k + 1:02d}_{t}" / "scores_accumulated.safetensors")
        assert all(torch.equal(sa[n], sb[n]) for n in sb)


def test_finished_run_is_not_redone(reference):
    cfg, out = reference
    before = (out / "results.json").read_text()
    proc = kif_run(cfg, out)
    assert proc.returncode == 0 and "already complete" in proc.stderr
    assert (out / "results.json").read_text() == before


def test_changed_config_is_refused_then_accepted_with_flag(tmp_path, data_dir):
    cfg = write_config(tmp_path / "cfg.yaml", method="seqlora", tasks=["cb", "copa"])
    out = tmp_path / "out"
    assert kif_run(cfg, out, fault="eval:3").returncode == -9
    changed = write_config(tmp_path / "cfg2.yaml", method="seqlora", tasks=["cb", "copa"],
                         eval={"batch_size": 4})
    proc = kif_run(changed, out)
    assert proc.returncode == 2
    assert "eval.batch_size" in proc.stderr and "--accept-config-change" in proc.stderr
    assert kif_run(changed, out, extra=["--accept-config-change"]).returncode == 0
    assert read_results(out)["tasks_completed"] == 2


def test_damaged_checkpoint_is_named(tmp_path, data_dir):
    cfg = write_config(tmp_path / "cfg.yaml", method="kif", tasks=["cb", "copa"])
    out = tmp_path / "out"
    assert kif_run(cfg, out, fault="train_step:3").returncode == -9
    (ckpt,) = (out / "checkpoints").iterdir()
    (ckpt / "method.safetensors").write_bytes(b"\x00garbage")
    results_before = (out / "results.json").read_text()
    proc = kif_run(cfg, out)
    assert proc.returncode == 2
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("kif: error:")]
    assert len(err) == 1 and "method.safetensors" in err[0] and "Traceback" not in proc.stderr
    assert (out / "results.json").read_text() == results_before
