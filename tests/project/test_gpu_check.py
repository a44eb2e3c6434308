"""benchmarks/gpu_check.py in its CPU form (--tiny: tiny-llama, a few examples; seconds).

The GPU form is the same code with bigger numbers; no GPU is available to CI."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow  # whole runs: `pytest -m "not slow"` leaves them out



def _result(out: str) -> dict:
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT name=gpu_check"))
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def test_gpu_check_tiny_cpu_form(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "KIF_CACHE": str(tmp_path / "cache"), "USE_HUB_KERNELS": "0",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu",
                           "--no-sweep"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = _result(proc.stdout)
    assert res["model"] == "tiny-llama" and res["device"] == "cpu"
    assert res["hub_kernels_off"] == "True"  # USE_HUB_KERNELS=0, nothing loaded from the hub cache
    assert res["grad_nonfinite_default"] == "0"
    agree = float(res["bf16_fp32_agree_pct"])
    assert 0 <= agree <= 100 and agree * 8 / 100 == round(agree * 8 / 100)  # k of 8 examples
    for key in ("train_tok_s_b4", "train_tok_s_b8", "eval_sps_fp32", "eval_sps_bf16", "peak_rss_mb"):
        assert float(res[key]) > 0, key
    # the padded-gradient table covers a length 64 mod 128 and a control
    rows = [ln.split() for ln in proc.stdout.splitlines() if ln.strip().startswith(("64 ", "128 "))]
    assert {r[0] for r in rows} == {"64", "128"} and all(r[-1] == "ok" for r in rows)
    assert "kif sweep --jobs 4" in proc.stdout and "skipped: --no-sweep" in proc.stdout


def test_gpu_check_hub_kernels_reported_on_when_not_disabled(tmp_path):
    """Read generically: USE_HUB_KERNELS unset means transformers' default (on) where `kernels`
    is installed; the verdict says so instead of claiming the run is clean."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    import importlib.util

    class Model:
        use_kernels = False

    saved = os.environ.pop("USE_HUB_KERNELS", None)
    try:
        state = gpu_check.hub_kernels_state(Model())
        installed = importlib.util.find_spec("kernels") is not None
        assert state["verdict"].startswith("ON") == installed
        os.environ["USE_HUB_KERNELS"] = "0"
        assert gpu_check.hub_kernels_state(Model())["verdict"].startswith("OFF")
        Model.use_kernels = True
        assert gpu_check.hub_kernels_state(Model())["verdict"].startswith("ON")
    finally:
        os.environ.pop("USE_HUB_KERNELS", None)
        if saved is not None:
            os.environ["USE_HUB_KERNELS"] = saved
