"""scripts/replay_evidence.py (the replay-evidence tables of issue 28) and scripts/adapter_diff.py,
on hand-made cells and tensors."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch

from helpers import REPO


def _script():
    spec = importlib.util.spec_from_file_location("replay_evidence", REPO / "scripts" / "replay_evidence.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cell(root, name, ap, bwt, fills=None, finished=True):
    tasks = ["sst2", "dbpedia", "agnews"]
    per_task = [{"task": t} for t in tasks]
    for k, fill in (fills or {}).items():  # k -> {task: (kept, requested)}
        per_task[k]["pseudo_fill"] = {t: {"kept": a, "requested": b} for t, (a, b) in fill.items()}
    (root / name).mkdir()
    (root / name / "results.json").write_text(json.dumps(
        {"tasks": tasks, "AP": ap, "BWT": bwt, "per_task": per_task, "finished": finished}))


def test_pairs_per_order_with_the_order_as_the_unit(tmp_path):
    ev = _script()
    after_each = {0: {"sst2": (2, 2)}, 1: {"dbpedia": (1, 2)}, 2: {"agnews": (2, 2)}}  # kiflora-m: its own task
    for o, (ap, bwt) in {"o1": (61.0, -1.0), "o2": (62.0, -1.0), "o3": (63.0, -4.0)}.items():
        _cell(tmp_path, f"kiflora-m_{o}_seed1", ap, bwt, after_each)
        _cell(tmp_path, f"kiflora_{o}_seed1", 60.0, 0.0)
    # lfpt5 writes earlier tasks' samples before each task; only o1 has both arms finished
    _cell(tmp_path, "lfpt5_o1_seed1", 50.0, -2.0, {1: {"sst2": (2, 2)}, 2: {"sst2": (2, 2), "dbpedia": (0, 2)}})
    _cell(tmp_path, "lfpt5-noreplay_o1_seed1", 52.0, -5.0)
    _cell(tmp_path, "lfpt5-noreplay_o2_seed1", 99.0, 9.0)  # its replay arm is missing
    _cell(tmp_path, "lfpt5_o2_seed1", 1.0, -9.0, finished=False)  # a partial cell does not count

    result = ev.analyse(ev.load([tmp_path]))
    rows = {(r["pair"][0], r["order"]): r for r in result["rows"]}
    assert set(rows) == {("kiflora-m", "o1"), ("kiflora-m", "o2"), ("kiflora-m", "o3"), ("lfpt5", "o1")}
    assert rows[("kiflora-m", "o3")]["AP"] == (63.0, 60.0, 3.0)
    # the memory written after the last task is never replayed; lfpt5's entries are all replayed
    assert rows[("kiflora-m", "o1")]["memory"] == "sst2 2/2; dbpedia 1/2; agnews 2/2 (not replayed)"
    assert rows[("lfpt5", "o1")]["memory"] == "before dbpedia: sst2 2/2; before agnews: sst2 2/2, dbpedia 0/2"

    c = {(x["a"], x["metric"]): x for x in result["comparisons"]}
    ap = c[("kiflora-m", "AP")]  # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653
    assert (ap["mean"], ap["sd"], ap["orders"]) == (2.0, 1.0, ["o1", "o2", "o3"])
    assert ap["low"] == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    bwt = c[("kiflora-m", "BWT")]  # -1, -1, -4: mean -2, sd sqrt(3)
    assert bwt["mean"] == pytest.approx(-2.0) and bwt["sd"] == pytest.approx(math.sqrt(3))
    assert c[("lfpt5", "AP")]["mean"] == -2.0 and c[("lfpt5", "AP")]["half"] is None
    # Holm over the planned 6 (3 pairs x 2 metrics), those without a p counted as p = 1. With 2 df the
    # two-sided p of t is 1 - t / sqrt(t^2 + 2): AP t = 2 sqrt 3 -> 1 - sqrt(12/14) = 0.07418, x 6;
    # BWT t = -2 -> 1 - 2 / sqrt 6 = 0.18350, x 5 = 0.9175
    assert ap["p_holm"] == pytest.approx(6 * (1 - math.sqrt(12 / 14)), abs=1e-6)
    assert bwt["p_holm"] == pytest.approx(5 * (1 - 2 / math.sqrt(6)), abs=1e-6)
    assert c[("lfpt5", "AP")]["p_holm"] is None
    assert c[("sapt", "AP")]["n"] == 0

    table = ev.markdown(result)
    assert "| kiflora-m | kiflora | o3 | 63.00 | 60.00 | +3.00 | -4.00 | 0.00 | -4.00 |" in table
    assert "| replay | lfpt5 − lfpt5-noreplay | AP | 1 (interim, 1 of 3) | -2.00 | - |" in table
    # p of the AP difference: t = 2 / (1 / sqrt 3) = 3.464 with 2 df -> 0.074; "not resolved" either way
    assert "| replay | kiflora-m − kiflora | AP | 3 | +2.00 | [-0.48, +4.48] | 0.074 |" in table
    assert table.count("not resolved") == 4  # kiflora-m AP and BWT: interval and Holm each
    assert "| extra |" not in table  # no mixed.yaml folder given: no extra family

    # the extra arm (mixed.yaml), from a second folder: its own family, the three pairs' Holm unchanged
    (tmp_path / "mixed").mkdir()
    for o, ap in {"o1": 60.0, "o2": 61.0}.items():
        _cell(tmp_path / "mixed", f"kiflora-m-mixed_{o}_seed1", ap, 0.0)
    both = ev.analyse(ev.load([tmp_path, tmp_path / "mixed"]))
    extra = {(x["b"], x["metric"]): x for x in both["comparisons"] if x["family"] == "extra"}
    assert extra[("kiflora", "AP")]["mean"] == 0.5 and extra[("kiflora-m", "AP")]["mean"] == -1.0  # 0, 1; -1, -1
    replay_p = [x["p_holm"] for x in both["comparisons"] if x["family"] == "replay"]
    assert replay_p == [x["p_holm"] for x in result["comparisons"]]
    with pytest.raises(SystemExit, match="found twice"):
        ev.load([tmp_path, tmp_path])


def test_before_replay_table_by_hand(tmp_path):
    ev = _script()

    def preds(path, rows):  # rows: (prediction, score)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"id": str(i), "prediction": p, "score": sc}) + "\n"
                                for i, (p, sc) in enumerate(rows)))

    stage = tmp_path / "kiflora-m_o1_seed1" / "tasks" / "02_dbpedia"
    preds(stage / "adapter_fused" / "sst2.jsonl", [("Good", 100.0), ("Bad", 100.0), ("Bad", 0.0), ("Good", 100.0)])
    preds(stage / "adapter" / "sst2.jsonl", [("Bad", 0.0), ("Bad", 100.0), ("Bad", 0.0), ("Bad", 0.0)])
    table = ev.before_replay(tmp_path)
    assert "| kiflora-m_o1_seed1 | 02_dbpedia | sst2 | 75.0 | 25.0 | -50.0 | Bad (4 of 4) |" in table
    assert "1 scores: 1 fell, 0 did not; mean change -50.0 points." in table
    preds(stage / "adapter" / "sst2.jsonl", [("Bad", 0.0)])  # not the same examples: refused
    with pytest.raises(SystemExit, match="score different examples"):
        ev.before_replay(tmp_path)


def test_adapter_diff_by_hand(tmp_path):
    import torch
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("adapter_diff", REPO / "scripts" / "adapter_diff.py")
    ad = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ad)
    before = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([0.5]), "only_before": torch.ones(2)}
    after = {"a": torch.tensor([1.25, 2.0, 2.75]), "b": torch.tensor([0.5])}  # two entries moved by 0.25
    d = ad.diff(before, after)
    assert (d["tensors"], d["entries"], d["unchanged"]) == (2, 4, 2)
    assert set(d["moved_abs_quantiles"].values()) == {0.25}
    assert d["mean_abs_before"] == pytest.approx((1 + 2 + 3 + 0.5) / 4)
    for name, tensors in (("x", before), ("y", after)):
        (tmp_path / name).mkdir()
        save_file(tensors, str(tmp_path / name / ad.WEIGHTS))
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "adapter_diff.py"), str(tmp_path / "x"),
                          str(tmp_path / "y")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and json.loads(out.stdout)["unchanged"] == 2
    missing = subprocess.run([sys.executable, str(REPO / "scripts" / "adapter_diff.py"), str(tmp_path / "x"),
                              str(tmp_path / "nothing")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip().endswith("no adapter_model.safetensors")


def test_committed_before_replay_table_is_the_commands_output():
    """docs/results/replay-evidence/README.md's table of the replay stage's effect is what
    `replay_evidence.py --before-replay` prints over the committed predictions."""
    ev = _script()
    folder = REPO / "docs" / "results" / "replay-evidence"
    table = ev.before_replay(folder / "before-replay")
    assert table.strip() in (folder / "README.md").read_text()


def test_prompt_scale_on_hand_made_prompts(tmp_path):
    """scripts/prompt_scale.py: std, mean row norm and largest |entry| of each saved prompt; a run
    without prompts is refused with exit 2."""
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("prompt_scale", REPO / "scripts" / "prompt_scale.py")
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)
    prompt = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # rows of norm 5 and 0; entries mean 1.75
    std = math.sqrt(((3 - 1.75) ** 2 + (4 - 1.75) ** 2 + 2 * 1.75 ** 2) / 3)  # unbiased, as torch
    assert ps.scale(prompt) == {"std": round(std, 4), "row_norm": 2.5, "max_abs": 4.0}
    run = tmp_path / "run"
    (run / "tasks" / "01_sst2" / "adapter").mkdir(parents=True)
    save_file({"prompt": prompt}, str(run / "tasks" / "01_sst2" / "adapter" / "prompts.safetensors"))
    (run / "config.yaml").write_text("model: tiny-llama\ntrain: {learning_rate: 0.03}\n")
    assert ps.run_scale(run) == {"model": "tiny-llama", "learning_rate": 0.03,
                                 "tasks": {"01_sst2": {"prompt": ps.scale(prompt)}}}
    (tmp_path / "lora").mkdir()
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "prompt_scale.py"), str(tmp_path / "lora")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not a prompt method's run" in out.stderr
