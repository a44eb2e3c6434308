"""Training throughput of kif's training path vs a plain PEFT + torch AdamW loop.

Same PEFT LoRA model (q/v, r=8, alpha 16, dropout 0.05), same real Long Sequence training
examples (encoded by kif's Encoder), same batch size, epochs, learning rate, gradient
clipping and precision. Variants, interleaved over the repeats:

* ``kif``           - ``kif.training.train_task`` (HF Trainer + kif's callbacks) with kif's
                      defaults: length-grouped batches (``group_by_length``) and vocabulary
                      logits only at the target positions (``target_logits_only``);
* ``plain``         - forward, backward, clip, AdamW step, zero_grad over randomly shuffled,
                      right-padded batches, full logits (what a plain loop does);
* ``plain-matched`` - the same loop fed exactly kif's kind of batches (kif's length buckets,
                      kif's TrainCollator with target-only logits), so what is left between it
                      and ``kif`` is the Trainer's own per-step and start-up cost.

Throughput = target tokens (labels != -100, i.e. the answer tokens the loss is on) per second,
and non-padding input tokens per second. Two figures per variant: end to end (the whole call,
the Trainer's fixed start-up cost included) and steady state (from the end of optimizer step
``--warmup`` to the last step, counting only those steps' tokens).

    python benchmarks/train_throughput.py                         # tiny-llama
    KIF_CACHE=... python benchmarks/train_throughput.py --model smollm2-135m --samples 32 --epochs 1 --repeats 2
    # the cost of train.gradient_checkpointing: kif with vs without it, nothing else
    python benchmarks/train_throughput.py --model smollm2-135m --extra grad-ckpt --skip-plain \
        --samples 32 --epochs 1 --warmup 1 --repeats 5
"""
from __future__ import annotations

import random
import time
from contextlib import nullcontext

import _common as C
import torch

from kif.config import TrainConfig
from kif.encoding import IGNORE, TrainCollator, supports_logits_to_keep
from kif.torchutil import use_bf16
from kif.training import length_bucket_order, train_task

TARGET = 1.0
EXTRAS = {
    "compile": "kif with train.torch_compile: true (the first repeat pays the compilation, "
               "later ones reuse dynamo's cache)",
    "bf16": "kif with train.precision: bf16 (autocast; fp32 LoRA weights; CPU autocast without a GPU)",
    "eager-attn": "kif on a second copy of the model loaded with attn_implementation='eager'",
    "grad-ckpt": "kif with train.gradient_checkpointing: true (same model, same batches; "
                 "checkpointing is switched off again after each of its runs)",
}


def checkpointing_on(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.get_base_model().modules())


def checkpointing_off(model) -> None:
    """The Trainer switches checkpointing on for ``activation_checkpointing`` and never off:
    without this the variants that run after ``grad-ckpt`` on the same model would inherit it."""
    base = model.get_base_model()
    (getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable)()


class Meter:
    """Tokens of each forward (a pre-hook on the model) and a timestamp after each optimizer step."""

    def __init__(self, model):
        self.target, self.inputs, self.slots, self.stamps = [], [], [], []
        model.register_forward_pre_hook(self._hook, with_kwargs=True)
        self.active = False

    def _hook(self, module, args, kwargs):
        if self.active and "labels" in kwargs:
            self.target.append(int((kwargs["labels"] != IGNORE).sum()))
            am = kwargs["attention_mask"]
            self.inputs.append(int(am.sum()))
            self.slots.append(am.numel())

    def stamp(self):
        self.stamps.append(time.perf_counter())

    def start(self):
        self.target, self.inputs, self.slots, self.stamps = [], [], [], []
        self.active = True

    def stop(self):
        self.active = False


def grouped_order(lengths: list[int], bs: int, seed: int) -> list[list[int]]:
    """kif's length buckets (``kif.training.length_bucket_order``, what ``train_task`` uses
    with group_by_length), cut into batches."""
    g = torch.Generator().manual_seed(seed)
    idx = length_bucket_order(lengths, bs, generator=g)
    return [idx[i:i + bs] for i in range(0, len(idx), bs)]


