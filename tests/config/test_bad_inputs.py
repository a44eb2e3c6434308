"""Bad input: a one-line error naming the culprit, exit code 2, nothing half-written."""
import gzip
import json

import pytest

from kif.cli import main


def _write_bench(tmp_path, train_bytes: bytes, name="train.json"):
    d = tmp_path / "t1"
    d.mkdir()
    (d / name).write_bytes(train_bytes)
    (d / "test.json").write_text(json.dumps([{"input": "q", "output": "a"}]))
    y = tmp_path / "bench.yaml"
    y.write_text("name: b\ntasks:\n  t1: {path: t1, metric: accuracy}\norders:\n  main: [t1]\n")
    return y


def _cfg(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


BASE = "model: tiny-llama\ntasks: [cb]\n"

CASES = {
    "unknown key": (BASE + "epochz: 3\n", "epochz"),
    "unknown nested key": (BASE + "train: {epochz: 3}\n", "train.epochz"),
    "wrong type": (BASE + "train: {epochs: many}\n", "train.epochs"),
    "negative size": (BASE + "data: {train_samples: -5}\n", "data.train_samples"),
    "zero batch": (BASE + "train: {batch_size: 0}\n", "train.batch_size"),
    "unknown method": (BASE + "method: magic\n", "magic"),
    "unknown model": ("model: no-such-model\ntasks: [cb]\n", "no-such-model"),
    "unknown benchmark": (BASE + "benchmark: nope\n", "nope"),
    "unknown task": ("model: tiny-llama\ntasks: [cb, nosuchtask]\n", "nosuchtask"),
    "duplicate task": ("model: tiny-llama\ntasks: [cb, cb]\n", "cb"),
    "no tasks or order": ("model: tiny-llama\n", "order"),
    "bad method_args": (BASE + "method: kiflora\nmethod_args: {temperature: -1}\n", "method_args.temperature"),
    "unknown method_args": (BASE + "method: kif\nmethod_args: {tau: 1}\n", "method_args.tau"),
    "missing data dir": (BASE + "data_dir: /nonexistent/kif-data\n", "/nonexistent/kif-data"),
    "yaml syntax": ("model: [unclosed\n", "cfg.yaml"),
    "fraction above 1": (BASE + "method: kif\nmethod_args: {top_fraction: 1.5}\n", "method_args.top_fraction"),
    "warmup fraction": (BASE + "train: {warmup_ratio: 2}\n", "train.warmup_ratio"),
    "dropout fraction": (BASE + "lora: {dropout: 1.5}\n", "lora.dropout"),
    "section not a mapping": (BASE + "train: 5\n", "train"),
    # issue 17: values checked at load, before any output exists, not when first used
    "negative seed": (BASE + "seed: -1\n", "seed"),
    "seed beyond numpy": (BASE + "seed: 4294967296\n", "seed"),
    "unknown scheduler": (BASE + "train: {lr_scheduler: cosin}\n", "train.lr_scheduler"),
    "scheduler needing arguments": (BASE + "train: {lr_scheduler: cosine_with_min_lr}\n", "train.lr_scheduler"),
    "unknown reporter": (BASE + "train: {report_to: [foo]}\n", "train.report_to"),
    "target_modules syntax": (BASE + "lora: {target_modules: [q proj]}\n", "lora.target_modules"),
    "empty target_modules": (BASE + "lora: {target_modules: []}\n", "lora.target_modules"),
    "target_modules not in the model": (BASE + "lora: {target_modules: [q_prj]}\n", "q_prj"),
    "flash attention missing": (BASE + "attn_implementation: flash_attention_2\n", "attn_implementation"),
    "temperature 0 in float32": (BASE + "method: kif\nmethod_args: {temperature: 1.0e-300}\n",
                                 "method_args.temperature"),
    "subnormal temperature": (BASE + "method: kiflora\nmethod_args: {temperature: 1.0e-40}\n",
                              "method_args.temperature"),
    "weight inf in float32": (BASE + "method: ewc\nmethod_args: {lambda_: 1.0e+39}\n", "method_args.lambda_"),
    "infinite learning rate": (BASE + "train: {learning_rate: .inf}\n", "train.learning_rate"),
    "nan learning rate": (BASE + "train: {learning_rate: .nan}\n", "train.learning_rate"),
    "deeply nested yaml": (BASE + "x: " + "[" * 5000 + "\n", "nested too deeply"),
}


def _run_fails(argv, capsys, culprit):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("kif: error:")]
    assert len(lines) == 1 and culprit in lines[0], err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config(case, tmp_path, capsys, data_dir):
    text, culprit = CASES[case]
    out = tmp_path / "out"
    _run_fails(["run", str(_cfg(tmp_path, text)), "-o", str(out), "-q"], capsys, culprit)
    assert not out.exists()


