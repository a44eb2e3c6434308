"""How fast a bad config fails: `kif run CFG` with a misspelt key vs `python -c "import kif"`.

Three configs, each run as `python -m kif.cli run CFG -o OUT` in a subprocess: (a) a misspelt
key in `method_args`, (b) one in `per_task.method_args`, (c) an unknown method name. Each must
exit 2 with one line on stderr and never import torch (checked first, with `python -X
importtime`); the model and the benchmark point at nothing, so reading either would fail
differently. The four commands run interleaved (order rotated every repeat); each figure is
the median over repeats of wall(case) / wall(import kif) paired within a repeat, next to the
median wall seconds. Issue 32: each case under 1 s on the development machine.

    python benchmarks/config_errors.py            # ~10 s with the default 5 repeats
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BAD = "model: /nonexistent/model\nbenchmark: /nonexistent/bench.yaml\n"
CASES = {
    "method_args": BAD + "method: kiflora-m\nmethod_args: {memory_fracton: 0.1}\n",
    "per_task": BAD + "method: olora\ntasks: [cb, copa]\nper_task: {method_args: {lambda_3: [1, 2]}}\n",
    "unknown_method": BAD + "method: kiflra\n",
}


def command(case: str, folder: Path) -> list[str]:
    if case == "import_kif":
        return [sys.executable, "-c", "import kif"]
    cfg = folder / f"{case}.yaml"
    cfg.write_text(CASES[case], encoding="utf-8")
    return [sys.executable, "-m", "kif.cli", "run", str(cfg), "-o", str(folder / f"out_{case}")]


def environment() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def check(case: str, folder: Path) -> str:
    """The case's one error line; exits if it is not exit 2, one line, no torch."""
    p = subprocess.run([sys.executable, "-X", "importtime", *command(case, folder)[1:]], capture_output=True,
                       text=True, env=environment(), cwd=REPO)
    lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("import time:")]
    modules = {ln.rsplit("|", 1)[-1].strip() for ln in p.stderr.splitlines() if ln.startswith("import time:")}
    if p.returncode != 2 or len(lines) != 1 or "torch" in modules:
        sys.exit(f"{case}: exit {p.returncode}, torch imported: {'torch' in modules}, stderr: {lines}")
    return lines[0]


def wall(case: str, folder: Path) -> float:
    cmd = command(case, folder)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, env=environment(), cwd=REPO)
    elapsed = time.perf_counter() - t0
    if p.returncode != (0 if case == "import_kif" else 2):
        sys.exit(f"{' '.join(cmd)}: exit {p.returncode}")
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats; figures are medians")
    args = p.parse_args()
    variants = ["import_kif", *CASES]
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; {args.repeats} repeats, interleaved")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for case in CASES:
            print(f"{case:15s} {check(case, folder)}")
        times: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.repeats):
            for v in variants[r % len(variants):] + variants[:r % len(variants)]:
                times[v].append(wall(v, folder))
    base = statistics.median(times["import_kif"])
    print(f"\n{'command':15s} {'median s':>9s} {'ratio':>7s} [min..max]")
    print(f"{'import kif':15s} {base:9.3f} {1:7.2f}")
    result = [f"import_kif_s={base:.3f}"]
    for case in CASES:
        ratios = [c / b for c, b in zip(times[case], times["import_kif"])]
        med = statistics.median(ratios)
        print(f"{case:15s} {statistics.median(times[case]):9.3f} {med:7.2f} [{min(ratios):.2f}..{max(ratios):.2f}]")
        result += [f"{case}_s={statistics.median(times[case]):.3f}", f"{case}_ratio={med:.2f}"]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"RESULT name=config_errors {' '.join(result)} peak_rss_mb={peak:.0f}")


if __name__ == "__main__":
    main()
