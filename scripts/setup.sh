#!/usr/bin/env bash
# Create .venv and install kif with its pinned dependency ranges (CPU torch unless one is present).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, from pip's configured index (a mirror or a CPU-only index is set the usual
# way: PIP_INDEX_URL / pip.conf); a machine that already has a torch keeps it.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0" \
  || python -m pip install -q "torch>=2.4,<2.15"
python -m pip install -q -e ".[test]"
echo "kif installed in .venv ($(python -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'))"