DATA_CASES = {
    "malformed json": (b"[{\"input\": ", "train.json"),
    "missing output": (json.dumps([{"input": "q"}]).encode(), "output"),
    "missing input": (json.dumps([{"output": "a"}]).encode(), "input"),
    "empty task": (b"[]", "train.json"),
    "non-utf8": (b"[{\"input\": \"\xff\xfe\", \"output\": \"a\"}]", "train.json"),
    "truncated gzip": (gzip.compress(b"[{\"input\": \"q\", \"output\": \"a\"}]")[:20], "train.json"),
    # issue 17: data that used to break the decoder or writer only after output existed
    "lone surrogate in input": (b'[{"input": "q\\ud800", "output": "a"}]', "lone surrogate"),
    "lone surrogate in output": (b'[{"input": "q", "output": "\\udfff"}]', "lone surrogate"),
    "lone surrogate in id": (b'[{"id": "\\ud83d", "input": "q", "output": "a"}]', "lone surrogate"),
    "deeply nested json": (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data(case, tmp_path, capsys):
    payload, culprit = DATA_CASES[case]
    bench = _write_bench(tmp_path, payload)
    out = tmp_path / "out"
    cfg = _cfg(tmp_path, f"model: tiny-llama\nbenchmark: {bench}\norder: main\n")
    _run_fails(["run", str(cfg), "-o", str(out), "-q"], capsys, culprit)
    assert not out.exists()


def test_missing_config_file(tmp_path, capsys):
    _run_fails(["run", str(tmp_path / "none.yaml")], capsys, "none.yaml")


def test_config_path_is_a_folder(tmp_path, capsys):
    _run_fails(["run", str(tmp_path), "-o", str(tmp_path / "out")], capsys, "is a folder")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag,culprit", [("train.epochz=3", "train.epochz"), ("seed=-4", "seed"),
                                          ("method_args.temperature=0", "method_args.temperature"),
                                          ("method_args.temperature=1e-300", "method_args.temperature")])
def test_set_errors_name_the_flag_not_the_file(flag, culprit, tmp_path, capsys):
    cfg = _cfg(tmp_path, BASE + "method: kif\n")
    line = _run_fails(["run", str(cfg), "--set", flag, "-o", str(tmp_path / "out")], capsys, culprit)
    assert line.startswith(f"kif: error: --set {flag}:") and "cfg.yaml" not in line
    # an error in the file itself still names the file
    bad = _cfg(tmp_path, BASE + "method: kif\nmethod_args: {temperature: 0}\n")
    assert str(bad) in _run_fails(["run", str(bad), "--set", "seed=3"], capsys, "method_args.temperature")


def test_bad_override(capsys):
    _run_fails(["run", "--set", "train.epochs"], capsys, "train.epochs")


def test_existing_results_untouched(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"keep": true}')
    cfg = _cfg(tmp_path, BASE)
    _run_fails(["run", str(cfg), "-o", str(out), "-q"], capsys, str(out))
    assert (out / "results.json").read_text() == '{"keep": true}'


def test_wrong_type_in_data(tmp_path, capsys):
    bench = _write_bench(tmp_path, json.dumps([{"input": 3, "output": "a"}]).encode())
    cfg = _cfg(tmp_path, f"model: tiny-llama\nbenchmark: {bench}\norder: main\n")
    _run_fails(["run", str(cfg), "-o", str(tmp_path / "out"), "-q"], capsys, "input")


def test_test_label_absent_from_training_labels(tmp_path, capsys):
    bench = _write_bench(tmp_path, json.dumps([{"input": "q", "output": "b"}]).encode())
    # only a task that declares a closed label set is checked (a free-form task is not)
    bench.write_text(bench.read_text().replace("metric: accuracy}", "metric: accuracy, classification: true}"))
    cfg = _cfg(tmp_path, f"model: tiny-llama\nbenchmark: {bench}\norder: main\n")
    _run_fails(["run", str(cfg), "-o", str(tmp_path / "out"), "-q"], capsys, "absent from its training label set")
    assert not (tmp_path / "out").exists()


