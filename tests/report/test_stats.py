"""kif.stats: the task sequence as the unit of a paired comparison, Holm's adjustment, and the
words an interval allows; hand-computed numbers."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

from kif.stats import holm, holm_word, interval_word, mean_over_units, mirror, sequence_paired, t_interval, t_pvalue

T2, T5 = 4.302653, 2.570582  # t(0.975, 2), t(0.975, 5)


def test_correlated_seeds_the_sequence_is_the_unit_not_the_pair():
    """Two seeds per sequence that move together: the naive analysis (6 pairs as independent)
    excludes 0, the sequence as the unit (3 sequence means) does not."""
    by_seq = {"o1": [11.0, 13.0], "o2": [3.0, 5.0], "o3": [1.0, 3.0]}
    naive = t_interval([d for ds in by_seq.values() for d in ds])
    # 11, 13, 3, 5, 1, 3: mean 6, deviations 5, 7, −3, −1, −5, −3 -> Σ² 118, sd √(118/5), df 5
    assert naive["mean"] == 6.0 and naive["sd"] == pytest.approx(math.sqrt(118 / 5))
    assert naive["half"] == pytest.approx(T5 * math.sqrt(118 / 5) / math.sqrt(6), abs=1e-5)  # 5.098
    assert naive["low"] > 0  # "holds" if the pairs were independent
    nested = sequence_paired(by_seq)
    # sequence means 12, 4, 2: mean 6, deviations 6, −2, −4 -> Σ² 56, sd √28, df 2
    assert nested["unit_means"] == {"o1": 12.0, "o2": 4.0, "o3": 2.0}
    assert (nested["mean"], nested["n"], nested["pairs"]) == (6.0, 3, 6)
    assert nested["sd"] == pytest.approx(math.sqrt(28))
    assert nested["half"] == pytest.approx(T2 * math.sqrt(28) / math.sqrt(3), abs=1e-5)  # 13.145
    assert nested["low"] == pytest.approx(6 - 13.1453, abs=1e-3) and nested["low"] < 0 < nested["high"]
    assert interval_word(naive) == "A > B" and interval_word(nested) == "not resolved"
    # the same test's p: t = 6/(√28/√3) = 1.9640 with 2 df; P(T ≤ t) = ½ + t/(2√(2 + t²))
    t = 6 / (math.sqrt(28) / math.sqrt(3))
    assert nested["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-9)
    assert nested["p"] > 0.05 > naive["p"]


def test_the_issue_31_grid_numbers():
    """KIFLoRA − SeqLoRA BWT of the CPU evidence grid (orders 1-3, seeds 1-2): +12.7 [−12.7, +38.1]
    with the order as the unit, +12.7 [+3.0, +22.5] with 6 independent pairs."""
    by_order = {"1": [23.75, 24.75], "2": [8.75, 9.5], "3": [2.25, 7.25]}
    s = sequence_paired(by_order)
    assert (round(s["mean"], 1), round(s["low"], 1), round(s["high"], 1)) == (12.7, -12.7, 38.1)
    n = t_interval([d for ds in by_order.values() for d in ds])
    assert (round(n["low"], 2), round(n["high"], 2)) == (2.95, 22.46)


def test_one_seed_per_sequence_is_the_plain_paired_t():
    s, plain = sequence_paired({"a": [1.0], "b": [2.0], "c": [3.0]}), t_interval([1.0, 2.0, 3.0])
    assert {k: s[k] for k in plain} == plain and s["pairs"] == 3
    assert s["half"] == pytest.approx(T2 / math.sqrt(3), abs=1e-6)  # sd 1


def test_each_sequence_weighs_the_same_and_empty_ones_are_left_out():
    s = sequence_paired({"a": [0.0, 2.0, 4.0], "b": [5.0], "c": []})
    assert s["unit_means"] == {"a": 2.0, "b": 5.0} and s["mean"] == 3.5 and s["pairs"] == 4
    one = sequence_paired({"a": [1.0, 3.0]})  # one sequence: one unit, no interval
    assert (one["mean"], one["n"], one["half"], one["p"]) == (2.0, 1, None, None)
    assert interval_word(one) == "one unit: no interval"


def test_mean_over_units_by_hand():
    # orders 1: 40, 42, 44 (mean 42) and 2: 50, 50, 56 (mean 52) -> 47; per seed 45, 46, 50 -> sd √7
    m = mean_over_units({"1": {1: 40.0, 2: 42.0, 3: 44.0}, "2": {1: 50.0, 2: 50.0, 3: 56.0}})
    assert m["mean"] == 47.0 and m["sd"] == pytest.approx(math.sqrt(7)) and m["n"] == 3
    # seed 1 on both orders only: unit means 41 and 53, one replicate in common -> no sd
    assert mean_over_units({"1": {1: 40.0, 2: 42.0}, "2": {1: 50.0, 3: 56.0}}) == {"mean": 47.0, "sd": None, "n": 1}
    # a None leaves its seed out of its order's mean and out of the spread
    assert mean_over_units({"1": {1: None, 2: 42.0}, "2": {1: 50.0, 2: 50.0}}) == {"mean": 46.0, "sd": None, "n": 1}
    assert mean_over_units({"1": {1: None}, "2": {1: 50.0}})["mean"] is None  # an order without a value


def test_mirror_negates_the_interval_without_negative_zero():
    back = mirror({"mean": 3.0, "low": -1.0, "high": 7.0, "half": 4.0, "n": 2, "unit_means": {"a": 0.0, "b": 6.0}})
    assert (back["mean"], back["low"], back["high"], back["half"], back["n"]) == (-3.0, -7.0, 1.0, 4.0, 2)
    assert back["unit_means"] == {"a": 0.0, "b": -6.0} and math.copysign(1.0, back["unit_means"]["a"]) == 1.0
    assert mirror({"mean": None, "half": None})["low"] is None


def test_t_pvalue_closed_forms():
    assert t_pvalue(2.0, 1.0, 2) == pytest.approx(1 - 2 * math.atan(2 * math.sqrt(2)) / math.pi)  # df 1
    assert t_pvalue(2.0, math.sqrt(3), 3) == pytest.approx(1 - 2 / math.sqrt(6))  # t = 2, df 2
    assert t_pvalue(-2.0, math.sqrt(3), 3) == t_pvalue(2.0, math.sqrt(3), 3)
    assert t_pvalue(0.0, 0.0, 3) == 1.0 and t_pvalue(1.0, 0.0, 3) == 0.0 and t_pvalue(1.0, 1.0, 1) is None
    # at the interval's edge, p = 0.05
    assert t_pvalue(T2 / math.sqrt(3), 1.0, 3) == pytest.approx(0.05, abs=1e-6)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 (m = 3): 3·0.01, max(0.03, 2·0.03), max(0.06, 1·0.04)
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.5, 0.6]) == [1.0, 1.0] and holm([]) == [] and holm([None]) == [None]
    assert holm([0.02]) == [0.02]  # a family of one is not adjusted
    assert holm_word(0.03, 2.0) == "A > B" and holm_word(0.03, -2.0) == "A < B"
    assert holm_word(0.06, 2.0) == "not resolved" and holm_word(None, 1.0) == "-"


def test_importing_kif_stats_does_not_import_torch():
    code = "import sys, kif.stats; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
