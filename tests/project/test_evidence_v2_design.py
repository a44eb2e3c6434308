"""The pre-registered evidence-v2 design and analysis (docs/results/evidence-v2/PLAN.md):
the committed sweep is what the seeded draw gives, the draw is balanced, and the analysis's
statistics match hand-computed cases."""
from __future__ import annotations

import importlib.util
import math
from collections import Counter
from pathlib import Path

import pytest
import yaml

from helpers import REPO

ROOT = REPO


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_sweep_is_the_seeded_draw_and_balanced():
    draw = _script("draw_sequences")
    for path, text in draw.outputs().items():
        assert path.read_text() == text, path
    sweep = yaml.safe_load((ROOT / "configs/evidence-v2/sweep.yaml").read_text())
    seqs = list(sweep["grid"]["tasks"].values())
    assert len(seqs) == 14 and all(len(set(s)) == 3 for s in seqs)
    assert len({frozenset(s) for s in seqs}) == 14
    assert Counter(t for s in seqs for t in s) == {t: 6 for t in draw.TASKS}
    assert set(Counter((t, i) for s in seqs for i, t in enumerate(s)).values()) == {2}
    assert sweep["grid"]["method"] == draw.METHODS
    ablations = yaml.safe_load((ROOT / "configs/evidence-v2/ablations.yaml").read_text())
    assert ablations["grid"]["tasks"] == sweep["grid"]["tasks"]


def test_holm_wilcoxon_and_interval_by_hand():
    ev = _script("evidence_v2")
    # sorted p: 0.01·3 = 0.03, 0.03·2 = 0.06, then 0.04·1 = 0.04 raised to the running 0.06
    assert ev.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # all three positive: W = 6 of 0..6; only W = 6 or W = 0 are as extreme: 2 of 8 sign patterns
    assert ev.wilcoxon_exact([1.0, 2.0, 3.0]) == pytest.approx(0.25)
    # ties get average ranks: |d| = 1, 1 -> ranks 1.5, 1.5; signs +,- -> W = 1.5 = centre -> p = 1
    assert ev.wilcoxon_exact([1.0, -1.0]) == pytest.approx(1.0)
    c = ev.compare([1.0, 2.0, 3.0], margin=2.0)
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2) · sd 1 / sqrt(3)
    assert (c["mean"], c["sd"]) == (2.0, 1.0)
    assert c["low"] == pytest.approx(2 - half, abs=1e-5) and c["high"] == pytest.approx(2 + half, abs=1e-5)
    assert c["equivalent"] is False  # 90 % interval 2 ± 2.92/sqrt(3) = [0.31, 3.69] reaches past 2


def test_analysis_uses_complete_sequences_only():
    ev = _script("evidence_v2")

    def run(ap):
        return {"AP": ap, "BWT": 0.0, "tasks": ["a", "b"], "matrix": [[ap, None], [ap, ap]], "finished": True}

    runs = {(m, s): run(60.0 + (1.0 if m == "kif" else 0.0) + i) for i, s in enumerate(["s01", "s02", "s03"])
            for m in ev.METHODS}
    del runs[("ewc", "s03")]  # s03 incomplete: left out of every comparison
    result = ev.analyse(runs)
    assert result["sequences"] == ["s01", "s02"]
    kif_vs_ens = result["families"]["primary"][0]
    assert (kif_vs_ens["n"], kif_vs_ens["mean"], kif_vs_ens["sd"]) == (2, 1.0, 0.0)
    # the report's rows: sd, and the 90 % interval with its margin in the primary family only
    table = ev.markdown(result)
    assert "| kif − weight-ensemble | AP | 2 | +1.00 | 0.00 | [+1.00, +1.00] | [+1.00, +1.00] (±2) | 0.000 |" in table
    assert "| kif − weight-ensemble | BWT | 2 | +0.00 | 0.00 | [+0.00, +0.00] | 1.000 |" in table


