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
