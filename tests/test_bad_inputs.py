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
}


def _run_fails(argv, capsys, culprit):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("kif: error:")]
    assert len(lines) == 1 and culprit in lines[0], err
    assert "Traceback" not in err


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
    res = json.loads((ckpt / "results.json").read_text())
    res["finished"] = False  # pretend the run stopped, so the state is loaded again
    (ckpt / "results.json").write_text(json.dumps(res))
    tensors = load_file(str(ckpt / "method.safetensors"))
    edit(tensors)
    save_file(tensors, str(ckpt / "method.safetensors"))


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
