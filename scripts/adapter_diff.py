"""How far one saved adapter moved from another, entry by entry: a small JSON summary in place
of the tensors (which stay in the run folder).

    python scripts/adapter_diff.py runs/X/tasks/02_sst2/adapter_fused runs/X/tasks/02_sst2/adapter

For every entry of every tensor the two adapters share: the count of entries, how many did not
move, the quantiles of |after − before| over the entries that moved, and the mean |before| over
all of them (frozen entries included: the typical size of an entry); tensors only one adapter has
are counted, not compared. One step of a freshly made Adam(W) moves every entry whose gradient is
not 0 by the learning rate (its first step is lr · g / |g|, whatever the gradient's size): then
the quantiles all sit at the learning rate.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

WEIGHTS = "adapter_model.safetensors"
QUANTILES = (0.0, 0.01, 0.5, 0.99, 1.0)


def diff(before: dict, after: dict) -> dict:
    import numpy as np
    import torch

    shared = sorted(set(before) & set(after))
    if not shared:
        raise SystemExit("adapter_diff: the two adapters share no tensor")
    d = torch.cat([(after[k].float() - before[k].float()).abs().flatten() for k in shared])
    size = torch.cat([before[k].float().abs().flatten() for k in shared])
    moved = d[d > 0].double().numpy()
    q = np.quantile(moved, QUANTILES).tolist() if moved.size else []  # numpy: no size limit
    return {"tensors": len(shared), "not_shared": len(set(before) ^ set(after)),
            "entries": d.numel(), "unchanged": int((d == 0).sum()),
            "moved_abs_quantiles": dict(zip([str(x) for x in QUANTILES], q)),
            "mean_abs_before": float(size.mean())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path, help="an adapter folder (PEFT save)")
    p.add_argument("after", type=Path)
    args = p.parse_args()
    for a in (args.before, args.after):
        if not (a / WEIGHTS).is_file():
            print(f"adapter_diff: {a}: no {WEIGHTS}", file=sys.stderr)
            return 2
    from safetensors.torch import load_file

    print(json.dumps(diff(load_file(args.before / WEIGHTS), load_file(args.after / WEIGHTS)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
