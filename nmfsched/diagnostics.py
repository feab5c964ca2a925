"""Exact measurements that check the theory on real data (used by the notebooks and tests)."""

import numpy as np
import scipy.sparse as sp

from .kernels import get_backend
from .solver import StochasticSolver, _safe_inverse
from .theory import component_lipschitz, entry_clip_limits


def h_step_expected_change(X, W, H, lrs, *, batch_size=256, random_state=0, curvature_tolerance=None):
    """Exact expected change of ``f`` from one projected stochastic ``H`` step, ``W`` fixed.

    The rows are split into minibatches as the solver splits them in one epoch. For each
    minibatch ``B`` (probability ``p_B = |B|/n``) and each learning rate, the solver's
    own kernel takes the step ``H -> P(H - lr/L_j g_B)`` from the same ``H`` and the loss
    is evaluated exactly; the ``p_B``-weighted mean is the expectation over the batch
    distribution. This is the quantity Theorem 1 (theory/README.md) bounds, without its
    assumptions A2-A3: the projection, Gauss-Seidel order and clipping are all real.

    Parameters
    ----------
    X : ndarray or sparse matrix of shape (n_samples, n_features)
    W : ndarray of shape (n_samples, k)
    H : ndarray of shape (k, n_features)
    lrs : sequence of float
    batch_size : int, default=256
    random_state : int, default=0
        Seeds the split into minibatches.
    curvature_tolerance : float, default=None
        Clip the step as an enforcing solver would.

    Returns
    -------
    changes : ndarray of shape (len(lrs),)
        ``E[f(W, H_new)] - f(W, H)``.
    bound : float
        The learning-rate bound computed from the same minibatches.
    """
    be = get_backend("cpu")
    X = X.tocsr() if sp.issparse(X) else np.asarray(X)
    W = np.ascontiguousarray(W, dtype=X.dtype)
    H = np.ascontiguousarray(H, dtype=X.dtype)
    solver = StochasticSolver(
        X, W, H, backend=be, batch_size=batch_size, w_sweeps=1, rng=np.random.default_rng(random_state)
    )
    n, m = X.shape
    Ht0 = solver.Ht.copy()
    L = component_lipschitz(solver.WtW)
    P_full = be.xb_ht(be.all_rows(solver.X), Ht0, np.empty((n, H.shape[0]), X.dtype))

    def loss(Ht):
        P = be.xb_ht(be.all_rows(solver.X), Ht, P_full)
        return solver.gram_loss(be.inner(W, P), be.gram(Ht))

    f0 = loss(Ht0)
    changes = np.zeros(len(lrs))
    solver._reset_statistics()
    clips = None
    if curvature_tolerance is not None:
        clips = entry_clip_limits(np.diag(be.gram(Ht0)), m, curvature_tolerance)
    for rows in solver._batches():
        rows = np.arange(n) if rows is None else rows  # one batch of all rows
        Xb = be.take_rows(solver.X, rows, None if sp.issparse(X) else np.empty((rows.shape[0], m), X.dtype))
        Wb = W[rows]
        WbtWb = be.gram(Wb)
        Ct = be.xbt_wb(Xb, Wb, np.empty((m, H.shape[0]), X.dtype))
        weight = rows.shape[0] / n
        for i, lr in enumerate(lrs):
            Ht = Ht0.copy()
            steps = lr * (n / rows.shape[0]) * _safe_inverse(L)
            # the start gradient does not depend on lr: gather the statistics once
            stats = solver._statistics(rows.shape[0]) if i == 0 else None
            be.projected_cd(Ht, WbtWb, Ct, steps, clips=clips, statistics=stats)
            changes[i] += weight * (loss(Ht) - f0)
    return changes, solver.lr_bound()  # solver.Ht is still Ht0: the steps worked on copies


def largest_descending_rate(lrs, changes):
    """The largest rate of an increasing grid below which every expected change is < 0.

    Returns the grid value just before the first rate whose expected change is >= 0 (the
    whole grid's last value when there is none, 0 when the first already fails).
    """
    lrs, changes = np.asarray(lrs), np.asarray(changes)
    bad = np.flatnonzero(changes >= 0)
    if not bad.size:
        return float(lrs[-1])
    return float(lrs[bad[0] - 1]) if bad[0] > 0 else 0.0