def main():
    p = C.base_parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--tasks", default="sst2,wic,copa,qqp,mnli,rte", help="Long Sequence tasks (train split), mixed")
    p.add_argument("--samples", type=int, default=128, help="training examples in all")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max-input-length", type=int, default=512)
    p.add_argument("--max-target-length", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3, help="optimizer steps left out of the steady state")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--extra", default="", help="comma-separated extra variants of kif: "
                   + "; ".join(f"{k}: {v}" for k, v in EXTRAS.items()))
    p.add_argument("--skip-plain", action="store_true",
                   help="leave out plain and plain-matched: kif against its --extra variants only")
    args = p.parse_args()
    device = C.setup(args)

    lm, enc = C.load_lm(args.model, device)
    enc.max_input_length, enc.max_target_length = args.max_input_length, args.max_target_length
    model = C.add_lora(lm.model)
    model.train()
    meter = Meter(model)
    trainable = [q for q in model.parameters() if q.requires_grad]
    tasks = args.tasks.split(",")
    examples = C.long_sequence("train", tasks, -(-args.samples // len(tasks)), seed=args.seed + 42)
    random.Random(args.seed).shuffle(examples)
    examples = examples[:args.samples]
    steps = -(-len(examples) // args.batch_size) * args.epochs
    if steps < args.warmup + 2:
        p.error(f"{len(examples)} examples, batch {args.batch_size}, {args.epochs} epochs: {steps} optimizer steps; "
                f"the steady state needs at least --warmup + 2 = {args.warmup + 2}")
    cfg = TrainConfig(epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                      precision=args.precision, logging_steps=10_000)
    bf16 = use_bf16(cfg.precision)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    collate = TrainCollator(enc.tokenizer.pad_token_id)
    target_only = (getattr(cfg, "target_logits_only", False) and not enc.is_seq2seq
                   and supports_logits_to_keep(model))
    collate_kif = TrainCollator(enc.tokenizer.pad_token_id, target_logits_only=target_only)

    extras = [e for e in args.extra.split(",") if e]
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        p.error(f"--extra: unknown variant {unknown[0]!r} (choose from {', '.join(EXTRAS)})")

    def kif_run(seed, run_cfg=cfg, run_model=model):
        def run():
            assert not checkpointing_on(run_model), "checkpointing left on by an earlier variant"
            stats = train_task(run_model, enc, examples, run_cfg, seed,
                               post_step_hook=meter.stamp, show_progress=False)
            if run_cfg.gradient_checkpointing:
                assert checkpointing_on(run_model), "train.gradient_checkpointing did not reach the model"
                checkpointing_off(run_model)
            return stats
        return run

    def plain_run(seed, matched):
        def run():
            feats = [enc.train_features(e) for e in examples]
            opt = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
            rng = random.Random(seed)
            lengths = [len(f["input_ids"]) for f in feats]
            for epoch in range(args.epochs):
                if matched:
                    order = grouped_order(lengths, cfg.batch_size, seed * 1000 + epoch)
                else:
                    perm = list(range(len(feats)))
                    rng.shuffle(perm)
                    order = [perm[i:i + cfg.batch_size] for i in range(0, len(perm), cfg.batch_size)]
                for ids in order:
                    batch = (collate_kif if matched else collate)([feats[j] for j in ids])
                    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                    with amp():
                        loss = model(**batch).loss
                    loss.backward()
                    if cfg.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    meter.stamp()
        return run

    if args.skip_plain and not extras:
        p.error("--skip-plain needs --extra: kif against nothing")
    variants = ("kif",) + (() if args.skip_plain else ("plain", "plain-matched")) + tuple(f"kif-{e}" for e in extras)
    results = {n: {"e2e": [], "steady": [], "e2e_in": [], "steady_in": [], "ms": [], "pad": []}
               for n in variants}
    steps_seen = {}

    def measured(name, make):
        def run():
            meter.start()
            dt, _ = C.timed(make(args.seed), device)
            meter.stop()
            n = len(meter.stamps)
            assert n == len(meter.target), (name, n, len(meter.target))
            w = min(args.warmup, n - 2)
            span = meter.stamps[-1] - meter.stamps[w - 1] if w > 0 else None
            r = results[name]
            r["e2e"].append(sum(meter.target) / dt)
            r["e2e_in"].append(sum(meter.inputs) / dt)
            if span:
                r["steady"].append(sum(meter.target[w:]) / span)
                r["steady_in"].append(sum(meter.inputs[w:]) / span)
                r["ms"].append(span / (n - w) * 1e3)
            r["pad"].append(1 - sum(meter.inputs) / sum(meter.slots))
            steps_seen[name] = n
            return dt
        return run

    # warm-up: one short pass of each (allocator, one-time imports inside the Trainer)
    meter.start()
    plain_run(0, False)()
    meter.stop()
    runs = {"kif": measured("kif", kif_run)}
    if not args.skip_plain:
        runs["plain"] = measured("plain", lambda s: plain_run(s, False))
        runs["plain-matched"] = measured("plain-matched", lambda s: plain_run(s, True))
    for e in extras:
        run_cfg, run_model = cfg, model
        if e == "compile":
            run_cfg = cfg.model_copy(update={"torch_compile": True})
        elif e == "bf16":
            run_cfg = cfg.model_copy(update={"precision": "bf16"})
        elif e == "grad-ckpt":
            run_cfg = cfg.model_copy(update={"gradient_checkpointing": True})
        elif e == "eager-attn":
            from kif.models import load_model

            run_model = C.add_lora(load_model(args.model, attn_implementation="eager").model.to(device))
            run_model.train()
            run_model.register_forward_pre_hook(meter._hook, with_kwargs=True)
        runs[f"kif-{e}"] = measured(f"kif-{e}", lambda s, c=run_cfg, m=run_model: kif_run(s, c, m))
    t = C.interleave(runs, args.repeats)

    C.print_settings("train_throughput", {
        "model": f"{args.model} + PEFT LoRA q/v r=8 alpha=16 dropout=0.05, attention "
                 f"{model.base_model.model.config._attn_implementation}",
        "data": f"{len(examples)} Long Sequence train examples from {','.join(tasks)}, "
                f"max_input_length {args.max_input_length}",
        "training": f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, clip {cfg.max_grad_norm}, "
                    f"{'bf16 autocast' if bf16 else 'fp32'}; {steps_seen.get('kif')} optimizer steps per run",
        "kif": f"kif.training.train_task (HF Trainer, fused AdamW, group_by_length, "
               f"target_logits_only={target_only})",
        **({} if args.skip_plain else {
            "plain": "torch loop, torch.optim.AdamW (default impl): random right-padded batches, full logits",
            "plain-matched": f"same loop, kif's length buckets + kif's collator (target_logits_only={target_only})"}),
        **{f"kif-{e}": EXTRAS[e] for e in extras},
        "steady state": f"after optimizer step {args.warmup} to the last step",
        "repeats": f"{args.repeats} interleaved (order rotated), medians; ratios paired per repeat",
        **C.environment(device),
    })
    print("\ntarget tokens/s (median), non-pad input tokens/s, ms per steady step, padding share:")
    rows = []
    for n, r in results.items():
        rows.append([n, C.median(r["e2e"]), C.median(r["steady"]), C.median(r["e2e_in"]),
                     C.median(r["steady_in"]), C.median(r["ms"]), f"{C.median(r['pad']):.1%}",
                     C.median(t[n])])
    C.print_table(["variant", "tgt/s e2e", "tgt/s steady", "in/s e2e", "in/s steady", "ms/step",
                   "padding", "run s"], rows)
    ratio = {}
    for other in variants[1:]:
        for kind in ("e2e", "steady"):
            ratio[(other, kind)] = C.median(C.paired_ratios(results["kif"][kind], results[other][kind]))
    print("\nratio kif / variant (target tokens/s, median of paired repeats; the same batches on "
          "both sides, so also the variant's time per step / kif's):")
    C.print_table(["vs", "end to end", "steady state", "steady, per repeat"],
                  [[o, ratio[(o, "e2e")], ratio[(o, "steady")],
                    C.spread(C.paired_ratios(results["kif"]["steady"], results[o]["steady"]))]
                   for o in variants[1:]])
    if not args.skip_plain:
        print(f"(target: kif / plain >= {TARGET:g})")
    plain = {} if args.skip_plain else dict(
        plain_tps_steady=C.median(results["plain"]["steady"]),
        ratio_steady=ratio[("plain", "steady")], ratio_e2e=ratio[("plain", "e2e")],
        ratio_steady_vs_matched=ratio[("plain-matched", "steady")],
        ratio_e2e_vs_matched=ratio[("plain-matched", "e2e")])
    C.result_line("train_throughput", model=args.model, device=device.type,
                  kif_tps_steady=C.median(results["kif"]["steady"]), **plain,
                  **{f"ratio_steady_vs_{e.replace('-', '_')}": ratio[(f"kif-{e}", "steady")] for e in extras},
                  **{f"ratio_e2e_vs_{e.replace('-', '_')}": ratio[(f"kif-{e}", "e2e")] for e in extras})


if __name__ == "__main__":
    main()
