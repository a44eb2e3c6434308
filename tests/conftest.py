"""Shared fixtures.

End-to-end tests run on ``tests/fixtures/benchmarks`` (a few real examples per task, both
native layouts; ``tests/fixtures/build_benchmarks.py`` rebuilds it), so they run on any
machine: the session points ``KIF_DATA`` there, subprocesses included. The few tests that
need the full benchmark data ask for ``full_data``: skipped on a machine without it, a
failure in CI (where the data must be present).
"""
import os
from pathlib import Path

import pytest

# Tests use tiny models: one thread is faster than OpenMP's team of threads on 2 shared
# cores (and the subprocess tests, 2 processes at once in the distributed one, inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from kif.data.locations import resolve_data_dir  # noqa: E402
from kif.errors import DataError  # noqa: E402

FIXTURE_DATA = Path(__file__).resolve().parent / "fixtures" / "benchmarks"
_USER_DATA = os.environ.get("KIF_DATA")  # where the full data is, if the caller said so
os.environ["KIF_DATA"] = str(FIXTURE_DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark folder the end-to-end tests read: the fixture (never skipped)."""
    return FIXTURE_DATA


@pytest.fixture(scope="session")
def full_data() -> Path:
    """The full benchmark data (the caller's KIF_DATA, else ../shared/benchmarks)."""
    try:
        saved = os.environ.pop("KIF_DATA")
        if _USER_DATA:
            os.environ["KIF_DATA"] = _USER_DATA
        return resolve_data_dir(None)
    except DataError as e:
        if os.environ.get("CI"):
            pytest.fail(f"the full benchmark data must be present in CI: {e}")
        pytest.skip(f"full benchmark data not available: {e}")
    finally:
        os.environ["KIF_DATA"] = saved
