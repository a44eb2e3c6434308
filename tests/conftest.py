"""Shared fixtures. Real benchmark data is read in place (never copied into the repo)."""
import os
from pathlib import Path

import pytest

# Tests use tiny models: one thread is faster than OpenMP's team of threads on 2 shared
# cores (and the subprocess tests, 2 processes at once in the distributed one, inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from kif.data.benchmarks import resolve_data_dir
from kif.errors import DataError


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark data folder (KIF_DATA or ../shared/benchmarks); skips when absent."""
    try:
        return resolve_data_dir(None)
    except DataError as e:
        pytest.skip(f"benchmark data not available: {e}")
