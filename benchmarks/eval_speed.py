"""Batched evaluation (kif.evaluation.generate, batch 32, length-sorted) vs one sample at a time.

All variants call ``kif.evaluation.generate`` once per task, as ``kif run`` does, on the
same model and the same real Long Sequence test prompts (encoded by kif's Encoder, chat
template where the model has one), greedy, ``max_new_tokens`` 8:

* ``batched``           - ``batch_size=32`` (length-sorted, left-padded for a decoder-only
                          model) with the task's shared prompt prefix encoded once (kif's default);
* ``batched-no-prefix`` - the same without the prefix cache (``prefix_cache=False``);
* ``single``            - ``batch_size=1``, no prefix cache: one prompt at a time, as the
                          authors' code evaluates.

The model is wrapped in a fresh PEFT LoRA (q/v, r=8) as kif evaluates it (``--no-lora``:
bare). Reports samples/s each, the speed-ups, and every prediction that differs.

    python benchmarks/eval_speed.py                       # tiny-llama
    KIF_CACHE=... python benchmarks/eval_speed.py --model smollm2-135m --repeats 2
"""
from __future__ import annotations

import _common as C
import torch

from kif.evaluation import generate, shared_prefix_length
from kif.torchutil import eval_autocast

TARGET = 20.0


def first_divergence(model, enc, prompt, a, b, device):
    """Top-2 logit margin of a single (unpadded) forward at the first token where two
    continuations differ: a small margin means a near-tie that rounding can flip."""
    tok = enc.tokenizer
    ia, ib = tok(a, add_special_tokens=False)["input_ids"], tok(b, add_special_tokens=False)["input_ids"]
    k = 0
    while k < min(len(ia), len(ib)) and ia[k] == ib[k]:
        k += 1
    ids = torch.tensor([prompt + ia[:k]], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].float()
    top = torch.topk(logits, 2).values
    return k, float(top[0] - top[1])