def test_verdict_labels_interim_and_test_disagreement():
    """The plan's two labels: fewer than 14 complete sequences make every verdict interim, and a
    t p and a Wilcoxon p on different sides of 0.05 are named next to the verdict."""
    ev = _script("evidence_v2")
    sweep = yaml.safe_load((ROOT / "configs" / "evidence-v2" / "sweep.yaml").read_text())
    assert ev.PLANNED_SEQUENCES == len(sweep["grid"]["tasks"]) == 14
    # d = 1..6: t p = 0.006 (< 0.05); Wilcoxon: all positive, 2 of 64 sign patterns -> 0.031 (< 0.05): agree
    c = ev.compare([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], None) | {"p_holm": 0.01}
    assert ev.verdict(c, "kif", "ens", 14) == "kif > ens"
    assert ev.verdict(c, "kif", "ens", 6) == "interim, n = 6 of 14: kif > ens"
    # d = 1, 1.1, 0.9, 1, 1.05: t p < 0.001, but 5 positive signs give Wilcoxon p = 2/32 = 0.0625
    c = ev.compare([1.0, 1.1, 0.9, 1.0, 1.05], None) | {"p_holm": 0.002}
    assert c["p"] < 0.001 and c["wilcoxon_p"] == pytest.approx(0.0625)
    assert ev.verdict(c, "a", "b", 14) == "a > b (t p < 0.05, Wilcoxon p ≥ 0.05)"


def test_report_names_what_it_leaves_out_and_the_design_limit(tmp_path):
    """Left-out sequences and uncomputed comparisons are named; the interim label follows each
    comparison's own n; a primary comparison not resolved at 14 sequences names the plan's MDE
    (PLAN.md: 5.46 points for KIFLoRA − SeqLoRA at α 0.025); one cell found twice is an error."""
    ev = _script("evidence_v2")

    def run(ap):
        return {"AP": ap, "BWT": 0.0, "tasks": ["a", "b"], "matrix": [[ap, None], [ap, ap]], "finished": True}

    runs = {(m, s): run(60.0 + i * (3.0 if m == "kiflora" else 0.5)) for i, s in enumerate(["s01", "s02", "s03"])
            for m in ev.METHODS}
    runs[("seqlora", "s04")] = run(50.0)  # s04 started: only seqlora finished
    for i, s in enumerate(["s01", "s02"]):  # the static arm on 2 of the 3 complete sequences
        runs[("kiflora-static", s)] = run(60.0 + i)
    result = ev.analyse(runs)
    assert result["sequences"] == ["s01", "s02", "s03"]
    assert result["incomplete"] == {"s04": ["kiflora", "kif", "weight-ensemble", "ewc"]}
    table = ev.markdown(result)
    assert "Left out, not complete (missing or unfinished cells): s04 (kiflora, kif, weight-ensemble, ewc)." in table
    static = result["families"]["secondary"][-1]
    assert (static["b"], static["n"]) == ("kiflora-static", 2) and static["verdict"].startswith("interim, n = 2 of 14")
    kiflora_seqlora = result["families"]["primary"][1]  # d = 0, 2.5, 5: not resolved, n = 3
    assert kiflora_seqlora["verdict"] == "interim, n = 3 of 14: not resolved"  # no MDE note before the end
    del runs[("kiflora-static", "s02")]
    assert ev.analyse(runs)["skipped"] == ["kiflora − kiflora-static (AP), 1 sequence(s) with both"]
    assert "Not computed: kiflora − kiflora-static (AP), 1 sequence(s) with both." in ev.markdown(ev.analyse(runs))
    c = ev.compare([0.0, 2.5, 5.0] * 5, 2.0) | {"p_holm": 0.5}  # 15 sequences: the end of the plan
    assert ev.verdict(c, "kiflora", "seqlora", 15) == ("not resolved; at its 14 sequences this design has 80 % power "
                                                       "(α 0.025) only for a true difference of 5.46 points or more")
    assert ev.mde(6.0, 0.025) == pytest.approx(5.46, abs=0.005) and ev.mde(2.0, 0.05) == pytest.approx(1.62, abs=0.005)

    for folder in ("a", "b"):  # the same cell in two folders
        (tmp_path / folder / "kif_s01_seed1").mkdir(parents=True)
        (tmp_path / folder / "kif_s01_seed1" / "results.json").write_text('{"finished": true}')
    (tmp_path / "a" / "kif_s02_seed2").mkdir()  # not the plan's seed: not read
    (tmp_path / "a" / "kif_s02_seed2" / "results.json").write_text('{"finished": true}')
    assert list(ev.load([tmp_path / "a"])) == [("kif", "s01")]
    with pytest.raises(SystemExit, match="the same cell"):
        ev.load([tmp_path / "a", tmp_path / "b"])
