"""Reconstruction error of a factorization, computed in float64 without forming ``W H`` whole."""

import numpy as np
import scipy.sparse as sp

from .objective import loss_from_grams
from .theory.namespace import array_namespace

# Rows per block of the dense residual: about 4M entries (32 MB in float64) at a time.
_BLOCK_ENTRIES = 1 << 22


def frobenius_error(X, W, H):
    """``||X - W H||_F`` in float64.

    Dense ``X`` is processed in row blocks; sparse ``X`` by the Gram identity
    ``||X||^2 - 2 <X H^T, W> + <W^T W, H H^T>``, so it is never densified.
    """
    xp = array_namespace(X, W)  # CuPy input is measured on the device
    H64 = xp.asarray(H, dtype=xp.float64)
    W = xp.asarray(W)
    if hasattr(X, "tocsr"):  # SciPy or cupyx sparse
        X = X.tocsr()
        data = X.data.astype(xp.float64)
        cross = float(xp.sum(xp.asarray(X @ H64.T) * W))
        W64 = W.astype(xp.float64)
        loss = loss_from_grams(float(data @ data), cross, W64.T @ W64, H64 @ H64.T)
        return float(np.sqrt(max(2.0 * loss, 0.0)))
    X = xp.asarray(X)
    total = 0.0
    step = max(1, _BLOCK_ENTRIES // max(1, X.shape[1]))
    for start in range(0, X.shape[0], step):
        R = X[start : start + step].astype(xp.float64) - W[start : start + step] @ H64
        total += float(xp.einsum("ij,ij->", R, R))
    return float(np.sqrt(total))


def relative_error(X, W, H):
    """``||X - W H||_F / ||X||_F`` (0 for ``X = 0``)."""
    data = X.data if sp.issparse(X) else np.asarray(X)
    norm = float(np.linalg.norm(data.astype(np.float64, copy=False).ravel()))
    return frobenius_error(X, W, H) / norm if norm > 0 else 0.0
