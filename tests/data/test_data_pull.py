"""`kif data pull` / `kif data check` and the manifest.

Pulls run against a local HTTP server (127.0.0.1, ephemeral port, with Range support)
serving an upstream-shaped tree rebuilt from a few shared files: TaSL's files for cb and
yahoo, a SAPT-shaped dbpedia test from which the rebuild draws exactly the shared split,
a SAPT SuperNI task and a natural-instructions task file with the kept instances at their
recorded indices. No outside network.
"""
from __future__ import annotations

import gzip
import json
import random
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import kif.data.manifest as manifest_mod
from kif.cli import main
from kif.data.locations import DEFAULT_DATA_DIR, resolve_data_dir
from kif.data.loaders import load_task_file, read_json
from kif.data.manifest import (
    build_manifest,
    check_data_dir,
    load_manifest,
    manifest_text,
    stored_file,
)
from kif.data.pull import default_pull_dir, pull, source_url
from kif.errors import DataError

SUBSET = [  # a few splits covering every kind of source: plain, test = dev, both rebuilds
    "long_sequence/cb/train", "long_sequence/cb/dev", "long_sequence/cb/test",
    "long_sequence/yahoo/dev", "long_sequence/yahoo/test", "long_sequence/dbpedia/test",
    "superni/task1729_personachat_generate_next/test",
    "superni_unseen/task1451_drug_dose_extraction/test",
]


@pytest.fixture(scope="module")
def shared(full_data) -> Path:
    """The full benchmark data (conftest: skipped where absent, a failure in CI)."""
    return full_data


@pytest.fixture(scope="module")
def subset(shared):
    entries = {e.path: e for e in load_manifest()}
    return [entries[p] for p in SUBSET]


# ---- the upstream-shaped tree and its server --------------------------------------------------

def _sapt_shaped(split: list[dict], t: dict) -> dict:
    """A SAPT-like dbpedia test file from which ``sample_per_label`` draws exactly ``split``:
    each label's group gets one decoy more than it needs, and the shared items go where the
    same seeded draws will pick them."""
    blocks: dict[str, list[str]] = {}
    for x in split:
        body = x["input"].removeprefix(t["input_prefix"]).removesuffix(t["input_suffix"])
        blocks.setdefault(x["output"], []).append(body)
    rng, instances = random.Random(t["seed"]), []
    for label in sorted(blocks):
        group = [{"input": f"Title: decoy {i}\nText: not drawn\n", "output": label}
                 for i in range(len(blocks[label]) + 1)]
        for body, pos in zip(blocks[label], rng.sample(range(len(group)), t["per_label"])):
            group[pos] = {"input": body, "output": label}
        instances += group
    return {"Definition": ["classify by topic"], "Positive Examples": [], "Negative Examples": [],
            "Instances": instances}


def _natural_instructions_shaped(task: dict, indices: list[int]) -> dict:
    """A full task file holding ``task``'s instances at the recorded ``indices``."""
    instances = [{"id": f"decoy-{i}", "input": "x", "output": ["y"]} for i in range(max(indices) + 3)]
    for inst, i in zip(task["Instances"], indices):
        instances[i] = inst
    return {**task, "Instances": instances}


