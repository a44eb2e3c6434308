"""Fingerprint what every method computes on a tiny model: the score matrices of results.json
and the bytes of every saved tensor file, per method. A reshaping that must not change any
number (issue 32) compares the fingerprint before and after it:

    python scripts/run_fingerprint.py -o before.json          # on the commit before
    python scripts/run_fingerprint.py --compare before.json   # after: exit 1 on any difference
    python scripts/run_fingerprint.py --only sapt --arg gen_force_tag=false --compare before.json

Runs each method on tests/fixtures/benchmarks (tiny-llama, cb/copa/sst2 as the tests do), one
torch thread; a few minutes on a 2-core machine."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KIF_DATA", str(ROOT / "tests" / "fixtures" / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

# the methods' defaults, plus the variants whose extra stage or memory the defaults leave unused
VARIANTS = {"kiflora-m/pseudo": ("kiflora-m", {"memory_source": "pseudo", "memory_per_task": 4}),
            "kif-m/real": ("kif-m", {"memory_per_task": 4}),
            "replay/4": ("replay", {"memory_per_task": 4})}
# what varies between two runs of the same code: times, memory peaks, versions, provenance
NOT_COMPUTED = {"timings", "device", "kif_version", "kif_commit"}


def _scores(results: dict) -> dict:
    """results.json without its timings, versions and provenance: what the method computed."""
    def keep(obj):
        if isinstance(obj, dict):
            return {k: keep(v) for k, v in sorted(obj.items()) if not (k.endswith("_s") or k in NOT_COMPUTED)}
        if isinstance(obj, list):
            return [keep(v) for v in obj]
        return obj
    return keep(results)


def fingerprint_run(method: str, method_args: dict, out: Path) -> dict:
    from helpers import tiny_config
    from kif.runner import run

    cfg = tiny_config(method=method, method_args=method_args, seed=3)
    results = run(cfg, out, show_progress=False)
    files = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
             for p in sorted(out.rglob("*")) if p.suffix in (".safetensors", ".jsonl", ".pt")}
    return {"results": hashlib.sha256(json.dumps(_scores(results), sort_keys=True).encode()).hexdigest()[:16],
            "matrix": results.get("matrix"), "files": files}


def fingerprint(only: list[str] | None, extra: dict | None = None) -> dict:
    from kif.methods import all_methods

    runs = {name: (name, {}) for name in all_methods()} | VARIANTS
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (method, args) in runs.items():
            if only and label not in only:
                continue
            out[label] = fingerprint_run(method, {**args, **(extra or {})}, Path(tmp) / label.replace("/", "_"))
            print(f"{label}: {out[label]['results']} ({len(out[label]['files'])} files)", file=sys.stderr)
    return out


def differences(before: dict, now: dict) -> list[str]:
    """What differs between two fingerprints of one run: its matrix, its results, and its files
    changed, new or gone."""
    out = [key for key in ("matrix", "results") if before.get(key) != now.get(key)]
    old, new = before.get("files", {}), now.get("files", {})
    for what, names in (("changed", [f for f in new if f in old and old[f] != new[f]]),
                        ("new", [f for f in new if f not in old]), ("gone", [f for f in old if f not in new])):
        if names:
            out.append(f"{what} {', '.join(names)}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", help="write the fingerprint here (JSON)")
    p.add_argument("--compare", help="a fingerprint to compare against: exit 1 on any difference")
    p.add_argument("--only", nargs="*", help="these methods/variants only")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a method_args value (YAML) added to every run, e.g. gen_force_tag=false")
    args = p.parse_args()
    import torch

    from kif.configure import apply_overrides

    torch.set_num_threads(1)
    now = fingerprint(args.only, apply_overrides({}, args.arg, "--arg"))  # values parsed as kif's --set does
    if args.output:
        Path(args.output).write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    if not args.compare:
        return 0
    before = json.loads(Path(args.compare).read_text())
    diffs = [label for label in now if before.get(label) != now[label]]
    for label in diffs:
        print(f"DIFFERS: {label}: {'; '.join(differences(before.get(label, {}), now[label]))}", file=sys.stderr)
    print(f"{len(now) - len(diffs)} of {len(now)} identical", file=sys.stderr)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
