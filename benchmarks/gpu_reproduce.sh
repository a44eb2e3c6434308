#!/usr/bin/env bash
# Long Sequence order 1, smollm2-135m, seqlora + kiflora (see gpu_reproduce.py --help).
#   benchmarks/gpu_reproduce.sh                       # GPU machine, full test sets
#   benchmarks/gpu_reproduce.sh --test-cap 500        # quicker pass
#   benchmarks/gpu_reproduce.sh --tiny --device cpu   # CPU smoke run
# Output also goes to runs/gpu_reproduce/log.txt (or --out's folder).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$root/.venv/bin/activate" ]; then
  . "$root/.venv/bin/activate"
fi
cd "$root"
out="runs/gpu_reproduce"
prev=""
for a in "$@"; do
  case "$a" in --out=*) out="${a#--out=}" ;; esac
  [ "$prev" = "--out" ] && out="$a"
  prev="$a"
done
mkdir -p "$out"
python "$here/gpu_reproduce.py" "$@" 2>&1 | tee "$out/log.txt"
