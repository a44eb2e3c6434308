#!/usr/bin/env bash
# GPU check (see gpu_check.py --help): environment, hub kernels, bf16 gradients on padded
# batches, bf16 vs fp32 predictions, training and evaluation throughput, peak memory.
#   benchmarks/gpu_check.sh                        # a GPU machine: under 10 minutes
#   benchmarks/gpu_check.sh --tiny --device cpu    # CPU smoke form (CI runs it)
# Output also goes to runs/gpu_check.log.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$root/.venv/bin/activate" ]; then
  . "$root/.venv/bin/activate"
fi
cd "$root"
mkdir -p runs
python "$here/gpu_check.py" "$@" 2>&1 | tee runs/gpu_check.log
