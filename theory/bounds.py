"""The noisy-gradient learning-rate bound and the clipping limits.

All functions take per-component ``k``-vectors (or scalars) and are plain NumPy; the solver
gathers the vectors from the data. Statements, assumptions and proofs: theory/README.md.
"""

import numpy as np

from .namespace import array_namespace

#: The largest value :func:`lr_upper_bound` takes (no noise: the deterministic ``lr < 2``).
MAX_LR_BOUND = 2.0


def minibatch_gradient_noise(weighted_sq_norms, mean_sq_norms):
    """Variance of the minibatch gradient around the epoch-mean gradient, per component.

    For an epoch whose minibatches ``B`` (row fractions ``p_B``) partition the rows, with
    unbiased minibatch gradients ``g_B`` and their mean ``gbar = sum_B p_B g_B``::

        sigma_j^2 = sum_B p_B ||g_B,j - gbar_j||^2 = sum_B p_B ||g_B,j||^2 - ||gbar_j||^2

    Parameters
    ----------
    weighted_sq_norms : array of shape (k,)
        ``sum_B p_B ||g_B,j||^2``.
    mean_sq_norms : array of shape (k,)
        ``||gbar_j||^2``.

    Returns
    -------
    ndarray of shape (k,)
        ``sigma_j^2 >= 0`` (rounding below 0 is clamped; one minibatch gives exactly 0).
    """
    noise = np.asarray(weighted_sq_norms, dtype=np.float64) - np.asarray(mean_sq_norms, dtype=np.float64)
    return np.maximum(noise, 0.0)


def lr_upper_bound(grad_sq_norms, noise_sq, lipschitz):
    """Largest dimensionless learning rate with expected descent of a projected SGD sweep.

    A Gauss-Seidel sweep that moves component ``j`` by ``lr / L_j`` times an unbiased
    gradient estimate (variance ``sigma_j^2``) decreases ``f`` in expectation iff::

        lr < 2 * S_g / (S_g + S_sigma),   S_g = sum_j ||G_j||^2 / L_j,
                                          S_sigma = sum_j sigma_j^2 / L_j,

    where ``G_j`` is component ``j``'s projected gradient (the gradient mapping). The
    expected decrease is largest at half the bound. Components with ``L_j = 0`` cannot
    move and are left out. See theory/README.md, Theorem 1.

    Parameters
    ----------
    grad_sq_norms : array of shape (k,)
        ``||G_j||^2``, squared norms of the projected gradient per component.
    noise_sq : array of shape (k,)
        ``sigma_j^2``, minibatch gradient variance per component.
    lipschitz : array of shape (k,)
        ``L_j``, the component Lipschitz constants.

    Returns
    -------
    float
        The bound, in ``[0, 2]``: 2 without noise, 0 at a stationary point with noise.
    """
    L = np.asarray(lipschitz, dtype=np.float64)
    live = L > 0
    if not live.any():
        return MAX_LR_BOUND
    s_g = float(np.sum(np.asarray(grad_sq_norms, dtype=np.float64)[live] / L[live]))
    s_sigma = float(np.sum(np.asarray(noise_sq, dtype=np.float64)[live] / L[live]))
    if s_g + s_sigma <= 0.0 or not np.isfinite(s_g + s_sigma):
        return MAX_LR_BOUND if s_sigma == 0.0 else 0.0
    return MAX_LR_BOUND * s_g / (s_g + s_sigma)


def expected_sweep_change(lr, grad_sq_norms, noise_sq, lipschitz):
    """``E[f(after) - f(before)]`` of the sweep in :func:`lr_upper_bound` (unprojected model).

    Equals ``sum_j (1/L_j) * (-lr ||G_j||^2 + lr^2/2 (||G_j||^2 + sigma_j^2))``; negative
    exactly when ``0 < lr < lr_upper_bound``.
    """
    L = np.asarray(lipschitz, dtype=np.float64)
    live = L > 0
    g = np.asarray(grad_sq_norms, dtype=np.float64)[live] / L[live]
    s = np.asarray(noise_sq, dtype=np.float64)[live] / L[live]
    return float(np.sum(-lr * g + 0.5 * lr**2 * (g + s)))


def _growth(curvature_tolerance):
    if not curvature_tolerance > 0:
        raise ValueError(f"curvature_tolerance must be > 0, got {curvature_tolerance!r}")
    return np.sqrt(1.0 + curvature_tolerance) - 1.0


def update_norm_limits(component_sq_norms, curvature_tolerance=1.0):
    """Largest norm of one update of each component ``h_j`` that keeps its curvature valid.

    The ``W``-block curvature of component ``j`` is ``L_j = ||h_j||^2``. An update with
    ``||dh_j|| <= c ||h_j||``, ``c = sqrt(1 + rho) - 1``, keeps
    ``max(0, 1 - c)^2 L_j <= L_j' <= (1 + rho) L_j`` (theory/README.md, Proposition 2).

    Parameters
    ----------
    component_sq_norms : array of shape (k,)
        ``||h_j||^2`` (the diagonal of ``H H^T``); NumPy or CuPy (the limits live there too).
    curvature_tolerance : float, default=1.0
        ``rho``: the relative growth of ``L_j`` one update may cause.

    Returns
    -------
    ndarray of shape (k,)
        Limits on ``||dh_j||``. A component below the root-mean-square norm of all
        components gets the limit of one at that norm (a zero component could otherwise
        never move); all-zero ``H`` gives no limit (inf).
    """
    xp = array_namespace(component_sq_norms)
    growth = _growth(curvature_tolerance)
    norms = xp.sqrt(xp.maximum(xp.asarray(component_sq_norms, dtype=xp.float64), 0.0))
    if norms.size == 0:
        return norms.copy()
    rms = xp.sqrt(xp.mean(norms**2))
    # branch-free (no device-to-host sync on a GPU): all-zero H gets no limit
    return xp.where(rms == 0.0, xp.inf, growth * xp.maximum(norms, rms))


def entry_clip_limits(component_sq_norms, n_features, curvature_tolerance=1.0):
    """Per-entry clipping limits that keep each component's curvature valid.

    Entry ``c`` of ``h_j`` may move by at most ``max(a * |h_jc|, a * r_j)`` in one update,
    with ``a = c / sqrt(2)``, ``c = sqrt(1 + rho) - 1`` and ``r_j = n_j / sqrt(n_features)``
    where ``n_j`` is the norm limit base of :func:`update_norm_limits`. Summing squares,
    ``||dh_j||^2 <= a^2 (||h_j||^2 + n_j^2) <= c^2 n_j^2``, so the update-norm limit and
    with it the curvature bound hold (theory/README.md, Proposition 2), while a large
    entry may still move in proportion to its size.

    Returns
    -------
    relative : ndarray of shape (k,)
        ``a`` for every component.
    absolute : ndarray of shape (k,)
        ``a * r_j``, the floor that lets small and zero entries move.
    """
    limits = update_norm_limits(component_sq_norms, curvature_tolerance)
    a = _growth(curvature_tolerance) / np.sqrt(2.0)
    relative = array_namespace(limits).full(limits.shape, a)
    absolute = limits / np.sqrt(2.0) / np.sqrt(max(1, n_features))
    return relative, absolute


def curvature_after_update(component, update):
    """``(||h||^2, ||h + dh||^2)``: a component's curvature before and after an update."""
    component = np.asarray(component, dtype=np.float64)
    after = component + np.asarray(update, dtype=np.float64)
    return float(component @ component), float(after @ after)
