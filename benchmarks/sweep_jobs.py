"""`kif sweep --jobs 2` with 1 thread per cell vs `kif sweep --jobs 1` with 2 threads, on a grid.

Both variants run the whole sweep (default configs/sweeps/tiny.yaml: 8 cells of tiny-llama)
from an empty output folder, as `python -m kif.cli sweep ...` subprocesses, interleaved
(A B, then B A, ...); each figure is the median over repeats of the ratio paired within a
repeat. The ratio is wall(jobs N × T/N threads) / wall(jobs 1 × T threads): below 1, running
cells side by side wins. `--jobs N` pays a torch import per cell (each cell is its own
process); `--jobs 1` pays one. Peak resident memory is the largest process of each variant
(`ru_maxrss` of the process tree, as `/usr/bin/time -v` reports it).

    python benchmarks/sweep_jobs.py                      # ~10 min per repeat on 2 shared cores
    python benchmarks/sweep_jobs.py --jobs 4 --threads 16 --sweep configs/sweeps/tiny.yaml
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_variant(sweep: Path, out: Path, jobs: int, threads: int) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB of the largest process) of one whole sweep."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [sys.executable, "-m", "kif.cli", "sweep", str(sweep), "-o", str(out), "-q", "--jobs", str(jobs)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # Linux: the largest of the process and its waited-for children


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sweep", type=Path, default=REPO / "configs" / "sweeps" / "tiny.yaml")
    p.add_argument("--jobs", type=int, default=2, help="cells at once in variant A")
    p.add_argument("--threads", type=int, default=2, help="threads in all (A: threads/jobs per cell; B: all in one)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--data-dir", help="KIF_DATA for the runs (default: tests/fixtures/benchmarks, which the "
                   "tiny grid's tasks are in)")
    args = p.parse_args()
    os.environ.setdefault("KIF_DATA", args.data_dir or str(REPO / "tests" / "fixtures" / "benchmarks"))
    per_cell = max(1, args.threads // args.jobs)
    variants = {f"jobs{args.jobs}x{per_cell}": (args.jobs, per_cell), f"jobs1x{args.threads}": (1, args.threads)}
    print(f"sweep {args.sweep}; {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; python {platform.python_version()}; "
          f"{args.repeats} repeat(s), interleaved")
    walls = {name: [] for name in variants}
    peaks = {name: [] for name in variants}
    tmp = Path(tempfile.mkdtemp(prefix="kif-bench-sweep-"))
    try:
        for r in range(args.repeats):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                jobs, threads = variants[name]
                wall, peak = run_variant(args.sweep, tmp / f"{name}-{r}", jobs, threads)
                walls[name].append(wall)
                peaks[name].append(peak)
                print(f"repeat {r + 1}: {name:10s} {wall:8.1f} s  peak RSS {peak:7.0f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    a, b = variants
    ratios = [x / y for x, y in zip(walls[a], walls[b])]
    print(f"\n{'variant':10s} {'wall s (median)':>16s} {'peak RSS MB':>12s}")
    for name in variants:
        print(f"{name:10s} {statistics.median(walls[name]):16.1f} {max(peaks[name]):12.0f}")
    print(f"ratio {a}/{b} = {statistics.median(ratios):.3f} [{min(ratios):.3f}..{max(ratios):.3f}]")
    print(f"RESULT name=sweep_jobs ratio={statistics.median(ratios):.3f} {a}_s={statistics.median(walls[a]):.1f} "
          f"{b}_s={statistics.median(walls[b]):.1f} {a}_rss_mb={max(peaks[a]):.0f} {b}_rss_mb={max(peaks[b]):.0f} "
          f"load={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
