import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import settings

# CI (CI=true) draws the same examples on every run, so a red CI is reproducible; a developer's
# runs keep exploring new ones (and pin what they find with @example).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

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


def make_matrix(rng, n, m, scale, sparse, dtype):
    """Uniform entries times ``scale``; with ``sparse`` 60% of them zeroed, as CSR."""
    X = (rng.random((n, m)) * scale).astype(dtype)
    if sparse:
        X[rng.random((n, m)) < 0.6] = 0
        X = sp.csr_matrix(X)
    return X


def rounding_slack(X):
    """How far two losses of the same iterate may differ by rounding alone; compare losses within it.

    The loss from Gram identities is four terms of size about ``||X||^2`` (the cross term
    twice), each a sum of at most ``n m`` products whose rounding grows with their number
    (Higham's bound), and the two losses compared may be summed in different orders (a
    probe's per-batch cross terms, a refresh's whole one): a stationary start (k=1 at its
    NNDSVD optimum, 13 x 18 sparse) rose by 2.0e-12 on ``||X||^2 = 39``, 230 eps.
    """
    sq = float((X.multiply(X)).sum() if sp.issparse(X) else np.square(X, dtype=np.float64).sum())
    eps = np.finfo(X.dtype).eps
    return 4 * X.shape[0] * X.shape[1] * eps * sq


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
