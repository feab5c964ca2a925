"""nmfsched.metrics against the plain NumPy residual."""

import numpy as np
import pytest
import scipy.sparse as sp

from nmfsched.metrics import _BLOCK_ENTRIES, frobenius_error, relative_error


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_sparse_and_blocked_match_numpy(rng, dtype, monkeypatch):
    X = rng.random((70, 9)).astype(dtype)
    X[X < 0.5] = 0
    W, H = rng.random((70, 3)).astype(dtype), rng.random((3, 9)).astype(dtype)
    expected = np.linalg.norm(X.astype(np.float64) - W.astype(np.float64) @ H.astype(np.float64))
    assert frobenius_error(X, W, H) == pytest.approx(expected, rel=1e-6)
    assert frobenius_error(sp.csr_matrix(X), W, H) == pytest.approx(expected, rel=1e-6)
    monkeypatch.setattr("nmfsched.metrics._BLOCK_ENTRIES", 20)  # many row blocks
    assert frobenius_error(X, W, H) == pytest.approx(expected, rel=1e-6)
    assert relative_error(X, W, H) == pytest.approx(expected / np.linalg.norm(X.astype(np.float64)), rel=1e-6)
    assert _BLOCK_ENTRIES > 20


def test_zero_matrix_has_zero_relative_error():
    assert relative_error(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros((1, 2))) == 0.0
