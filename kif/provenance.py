"""Which kif source produced a result: the git commit of the checkout kif is imported from.

Recorded in every run's ``results.json`` (``kif_commit``) so that a committed result names
the code that computed it. A kif installed from a wheel (no git checkout around the package,
or a checkout that does not track it) records None.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return out.stdout if out.returncode == 0 else None


def source_commit(package_dir: str | Path = _PACKAGE) -> dict | None:
    """``{"commit": 40-hex sha, "dirty": bool}`` for the git checkout that tracks the kif package
    at ``package_dir`` (dirty: a tracked file differs from that commit; untracked files do not
    count), or None when the package is not tracked by git there (a wheel install, even one
    inside some other repository's folder)."""
    package_dir = Path(package_dir)
    if _git("ls-files", "--error-unmatch", "__init__.py", cwd=package_dir) is None:
        return None
    sha = _git("rev-parse", "HEAD", cwd=package_dir)
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=package_dir)
    if sha is None or status is None:
        return None
    return {"commit": sha.strip(), "dirty": bool(status.strip())}
