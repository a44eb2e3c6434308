"""Padding share of training batches: kif's length buckets vs HF's length grouping vs random.

For each Long Sequence task (up to ``--samples`` train examples, encoded by kif's Encoder)
and each batch size, the share of padded slots, 1 − real tokens / (batches × longest row),
of one epoch's order from ``kif.training.length_bucket_order``, from transformers'
``get_length_grouped_indices`` (what the Trainer's own ``group_by_length`` uses) and from a
random permutation. Counting only: no model runs, nothing is timed.

    python benchmarks/padding_share.py                                  # tiny-llama (bytes)
    KIF_CACHE=... python benchmarks/padding_share.py --model smollm2-135m
"""
from __future__ import annotations

import _common as C
import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from kif.training import length_bucket_order


def padding(lengths: list[int], order: list[int], bs: int) -> float:
    batches = [order[c:c + bs] for c in range(0, len(order), bs)]
    return 1 - sum(lengths) / sum(max(lengths[i] for i in b) * len(b) for b in batches)


def main():
    p = C.base_parser(__doc__.splitlines()[0], repeats=None)
    p.add_argument("--tasks", default="yelp,mnli,multirc,sst2,copa,dbpedia")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--batch-sizes", default="8,32,128")
    p.add_argument("--max-input-length", type=int, default=512)
    args = p.parse_args()
    C.setup(args)
    _, enc = C.load_lm(args.model, torch.device("cpu"))
    enc.max_input_length = args.max_input_length
    rows, shares = [], {"kif": [], "hf": [], "random": []}
    for task in args.tasks.split(","):
        lengths = [len(enc.train_features(e)["input_ids"])
                   for e in C.long_sequence("train", [task], args.samples, seed=args.seed)]
        for bs in map(int, args.batch_sizes.split(",")):
            g = torch.Generator().manual_seed(args.seed)
            kif = padding(lengths, length_bucket_order(lengths, bs, generator=g), bs)
            hf = padding(lengths, get_length_grouped_indices(lengths, bs, generator=g), bs)
            rnd = padding(lengths, torch.randperm(len(lengths), generator=g).tolist(), bs)
            rows.append([task, len(lengths), bs, f"{kif:.1%}", f"{hf:.1%}", f"{rnd:.1%}"])
            for k, v in (("kif", kif), ("hf", hf), ("random", rnd)):
                shares[k].append(v)
    C.print_settings("padding_share", {"model": f"{args.model} (tokenizer only)",
                                       "data": f"Long Sequence train, up to {args.samples} per task",
                                       "max_input_length": args.max_input_length})
    print("\npadding share of one epoch's batches:")
    C.print_table(["task", "examples", "batch", "kif buckets", "HF group_by_length", "random"], rows)
    C.result_line("padding_share", model=args.model,
                  **{f"mean_{k}": sum(v) / len(v) for k, v in shares.items()})


if __name__ == "__main__":
    main()
