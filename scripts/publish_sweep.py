"""Copy a sweep's finished cells (results.json, config.yaml; never adapters or checkpoints)
into a folder to commit, then `kif report` that folder. Run it as cells land:

    python scripts/publish_sweep.py runs/evidence docs/results/evidence

A cell with a generated memory (kif-m/kiflora-m with ``memory_source: pseudo``, lfpt5, sapt) also
gets each task's ``pseudo.jsonl`` (the samples kept and replayed) and ``generations.jsonl`` (every
text drawn, with its verdict), so that what was replayed can be read.

A KIF or KIFLoRA cell also gets ``fusion_weights.json``: per fused task, the shares, quantiles
and histogram of the fusion weights (``scripts/fusion_weights.py --json``), a few hundred bytes
each, so that what the fusion did can be read from committed files without the tensors.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def publish(src: Path, dest: Path) -> list[str]:
    done = []
    for res in sorted(src.glob("*/results.json")):
        if not json.loads(res.read_text()).get("finished"):
            continue
        cell = dest / res.parent.name
        cell.mkdir(parents=True, exist_ok=True)
        for name in ("results.json", "config.yaml"):
            shutil.copyfile(res.parent / name, cell / name)
        memories = [*res.parent.glob("tasks/*/pseudo.jsonl"), *res.parent.glob("tasks/*/generations.jsonl")]
        for memory in sorted(memories):
            out = cell / memory.relative_to(res.parent)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(memory, out)
        if any(res.parent.glob("tasks/*/fusion_weights.safetensors")):
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from fusion_weights import run_summary  # torch only where there are weights to read

            (cell / "fusion_weights.json").write_text(json.dumps(run_summary(res.parent), indent=1) + "\n")
        done.append(res.parent.name)
    if (src / "sweep.json").exists():
        shutil.copyfile(src / "sweep.json", dest / "sweep.json")
    return done


if __name__ == "__main__":
    cells = publish(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{len(cells)} finished cells: {' '.join(cells)}")
