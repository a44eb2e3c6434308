"""configs/replay-evidence/sweep.yaml (issue 28): 6 arms (kiflora-m pseudo / kiflora, lfpt5 with and
without replay, sapt with and without) x the evidence grid's 3 orders, seed 1 = 18 cells, all valid;
and the sweep feature it needs: ``methods`` keyed by a method label of the grid."""
from __future__ import annotations

import pytest

from kif.errors import ConfigError
from kif.sweep import load_sweep

from helpers import REPO


ORDERS = {"o1": ["sst2", "dbpedia", "agnews"], "o2": ["dbpedia", "agnews", "sst2"], "o3": ["agnews", "sst2", "dbpedia"]}


def test_replay_evidence_sweep_has_18_valid_cells(tmp_path):
    sweep = load_sweep(REPO / "configs/replay-evidence/sweep.yaml", tmp_path)
    cells = {c.name: c.config for c in sweep.cells}
    arms = ["kiflora-m", "kiflora", "lfpt5", "lfpt5-noreplay", "sapt", "sapt-noreplay"]
    assert list(cells) == [f"{a}_{o}_seed1" for a in arms for o in ORDERS]
    for name, cfg in cells.items():
        arm, order, _ = name.rsplit("_", 2)
        assert cfg.tasks == ORDERS[order] and cfg.seed == 1 and cfg.model == "smollm2-135m"
        assert (cfg.data.train_samples, cfg.train.epochs, cfg.data.test_samples) == (96, 2, 200)  # quickstart
        assert cfg.data.max_target_length == 64  # a generation target holds an input
        assert cfg.method == {"kiflora-m": "kiflora-m", "kiflora": "kiflora"}.get(arm, arm.split("-")[0])
        # what each arm sets (the rest is the method's default: memory 2 %, gen_format tagged)
        assert cfg.method_args == {"kiflora-m": {"memory_source": "pseudo"},
                                   "lfpt5-noreplay": {"memory_per_task": 0, "min_per_task": 0},
                                   "sapt-noreplay": {"memory_per_task": 0, "min_per_task": 0}}.get(arm, {})
        # lfpt5's prompt at 3e-2 (the sweep's dated deviation), the LoRA arms at the quickstart's 1e-3
        assert cfg.train.learning_rate == (3e-2 if arm.startswith("lfpt5") else 1e-3)


def test_methods_entry_by_label_wins_over_the_method(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("grid:\n  method: {a: lfpt5, b: lfpt5}\n  seed: [1]\n"
                 "methods:\n  lfpt5: {method_args: {prompt_length: 4}}\n  b: {method_args: {prompt_length: 7}}\n")
    cells = {c.name: c.config.method_args["prompt_length"] for c in load_sweep(f, tmp_path / "o").cells}
    assert cells == {"a_seed1": 4, "b_seed1": 7}  # a: its method's entry; b: its label's (not merged)
    f.write_text("grid:\n  method: {a: lfpt5}\n  seed: [1]\nmethods:\n  c: {method_args: {prompt_length: 7}}\n")
    with pytest.raises(ConfigError, match="methods.c: no cell runs this method"):
        load_sweep(f, tmp_path / "o")