def _upstream(entry, content):
    t = entry.transform or {}
    if t.get("kind") == "sample_per_label":
        return _sapt_shaped(content, t)
    if t.get("kind") == "select_instances":
        return _natural_instructions_shaped(content, t["indices"])
    return content


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, shared, subset) -> Path:
    root = tmp_path_factory.mktemp("upstream")
    for e in subset:
        content = read_json(stored_file(shared, e))
        f = root / e.source["repo"] / e.source["commit"] / e.source["path"]
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(_upstream(e, content), indent=2, ensure_ascii=False), encoding="utf-8")
    return root


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves ``server.root``; honours ``Range: bytes=N-``; logs every request; can drop a
    connection halfway once (``server.drop_once``) or alter a file (``server.corrupt``)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        rel = self.path.lstrip("/")
        srv.log.append((rel, self.headers.get("Range")))
        f = srv.root / rel
        if not f.is_file():
            self.send_error(404)
            return
        data = srv.corrupt.get(rel, lambda b: b)(f.read_bytes())
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m:
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if rel in srv.drop_once:  # announce the whole file, send half, hang up
            srv.drop_once.discard(rel)
            srv.dropped_at[rel] = start + len(body) // 2
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server(upstream, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    srv.daemon_threads = True
    srv.root, srv.log, srv.drop_once, srv.corrupt, srv.dropped_at = upstream, [], set(), {}, {}
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def subset_manifest(subset, tmp_path, monkeypatch):
    """The CLI reads a manifest of the subset only."""
    path = tmp_path / "manifest.json"
    path.write_text(manifest_text(subset), encoding="utf-8")
    monkeypatch.setattr(manifest_mod, "MANIFEST_PATH", path)
    return subset


def _rel(entry) -> str:
    return "/".join([entry.source["repo"], entry.source["commit"], entry.source["path"]])


# ---- the manifest equals the shared data ------------------------------------------------------

def test_manifest_equals_shared_files(shared):
    """Every hash, count and source of the shipped manifest is what build_manifest.py
    computes from the shared files now."""
    built = [e.to_json() for e in build_manifest(shared)]
    shipped = [e.to_json() for e in load_manifest()]
    assert [e["path"] for e in built] == [e["path"] for e in shipped]
    assert built == shipped
    assert len(shipped) == 15 * 3 + 15 * 3 + 15
    by_path = {e["path"]: e for e in shipped}
    assert by_path["long_sequence/dbpedia/test"]["items"] == 7000  # 500 per label x 14
    assert by_path["long_sequence/yahoo/test"]["sha256"] == by_path["long_sequence/yahoo/dev"]["sha256"]
    assert by_path["long_sequence/boolq/train"]["source"]["path"].endswith("/boolqa_T5.json")


def test_check_shared_passes(shared, capsys):
    assert main(["data", "check", str(shared)]) == 0
    assert "105 task splits match the manifest" in capsys.readouterr().out


# ---- pull ----------------------------------------------------------------------------------------

def test_pull_resumes_a_dropped_download_and_a_rerun_downloads_nothing(server, subset_manifest, tmp_path, capsys):
    dest = tmp_path / "data"
    sapt = _rel(next(e for e in subset_manifest if e.path == "long_sequence/dbpedia/test"))
    server.drop_once.add(sapt)
    assert main(["data", "pull", "--dir", str(dest), "--base-url", server.url, "-q"]) == 0
    out = capsys.readouterr().out

    # the dropped download resumed where the connection closed, with a Range request
    assert [r for p, r in server.log if p == sapt] == [None, f"bytes={server.dropped_at[sapt]}-"]
    # yahoo's dev and test come from one file, fetched once
    yahoo = _rel(next(e for e in subset_manifest if e.path == "long_sequence/yahoo/dev"))
    assert [p for p, _ in server.log].count(yahoo) == 1
    assert len(server.log) == 7 + 1  # 7 distinct upstream files, one resumed
    assert check_data_dir(dest, entries=subset_manifest).ok
    assert not (dest / ".kif-download").exists()
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == \
        sorted(e.path + ".json.gz" for e in subset_manifest)
    assert len(load_task_file(dest / "long_sequence/dbpedia/test.json.gz", "flat")) == 7000
    assert f"data: {dest}" in out and f"export KIF_DATA={dest}" in out

    server.log.clear()
    assert main(["data", "pull", "--dir", str(dest), "--base-url", server.url, "-q"]) == 0
    assert server.log == []  # every split verified in place: nothing downloaded
    assert "long_sequence: 6 task splits verified (0 downloaded, 6 already there)" in capsys.readouterr().out


def test_pull_resumes_in_a_later_run(server, subset, tmp_path):
    """An interrupted pull leaves a .part file; the next pull asks only for the rest."""
    cb = [e for e in subset if e.path == "long_sequence/cb/test"]
    rel = _rel(cb[0])
    server.drop_once.add(rel)
    with pytest.raises(DataError, match="run the same command again to resume"):
        pull("long_sequence", tmp_path, base_url=server.url, progress=False, retries=0, entries=cb)
    part = tmp_path / ".kif-download" / (rel + ".part")
    assert part.stat().st_size == server.dropped_at[rel] > 0
    assert not (tmp_path / "long_sequence").exists()  # nothing half-written

    report = pull("long_sequence", tmp_path, base_url=server.url, progress=False, entries=cb)
    assert server.log[-1] == (rel, f"bytes={server.dropped_at[rel]}-")
    assert report.written == {"long_sequence": 1}
    assert report.bytes == (server.root / rel).stat().st_size - server.dropped_at[rel]
    assert check_data_dir(tmp_path, entries=cb).ok


def test_pull_corrupted_file_fails_naming_it(server, subset_manifest, tmp_path, capsys):
    dest = tmp_path / "data"
    cb_test = next(e for e in subset_manifest if e.path == "long_sequence/cb/test")
    server.corrupt[_rel(cb_test)] = lambda b: b.replace(b'"contradiction"', b'"entailment"', 1)
    assert main(["data", "pull", "--dir", str(dest), "--base-url", server.url, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0  # one line, no traceback
    assert err.startswith(f"kif: error: {dest / 'long_sequence/cb/test.json.gz'}: checksum mismatch")
    assert server.url + "/" + _rel(cb_test) in err
    assert not (dest / "long_sequence/cb/test.json.gz").exists()
    assert not list(dest.rglob("*.tmp")) and not list(dest.rglob("*test.json"))  # no raw file kept

    # the source repaired, a rerun fetches what is missing only
    server.corrupt.clear()
    server.log.clear()
    assert main(["data", "pull", "--dir", str(dest), "--base-url", server.url, "-q"]) == 0
    assert _rel(cb_test) in [p for p, _ in server.log]
    assert _rel(next(e for e in subset_manifest if e.path == "long_sequence/cb/train")) not in \
        [p for p, _ in server.log]
    assert check_data_dir(dest, entries=subset_manifest).ok


def test_pull_unknown_source_is_one_line_error(server, subset, tmp_path):
    with pytest.raises(DataError, match=r"HTTP 404"):
        pull(None, tmp_path, base_url=server.url + "/nowhere", progress=False, entries=subset[:1])


# ---- check ---------------------------------------------------------------------------------------

def test_check_names_altered_missing_and_extra_files(shared, subset_manifest, tmp_path, capsys):
    data = tmp_path / "copy"
    for e in subset_manifest:
        src = stored_file(shared, e)
        (data / src.relative_to(shared)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, data / src.relative_to(shared))
    # the same content as plain JSON is the same data (hashes are of parsed content)
    cb = data / "long_sequence/cb/test.json.gz"
    plain = cb.with_suffix("")
    plain.write_bytes(gzip.decompress(cb.read_bytes()))
    cb.unlink()
    assert main(["data", "check", str(data)]) == 0
    capsys.readouterr()

    raw = bytearray(plain.read_bytes())  # one byte: a label's first letter
    raw[raw.index(b'"output": "contradiction"') + len(b'"output": "')] = ord("k")
    plain.write_bytes(bytes(raw))
    assert main(["data", "check", "--dir", str(data)]) == 2
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1
    assert out.startswith("altered: long_sequence/cb/test.json: sha256 ")
    assert err.strip() == f"kif: error: {data}: does not match the manifest (0 missing, 0 extra, 1 altered of 8)"

    # a flipped byte inside a gzip file, a missing split and a stray file are named too
    gz = data / "superni/task1729_personachat_generate_next/test.json.gz"
    b = bytearray(gz.read_bytes())
    b[len(b) // 2] ^= 0xFF
    gz.write_bytes(bytes(b))
    (data / "long_sequence/yahoo/dev.json.gz").unlink()
    (data / "long_sequence/cb/notes.txt").write_text("mine")
    assert main(["data", "check", str(data)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert "missing: long_sequence/yahoo/dev.json.gz" in lines
    assert "extra:   long_sequence/cb/notes.txt" in lines
    assert any(x.startswith("altered: superni/task1729_personachat_generate_next/test.json.gz: ") for x in lines)
    assert any(x.startswith("altered: long_sequence/cb/test.json: ") for x in lines)


# ---- where kif looks --------------------------------------------------------------------------

def test_lookup_order(tmp_path, monkeypatch, capsys):
    pulled, env = tmp_path / "pulled", tmp_path / "env"
    monkeypatch.setenv("KIF_DATA_HOME", str(pulled))
    monkeypatch.delenv("KIF_DATA", raising=False)
    assert default_pull_dir() == pulled
    monkeypatch.delenv("KIF_DATA_HOME")
    monkeypatch.setenv("KIF_CACHE", str(tmp_path / "cache"))
    assert default_pull_dir() == tmp_path / "cache" / "data"
    monkeypatch.setenv("KIF_DATA_HOME", str(pulled))

    pulled.mkdir()
    env.mkdir()
    assert resolve_data_dir(None) == pulled  # the pull location before ../shared/benchmarks
    assert main(["benchmarks"]) == 0
    out = capsys.readouterr().out
    assert f"3. kif data pull location ($KIF_DATA_HOME, default ~/.cache/kif/data): {pulled}  <- used" in out
    assert "2. $KIF_DATA: not set" in out
    monkeypatch.setenv("KIF_DATA", str(env))
    assert resolve_data_dir(None) == env  # $KIF_DATA before the pull location
    assert resolve_data_dir(tmp_path) == tmp_path  # config data_dir before everything
    monkeypatch.delenv("KIF_DATA")
    pulled.rmdir()
    here = (Path.cwd() / ".." / "shared" / "benchmarks").resolve()
    if here.is_dir() or DEFAULT_DATA_DIR.is_dir():  # then ../shared/benchmarks
        assert resolve_data_dir(None) == (here if here.is_dir() else DEFAULT_DATA_DIR.resolve())


def test_source_url():
    src = {"repo": "WoodScene/TaSL", "commit": "abc", "path": "data/x.json"}
    assert source_url("http://127.0.0.1:1/", src) == "http://127.0.0.1:1/WoodScene/TaSL/abc/data/x.json"