def test_duplicate_task_names_in_benchmark_yaml(tmp_path, capsys):
    bench = _write_bench(tmp_path, json.dumps([{"input": "q", "output": "a"}]).encode())
    bench.write_text("name: b\ntasks:\n  t1: {path: t1, metric: accuracy}\n  t1: {path: t1, metric: rougeL}\n")
    cfg = _cfg(tmp_path, f"model: tiny-llama\nbenchmark: {bench}\ntasks: [t1]\n")
    _run_fails(["run", str(cfg), "-o", str(tmp_path / "out"), "-q"], capsys, "bench.yaml")


def test_non_finite_training_stops_with_a_clear_error(tmp_path, capsys, data_dir):
    """A model whose forward pass yields NaN: every step is skipped, then the run stops."""
    import torch

    from kif.models import load_model

    lm = load_model("tiny-llama")
    with torch.no_grad():
        lm.model.model.norm.weight[0] = float("nan")
    lm.model.save_pretrained(tmp_path / "nan-model")
    lm.tokenizer.save_pretrained(tmp_path / "nan-model")
    cfg = _cfg(tmp_path, f"model: {tmp_path / 'nan-model'}\ntasks: [cb]\ntrain: {{epochs: 1, batch_size: 4}}\n"
               "data: {train_samples: 8, test_samples: 2, max_input_length: 64}\neval: {max_new_tokens: 2}\n")
    out = tmp_path / "out"
    _run_fails(["run", str(cfg), "-o", str(out), "-q"], capsys, "non-finite gradients")
    res = json.loads((out / "results.json").read_text())
    assert res["tasks_completed"] == 0 and res["matrix"] == []  # nothing garbage was recorded


# --- artifacts: a damaged checkpoint is named, never a crash deep in a loader ---------------

@pytest.fixture(scope="module")
def finished_kif_run(tmp_path_factory, data_dir):
    from kif.runner import run

    from helpers import tiny_config

    out = tmp_path_factory.mktemp("art") / "out"
    cfg = tiny_config(method="kif", tasks=["cb", "copa"])
    run(cfg, out, show_progress=False)
    return cfg, out


def _tamper(src, dst, edit):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    (ckpt,) = (dst / "checkpoints").iterdir()
    _pretend_stopped_after_first_task(ckpt)
    (ckpt,) = (dst / "checkpoints").iterdir()
    tensors = load_file(str(ckpt / "method.safetensors"))
    edit(tensors)
    save_file(tensors, str(ckpt / "method.safetensors"))


def _pretend_stopped_after_first_task(ckpt):
    """A finished 2-task checkpoint made into a consistent 'stopped after task 1' one, so that
    a resume loads its state (a consistent lie: every field agrees)."""
    res = json.loads((ckpt / "results.json").read_text())
    res.update(finished=False, tasks_completed=1, matrix=res["matrix"][:1], per_task=res["per_task"][:1])
    (ckpt / "results.json").write_text(json.dumps(res))
    meta = json.loads((ckpt / "method.json").read_text())
    meta["stages_done"] = 1
    (ckpt / "method.json").write_text(json.dumps(meta))
    ckpt.rename(ckpt.with_name("after-01"))


def _shrink_first_weight(t):
    name = next(n for n in t if n.startswith("model."))
    t[name] = t[name][:, :1].contiguous()


def _wrong_unit_count(t):
    t["method.accumulated"] = t["method.accumulated"][:-1].contiguous()


def _foreign_weight(t):
    t["model.no.such.lora_A.weight"] = t.pop(next(n for n in t if n.startswith("model.")))


@pytest.mark.parametrize("edit,culprit", [(_shrink_first_weight, "shape"), (_wrong_unit_count, "units"),
                                          (_foreign_weight, "do not match")])
def test_damaged_checkpoint_state(edit, culprit, finished_kif_run, tmp_path, capsys):

    cfg, src = finished_kif_run
    out = tmp_path / "out"
    _tamper(src, out, edit)
    cfg_file = out / "config.yaml"
    before = (out / "results.json").read_text()
    _run_fails(["run", str(cfg_file), "-o", str(out), "-q"], capsys, culprit)
    assert (out / "results.json").read_text() == before


