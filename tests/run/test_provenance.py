"""kif.provenance.source_commit: the commit (and dirty flag) of the git checkout that tracks the
kif package; None for a package git does not track (a wheel install)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kif.provenance import source_commit

from helpers import REPO

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_commit_and_dirty_flag_of_the_checkout(tmp_path):
    pkg = tmp_path / "repo" / "kif"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    _git(tmp_path / "repo", "init", "-q")
    _git(tmp_path / "repo", "add", "-A")
    _git(tmp_path / "repo", "commit", "-qm", "one")
    sha = _git(tmp_path / "repo", "rev-parse", "HEAD")
    assert source_commit(pkg) == {"commit": sha, "dirty": False}
    (tmp_path / "repo" / "notes.txt").write_text("untracked\n")  # untracked files do not count
    assert source_commit(pkg) == {"commit": sha, "dirty": False}
    (pkg / "__init__.py").write_text("x = 2\n")  # a tracked file changed
    assert source_commit(pkg) == {"commit": sha, "dirty": True}


def test_a_package_git_does_not_track_has_no_commit(tmp_path):
    # a wheel unpacked into site-packages inside some other repository's folder
    repo = tmp_path / "other"
    (repo / "venv" / "kif").mkdir(parents=True)
    (repo / "README").write_text("r\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "README")
    _git(repo, "commit", "-qm", "one")
    (repo / "venv" / "kif" / "__init__.py").write_text("x = 1\n")
    assert source_commit(repo / "venv" / "kif") is None
    lone = tmp_path / "lone" / "kif"
    lone.mkdir(parents=True)
    (lone / "__init__.py").write_text("x = 1\n")
    assert source_commit(lone) is None


def test_this_checkout():
    pkg = REPO / "kif"
    got = source_commit(pkg)
    if got is not None:  # tests run from a git checkout
        assert got["commit"] == _git(pkg, "rev-parse", "HEAD") and isinstance(got["dirty"], bool)
