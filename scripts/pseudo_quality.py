"""How good is a run's generative replay? For every ``tasks/<k>/pseudo.jsonl`` the run wrote
(lfpt5, kif-m / kiflora-m with pseudo memory), compare each generated sample with the real
training examples of its task:

- well-formed share: ``pseudo_well_formed / pseudo_generated`` from results.json (what the
  filter of kif.replay.generative let through, of everything the model wrote);
- copies: a generated input equal to a real one (whitespace-normalised);
- near-duplicates: Rouge-L F ≥ ``--near`` (0.8) against the closest real input;
- label agreement: for a copy, whether the generated answer is the real one;
- the fill record of every memory (``pseudo_fill`` in results.json: requested, generated,
  well-formed, distinct, kept, label counts; the refusals by reason and, for ``gen_format:
  conditioned``, how many answers agreed with the label asked);
- re-parsed: every text the run drew (``tasks/<k>/generations.jsonl``, tagged formats) judged again
  by the current parser (``kif.replay.tagged_parse.verdict``), with the answers the run gave: a
  parser change is measured without generating again. A text the run refused but the current
  parser accepts has no answer on record and is counted ``unanswered``, not well-formed. The fields
  every real input of the task has (``kif.replay.tagged_parse.task_fields``: "Text:" for agnews) are
  checked as the run's ``gen_fields`` says, and the texts refused for them after the cut at the
  token limit are counted (``fields_cut``).

    python scripts/pseudo_quality.py runs/lfpt5-quickstart            # a table
    python scripts/pseudo_quality.py runs/lfpt5-quickstart --json     # machine-readable
    python scripts/pseudo_quality.py CONFIG.yaml --generations FILE    # re-parse one committed file
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from kif.configure import load_config, method_options
from kif.metrics import rouge_l
from kif.replay.generative import answer_mark, closed_labels
from kif.replay.pseudo import prompt_template
from kif.replay.tagged_parse import task_fields, verdict
from kif.runner import load_sequence_data


def _norm(s: str) -> str:
    return " ".join(s.split())


def task_of(sample_id: str, tasks: list[str]) -> str | None:
    m = re.match(r"pseudo-(.+)-\d+$", sample_id)
    return m.group(1) if m and m.group(1) in tasks else None


def quality(run: Path, near: float = 0.8) -> dict:
    cfg = load_config(run / "config.yaml")
    data = load_sequence_data(cfg)
    real = {t: {_norm(ex.prompt): ex.references[0] for ex in data.train[t]} for t in data.tasks}
    out: dict = {"tasks": {}}
    for f in sorted(run.glob("tasks/*/pseudo.jsonl")):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            t = task_of(row["id"], data.tasks)
            if t is None:
                continue
            s = out["tasks"].setdefault(t, {"samples": 0, "copies": 0, "copies_same_answer": 0, "near": 0})
            s["samples"] += 1
            prompt = _norm(row["prompt"])
            if prompt in real[t]:
                s["copies"] += 1
                s["copies_same_answer"] += int(_norm(real[t][prompt]) == _norm(row["answer"]))
            best = max((rouge_l(prompt, [r]) for r in real[t]), default=0.0)
            s["near"] += int(best >= 100 * near)  # rouge_l is ×100
    results = json.loads((run / "results.json").read_text())
    gen = wf = 0
    fill: dict = {}
    for k, st in enumerate(results.get("per_task", [])):
        gen += st.get("pseudo_generated", 0)
        wf += st.get("pseudo_well_formed", 0)
        for t, rec in st.get("pseudo_fill", {}).items():  # the generator's record of each memory it wrote
            fill[f"{k + 1}:{t}"] = rec
    out.update({"generated": gen, "well_formed": wf, "well_formed_share": wf / gen if gen else None,
                "near_threshold": near, "fill": fill,
                "reparsed": reparse(run, data, checks_fields(cfg))})
    return out


def checks_fields(cfg) -> bool:
    """The run's ``gen_fields`` (its method's resolved options; a method without it: the default)."""
    return getattr(method_options(cfg), "gen_fields", True)


def reparse(run: Path, data, check_fields: bool = True) -> dict:
    """``tasks/<k>/generations.jsonl``, judged again (``reparse_file``), keyed ``<stage>:<task>``: each
    row's ``task`` (lfpt5 writes the earlier tasks' memories before a task), else the task of the
    folder (kif-m and sapt write the memory of the task just learned)."""
    out: dict = {}
    for f in sorted(run.glob("tasks/*/generations.jsonl")):
        stage, own = f.parent.name.split("_", 1)
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        for task in dict.fromkeys(row.get("task", own) for row in rows):
            mine = [row for row in rows if row.get("task", own) == task]
            out[f"{int(stage)}:{task}"] = reparse_rows(mine, task, data, check_fields)
    return out


def reparse_file(f: Path, task: str, data, check_fields: bool = True) -> dict:
    """One ``generations.jsonl`` of ``task`` judged again (``reparse_rows``)."""
    return reparse_rows([json.loads(line) for line in f.read_text().splitlines()], task, data, check_fields)


def reparse_rows(rows: list, task: str, data, check_fields: bool = True) -> dict:
    """Drawn texts of ``task`` judged again: verdict -> count, the well-formed rate (``ok`` with an
    answer on record; ``unanswered``: accepted now, refused when it was drawn), the ``fields`` every
    real input has (``task_fields``; checked with ``check_fields``, the run's ``gen_fields``) and
    ``fields_cut``: texts refused for them that did not end with the end token (cut at the token
    limit, where a cut at the title's line end leaves the title alone, or at the next example)."""
    prompts = [ex.prompt for ex in data.train[task]]
    prefix, suffix = prompt_template(prompts)
    fields = task_fields(prompts, prefix, suffix) if check_fields else ()
    labels = closed_labels(data.train[task])  # the set the run's generator was given
    closed = sorted(labels) if labels is not None else None
    counts: dict[str, int] = {}
    fields_cut = 0
    for row in rows:
        why = verdict(row["text"], task, prefix, answer_mark(suffix), row["finished"], closed, fields)[1]
        if why == "ok" and row.get("answer") is None:
            why = "no_answer" if row.get("verdict") == "no_answer" else "unanswered"
        counts[why] = counts.get(why, 0) + 1
        fields_cut += why == "fields" and not row["finished"]
    total = sum(counts.values())
    return {"drawn": total, "verdicts": dict(sorted(counts.items())),
            "well_formed_rate": round(counts.get("ok", 0) / total, 4) if total else None,
            "fields": list(fields), "fields_cut": fields_cut}


def shape(r: dict) -> str:
    return (f"fields every real input has: {', '.join(r['fields'])} ({r['fields_cut']} of those refused for them "
            "did not end with the end token)" if r["fields"] else "no field every real input has")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--near", type=float, default=0.8, help="Rouge-L F (0-1) for a near-duplicate")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--generations", type=Path, metavar="FILE",
                    help="re-parse this generations.jsonl only; RUN is then the config of the run that drew it")
    a = ap.parse_args(argv)
    if a.generations is not None:  # a committed generations file, without its run folder
        cfg = load_config(a.run)
        task = cfg.tasks[0] if cfg.tasks and len(cfg.tasks) == 1 else None
        if task is None:
            print(f"{a.run}: --generations needs a one-task config", file=sys.stderr)
            return 2
        r = reparse_file(a.generations, task, load_sequence_data(cfg), checks_fields(cfg))
        print(json.dumps(r) if a.json else f"re-parsed {a.generations}: {r['drawn']} drawn, "
              f"well-formed rate {r['well_formed_rate']}, {r['verdicts']}; {shape(r)}")
        return 0
    q = quality(a.run, a.near)
    if a.json:
        print(json.dumps(q, indent=1))
        return 0
    share = q["well_formed_share"]
    print(f"well-formed: {q['well_formed']}/{q['generated']}" + (f" ({100 * share:.1f} %)" if share is not None else ""))
    print("task        kept  copies (same answer)  near-dup (Rouge-L >= %.2f)" % a.near)
    for t, s in q["tasks"].items():
        print(f"{t:<10} {s['samples']:>5}  {s['copies']:>6} ({s['copies_same_answer']})  {s['near']:>8}")
    if q["fill"]:
        print("fill (before task:task)  requested  generated  well-formed  distinct  kept  labels")
        for key, r in q["fill"].items():
            print(f"{key:<24} {r['requested']:>9}  {r['generated']:>9}  {r['well_formed']:>11}  {r['distinct']:>8}  "
                  f"{r['kept']:>4}  {r['labels']}" + ("  EMPTY" if r["empty"] else ""))
            if "rejected" in r or "agreed" in r:
                print(f"{'':<24} refused: {r.get('rejected', {})}" + (f"  agreed: {r['agreed']}" if "agreed" in r else ""))
    for key, r in q["reparsed"].items():
        print(f"re-parsed {key}: {r['drawn']} drawn, well-formed rate {r['well_formed_rate']}, {r['verdicts']}; "
              f"{shape(r)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
