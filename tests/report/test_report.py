"""kif report: tables, figures and the HTML/Markdown report from fake-but-consistent runs."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from kif.cli import main  # noqa: E402
from kif.errors import KifError  # noqa: E402
from kif.metrics import cl_metrics  # noqa: E402
from kif.report import (DPI, build_report, comparison_rows, importance_figsize, load_run,  # noqa: E402
                        matrix_figsize, plot_importance, plot_matrix, plot_trajectories,
                        trajectory_figsize, unit_fractions)
from kif.report.importance import parse_unit, unit_sort_key  # noqa: E402
from kif.report.tables import cost_rows, cost_table  # noqa: E402

TASKS = ["cb", "copa", "sst2"]
UNITS = [f"model.layers.{l}.self_attn.{m}.lora#{r}" for l in range(2) for m in ("q_proj", "v_proj")
         for r in range(2)] + ["model.layers.10.self_attn.q_proj.lora#0", "model.layers.10.self_attn.v_proj.lora#0"]


def make_run(root: Path, name: str, method: str, order, tasks, zero_shot, matrix, *,
             adapter_bytes=123_456, total=61.5, scores=None, tasks_completed=None) -> Path:
    """A run directory like ``kif run`` writes: results.json (+ scores for KIF runs)."""
    d = root / name
    d.mkdir(parents=True)
    res = {"kif_version": "0.1.0", "method": method, "model": "tiny-llama", "benchmark": "long_sequence",
           "order": order, "tasks": tasks, "metrics": {t: "accuracy" for t in tasks},
           "n_train": {t: 32 for t in tasks}, "n_test": {t: 16 for t in tasks},
           "zero_shot": zero_shot, "matrix": matrix, **cl_metrics(matrix),
           "tasks_completed": len(matrix) if tasks_completed is None else tasks_completed,
           "per_task": [{"task": t, "loss": 1.0, "train_s": 1.0, "method_s": 0.1, "eval_s": 0.5}
                        for t in tasks[:len(matrix)]],
           "timings": {"setup": 1.0, "zero_shot_eval": 2.0, "total": total},
           "adapter_bytes": adapter_bytes, "device": "cpu"}
    (d / "results.json").write_text(json.dumps(res, indent=2))
    (d / "config.yaml").write_text(f"method: {method}\nmethod_args: {{}}\n")
    for k, t in enumerate(tasks[:len(matrix)]):
        td = d / "tasks" / f"{k + 1:02d}_{t}"
        (td / "predictions").mkdir(parents=True)
        if scores is not None:
            cur, acc = scores[k]
            save_file({u: torch.tensor(float(v)) for u, v in zip(UNITS, cur)}, str(td / "scores_current.safetensors"))
            save_file({u: torch.tensor(float(v)) for u, v in zip(UNITS, acc)},
                      str(td / "scores_accumulated.safetensors"))
    return d


# 10 units; top 20 % = 2 units. Task 1 accumulated: units 0, 1 on top; task 2 current: units 1, 2;
# task 2 accumulated: units 2, 3; task 3 current: units 2, 3 (both shared).
SCORES = [
    ([9, 8, 1, 1, 1, 1, 1, 1, 1, 1], [9, 8, 1, 1, 1, 1, 1, 1, 1, 1]),
    ([1, 9, 8, 0, 0, 0, 0, 0, 0, 0], [0.1, 0.5, 0.9, 0.8, 0, 0, 0, 0, 0, 0]),
    ([0, 0, 7, 9, 1, 1, 1, 1, 1, 1], [0, 0.2, 0.9, 0.95, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]),
]
SEQ1 = dict(zero_shot=[10.0, 40.0, 20.0],
            matrix=[[80.0, 41.0, 22.0], [50.0, 90.0, 30.0], [30.0, 60.0, 95.0]])
SEQ2 = dict(zero_shot=[20.0, 40.0, 10.0],
            matrix=[[90.0, 45.0, 12.5], [70.0, 85.0, 20.0], [40.0, 70.0, 75.0]])
KIF1 = dict(zero_shot=[10.0, 40.0, 20.0],
            matrix=[[80.0, 42.0, 25.0], [75.0, 88.0, 31.0], [70.0, 82.0, 93.0]])


@pytest.fixture()
def runs(tmp_path) -> dict[str, Path]:
    root = tmp_path / "runs"
    return {
        "seq1": make_run(root, "seqlora-o1", "seqlora", "1", TASKS, **SEQ1, adapter_bytes=100_000, total=60.0),
        "seq2": make_run(root, "seqlora-o2", "seqlora", "2", TASKS[::-1], **SEQ2, adapter_bytes=300_000,
                         total=90.25),
        "kif1": make_run(root, "kiflora-o1", "kiflora", "1", TASKS, **KIF1, scores=SCORES),
    }


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def px(figsize) -> tuple[int, int]:
    return round(figsize[0] * DPI), round(figsize[1] * DPI)


def md_table(md: str, first_header: str) -> list[list[str]]:
    """Rows (cells stripped of ** bold) of the markdown table whose header starts with first_header."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header} |"))
    rows = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip().strip("*") for c in ln.strip("|").split(" | ")])
    return [rows[0]] + rows[2:]


