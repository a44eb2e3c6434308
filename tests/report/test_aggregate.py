"""Statistics over seeds (kif.report.aggregate): hand-computed means, sds, t-intervals, bands."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kif.errors import KifError
from kif.report.aggregate import paired_rows, seed_rows, summary_rows, trajectory_bands
from kif.report.grouping import group_runs, is_default as _is_default, reference_arm
from kif.report.tables import ci as _ci, summary_table
from kif.stats import t_cdf, t_interval, t_quantile

from helpers import REPO

TASKS = ["cb", "copa", "sst2"]


# ---- Student t --------------------------------------------------------------------------------

@pytest.mark.parametrize("df, q", [  # two-sided 95 % critical values (standard tables, 6 decimals)
    (1, 12.706205), (2, 4.302653), (3, 3.182446), (5, 2.570582), (10, 2.228139), (30, 2.042272),
    (120, 1.979930), (10_000, 1.960201)])
def test_t_quantile_matches_the_table(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-6)
    assert t_quantile(0.025, df) == pytest.approx(-q, abs=1e-6)
    assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-7)


def test_t_quantile_closed_forms():
    for p in (0.6, 0.9, 0.995):  # df 1 is Cauchy: tan(π(p − ½)); df 2: (2p − 1)·√(2 / (4p(1 − p)))
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))), rel=1e-10)
    assert t_quantile(0.5, 7) == 0.0


def test_t_interval_by_hand():
    s = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.302653
    assert (s["mean"], s["sd"], s["n"]) == (2.0, 1.0, 3)
    assert s["half"] == pytest.approx(4.302653 / math.sqrt(3), abs=1e-6)
    assert (s["low"], s["high"]) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)), abs=1e-6)
    one = t_interval([5.0])
    assert (one["mean"], one["sd"], one["half"], one["n"]) == (5.0, None, None, 1)


# ---- hand-made runs: 3 methods × 2 orders × 3 seeds --------------------------------------------

SEQ_AP = {"1": [40.0, 42.0, 44.0], "2": [50.0, 50.0, 56.0]}  # per order, seeds 1, 2, 3
KIF_DIFF = {"1": [1.0, 2.0, 3.0], "2": [2.0, 4.0, 6.0]}  # kiflora − seqlora, same order and seed
KIF_SEED_DIFF = {"1": [-1.0, 0.0, 1.0], "2": [0.0, 0.0, 3.0]}  # kif − kiflora


def run(method, order, seed, ap, *, bwt=None, task1=None, finished=True, **extra):
    tasks = TASKS if order == "1" else TASKS[::-1]
    task1 = task1 or [ap, ap - 10, ap - 20]
    matrix = [[t1, 50.0, 50.0] for t1 in task1]
    return {"method": method, "model": "tiny-llama", "benchmark": "long_sequence", "order": order,
            "tasks": tasks, "zero_shot": [5.0, 0.0, 0.0], "matrix": matrix if finished else matrix[:1],
            "tasks_completed": 3 if finished else 1, "AP": ap, "FWT": 10.0 + seed,
            "BWT": -seed if bwt is None else bwt, "seed": seed,
            "run_name": f"{method}-{order}-s{seed}", "run_dir": f"/nonexistent/{method}-{order}-s{seed}", **extra}


def grid_runs():
    out = []
    for order in ("1", "2"):
        for i, seed in enumerate((1, 2, 3)):
            seq = SEQ_AP[order][i]
            kifl = seq + KIF_DIFF[order][i]
            out += [run("seqlora", order, seed, seq), run("kiflora", order, seed, kifl),
                    run("kif", order, seed, kifl + KIF_SEED_DIFF[order][i])]
    return out


def row(rows, arm, order):
    return next(r for r in rows if r["arm"] == arm and r["order"] == order)


def test_mean_sd_per_order_and_over_orders():
    rows = seed_rows(grid_runs())
    s1, s2, m = row(rows, "seqlora", "1"), row(rows, "seqlora", "2"), row(rows, "seqlora", "mean of 2 orders")
    assert s1["AP"] == {"mean": 42.0, "sd": 2.0, "n": 3}
    # order 2: 50, 50, 56 -> mean 52, deviations -2, -2, 4 -> sd √(24 / 2)
    assert s2["AP"]["mean"] == 52.0 and s2["AP"]["sd"] == pytest.approx(math.sqrt(12))
    # mean over orders = (42 + 52) / 2; per-seed order means 45, 46, 50 -> sd √((4 + 1 + 9) / 2)
    assert m["AP"]["mean"] == 47.0 and m["AP"]["sd"] == pytest.approx(math.sqrt(7)) and m["AP"]["n"] == 3
    assert m["kind"] == "mean" and s1["kind"] == "order" and s1["seeds"] == ["1", "2", "3"]
    assert s1["BWT"] == {"mean": -2.0, "sd": 1.0, "n": 3}  # BWT = −seed
    assert s1["FWT"] == {"mean": 12.0, "sd": 1.0, "n": 3}


T1 = 12.706205  # t(0.975, 1): two orders, so one degree of freedom


def _p_df1(t):  # two-sided p of Student t with 1 df (Cauchy): 1 − 2·atan(|t|)/π
    return 1 - 2 * math.atan(abs(t)) / math.pi


def test_paired_against_seqlora_and_kiflora():
    rows = paired_rows(grid_runs())
    pairs = {(r["arm"], r["reference"]) for r in rows}
    # seqlora − kiflora would be the mirror of kiflora − seqlora: left out
    assert pairs == {("kif", "seqlora"), ("kiflora", "seqlora"), ("kif", "kiflora")}
    kl = next(r for r in rows if (r["arm"], r["reference"]) == ("kiflora", "seqlora"))
    # the order is the unit: differences 1, 2, 3 (order 1) and 2, 4, 6 (order 2) -> order means
    # 2 and 4: mean 3, sd √2, n = 2 orders, half t(0.975, 1)·√2/√2
    assert (kl["pairs"], kl["orders"], kl["AP"]["n"], kl["AP"]["pairs"]) == (6, 2, 2, 6)
    assert kl["AP"]["mean"] == pytest.approx(3.0) and kl["AP"]["sd"] == pytest.approx(math.sqrt(2))
    assert kl["AP"]["unit_means"] == {"1": pytest.approx(2.0), "2": pytest.approx(4.0)}
    assert kl["AP"]["half"] == pytest.approx(T1, abs=1e-5)
    assert kl["AP"]["low"] == pytest.approx(3 - T1, abs=1e-5)
    assert kl["BWT"]["mean"] == 0.0 and kl["BWT"]["sd"] == 0.0  # same BWT on every pair
    kk = next(r for r in rows if (r["arm"], r["reference"]) == ("kif", "kiflora"))
    # -1, 0, 1 -> 0 and 0, 0, 3 -> 1: mean 0.5, sd √0.5
    assert kk["AP"]["mean"] == pytest.approx(0.5) and kk["AP"]["sd"] == pytest.approx(math.sqrt(0.5))
    # Holm over the family "vs seqlora on AP": kiflora t = 3/(√2/√2) = 3; kif: order means
    # 0, 2, 4 -> 2 and 2, 4, 9 -> 5: mean 3.5, sd 3/√2, t = 3.5/1.5
    ks = next(r for r in rows if (r["arm"], r["reference"]) == ("kif", "seqlora"))
    p_kl, p_ks = _p_df1(3.0), _p_df1(3.5 / 1.5)
    assert kl["AP"]["p"] == pytest.approx(p_kl, abs=1e-9) and ks["AP"]["p"] == pytest.approx(p_ks, abs=1e-9)
    assert p_kl < p_ks  # the smaller p is doubled, the larger kept (but not below the first)
    assert kl["AP"]["p_holm"] == pytest.approx(2 * p_kl) and ks["AP"]["p_holm"] == pytest.approx(max(p_ks, 2 * p_kl))
    assert kk["AP"]["p_holm"] == pytest.approx(kk["AP"]["p"])  # alone in its family (vs kiflora on AP)


def test_summary_one_row_per_method_best_ap_first():
    runs = grid_runs()
    rows = summary_rows(runs)
    # mean over orders: kif (44 + 57) / 2 = 50.5, kiflora (44 + 56) / 2 = 50, seqlora 47
    assert [r["arm"] for r in rows] == ["kif", "kiflora", "seqlora"]
    kif, kiflora, seq = rows
    assert (kif["orders"], kif["runs"], kif["AP"]["mean"]) == (2, 6, 50.5)
    assert kif["vs"]["kiflora"]["AP"]["mean"] == pytest.approx(0.5)  # -1, 0, 1, 0, 0, 3
    assert kiflora["vs"]["kiflora"] is None and seq["vs"]["seqlora"] is None
    # seqlora − kiflora is the mirror of kiflora − seqlora: mean −3, the interval negated
    half = T1  # order means 2 and 4: sd √2 over 2 orders
    back = seq["vs"]["kiflora"]["AP"]
    assert back["mean"] == pytest.approx(-3.0) and back["unit_means"] == {"1": -2.0, "2": -4.0}
    assert (back["low"], back["high"]) == pytest.approx((-3 - half, -3 + half), abs=1e-5)
    header, body = summary_table(rows)
    assert header[:3] == ["method", "runs (orders)", "AP (mean ± sd)"] and len(header) == 9
    assert body[2][:3] == ["seqlora", "6 (2)", "47.00 ± 2.65"]
    assert body[2][5] == "-" and body[2][7] == f"-3.00 [{-3 - half:+.2f}, {-3 + half:+.2f}]"


def test_summary_reference_arm_and_single_order():
    runs = [r for r in grid_runs() if r["order"] == "1" and r["method"] != "seqlora"]
    rows = summary_rows(runs)
    assert [(r["arm"], r["orders"]) for r in rows] == [("kiflora", 1), ("kif", 1)]  # 44 vs 44, stable
    assert all(r["vs"]["seqlora"] is None for r in rows)  # no seqlora arm: no pairs
    assert rows[1]["vs"]["kiflora"]["AP"]["mean"] == pytest.approx(0.0)  # -1, 0, 1


def test_summary_reference_is_the_default_arm_and_mirrors_without_negative_zero(tmp_path):
    """Two KIFLoRA arms (adaptive = its default, static = an ablation): the adaptive one is the
    reference; seqlora − kiflora is mirrored from kiflora − seqlora, and a zero prints +0.00."""
    from kif.report import load_run

    dirs = []
    for seed in (1, 2):
        for name, method, ap, bwt, fusion in (("seq", "seqlora", 40.0 + seed, -5.0, None),
                                              ("kla", "kiflora", 45.0 + 2 * seed, -5.0, "adaptive"),
                                              ("kls", "kiflora", 50.0, -5.0, "static")):
            cfg = f"method: {method}\nseed: {seed}\n" + (f"method_args: {{fusion: {fusion}}}\n" if fusion else "")
            dirs.append(write_run(tmp_path, f"{name}-{seed}", run(method, "1", seed, ap, bwt=bwt), cfg))
    runs = [load_run(d) for d in dirs]
    g = group_runs(runs)
    assert g.labels[reference_arm(g, "kiflora")] == "kiflora [method_args.fusion=adaptive]"
    rows = {r["arm"]: r for r in summary_rows(runs)}
    static = rows["kiflora [method_args.fusion=static]"]
    assert static["vs"]["kiflora"]["AP"]["mean"] == pytest.approx(2.0)  # 50 − 47, 50 − 49
    assert rows["kiflora [method_args.fusion=adaptive]"]["vs"]["kiflora"] is None
    seq = rows["seqlora"]
    assert seq["vs"]["kiflora"]["AP"]["mean"] == pytest.approx(-6.5)  # 41 − 47, 42 − 49
    assert _ci(seq["vs"]["kiflora"]["BWT"]) == "+0.00"  # the mirror of 0.0, not -0.00
    # one order is one unit, whatever its seeds: a mean, no interval
    assert seq["vs"]["kiflora"]["AP"]["n"] == 1 and seq["vs"]["kiflora"]["AP"]["half"] is None
    # kif-m's replay_epochs default is the int 1; config.yaml holds 1.0: still the default
    assert _is_default("kif-m", {"replay_epochs": 1.0}) and not _is_default("kif-m", {"replay_epochs": 2.0})
    assert not _is_default("kif-m", {"replay_epochs": -1}) and not _is_default("no-such-method", {"x": 1})
    # no default among the arms (two learning rates): no reference
    lr = [write_run(tmp_path / "lr", f"s{lr}-{seed}", run("seqlora", "1", seed, 40.0),
                    f"method: seqlora\nseed: {seed}\ntrain: {{learning_rate: {lr}}}\n") for lr in (1, 2) for seed in (1, 2)]
    assert reference_arm(group_runs([load_run(d) for d in lr]), "seqlora") is None


def test_summary_of_an_arm_without_a_seed_on_every_order():
    runs = [run("seqlora", "1", 1, 40.0), run("seqlora", "1", 2, 42.0), run("seqlora", "2", 3, 50.0)]
    (row,) = summary_rows(runs)
    assert (row["runs"], row["orders"]) == (3, 2)
    assert row["AP"]["mean"] == 45.5 and row["AP"]["sd"] is None  # (41 + 50) / 2; no seed on both orders


def test_pairs_only_where_both_finished_and_seeds_match():
    runs = [r for r in grid_runs() if not (r["method"] == "kiflora" and r["seed"] == 3)]
    runs.append(run("kiflora", "1", 3, 99.0, finished=False))  # unfinished: not a pair
    runs.append(run("kiflora", "1", 7, 99.0))  # no seqlora with seed 7
    kl = next(r for r in paired_rows(runs) if (r["arm"], r["reference"]) == ("kiflora", "seqlora"))
    # order 1: 1, 2 -> 1.5; order 2: 2, 4 -> 3
    assert (kl["pairs"], kl["AP"]["n"]) == (4, 2) and kl["AP"]["mean"] == pytest.approx((1.5 + 3) / 2)
    g = group_runs(runs)
    assert ("kiflora-1-s3", "unfinished") in g.skipped


def test_unbalanced_seeds_mean_over_orders():
    runs = [r for r in grid_runs() if r["method"] == "seqlora" and not (r["order"] == "2" and r["seed"] == 3)]
    m = row(seed_rows(runs), "seqlora", "mean of 2 orders")
    assert m["AP"]["mean"] == pytest.approx((42 + 50) / 2)  # order 2 has seeds 1, 2 only: mean 50
    assert m["seeds"] == ["1", "2"] and m["AP"]["n"] == 2  # sd over the seeds run on both orders: 45, 46
    assert m["AP"]["sd"] == pytest.approx(math.sqrt(0.5))


def test_missing_metric_and_one_seed():
    runs = [run("mtl", "1", 1, 70.0, FWT=None, BWT=None, joint=True),
            run("mtl", "1", 2, 74.0, FWT=None, BWT=None, joint=True)]
    r = row(seed_rows(runs), "mtl", "1")
    assert r["AP"]["mean"] == 72.0 and r["FWT"] == {"mean": None, "sd": None, "n": 0}
    assert not group_runs(runs[:1]).has_seeds() and group_runs(runs).has_seeds()


def test_duplicate_seed_is_kept_once():
    runs = [run("seqlora", "1", 1, 40.0), run("seqlora", "1", 1, 60.0, run_name="copy"), run("seqlora", "1", 2, 42.0)]
    r = row(seed_rows(runs), "seqlora", "1")
    assert r["AP"]["mean"] == 41.0 and r["AP"]["n"] == 2
    assert group_runs(runs).skipped[0][0] == "copy"


def test_task1_band_over_seeds():
    runs = [run("seqlora", "1", 1, 0, task1=[80.0, 60.0, 30.0]), run("seqlora", "1", 2, 0, task1=[90.0, 50.0, 20.0]),
            run("seqlora", "1", 3, 0, task1=[70.0, 70.0, None])]  # eval.mode minimal leaves gaps
    b = trajectory_bands(runs)[tuple(TASKS)]["seqlora"]
    assert b["x"] == [0, 1, 2, 3]
    assert b["mean"] == [5.0, 80.0, 60.0, 25.0] and b["n"] == [3, 3, 3, 2]
    assert b["min"] == [5.0, 70.0, 50.0, 20.0] and b["max"] == [5.0, 90.0, 70.0, 30.0]


# ---- from run directories: seed and variants from config.yaml; the report section -------------

def write_run(root: Path, name: str, res: dict, config: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    res = {k: v for k, v in res.items() if k not in ("seed", "run_name", "run_dir")}
    (d / "results.json").write_text(json.dumps(res))
    (d / "config.yaml").write_text(config)
    return d


def test_variants_and_seed_from_config(tmp_path):
    from kif.report import load_run

    dirs = [write_run(tmp_path, f"s{lr}-{seed}", run("seqlora", "1", seed, 40.0 + seed + (10 if lr == 2 else 0)),
                      f"method: seqlora\nseed: {seed}\ntrain: {{learning_rate: {lr}, epochs: 3}}\n")
            for lr in (1, 2) for seed in (1, 2)]
    rows = seed_rows([load_run(d) for d in dirs])
    assert [r["arm"] for r in rows] == ["seqlora [train.learning_rate=1]", "seqlora [train.learning_rate=2]"]
    assert rows[0]["seeds"] == ["1", "2"] and rows[0]["AP"]["mean"] == 41.5 and rows[1]["AP"]["mean"] == 51.5


def test_report_section(tmp_path):
    pytest.importorskip("matplotlib")
    from kif.report import build_report

    root = tmp_path / "sweep"
    for r in grid_runs():
        if r["method"] != "kif":  # 12 runs are enough here (each gets its own figures)
            write_run(root, r["run_name"], r, f"method: {r['method']}\nseed: {r['seed']}\n")
    build_report([root], tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Over seeds" in md and "### Paired differences" in md and "### Summary" in md
    assert "| seqlora | 6 (2) | 47.00 ± 2.65 |" in md  # the summary row (not bold)
    assert "| **seqlora** | **mean of 2 orders** | **3** | **47.00 ± 2.65** |" in md  # √7 = 2.6458
    # the order as the unit: 2 orders (6 pairs), order means 2 and 4; alone in its Holm family
    assert f"| kiflora | seqlora | 2 (6) | +3.00 [{3 - T1:+.2f}, {3 + T1:+.2f}] | {_p_df1(3.0):.3f} |" in md
    assert "the task order (sequence) as the unit" in md
    agg = json.loads((tmp_path / "rep" / "aggregate.json").read_text())
    assert agg["figures"] == ["seeds_trajectory_1.png", "seeds_trajectory_2.png"]
    assert [r["arm"] for r in agg["summary"]] == ["kiflora", "seqlora"]
    assert all((tmp_path / "rep" / f).read_bytes()[:4] == b"\x89PNG" for f in agg["figures"])
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Over seeds" in html and "47.00 ± 2.65" in html
    # one seed per order: no section, and a stale aggregate.json / figure goes
    single = tmp_path / "single"
    for r in grid_runs()[:3]:
        write_run(single, r["run_name"], r, f"seed: {r['seed']}\n")
    build_report([single], tmp_path / "rep")
    assert "Over seeds" not in (tmp_path / "rep" / "report.md").read_text()
    assert not (tmp_path / "rep" / "aggregate.json").exists()
    assert not list((tmp_path / "rep").glob("seeds_trajectory_*.png"))


def test_paper_claims_script(tmp_path):
    """scripts/paper_claims.py: paired differences per claim, the fusion arms told apart by
    config, verdicts from the interval."""
    import importlib.util

    from kif.report import load_run

    spec = importlib.util.spec_from_file_location("pc", REPO / "scripts" / "paper_claims.py")
    pc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pc)
    dirs = []
    for order in ("1", "2"):
        for seed in (1, 2):
            base = 40.0 + seed + (5 if order == "2" else 0)
            for name, method, ap, bwt, fusion in (("seq", "seqlora", base, -20.0, None),
                                                  ("kl", "kiflora", base + 3 + seed, -1.0 * seed, "adaptive"),
                                                  ("kls", "kiflora", base + 3 + seed, 0.0, "static"),
                                                  ("kif", "kif", base - seed, -2.0, "static")):
                cfg = f"method: {method}\nseed: {seed}\n" + (f"method_args: {{fusion: {fusion}}}\n" if fusion else "")
                dirs.append(write_run(tmp_path, f"{name}-{order}-{seed}", run(method, order, seed, ap, bwt=bwt), cfg))
    rows = {r["claim"]: r for r in pc.claims([load_run(d) for d in dirs])}
    # kiflora − kif per pair: 3 + 2·seed = 5, 7 on each order -> order means 6, 6: sd 0
    k = rows["kiflora fusion=adaptive ≥ kif fusion=static on AP"]
    assert (k["orders"], k["pairs"], k["diff"]["n"]) == (2, 4, 2) and k["diff"]["mean"] == pytest.approx(6.0)
    assert k["diff"]["half"] == 0.0 and k["verdict"] == "holds" and k["holm"] == "holds"
    # the seqlora BWT gain: kiflora −seed vs −20 -> 19, 18 per order: means 18.5, 18.5
    assert rows["kiflora fusion=adaptive > seqlora on BWT"]["diff"]["unit_means"] == {"1": 18.5, "2": 18.5}
    static = rows["kiflora fusion=adaptive > kiflora fusion=static on AP"]
    assert static["diff"]["mean"] == 0.0 and static["verdict"] == "not resolved"  # the same AP
    assert rows["kif fusion=static > olora on AP"]["verdict"] == "no runs"
    bwt = rows["kiflora fusion=adaptive BWT near 0 (value, not a difference)"]  # −1, −2, −1, −2
    assert bwt["diff"]["mean"] == -1.5 and bwt["verdict"] == "excludes 0"
    assert pc._verdict({"half": 1.0, "low": -2.0, "high": -0.5}) == "reversed"
    assert pc._verdict({"half": 1.0, "low": -0.5, "high": 1.5}) == "not resolved"
    assert pc._verdict({"half": None, "low": None, "high": None}) == "one order: no interval"
    text = pc.table(list(rows.values()))
    assert "| kiflora fusion=adaptive ≥ kif fusion=static on AP | 2 (4) | +6.00 [+6.00, +6.00] | 0.000 | holds |" in text
    # Holm over the family of differences: the static-fusion claim (same AP, p = 1) stays 1
    assert "| kiflora fusion=adaptive > kiflora fusion=static on AP | 2 (4) | +0.00 [+0.00, +0.00] | 1.000 | " \
           "not resolved | 1.000 | not resolved |" in text
    # only the static ablation ran: it is found by its setting, and is never taken for KIFLoRA
    static_only = [load_run(d) for d in dirs if d.name.startswith(("kls", "seq"))]
    rows = {r["claim"]: r for r in pc.claims(static_only)}
    assert rows["kiflora fusion=adaptive > kiflora fusion=static on AP"]["verdict"] == "no runs"
    assert rows["kiflora fusion=adaptive > seqlora on BWT"]["verdict"] == "no runs"
    # both arms there, but on no common (order, seed): no pairs
    apart = [load_run(d) for d in dirs if d.name.startswith(("kl-1", "kls-2"))]
    assert {r["claim"]: r for r in pc.claims(apart)}[
        "kiflora fusion=adaptive > kiflora fusion=static on AP"]["verdict"] == "no pairs"
    other_model = {**load_run(dirs[0]), "model": "other"}
    with pytest.raises(KifError, match="several benchmarks or models"):
        pc.claims([load_run(dirs[1]), other_model])


def test_one_order_has_no_interval_and_the_report_says_why(tmp_path):
    """Three seeds on one order: the paired difference is one unit, a mean without an interval;
    the report says so instead of showing a seed-only interval."""
    pytest.importorskip("matplotlib")
    from kif.report.aggregate import add_seed_section
    from kif.report.build import _Doc

    runs = [r for r in grid_runs() if r["order"] == "1" and r["method"] != "kif"]
    kl = next(r for r in paired_rows(runs) if (r["arm"], r["reference"]) == ("kiflora", "seqlora"))
    assert (kl["orders"], kl["pairs"], kl["AP"]["mean"], kl["AP"]["half"], kl["AP"]["p"]) == (1, 3, 2.0, None, None)
    doc = _Doc()
    add_seed_section(doc, runs, tmp_path)
    md = doc.markdown()
    assert "| kiflora | seqlora | 1 (3) | +2.00 | - |" in md
    assert "A comparison on one task order has no interval" in md