def main():
    p = C.base_parser(__doc__.splitlines()[0], repeats=5)
    p.add_argument("--tasks", default="sst2,wic,copa,qqp", help="Long Sequence tasks (test split), mixed")
    p.add_argument("--samples", type=int, default=64, help="prompts in all, split evenly over --tasks")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--max-input-length", type=int, default=512)
    p.add_argument("--no-lora", action="store_true", help="evaluate the bare model (no PEFT wrapper)")
    p.add_argument("--bf16", action="store_true",
                   help="add 'batched-bf16': the batched variant under eval.precision bf16 (autocast)")
    args = p.parse_args()
    device = C.setup(args)

    lm, enc = C.load_lm(args.model, device)
    enc.max_input_length = args.max_input_length
    model = lm.model if args.no_lora else C.add_lora(lm.model)
    model.eval()
    tasks = args.tasks.split(",")
    examples = C.long_sequence("test", tasks, -(-args.samples // len(tasks)), seed=args.seed + 42)[:args.samples]
    prompts = [enc.prompt_ids(e.prompt) for e in examples]
    n = len(prompts)

    per_task = -(-args.samples // len(tasks))  # long_sequence() is task-major
    by_task = {t: list(range(j * per_task, min(n, (j + 1) * per_task))) for j, t in enumerate(tasks)}
    by_task = {t: idx for t, idx in by_task.items() if idx}  # kif evaluates task by task
    variants = {"batched": (args.batch_size, True, "fp32"), "batched-no-prefix": (args.batch_size, False, "fp32"),
                "single": (1, False, "fp32")}
    if args.bf16:
        variants["batched-bf16"] = (args.batch_size, True, "bf16")
    exact = [m for m in variants if variants[m][2] == "fp32"]  # must agree to the token

    def run(name):
        bs, prefix, precision = variants[name]

        def go():
            out = [""] * n
            for idx in by_task.values():
                with eval_autocast(precision, model):
                    texts = generate(model, enc, [prompts[i] for i in idx], lm.eos_token_ids, bs,
                                     args.max_new_tokens, prefix_cache=prefix)
                for i, text in zip(idx, texts):
                    out[i] = text
            return out
        return go

    preds = {m: run(m)() for m in variants}  # also the warm-up
    mismatches = [i for i in range(n) if len({preds[m][i] for m in exact}) > 1]
    bf16_diff = sum(preds["batched-bf16"][i] != preds["batched"][i] for i in range(n)) if args.bf16 else None

    t = C.interleave({m: (lambda m=m: C.timed(run(m), device)[0]) for m in variants}, args.repeats)
    speedup = C.median(C.paired_ratios(t["single"], t["batched"]))
    prefix_gain = C.median(C.paired_ratios(t["batched-no-prefix"], t["batched"]))
    shared = sum(shared_prefix_length([prompts[i] for i in idx]) * len(idx) for idx in by_task.values())

    lens = sorted(len(q) for q in prompts)
    C.print_settings("eval_speed", {
        "model": f"{args.model}" + (" (bare)" if args.no_lora else " + PEFT LoRA q/v r=8 (B=0: same outputs as the base)"),
        "prompts": f"{n} Long Sequence test prompts from {','.join(tasks)}; tokens min/median/max "
                   f"{lens[0]}/{lens[n // 2]}/{lens[-1]} (max_input_length {args.max_input_length}), "
                   f"chat template: {enc.use_chat_template}",
        "generation": f"greedy, max_new_tokens={args.max_new_tokens}, eos={lm.eos_token_ids}",
        "batched": f"kif.evaluation.generate batch_size={args.batch_size} (length-sorted, "
                   f"{'right' if enc.is_seq2seq else 'left'}-padded), prefix cache "
                   f"({'not used: seq2seq' if enc.is_seq2seq else f'{shared / sum(lens):.0%} of the prompt tokens are a shared prefix'})",
        "batched-no-prefix": "the same, prefix_cache=False",
        "single": "kif.evaluation.generate batch_size=1 (no padding), prefix_cache=False",
        **({"batched-bf16": "batched under eval_autocast('bf16') (CPU autocast without a GPU)"} if args.bf16 else {}),
        "repeats": f"{args.repeats} interleaved, median of paired ratios",
        **C.environment(device),
    })
    print("\nthroughput (median):")
    C.print_table(["mode", "seconds", "samples/s"],
                  [[m, C.median(t[m]), n / C.median(t[m])] for m in variants])
    print(f"\nspeed-up batched/single: {speedup:.2f}x {C.spread(C.paired_ratios(t['single'], t['batched']))}"
          f"  (target >= {TARGET:g}x)")
    print(f"speed-up from the prefix cache (batched-no-prefix / batched): {prefix_gain:.2f}x "
          f"{C.spread(C.paired_ratios(t['batched-no-prefix'], t['batched']))}")
    if args.bf16:
        bf16_gain = C.median(C.paired_ratios(t["batched"], t["batched-bf16"]))
        print(f"speed-up from bf16 autocast (batched / batched-bf16): {bf16_gain:.2f}x "
              f"{C.spread(C.paired_ratios(t['batched'], t['batched-bf16']))}; predictions differing from fp32 "
              f"batched: {bf16_diff} of {n} (bf16 rounding, expected)")
    print(f"predictions differing between any two fp32 variants: {len(mismatches)} of {n}")
    for i in mismatches:
        line = f"  [{examples[i].id}] " + " ".join(f"{m}={preds[m][i]!r}" for m in exact)
        if not enc.is_seq2seq:
            other = next(preds[m][i] for m in exact if preds[m][i] != preds["single"][i])
            k, margin = first_divergence(model, enc, prompts[i], other, preds["single"][i], device)
            line += f"  first differing token #{k}, unpadded top-2 logit margin {margin:.2e}"
        print(line)
    if mismatches:
        print("  why: the batched rows are left-padded and run in larger matmuls, so fp32 sums are taken "
              "in a different order; a greedy step whose top-2 logits are that close can flip.")
    C.result_line("eval_speed", model=args.model, device=device.type, n=n,
                  batched_sps=n / C.median(t["batched"]), single_sps=n / C.median(t["single"]),
                  speedup=speedup, prefix_cache_speedup=prefix_gain, mismatches=len(mismatches),
                  **({"bf16_speedup": bf16_gain, "bf16_mismatches": bf16_diff} if args.bf16 else {}))


if __name__ == "__main__":
    main()