# ---- loading -------------------------------------------------------------------------------------

def test_load_run_adds_name_and_keeps_values(runs):
    r = load_run(runs["seq1"])
    assert r["run_name"] == "seqlora-o1" and r["run_dir"] == str(runs["seq1"])
    raw = json.loads((runs["seq1"] / "results.json").read_text())
    assert {k: r[k] for k in raw} == raw


@pytest.mark.parametrize("content, msg", [
    (None, "not found"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"method": "x", "model": "m", "tasks": ["a"]}', "missing key 'matrix'"),
    ('{"method": "x", "model": "m", "tasks": ["a", "b"], "matrix": [[1, 2, 3]]}', "matrix[0]"),
    ('{"method": "x", "model": "m", "tasks": ["a"], "matrix": [[1]], "AP": "high"}', "'AP'"),
])
def test_bad_results_json_is_a_one_line_kif_error(tmp_path, content, msg):
    d = tmp_path / "bad"
    d.mkdir()
    if content is not None:
        (d / "results.json").write_text(content)
    with pytest.raises(KifError) as ei:
        load_run(d)
    text = str(ei.value)
    assert msg in text and str(d / "results.json") in text and "\n" not in text
    with pytest.raises(KifError):
        build_report([d], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written before every run is read


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kif: error:") and "results.json" in err and "\n" not in err


# ---- comparison table ------------------------------------------------------------------------------

def test_comparison_rows_exact_values_and_mean_over_orders(runs):
    rows = comparison_rows([load_run(p) for p in runs.values()])
    assert [(r["kind"], r["method"], r["order"]) for r in rows] == [
        ("run", "kiflora", "1"), ("run", "seqlora", "1"), ("run", "seqlora", "2"),
        ("mean", "seqlora", "mean of 1, 2")]
    for row in rows[:3]:
        res = json.loads((runs[{"kiflora": "kif1", "seqlora": "seq" + row["order"]}[row["method"]]]
                          / "results.json").read_text())
        assert (row["AP"], row["FWT"], row["BWT"]) == (res["AP"], res["FWT"], res["BWT"])
        assert row["adapter_mb"] == res["adapter_bytes"] / 1e6
        assert row["wall_s"] == res["timings"]["total"]
    mean = rows[3]
    # by hand: order 1 AP=(30+60+95)/3=61.667, FWT=(41+30)/2=35.5, BWT=((30-80)+(60-90))/2=-40
    #          order 2 AP=(40+70+75)/3=61.667, FWT=(45+20)/2=32.5, BWT=((40-90)+(70-85))/2=-32.5
    assert mean["AP"] == pytest.approx((185 / 3 + 185 / 3) / 2)
    assert mean["FWT"] == pytest.approx(34.0)
    assert mean["BWT"] == pytest.approx(-36.25)
    assert mean["adapter_mb"] == pytest.approx(0.2)
    assert mean["wall_s"] == pytest.approx(75.125)
    assert mean["n_runs"] == 2


def test_no_mean_row_for_one_order_or_partial_runs(tmp_path):
    a = make_run(tmp_path, "a", "seqlora", "1", TASKS, **SEQ1)
    b = make_run(tmp_path, "b", "seqlora", "2", TASKS[::-1], zero_shot=SEQ2["zero_shot"], matrix=SEQ2["matrix"][:2])
    c = make_run(tmp_path, "c", "seqlora", None, TASKS, **SEQ1)
    rows = comparison_rows([load_run(p) for p in (a, b, c)])
    assert [r["kind"] for r in rows] == ["run", "run", "run"]
    assert [r["completed"] for r in rows] == ["3/3", "3/3", "2/3"]


def test_repeated_order_is_averaged_before_orders(tmp_path):
    m1 = [[10.0, 0.0, 0.0], [10.0, 20.0, 0.0], [10.0, 20.0, 30.0]]  # AP 20
    m2 = [[40.0, 0.0, 0.0], [40.0, 40.0, 0.0], [40.0, 40.0, 40.0]]  # AP 40
    z = [0.0, 0.0, 0.0]
    runs = [make_run(tmp_path, "a", "x", "1", TASKS, z, m1), make_run(tmp_path, "b", "x", "1", TASKS, z, m2),
            make_run(tmp_path, "c", "x", "2", TASKS, z, m2)]
    mean = comparison_rows([load_run(p) for p in runs])[-1]
    assert mean["kind"] == "mean" and mean["AP"] == pytest.approx(((20 + 40) / 2 + 40) / 2)


# ---- importance ---------------------------------------------------------------------------------------

def test_unit_fractions_by_hand(runs):
    fr = unit_fractions(runs["kif1"])
    assert [f["task"] for f in fr] == TASKS
    assert fr[0]["shared"] is None and fr[0]["units"] == 10
    # task 2: past (task-1 accumulated) top = {0, 1}; current top = {1, 2}
    assert (fr[1]["shared"], fr[1]["specific_new"], fr[1]["specific_old"]) == (0.1, 0.1, 0.1)
    # task 3: past (task-2 accumulated) top = {2, 3}; current top = {3, 2}
    assert (fr[2]["shared"], fr[2]["specific_new"], fr[2]["specific_old"]) == (0.2, 0.0, 0.0)


def test_unit_sort_order():
    names = ["decoder.block.1.layer.1.EncDecAttention.v.lora#1", "encoder.block.10.layer.0.SelfAttention.q.lora#0",
             "encoder.block.2.layer.0.SelfAttention.v.lora#0", "encoder.block.2.layer.0.SelfAttention.q.lora#10",
             "encoder.block.2.layer.0.SelfAttention.q.lora#2", "decoder.block.1.layer.0.SelfAttention.q.lora#0"]
    assert sorted(names, key=unit_sort_key) == [
        "encoder.block.2.layer.0.SelfAttention.q.lora#2", "encoder.block.2.layer.0.SelfAttention.q.lora#10",
        "encoder.block.2.layer.0.SelfAttention.v.lora#0", "encoder.block.10.layer.0.SelfAttention.q.lora#0",
        "decoder.block.1.layer.0.SelfAttention.q.lora#0", "decoder.block.1.layer.1.EncDecAttention.v.lora#1"]
    u = parse_unit("decoder.block.1.layer.1.EncDecAttention.v.lora_B.weight")
    assert (u["stack"], u["layer"], u["module"], u["part"]) == ("decoder", 1, "EncDecAttention.v", "lora_B")
    u = parse_unit("model.layers.3.self_attn.q_proj.lora#5")
    assert (u["stack"], u["layer"], u["module"], u["rank"]) == ("", 3, "self_attn.q_proj", 5)
    assert sorted(UNITS, key=unit_sort_key)[-2:] == UNITS[-2:]  # layer 10 after layer 1


# ---- figures ------------------------------------------------------------------------------------------

def test_plot_sizes_are_deterministic(runs, tmp_path):
    r = load_run(runs["seq1"])
    p = plot_matrix(r, tmp_path / "m.png")
    assert png_size(p) == px(matrix_figsize(4, 3)) == (600, 450)
    p = plot_trajectories([r, load_run(runs["kif1"])], tmp_path / "t.png")
    assert png_size(p) == px(trajectory_figsize(2)) == (1060, 740)
    p = plot_importance(runs["kif1"], tmp_path / "i.png")
    assert png_size(p) == px(importance_figsize(3)) == (700, 900)
    import matplotlib.image as mpimg

    for name in ("m", "t", "i"):
        img = mpimg.imread(tmp_path / f"{name}.png")
        assert img.shape[:2] == png_size(tmp_path / f"{name}.png")[::-1]
        assert img[..., :3].std() > 0.05  # something was drawn


def test_plot_trajectories_needs_one_sequence(runs, tmp_path):
    with pytest.raises(KifError):
        plot_trajectories([load_run(runs["seq1"]), load_run(runs["seq2"])], tmp_path / "t.png")


def test_partial_run_plots(tmp_path):
    d = make_run(tmp_path, "partial", "seqlora", "1", TASKS, zero_shot=None, matrix=SEQ1["matrix"][:1])
    r = load_run(d)
    assert png_size(plot_matrix(r, tmp_path / "m.png")) == px(matrix_figsize(3, 3))
    assert png_size(plot_trajectories([r], tmp_path / "t.png")) == px(trajectory_figsize(1))


# ---- the report ---------------------------------------------------------------------------------------

def test_build_report(runs, tmp_path):
    out = tmp_path / "report"
    html_path = build_report([runs["seq2"], runs["kif1"], runs["seq1"]], out)
    assert html_path == out / "report.html"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["importance_kiflora-o1.png", "matrix_kiflora-o1.png", "matrix_seqlora-o1.png",
                    "matrix_seqlora-o2.png", "trajectory_1.png", "trajectory_2.png"]
    # sequence 1 (cb copa sst2) has kiflora-o1 and seqlora-o1, sequence 2 only seqlora-o2
    assert png_size(out / "trajectory_1.png") == px(trajectory_figsize(2))
    assert png_size(out / "trajectory_2.png") == px(trajectory_figsize(1))
    assert png_size(out / "matrix_seqlora-o2.png") == (600, 450)

    md = (out / "report.md").read_text()
    table = md_table(md, "run")
    head, body = table[0], table[1:]
    col = {h: i for i, h in enumerate(head)}
    assert [row[col["run"]] for row in body] == ["kiflora-o1", "seqlora-o1", "seqlora-o2", "mean"]
    for row, key in zip(body, ["kif1", "seq1", "seq2"]):
        res = json.loads((runs[key] / "results.json").read_text())
        for m in ("AP", "FWT", "BWT"):
            assert row[col[m]] == f"{res[m]:.2f}"
        assert row[col["storage (MB)"]] == f"{res['adapter_bytes'] / 1e6:.2f}"
        assert row[col["wall time (s)"]] == f"{res['timings']['total']:.2f}"
    mean = body[3]
    assert (mean[col["AP"]], mean[col["FWT"]], mean[col["BWT"]]) == ("61.67", "34.00", "-36.25")
    assert mean[col["wall time (s)"]] == "75.12" or mean[col["wall time (s)"]] == "75.13"
    assert "| **mean** |" in md

    mt = md_table(md, "after \\ task")
    assert mt[1] == ["zero-shot", "10.00", "40.00", "20.00"]
    assert mt[-1] == ["after 3: sst2", "70.00", "82.00", "93.00"]  # first matrix is kiflora-o1's
    ft = md_table(md, "task")
    assert ft[2][:5] == ["2: copa", "10", "10.00", "10.00", "10.00"]
    for name in pngs:
        assert f"]({name})" in md

    html = html_path.read_text()
    assert html.count('src="data:image/png;base64,') == len(pngs)
    assert not re.search(r"https?://|<link|<script|src=\"(?!data:)", html)
    assert json.loads((out / "comparison.json").read_text())[3]["kind"] == "mean"


def test_report_is_deterministic(runs, tmp_path):
    a = build_report([runs["seq1"], runs["kif1"]], tmp_path / "a").parent
    b = build_report([runs["kif1"], runs["seq1"]], tmp_path / "b").parent
    for name in ("report.md", "matrix_seqlora-o1.png", "trajectory_1.png", "importance_kiflora-o1.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_cli_report_and_parent_folder(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    (out).mkdir()
    (out / "matrix_stale.png").write_bytes(b"old")
    assert main(["report", str(runs["seq1"].parent), "-o", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / "report.html"), str(out / "report.md")]
    assert not (out / "matrix_stale.png").exists()
    assert len(list(out.glob("matrix_*.png"))) == 3


def test_joint_run(tmp_path):
    """A joint (multi-task) run has one matrix row: "after all tasks", at x = K."""
    d = make_run(tmp_path, "mtl", "mtl", "1", TASKS, SEQ1["zero_shot"], [[90.0, 80.0, 70.0]], tasks_completed=3)
    res = json.loads((d / "results.json").read_text())
    res.update(joint=True, FWT=None, BWT=None)
    (d / "results.json").write_text(json.dumps(res))
    r = load_run(d)
    assert png_size(plot_matrix(r, tmp_path / "m.png")) == px(matrix_figsize(2, 3))
    out = build_report([d, make_run(tmp_path, "s", "seqlora", "1", TASKS, **SEQ1)], tmp_path / "rep")
    md = out.with_name("report.md").read_text()
    assert "| joint (all tasks) | 90.00 | 80.00 | 70.00 |" in md
    assert [row[5] for row in md_table(md, "run")[1:]] == ["3/3", "3/3"]


def test_cost_rows_by_hand():
    runs = [{"method": "seqlora", "timings": {"total": 600.0}}, {"method": "seqlora", "timings": {"total": 1200.0}},
            {"method": "seqlora", "timings": {"total": 660.0}}, {"method": "kif", "timings": {"total": 720.0}},
            {"method": "kif", "timings": {}}]  # a run without a total is not counted
    rows = cost_rows(runs)
    assert rows == [
        {"method": "seqlora", "runs": 3, "median_s": 660.0, "min_s": 600.0, "max_s": 1200.0, "total_s": 2460.0},
        {"method": "kif", "runs": 1, "median_s": 720.0, "min_s": 720.0, "max_s": 720.0, "total_s": 720.0},
        {"method": "all", "runs": 4, "median_s": 690.0, "min_s": 600.0, "max_s": 1200.0, "total_s": 3180.0}]
    header, body = cost_table(rows)
    assert body[0] == ["seqlora", "3", "11.0", "10.0 - 20.0", "0.68"]
    assert body[2] == ["all", "4", "11.5", "10.0 - 20.0", "0.88"]
    assert cost_rows(runs[3:]) == [rows[1]]  # one method: no "all" row
