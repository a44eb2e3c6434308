"""How the generation targets of a config's tasks end: how many of each task's training inputs are
cut to fit ``data.max_target_length`` (``kif.replay.generative.generation_target``, tagged format:
at a token count, so mostly mid-sentence), and how many would still end mid-sentence if cut at their
last sentence or line end (``sentence_head``; none fits) — the shares quoted in ``docs/method.md``
and ``docs/results/generative_replay/`` (fourth measurement).

    python scripts/generation_targets.py docs/results/generative_replay/full_agnews.config.yaml \
        --set "tasks=[sst2,imdb,yelp,amazon,dbpedia,agnews,yahoo]"

prints one Markdown row per task: examples, cut, mid-sentence even at a sentence end. Reads the tokenizer and the
training data only (no model weights are used).
"""
from __future__ import annotations

import argparse
import sys

from kif.configure import load_config


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.set)

    from kif.models import load_model
    from kif.replay.generative import body_of, generation_target
    from kif.replay.pseudo import prompt_template
    from kif.replay.tagged_parse import sentence_head
    from kif.runner import load_sequence_data, run_encoder

    data = load_sequence_data(cfg)
    lm = load_model(cfg.model, cfg.data.prompt_format, cfg.attn_implementation, cfg.hub_kernels)
    enc = run_encoder(cfg, lm)
    tok = lm.tokenizer
    print(f"max_target_length {cfg.data.max_target_length}\n\n| task | examples | cut | mid-sentence even at a sentence end |\n|---|---|---|---|")
    for task in data.tasks:
        examples = data.train[task]
        template = prompt_template([ex.prompt for ex in examples])
        budget = cfg.data.max_target_length - 2 - len(tok(f"[{task}] ", add_special_tokens=False)["input_ids"])
        cut = mid = 0
        for ex in examples:
            target = generation_target(ex, *template, enc, fmt="tagged", task=task)
            if target == generation_target(ex, *template, None, fmt="tagged", task=task):
                continue
            cut += 1
            ids = tok(body_of(ex.prompt, *template), add_special_tokens=False)["input_ids"]
            token_cut = tok.decode(ids[:max(budget, 1)], skip_special_tokens=True)
            mid += sentence_head(token_cut) == token_cut.strip()  # no sentence or line end fits
        n = len(examples)
        print(f"| {task} | {n} | {cut} ({100 * cut / n:.1f} %) | {mid} ({100 * mid / n:.1f} %) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