def test_empty_classification_label(tmp_path, capsys):
    bench = _write_bench(tmp_path, json.dumps([{"input": "q", "output": "a"}, {"input": "r", "output": " "}]).encode())
    bench.write_text("name: b\ntasks:\n  t1: {path: t1, metric: accuracy, classification: true}\n"
                     "orders:\n  main: [t1]\n")
    cfg = _cfg(tmp_path, f"model: tiny-llama\nbenchmark: {bench}\norder: main\n")
    _run_fails(["run", str(cfg), "-o", str(tmp_path / "out"), "-q"], capsys, "empty label")
    assert not (tmp_path / "out").exists()


# --- results.json read by `kif report`: wrong types and absurd numbers are named, never rendered ---

def _results(**edits):
    res = {"method": "seqlora", "model": "tiny-llama", "tasks": ["a", "b"], "matrix": [[50.0, 10.0]],
           "zero_shot": [5.0, 5.0], "tasks_completed": 1, "AP": 50.0, "timings": {"total": 3.0}}
    res.update(edits)
    return res


REPORT_CASES = {
    "matrix not a list": (_results(matrix="abc"), "matrix"),
    "count as text": (_results(tasks_completed="one"), "tasks_completed"),
    "timing as text": (_results(timings={"total": "fast"}), "timings.total"),
    "infinite timing": (_results(timings={"total": float("inf")}), "timings.total"),
    "309-digit cell": (_results(matrix=[[1e308, 10.0]]), "matrix[0][0]"),
    "negative score": (_results(zero_shot=[-5.0, 5.0]), "zero_shot[0]"),
    "absurd size": (_results(adapter_bytes=10**300), "adapter_bytes"),
    "infinity in a stat": (_results(per_task=[{"loss": float("inf")}]), "per_task[0].loss"),
    "tasks not a list": (_results(tasks=7), "tasks"),
}


@pytest.mark.parametrize("case", sorted(REPORT_CASES))
def test_report_refuses_bad_results(case, tmp_path, capsys):
    res, culprit = REPORT_CASES[case]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps(res))  # Python writes inf as Infinity
    out = tmp_path / "report"
    line = _run_fails(["report", str(run_dir), "-o", str(out)], capsys, culprit)
    assert "results.json" in line
    assert not out.exists()


def test_report_refuses_deeply_nested_results(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text("[" * 200_000 + "]" * 200_000)
    _run_fails(["report", str(run_dir), "-o", str(tmp_path / "report")], capsys, "nested too deeply")


def test_report_non_utf8_run_folder_is_refused(tmp_path, capsys):
    import os

    run_dir = os.fsdecode(bytes(tmp_path) + b"/r\xff")
    os.mkdir(run_dir)
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(_results(), f)
    _run_fails(["report", run_dir, "-o", str(tmp_path / "report")], capsys, "not valid UTF-8")


# --- safetensors: what is read is bounded before it is parsed -------------------------------------

def test_safetensors_header_length_is_bounded(tmp_path):
    import struct
    import time

    from kif.errors import ArtifactError
    from kif.io import load_tensors

    f = tmp_path / "huge.safetensors"
    f.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    t0 = time.perf_counter()
    with pytest.raises(ArtifactError, match="header of 1099511627776 bytes"):
        load_tensors(f)
    many = tmp_path / "many.safetensors"
    entry = '"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
    header = ("{" + ",".join(entry.format(i=i) for i in range(100_001)) + "}").encode()
    many.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ArtifactError, match="more than 100000 tensors"):
        load_tensors(many)
    assert time.perf_counter() - t0 < 5
    short = tmp_path / "short.safetensors"
    short.write_bytes(struct.pack("<Q", 64) + b"{}")
    with pytest.raises(ArtifactError, match="corrupt"):
        load_tensors(short)


def test_wrong_typed_method_state_in_checkpoint(finished_kif_run, tmp_path, capsys):
    _, src = finished_kif_run
    out = tmp_path / "out"
    _tamper(src, out, lambda t: None)
    (ckpt,) = (out / "checkpoints").iterdir()
    meta = json.loads((ckpt / "method.json").read_text())
    meta["method"]["skipped_total"] = "many"
    (ckpt / "method.json").write_text(json.dumps(meta))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _run_fails(["run", str(out / "config.yaml"), "-o", str(out), "-q"], capsys, "does not fit method 'kif'")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
