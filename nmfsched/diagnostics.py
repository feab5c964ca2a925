"""Exact measurements that check the theory on real data (used by the notebooks and tests)."""

import numpy as np
import scipy.sparse as sp

from . import objective
from .kernels import get_backend
from .solver import StochasticSolver


def h_step_expected_change(X, W, H, lrs, *, batch_size=256, random_state=0, curvature_tolerance=None,
                           backend="auto"):
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
    backend : str, default="auto"
        The backend whose kernels take the steps (see ``nmfsched.kernels``).

    Returns
    -------
    changes : ndarray of shape (len(lrs),)
        ``E[f(W, H_new)] - f(W, H)``.
    bound : float
        The learning-rate bound computed from the same minibatches.
    """
    be = get_backend(backend)
    X = X.tocsr() if sp.issparse(X) else np.asarray(X)
    dtype = X.dtype
    W = np.ascontiguousarray(W, dtype=dtype)
    H = np.ascontiguousarray(H, dtype=dtype)
    solver = StochasticSolver(
        X, W, H, backend=be, batch_size=batch_size, w_sweeps=1, rng=np.random.default_rng(random_state)
    )
    (n, m), k = X.shape, H.shape[0]
    Ht0 = solver.Ht.copy()
    steps_at_unit_rate = objective.unit_steps(solver.WtW)
    P_full = be.empty((n, k), dtype)

    def loss(Ht):
        block = objective.w_block(be, be.all_rows(solver.X), Ht, P_full)
        return solver.gram_loss(be.inner(solver.W, block.P), block.G)

    f0 = loss(Ht0)
    changes = np.zeros(len(lrs))
    solver.statistics.start_pass()
    clips = None
    if curvature_tolerance is not None:
        clips = objective.h_clip_limits(be.gram(Ht0), m, curvature_tolerance)
    for rows in solver.minibatches():
        rows = be.asarray(np.arange(n, dtype=np.int64)) if rows is None else rows  # one batch of all rows
        nb = rows.shape[0]
        Xb = be.take_rows(solver.X, rows, be.empty((nb, m), dtype))
        Wb = be.take_rows(solver.W, rows, be.empty((nb, k), dtype))
        WbtWb, Ct = objective.h_block(be, Xb, Wb, be.empty((m, k), dtype))
        for i, lr in enumerate(lrs):
            Ht = Ht0.copy()
            # the start gradient does not depend on lr: gather the statistics once
            stats = solver.statistics.accumulator(nb) if i == 0 else None
            be.projected_cd(Ht, WbtWb, Ct, lr * (n / nb) * steps_at_unit_rate, clips=clips, statistics=stats)
            changes[i] += (nb / n) * (loss(Ht) - f0)
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
