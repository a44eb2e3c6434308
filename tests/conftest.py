"""Shared fixtures. Real benchmark data is read in place (never copied into the repo)."""
from pathlib import Path

import pytest

from kif.data.benchmarks import resolve_data_dir
from kif.errors import DataError


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark data folder (KIF_DATA or ../shared/benchmarks); skips when absent."""
    try:
        return resolve_data_dir(None)
    except DataError as e:
        pytest.skip(f"benchmark data not available: {e}")
