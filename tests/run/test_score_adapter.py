"""scripts/score_adapter.py scores a saved adapter as the run's own evaluator did: on the run's
adapter it gives the run's matrix entries and the same predictions, example for example; and
scripts/sapt_attention.py reads a SAPT run's saved selections as the run computed them."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO, kif_run, read_results, write_config

pytestmark = pytest.mark.slow  # a whole (tiny) run


def test_scoring_the_runs_adapter_gives_the_runs_scores(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", method="seqlora", tasks=["cb", "sst2"])
    out = tmp_path / "run"
    assert kif_run(cfg, out).returncode == 0
    matrix = read_results(out)["matrix"]
    scored = subprocess.run([sys.executable, str(REPO / "scripts" / "score_adapter.py"), str(out),
                             "tasks/01_cb/adapter", "--tasks", "cb,sst2", "-o", str(tmp_path / "s")],
                            capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr
    lines = {ln.split()[1].rstrip(":"): float(ln.split()[2]) for ln in scored.stdout.splitlines()}
    assert lines == pytest.approx({"cb": matrix[0][0], "sst2": matrix[0][1]}, abs=0.005)
    for task in ("cb", "sst2"):  # the predictions themselves, not only their mean
        mine = [json.loads(x) for x in (tmp_path / "s" / f"{task}.jsonl").read_text().splitlines()]
        runs = [json.loads(x) for x in (out / "tasks" / "01_cb" / "predictions" / f"{task}.jsonl").read_text().splitlines()]
        assert mine == runs

    def refused(run, adapter, tasks="cb"):  # exit 2, its one-line reason last, nothing written
        r = subprocess.run([sys.executable, str(REPO / "scripts" / "score_adapter.py"), str(run), adapter,
                            "--tasks", tasks, "-o", str(tmp_path / "u")], capture_output=True, text=True, timeout=300)
        return r.returncode == 2 and not (tmp_path / "u").exists() and r.stderr.strip().splitlines()[-1]

    assert refused(out, "tasks/01_cb/adapter", "copa").startswith("score_adapter: --tasks: copa not in the run's sequence")
    assert "no adapter_config.json" in refused(out, "tasks/01_cb")  # a task folder, not an adapter
    prompt_run = tmp_path / "prompt"  # a prompt method: its model is not base + one PEFT adapter
    prompt_run.mkdir()
    write_config(prompt_run / "config.yaml", method="lfpt5", tasks=["cb", "sst2"])
    assert "method lfpt5 saves or evaluates its model its own way" in refused(prompt_run, "tasks/01_cb/adapter")


def test_sapt_attention_reads_the_runs_own_attention_targets(tmp_path):
    """scripts/sapt_attention.py: from the saved selections, the mean weights on task k's own
    prompts after task k are the run's attention_target (computed in the run, on the same
    prompts); a fresh key at the next task's start adds a weight; a run of another method is refused."""
    cfg = write_config(tmp_path / "c.yaml", method="sapt", tasks=["cb", "sst2"])
    out = tmp_path / "run"
    assert kif_run(cfg, out).returncode == 0
    targets = [t["attention_target"] for t in read_results(out)["per_task"]]
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "sapt_attention.py"), str(out), "--prompts", "100000"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert [row["after"] for row in rows] == ["01_cb", "02_sst2"]
    assert rows[0]["weights"]["cb"] == [1.0] and targets[0] == [1.0]  # one key: all weight on it
    assert rows[1]["weights"]["sst2"] == pytest.approx(targets[1], abs=2e-6)
    assert sum(rows[0]["next_task_start"]["cb"]) == pytest.approx(1.0, abs=2e-6) and "next_task_start" not in rows[1]
    other = tmp_path / "other"
    other.mkdir()
    write_config(other / "config.yaml", method="seqlora", tasks=["cb", "sst2"])
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "sapt_attention.py"), str(other)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip() == f"sapt_attention.py: {other}: method seqlora, not sapt"
