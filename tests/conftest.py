from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(name):
    """Path of a file in ../shared/data, or skip the test when it is not there."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def low_rank(n, m, k, seed=0, noise=0.0, dtype=np.float64):
    """A non-negative matrix of rank ``k`` plus optional non-negative noise."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, k)) @ rng.random((k, m))
    if noise:
        X += noise * rng.random((n, m))
    return X.astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
