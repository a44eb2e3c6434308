"""Hostile inputs, round 3 (issue 30): names that become paths, silent wrong numbers,
tracebacks, bounds. Each failure is one line, exit 2, and nothing outside the output
folder changes."""
import json
import os
from pathlib import Path

import pytest
import yaml

from kif.cli import main

from helpers import fails_one_line, snapshot, tiny_config


# ---- 1. task names become paths ---------------------------------------------------------------------

def _bench_with_task(tmp_path: Path, name: str) -> Path:
    rows = [{"input": "q", "output": "a"}, {"input": "r", "output": "b"}]
    (tmp_path / "data.json").write_text(json.dumps(rows))
    doc = {"name": "b", "tasks": {name: {"path": "data.json", "metric": "accuracy"}}}
    y = tmp_path / "bench.yaml"
    y.write_text(yaml.safe_dump(doc))
    return y


@pytest.mark.parametrize("name", ["../../../../escape", "..", ".", "x/y", "x\\y", "", "a\x00b", "tab\there"])
def test_task_name_that_is_not_one_path_component_is_refused_before_any_write(name, tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    bench = _bench_with_task(home, name)
    cfg = tiny_config(benchmark=str(bench), tasks=[name], method="seqlora").model_dump(mode="json")
    (home / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    before = snapshot(tmp_path)
    line = fails_one_line(["run", str(home / "cfg.yaml"), "-o", str(home / "out"), "-q"], capsys,
                  "task name", "bench.yaml")
    assert "path component" in line
    assert snapshot(tmp_path) == before  # no escape, no output folder


def test_unseen_task_names_from_a_custom_benchmark_are_checked_too(tmp_path, capsys):
    bench = _bench_with_task(tmp_path, "..")
    cfg = tiny_config(method="seqlora", tasks=["cb"], eval={"unseen": {"benchmark": str(bench)}})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    fails_one_line(["run", str(tmp_path / "cfg.yaml"), "-o", str(tmp_path / "out"), "-q"], capsys,
           "task name", "path component")
    assert not (tmp_path / "out").exists()


def test_plain_task_names_with_odd_but_harmless_characters_still_load(tmp_path):
    from kif.data import get_benchmark

    for name in ("qa-1", "a b", "é_task", "x.y", "..x"):
        assert list(get_benchmark(_bench_with_task(tmp_path, name)).tasks) == [name]


# ---- 2a. the divergence stop checks the optimised loss ------------------------------------------------

@pytest.mark.parametrize("method,args", [("ewc", {}), ("kiflora", {"ortho_weight": 1.0})])
def test_divergence_stop_sees_the_method_extra_loss(method, args, tmp_path, capsys, data_dir):
    """At lr 1e6 tiny-llama's own loss stays bounded (clipped steps) while EWC's penalty reaches
    ~1e26 and KIFLoRA's eq. 5 ~1e13: before, the run exited 0 with those numbers in results.json."""
    cfg = tiny_config(method=method, method_args=args, tasks=["cb", "copa"],
                      train={"learning_rate": 1e6}).model_dump(mode="json")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    line = fails_one_line(["run", str(tmp_path / "cfg.yaml"), "-o", str(tmp_path / "out"), "-q"], capsys, "diverged")
    assert "learning_rate" in line
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert not results["finished"]


def test_divergence_guard_adds_the_extra_loss_to_the_step_loss():
    """Hand-computed: micro-batch model losses 2 and 3 plus extras 0.5 and 0.5 -> step loss 6."""
    import torch

    from kif.divergence import DivergenceGuard

    g = DivergenceGuard("t", 1e-3, False, 1.0)
    g._handle = object()  # as if the forward hook were installed
    for model_loss in (2.0, 3.0):
        g._record(type("M", (), {"training": True})(), None, {"loss": torch.tensor(model_loss)})
        g.add_extra(torch.tensor(0.5))
    seen = []
    g.check = lambda loss, step: seen.append(loss)
    g.on_pre_optimizer_step(None, type("S", (), {"global_step": 0})(), None)
    assert seen == [6.0]


# ---- 2d. the checkpoint is the record -----------------------------------------------------------------

def _finished_two_task_run(root: Path, method: str) -> Path:
    """``kif run`` of a tiny two-task ``method`` config: ``root/cfg.yaml`` and the finished ``root/run``."""
    cfg = tiny_config(method=method, tasks=["cb", "copa"]).model_dump(mode="json")
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(root / "cfg.yaml"), "-o", str(root / "run"), "-q"]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
    """One finished two-task SeqLoRA run (copied by each test that edits it)."""
    root = tmp_path_factory.mktemp("finished")
    _finished_two_task_run(root, "seqlora")
    return root


def _copy_run(finished_run, tmp_path) -> tuple[Path, Path]:
    import shutil

    shutil.copytree(finished_run / "run", tmp_path / "run")
    shutil.copy(finished_run / "cfg.yaml", tmp_path / "cfg.yaml")
    return tmp_path / "cfg.yaml", tmp_path / "run"


@pytest.mark.parametrize("edit", ["missing", "broken", "not utf-8", "hand-edited", "a list"])
def test_finished_run_with_a_bad_results_file_is_rewritten_from_the_checkpoint(edit, finished_run, tmp_path):
    cfg, run = _copy_run(finished_run, tmp_path)
    results = run / "results.json"
    record = json.loads((run / "checkpoints" / "after-02" / "results.json").read_text())
    original = results.read_bytes()
    if edit == "missing":
        results.unlink()
    elif edit == "broken":
        results.write_text('{"finished": tr')
    elif edit == "not utf-8":
        results.write_bytes(b"\xff\xfe{}")
    elif edit == "hand-edited":
        doc = json.loads(original)
        doc["matrix"][-1][0] = 99.0
        results.write_text(json.dumps(doc))
    else:
        results.write_text("[1, 2]")
    assert main(["run", str(cfg), "-o", str(run), "-q"]) == 0
    assert json.loads(results.read_text()) == record
    assert results.read_bytes() == original  # the same bytes as the run wrote


def test_finished_run_with_an_intact_results_file_is_left_untouched(finished_run, tmp_path):
    cfg, run = _copy_run(finished_run, tmp_path)
    before = snapshot(run)
    assert main(["run", str(cfg), "-o", str(run), "-q"]) == 0
    assert snapshot(run) == before


@pytest.mark.parametrize("text", ["", "[1, 2]\n", "just text\n"])
def test_stored_config_that_is_not_a_mapping_is_named_not_an_empty_diff(text, finished_run, tmp_path, capsys):
    cfg, run = _copy_run(finished_run, tmp_path)
    (run / "config.yaml").write_text(text)
    line = fails_one_line(["run", str(cfg), "-o", str(run), "-q"], capsys, "config.yaml", "not a kif config")
    assert "()" not in line


# ---- 2b. a checkpoint must hold the method's own state for its stage ---------------------------------

def _stopped_after_task_1(tmp_path: Path, method: str) -> tuple[Path, Path]:
    """A two-task run of ``method`` killed just before its second task's checkpoint (after-01 stays)."""
    import subprocess
    import sys

    cfg = tiny_config(method=method, tasks=["cb", "copa"]).model_dump(mode="json")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    env = {**os.environ, "KIF_FAULT": "write:3"}  # writes: after-00, after-01, (killed) after-02
    subprocess.run([sys.executable, "-m", "kif.cli", "run", str(tmp_path / "cfg.yaml"), "-o", str(out), "-q"],
                   env=env, capture_output=True, timeout=600)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["after-01"]
    from kif.lock import LOCK_NAME

    (out / LOCK_NAME).unlink(missing_ok=True)  # the killed owner's; the next run replaces it anyway
    return tmp_path / "cfg.yaml", out


def _edit_method_tensors(ckpt: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(ckpt / "method.safetensors")
    save_file(edit(tensors), ckpt / "method.safetensors")


@pytest.fixture(scope="module")
def kif_after_task_1(tmp_path_factory, data_dir):
    return _stopped_after_task_1(tmp_path_factory.mktemp("kif1"), "kif")


@pytest.mark.parametrize("case", ["no accumulated", "no fused_prev", "no method state", "ewc's state"])
def test_kif_checkpoint_without_its_state_after_task_1_is_refused(case, kif_after_task_1, tmp_path, capsys):
    import shutil

    cfg, out = kif_after_task_1[0], tmp_path / "run"
    shutil.copytree(kif_after_task_1[1], out)
    ckpt = out / "checkpoints" / "after-01"
    if case == "no accumulated":
        _edit_method_tensors(ckpt, lambda t: {n: v for n, v in t.items() if n != "method.accumulated"})
    elif case == "no fused_prev":
        _edit_method_tensors(ckpt, lambda t: {n: v for n, v in t.items() if not n.startswith("method.fused_prev/")})
    elif case == "no method state":
        _edit_method_tensors(ckpt, lambda t: {n: v for n, v in t.items() if not n.startswith("method.")})
    else:
        _edit_method_tensors(ckpt, lambda t: {**{n: v for n, v in t.items() if not n.startswith("method.")},
                                              **{n.replace("method.fused_prev/", "method.fisher/"): v
                                                 for n, v in t.items() if n.startswith("method.fused_prev/")}})
    before = snapshot(out)
    line = fails_one_line(["run", str(cfg), "-o", str(out), "-q"], capsys, str(ckpt))
    assert ("lacks the state" in line) or ("never writes" in line)
    assert snapshot(out) == before


def test_every_method_declares_exactly_the_state_it_writes(tmp_path, monkeypatch, data_dir):
    """Each method's checkpoints (after the zero-shot row and after its task) hold every entry
    its STATE requires at that stage and nothing it does not declare; every declared entry
    is written at some stage."""
    import kif.runner
    from kif.methods import get_method
    from kif.methods.registry import all_methods
    from kif.rundir import RunDir

    seen: list = []
    real = RunDir.save_checkpoint

    def record(run_dir, done, tensors, meta, results):
        seen.append((done, dict(tensors), meta["method"]))
        return real(run_dir, done, tensors, meta, results)

    monkeypatch.setattr(RunDir, "save_checkpoint", record)
    for name in all_methods():
        seen.clear()
        cfg = tiny_config(method=name, tasks=["cb", "copa"],
                          data={"train_samples": 4, "test_samples": 2}, eval={"max_new_tokens": 2})
        kif.runner.run(cfg, tmp_path / name, show_progress=False)
        cls = get_method(name)
        written = set()
        for done, tensors, meta in seen:
            cls.check_state(tensors, meta, done, f"{name} after {done}")
            written |= {n[len("method."):].replace("/", ".").split(".")[0] for n in tensors
                        if n.startswith("method.")} | set(meta)
        assert written == set(cls.state_entries()), name


# ---- 2c. kif report: run names unique, computed once ------------------------------------------------

def test_report_run_names_are_unique_and_the_same_in_every_section(finished_run, tmp_path):
    import re
    import shutil

    for d in ("a/x", "b/x", "c/x-2", "d/x-3"):
        shutil.copytree(finished_run / "run", tmp_path / d)
    dirs = [str(tmp_path / d) for d in ("a/x", "b/x", "c/x-2", "d/x-3")]
    assert main(["report", *dirs, "-o", str(tmp_path / "rep")]) == 0
    rows = json.loads((tmp_path / "rep" / "comparison.json").read_text())
    table_names = [r["run"] for r in rows if r["kind"] == "run"]
    md = (tmp_path / "rep" / "report.md").read_text()
    runs_section = re.findall(r"^### (.+)$", md.split("## Runs", 1)[1], re.M)
    assert sorted(table_names) == sorted(runs_section) == ["x", "x-2", "x-3", "x-4"]
    assert table_names == runs_section  # same order too
    # each folder literally named x-2 / x-3 keeps its own name: the copies of "x" go around them
    by_dir = dict(re.findall(r"^### (.+)\n+- \*\*directory\*\*: (.+)$", md, re.M))
    assert by_dir["x-2"].endswith("c/x-2") and by_dir["x-3"].endswith("d/x-3")
    assert by_dir["x"].endswith("a/x") and by_dir["x-4"].endswith("b/x")
    assert len(list((tmp_path / "rep").glob("matrix_*.png"))) == 4


# ---- 3/4. kif report on a hostile corpus: exit 2, one line, nothing outside -o changes -----------------

@pytest.fixture(scope="module")
def kif_run(tmp_path_factory, data_dir):
    """A finished two-task KIF run: results, config and unit-score files for the report to read."""
    return _finished_two_task_run(tmp_path_factory.mktemp("kifrun"), "kif")


def _edit_json(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _edit_config(run: Path, fn) -> None:
    doc = yaml.safe_load((run / "config.yaml").read_text())
    fn(doc)
    (run / "config.yaml").write_text(yaml.safe_dump(doc))


def _set(doc: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        doc = doc.setdefault(p, {})
    doc[last] = value


def _header_file(path: Path, header: bytes, data: bytes = b"") -> None:
    import struct

    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def _escaped_entries(n: int) -> bytes:
    """A safetensors header of ``n`` tensors whose key names are written with JSON escapes."""
    entry = '"t{i}":{{"dtype":"F32","shape":[0],"data\\u005foffsets":[0,0]}}'
    return ("{" + ",".join(entry.format(i=i) for i in range(n)) + "}").encode()


SCORES = "tasks/02_copa/scores_current.safetensors"
REPORT_CORPUS = {  # name -> (edit of a copy of a finished KIF run, words the one-line error holds)
    "results missing": (lambda r: (r / "results.json").unlink(), "results.json"),
    "results broken": (lambda r: (r / "results.json").write_text('{"method": "ki'), "results.json"),
    "results a list": (lambda r: (r / "results.json").write_text("[1, 2]"), "results.json"),
    "results a string": (lambda r: (r / "results.json").write_text('"text"'), "results.json"),
    "results not utf-8": (lambda r: (r / "results.json").write_bytes(b'{"a": "\xff"}'), "results.json"),
    "results nested deep": (lambda r: (r / "results.json").write_text("[" * 100000 + "]" * 100000), "results.json"),
    "matrix row too short": (lambda r: _edit_json(r / "results.json", lambda d: d["matrix"][0].pop()), "matrix"),
    "score out of range": (lambda r: _edit_json(r / "results.json", lambda d: _set(d, "AP", 1e300)), "AP"),
    "per_task task a list": (lambda r: _edit_json(r / "results.json", lambda d: _set(d["per_task"][1], "task", ["x"])),
                             "per_task"),
    "fusion weight a string": (lambda r: _edit_json(r / "results.json",
                                                    lambda d: _set(d["per_task"][1], "mean_weight_on_past", "x")),
                               "mean_weight_on_past"),
    "seed a list": (lambda r: _edit_config(r, lambda d: _set(d, "seed", [1, 2])), "seed"),
    "seed a dict": (lambda r: _edit_config(r, lambda d: _set(d, "seed", {"a": 1})), "seed"),
    "tasks a list of lists": (lambda r: _edit_config(r, lambda d: _set(d, "tasks", [["cb"], "copa"])), "tasks"),
    "top_fraction above 1": (lambda r: _edit_config(r, lambda d: _set(d, "method_args.top_fraction", 5)),
                             "top_fraction"),
    "top_fraction negative": (lambda r: _edit_config(r, lambda d: _set(d, "method_args.top_fraction", -1)),
                              "top_fraction"),
    "top_fraction nan": (lambda r: _edit_config(r, lambda d: _set(d, "method_args.top_fraction", float("nan"))),
                         "top_fraction"),
    "threshold a list": (lambda r: _edit_config(r, lambda d: _set(d, "method_args.threshold", [1])), "threshold"),
    "method_args a list": (lambda r: _edit_config(r, lambda d: _set(d, "method_args", [1])), "method_args"),
    "config not yaml": (lambda r: (r / "config.yaml").write_text("seed: [unclosed\n"), "config.yaml"),
    "config a list": (lambda r: (r / "config.yaml").write_text("[1, 2]\n"), "config.yaml"),
    "scores garbage": (lambda r: (r / SCORES).write_bytes(b"\x00garbage"), "scores_current"),
    "scores header claims 1 TB": (lambda r: (r / SCORES).write_bytes((10**12).to_bytes(8, "little") + b"{}"),
                                  "scores_current"),
    "scores header with escaped keys": (lambda r: _header_file(r / SCORES, _escaped_entries(100_001)),
                                        "scores_current"),
    "accumulated scores garbage": (lambda r: (r / SCORES.replace("current", "accumulated")).write_bytes(b"\x01"),
                                   "scores_accumulated"),
}


@pytest.mark.parametrize("case", sorted(REPORT_CORPUS))
def test_report_on_a_hostile_run_folder_is_one_line_and_changes_nothing_outside_o(case, kif_run, tmp_path,
                                                                                   capsys):
    import shutil
    import time

    edit, culprit = REPORT_CORPUS[case]
    good, bad = tmp_path / "runs" / "good", tmp_path / "runs" / "bad"
    shutil.copytree(kif_run, good)
    shutil.copytree(kif_run, bad)
    edit(bad)
    before = snapshot(tmp_path / "runs")
    t0 = time.perf_counter()
    fails_one_line(["report", str(good), str(bad), "-o", str(tmp_path / "rep")], capsys, culprit)
    assert time.perf_counter() - t0 < 60
    assert snapshot(tmp_path / "runs") == before
    assert not (tmp_path / "rep").exists() or not any((tmp_path / "rep").iterdir())


def test_report_corpus_is_large_enough():
    assert len(REPORT_CORPUS) >= 15


# ---- 3/4/5. kif data pull: malformed input, hostile servers, a full disk, a second pull ---------------
# A local HTTP server (127.0.0.1, ephemeral port) plays each hostile upstream; every test is
# bounded in time by small limits set on kif.data.pull's constants.

class _Hostile:
    """Per-path behaviours of the local server."""

    def __init__(self):
        import gzip

        self.routes = {
            "/o/r/c/bomb.json": ("gzip", gzip.compress(b" " * (48 * 2**20), 9)),
            "/o/r/c/huge.json": ("announce", 10**12),
            "/o/r/c/endless.json": ("endless", None),
            "/o/r/c/trickle.json": ("trickle", 5.0),
            "/o/r/c/slow.json": ("trickle", 0.2),
            "/o/r/c/loop.json": ("redirect", "/o/r/c/loop.json"),
            "/o/r/c/surrogate.json": ("body", b'[{"input": "\\ud800", "output": "a"}]'),
            "/o/r/c/ok.json": ("body", b'[{"input": "q", "output": "a"}]'),
        }


def _handler():
    import time
    from http.server import BaseHTTPRequestHandler

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            kind, arg = self.server.hostile.routes.get(self.path, ("missing", None))
            try:
                if kind == "missing":
                    self.send_error(404)
                elif kind == "redirect":
                    self.send_response(302)
                    self.send_header("Location", arg)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif kind in ("body", "gzip"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(arg)))
                    self.end_headers()
                    self.wfile.write(arg)
                elif kind == "announce":
                    self.send_response(200)
                    self.send_header("Content-Length", str(arg))
                    self.end_headers()
                    self.wfile.write(b"[" * 1000)
                elif kind == "endless":
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    t0 = time.time()
                    while time.time() - t0 < 20:
                        self.wfile.write(b" " * 65536)
                elif kind == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    t0 = time.time()
                    while time.time() - t0 < 20:
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(arg)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return H


@pytest.fixture
def hostile_server():
    import threading
    from http.server import ThreadingHTTPServer

    srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler())
    srv.daemon_threads = True
    srv.hostile = _Hostile()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _entry(name: str):
    from kif.data.manifest import Entry

    return Entry(path="long_sequence/cb/test", sha256="0" * 64, items=1,
                 source={"repo": "o/r", "commit": "c", "path": name})


def _pull_fails(server, name, tmp_path, *words, **kw):
    import time

    from kif.data.pull import pull
    from kif.errors import DataError

    t0 = time.monotonic()
    with pytest.raises(DataError) as err:
        pull(dest=tmp_path / "data", base_url=server.url, progress=False, entries=[_entry(name)], **kw)
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg, time.monotonic() - t0


@pytest.fixture
def small_bounds(monkeypatch):
    import kif.data.pull as pull_mod

    monkeypatch.setattr(pull_mod, "MAX_DOWNLOAD_BYTES", 2**20, raising=False)  # raising: also on old code
    monkeypatch.setattr(pull_mod, "RETRY_DELAYS_S", (0,))


def test_pull_refuses_a_download_announced_larger_than_the_cap(hostile_server, small_bounds, tmp_path):
    _, took = _pull_fails(hostile_server, "huge.json", tmp_path, "huge.json", "announced")
    assert took < 10
    assert not list((tmp_path / "data").rglob("*.part"))


def test_pull_stops_an_endless_response_at_the_cap(hostile_server, small_bounds, tmp_path):
    _, took = _pull_fails(hostile_server, "endless.json", tmp_path, "endless.json", "more than 1048576 bytes")
    assert took < 10
    assert not list((tmp_path / "data").rglob("*.part"))


def test_pull_inflates_a_gzip_bomb_only_up_to_the_cap(hostile_server, small_bounds, monkeypatch, tmp_path):
    import tracemalloc

    import kif.data.pull as pull_mod

    monkeypatch.setattr(pull_mod, "MAX_DOWNLOAD_BYTES", 4 * 2**20)  # the bomb itself (~50 KB) downloads
    tracemalloc.start()
    try:
        _pull_fails(hostile_server, "bomb.json", tmp_path, "bomb.json", "MB of text")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20  # 48 MB inflated in memory before; now at most the 4 MB cap (+ copies)


def test_pull_read_timeout_fails_a_server_trickling_a_byte_every_5_s(hostile_server, small_bounds, monkeypatch,
                                                                    tmp_path):
    import kif.data.pull as pull_mod

    monkeypatch.setattr(pull_mod, "TIMEOUT_S", 1)
    _, took = _pull_fails(hostile_server, "trickle.json", tmp_path, "trickle.json", "timed out", retries=0)
    assert took < 8


def test_pull_drops_a_stalled_connection(hostile_server, small_bounds, monkeypatch, tmp_path):
    import kif.data.pull as pull_mod

    monkeypatch.setattr(pull_mod, "STALL_WINDOW_S", 1)
    _, took = _pull_fails(hostile_server, "slow.json", tmp_path, "slow.json", "stalled", retries=0)
    assert took < 8


def test_pull_has_an_overall_deadline(hostile_server, small_bounds, monkeypatch, tmp_path):
    import kif.data.pull as pull_mod

    monkeypatch.setattr(pull_mod, "DEADLINE_S", 1.5)
    _, took = _pull_fails(hostile_server, "slow.json", tmp_path, "deadline", "run the same command again")
    assert took < 8


def test_pull_redirect_loop_is_one_line(hostile_server, small_bounds, tmp_path):
    _pull_fails(hostile_server, "loop.json", tmp_path, "loop.json", "HTTP 302")


def test_pull_lone_surrogate_json_is_one_line(hostile_server, small_bounds, tmp_path):
    _pull_fails(hostile_server, "surrogate.json", tmp_path, "surrogate", "not valid Unicode")


def test_pull_on_a_full_disk_says_the_disk_is_full(hostile_server, small_bounds, monkeypatch, tmp_path):
    import errno

    import kif.data.pull as pull_mod

    class Full:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pull_mod, "open", Full, raising=False)
    msg, _ = _pull_fails(hostile_server, "ok.json", tmp_path, "disk is full")
    assert "download failed" not in msg


def test_second_pull_into_one_folder_is_refused_naming_the_first(hostile_server, tmp_path):
    from kif.lock import OutputLock

    with OutputLock(tmp_path / "data", "data folder"):
        _pull_fails(hostile_server, "ok.json", tmp_path, str(tmp_path / "data"), "in use by another kif process")


@pytest.mark.parametrize("url", ["http://[::1", "ftp://host/x", "http://", "http://host:99999/x", "not a url",
                                 "http://ho st/x"])
def test_pull_malformed_base_url_is_one_line(url, tmp_path, capsys):
    fails_one_line(["data", "pull", "--dir", str(tmp_path / "data"), "--base-url", url, "-q"], capsys, "--base-url")
    assert not (tmp_path / "data").exists()


def test_pull_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    fails_one_line(["data", "pull", "--dir", str(tmp_path / "f"), "--base-url", "http://127.0.0.1:9", "-q"], capsys,
           str(tmp_path / "f"), "not a folder")
    assert (tmp_path / "f").read_text() == "mine"


# ---- 4. custom data bounds ------------------------------------------------------------------------------

def test_custom_data_item_too_long_is_refused(tmp_path, capsys):
    from kif.data.loaders import MAX_ITEM_CHARS

    (tmp_path / "data.json").write_text(json.dumps([{"input": "x" * (MAX_ITEM_CHARS + 1), "output": "a"}]))
    (tmp_path / "bench.yaml").write_text("name: b\ntasks:\n  t: {path: data.json, metric: accuracy}\n")
    fails_one_line(["benchmarks", str(tmp_path / "bench.yaml")], capsys, "data.json", "characters")


def test_custom_data_file_too_large_is_refused_unread(tmp_path, monkeypatch, capsys):
    import gzip

    import kif.data.loaders as loaders

    monkeypatch.setattr(loaders, "MAX_TEXT_BYTES", 2**20)
    (tmp_path / "data.json.gz").write_bytes(gzip.compress(b" " * (8 * 2**20) + b"[]"))
    (tmp_path / "bench.yaml").write_text("name: b\ntasks:\n  t: {path: data.json.gz, metric: accuracy}\n")
    fails_one_line(["benchmarks", str(tmp_path / "bench.yaml")], capsys, "data.json.gz", "MB of text")


@pytest.mark.parametrize("template", ["{input:>999999999}", "{input:.99999999}", "{input:0>123456}"])
def test_prompt_template_with_a_huge_width_is_refused(template, tmp_path, capsys):
    (tmp_path / "data.json").write_text(json.dumps([{"input": "q", "output": "a"}]))
    doc = {"name": "b", "tasks": {"t": {"path": "data.json", "metric": "accuracy", "prompt_template": template}}}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(doc))
    fails_one_line(["benchmarks", str(tmp_path / "bench.yaml")], capsys, "prompt_template", "width")
