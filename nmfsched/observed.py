"""The objective over observed entries: ``1/2 sum_{(i, c) observed} (X_ic - (W H)_ic)^2`` (plus penalties).

When ``X`` has missing entries (NaN, or the unstored entries of a ratings matrix), each row
of ``W`` and each column of ``H`` sees only its observed entries, so the block problems of
:mod:`nmfsched.objective` no longer share one Gram: row ``i``'s is ``H diag(m_i) H^T`` and
column ``c``'s is ``W_B^T diag(m_c) W_B``. Rather than form ``n + m`` Grams (``k^2`` each),
the sweeps here keep the *residual* ``W H - X`` at the observed entries current (the
coordinate descent of CCD++, Yu et al. 2012): a component's gradient over all rows (or all
columns) is one sparse product with it, and its step updates the residual in one pass over
the entries. A sweep costs ``O(k nnz)`` whatever the pattern, against ``O(k^2 nnz)`` for the
Grams.

The steps are the exact coordinate steps of each entry: ``1 / L_ij`` with
``L_ij = sum_{c observed in row i} H_jc^2`` for ``W`` and ``1 / L_jc`` with
``L_jc = sum_{i observed in column c} W_ij^2`` for ``H`` (the per-entry constants of the
full problem, kept up to date as rows of ``W`` change, as ``W^T W`` is without missing
entries). The minibatch gradient of ``H`` sums the batch's observed entries and is scaled by
``n / |B|``: unbiased, as every row is in exactly one minibatch.

Penalties are scikit-learn's (:class:`~nmfsched.objective.Penalty`), with each row's and
column's weight scaled by the entries it explains: row ``i`` of ``W`` takes
``m_i / n_features`` times ``W``'s weights, ``m_i`` its observed entries, and column ``c`` of
``H`` takes ``n_c / n_samples`` times ``H``'s (the weighted-lambda regularisation of ALS-WR,
Zhou et al. 2008). Without missing entries both factors are 1: scikit-learn's objective. A
user with few ratings is then shrunk no more, per rating, than one with many.

The bound (theory/README.md, "Missing entries") is Theorem 1 applied column by column: a
column's components have their own constants, so ``S_g = sum_{j,c} G_jc^2 / L_jc``. The
``H`` sweeps here accumulate the gradient statistics already divided by ``sqrt(L_jc)``, and
the bound is computed from them with unit weights.

The observed entries of a minibatch are a CSR matrix (its explicit zeros are observed zeros).
The sweeps and the residual are backend primitives (``observed_residual``, ``observed_w_cd``,
``observed_h_cd``: Numba kernels on the CPU, array code on NumPy or CuPy); the rest here is
written over the backend's array namespace and sparse module. Dask chunks cannot share a
residual, so they send per-column Grams (:class:`ColumnGramBlock`), from which
:func:`column_gram_h_sweeps` takes the same ``H`` steps on the driver.
"""

import math
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse

from ._validation import negative_message
from .theory import coordinate_steps
from .theory.namespace import array_namespace

#: What ``missing`` may say (see :class:`~nmfsched.StochasticNMF`).
MISSING_MODES = ("nan", "unstored", "error")


class ObservedBlock(NamedTuple):
    """A minibatch's observed entries at the current iterate: what its ``H`` step needs."""

    R: Any  #: CSR ``|B| x m``: ``W_B H - X_B`` at the observed entries (updated in place by the sweeps)
    entry_rows: Any  #: the row (within the batch) of every stored entry of ``R``
    W: Any  #: ``W_B``


def sparse_module(backend):
    """The sparse-matrix module of ``backend``'s arrays (``scipy.sparse`` or ``cupyx.scipy.sparse``)."""
    return getattr(backend, "sparse", scipy.sparse)


def entry_rows(xp, X):
    """The row of every stored entry of the CSR matrix ``X``."""
    counts = xp.diff(X.indptr)
    return xp.repeat(xp.arange(X.shape[0], dtype=X.indices.dtype), counts.astype(xp.int64))


def pattern(backend, X):
    """``X``'s pattern as a CSR matrix of ones (float64): the observed-entry indicator."""
    xp = backend.xp
    ones = xp.ones(X.data.shape[0], dtype=xp.float64)
    return sparse_module(backend).csr_matrix((ones, X.indices, X.indptr), shape=X.shape)


def residual(backend, X, rows_of_entries, W, Ht):
    """``W H - X`` at the stored entries of the CSR ``X`` (``W`` its rows' factor, ``Ht`` = ``H^T``), as CSR."""
    data = backend.observed_residual(X, rows_of_entries, W, Ht, backend.xp.empty_like(X.data))
    return sparse_module(backend).csr_matrix((data, X.indices, X.indptr), shape=X.shape)  # shares the pattern


def block(backend, X, W, Ht):
    """The :class:`ObservedBlock` of observed entries ``X`` (CSR) with rows ``W`` of the factor."""
    rows = entry_rows(backend.xp, X)
    return ObservedBlock(residual(backend, X, rows, W, Ht), rows, W)


def fit_loss(block):
    """``1/2 ||X - W H||^2`` over the block's observed entries (float)."""
    d = block.R.data
    xp = array_namespace(d)
    d64 = d.astype(xp.float64)
    return 0.5 * float(xp.sum(d64 * d64))


def entry_steps(curvature, l1=0.0):
    """Per-entry coordinate steps ``1 / L`` of a curvature array (see
    :func:`nmfsched.theory.coordinate_steps`), infinite where ``L`` is exactly 0 under an L1
    weight ``l1 > 0`` (a scalar, or one per row of ``curvature``; as
    :func:`nmfsched.objective.unit_steps`: the entry then goes to 0, its minimiser)."""
    steps = coordinate_steps(curvature)
    xp = array_namespace(steps)
    l1 = xp.asarray(l1, dtype=xp.float64)
    if bool(xp.any(l1 > 0)):
        positive = l1 > 0 if l1.ndim == 0 else (l1 > 0)[:, None]
        steps = xp.where((curvature == 0) & positive, xp.inf, steps)
    return steps


def row_scale(X):
    """Each row's observed entries over ``n_features`` (the CSR ``X``'s rows; 1 for a complete row)."""
    xp = array_namespace(X.indptr)
    return xp.diff(X.indptr).astype(xp.float64) / X.shape[1]


def column_scale(X):
    """Each column's observed entries over ``n_samples`` (1 for a complete column)."""
    xp = array_namespace(X.indices)
    return xp.bincount(X.indices, minlength=X.shape[1]).astype(xp.float64) / X.shape[0]


def penalty_value(penalty, W, Ht, rows, columns):
    """The penalties' part of the objective with per-row scales ``rows`` and per-column ``columns``."""
    if not penalty.active:
        return 0.0
    xp = array_namespace(W)
    W64, H64 = W.astype(xp.float64), Ht.astype(xp.float64)
    value = (rows @ (penalty.l1_W * W64.sum(axis=1) + 0.5 * penalty.l2_W * (W64 * W64).sum(axis=1))
             + columns @ (penalty.l1_H * H64.sum(axis=1) + 0.5 * penalty.l2_H * (H64 * H64).sum(axis=1)))
    return float(value)


def w_curvature(backend, X, Ht, l2=0.0):
    """``L_ij = sum_{c observed in row i} H_jc^2 (+ l2_i)`` for the rows of the CSR ``X`` (float64,
    ``rows x k``; ``l2`` a scalar or one weight per row)."""
    xp = backend.xp
    H64 = Ht.astype(xp.float64)
    curvature = xp.asarray(pattern(backend, X) @ (H64 * H64))
    l2 = xp.asarray(l2, dtype=xp.float64)
    return curvature + (l2 if l2.ndim == 0 else l2[:, None])


def h_curvature(backend, X, W):
    """``L_jc = sum_{i observed in column c} W_ij^2`` over the rows of the CSR ``X`` (float64, ``m x k``)."""
    xp = backend.xp
    W64 = W.astype(xp.float64)
    return xp.asarray(pattern(backend, X).T @ (W64 * W64))


def w_sweeps(backend, block, Ht, max_sweeps, tol=0.0, l1=0.0, l2=0.0):
    """Projected coordinate sweeps on the block's rows of ``W`` (in place) over their observed entries.

    ``l1`` and ``l2`` are ``W``'s weights for a complete row; row ``i`` takes ``m_i / n_features``
    of them (see the module docstring). Each row stops on its own once a sweep moves it by at
    most ``tol`` times its l1 norm, so a row's result does not depend on the other rows. The
    residual is kept exact.
    """
    R, rows_of_entries, W = block
    if W.shape[0] == 0 or max_sweeps < 1:
        return
    if l1 or l2:
        scale = row_scale(R)
        l1, l2 = l1 * scale, l2 * scale
    steps = entry_steps(w_curvature(backend, R, Ht, l2), l1)
    backend.observed_w_cd(R, rows_of_entries, W, Ht, steps, max_sweeps=max_sweeps, tol=tol, l1=l1, l2=l2)


def h_sweeps(backend, Ht, block, curvature, lr, n_samples, penalty, columns=1.0, clips=None, statistics=None,
             max_sweeps=1):
    """Projected stochastic sweeps on ``H`` (given transposed, in place) from one minibatch's observed entries.

    Entry ``(j, c)`` moves by ``lr (n / |B|) / (L_jc + l2_H)`` times the minibatch gradient
    (``L_jc`` from ``curvature``, the full problem's ``m x k`` constants), component by
    component (Gauss-Seidel, the residual kept current), each move clipped to
    ``clips = (relative, absolute)`` as the in-memory kernel clips. Column ``c`` takes
    ``columns[c]`` (:func:`column_scale`) of ``H``'s penalties, and the minibatch its share
    ``|B| / n`` of those. ``statistics`` (the accumulator of
    :class:`~nmfsched.gradient_statistics.GradientStatistics`) gains the gradient at the
    start, divided entry by entry by ``sqrt(L_jc + l2_H)`` (see the module docstring).
    ``max_sweeps=0`` only measures. Returns the clipped-step count.
    """
    xp = backend.xp
    R, rows_of_entries, W = block
    share = W.shape[0] / n_samples
    l1, l2, unit = _h_weights(xp, penalty, columns, curvature, share)
    if statistics is not None:
        G = xp.asarray(R.T @ W).astype(xp.float64)
        if penalty.l1_H or penalty.l2_H:
            G = G + l1[:, None] + l2[:, None] * Ht
        _gather_statistics(xp, statistics, G, unit)
    if max_sweeps < 1:
        return 0
    steps = (lr / share) * unit
    return int(backend.observed_h_cd(R, rows_of_entries, W, Ht, steps, max_sweeps=max_sweeps, l1=l1, l2=l2,
                                     clips=clips))


def _h_weights(xp, penalty, columns, curvature, share):
    """``(l1, l2, unit)`` of a minibatch's ``H`` step: its share of each column's penalty weights
    (``columns`` scales them, see :func:`column_scale`) and the per-entry steps at rate 1 of the full
    problem, ``1 / (L_jc + l2_H columns[c])``."""
    columns = xp.broadcast_to(xp.asarray(columns, dtype=xp.float64), (curvature.shape[0],))
    l1_full, l2_full = penalty.l1_H * columns, penalty.l2_H * columns
    full = curvature + l2_full[:, None] if penalty.l2_H else curvature
    return share * l1_full, share * l2_full, entry_steps(xp.maximum(full, 0.0), l1_full)


def _gather_statistics(xp, statistics, gradient, unit):
    """Add a minibatch's ``gradient`` (float64, ``m x k``) to the bound's ``statistics``, divided entry by
    entry by ``sqrt(L_jc)`` (``unit`` = ``1 / L``; infinite steps count as 0)."""
    grad_acc, sq_weight, sq_acc = statistics
    scaled = gradient * xp.sqrt(xp.where(xp.isfinite(unit), unit, 0.0))
    grad_acc += scaled.astype(grad_acc.dtype)
    sq_acc += sq_weight * xp.sum(scaled * scaled, axis=0)


def solve_w(backend, X, Ht, W, max_sweeps, tol, l1=0.0, l2=0.0):
    """``argmin_{W >= 0}`` of the objective over the observed entries ``X`` (CSR on the backend)
    for fixed ``H`` (``Ht`` = ``H^T``), from ``W`` (updated in place), with ``W``'s weights
    ``l1``, ``l2`` scaled row by row (see :func:`w_sweeps`); returns the data's part of the loss."""
    b = block(backend, X, W, Ht)
    w_sweeps(backend, b, Ht, max_sweeps, tol, l1, l2)
    return fit_loss(b)


# -- the observed entries of the user's X ------------------------------------------------------
def has_nan(X):
    """Whether a dense ``X`` with no infinite or negative entry (validated) holds a NaN: its sum
    is NaN exactly then, since such entries can only overflow the sum to ``+inf`` (no array of
    ``X``'s size is made, as ``isnan(X).any()`` makes). With negative
    entries a sum of ``inf - inf`` can say True falsely; the caller then finds them."""
    xp = array_namespace(X)
    with np.errstate(over="ignore"):  # an overflowing sum is expected, and says no NaN
        return bool(xp.isnan(xp.sum(X)))


def observed_entries(X, missing, who, sparse=scipy.sparse, n_nan=None):
    """The observed entries of a validated ``X`` as a CSR matrix, or None when every entry is observed.

    ``X`` is a NumPy/CuPy array or a SciPy/cupyx CSR matrix whose entries are finite or NaN
    (infinity was refused). ``missing`` is one of :data:`MISSING_MODES`: "nan" (a NaN is
    missing; a sparse matrix's unstored entries are zeros), "unstored" (a sparse matrix's
    stored entries are its observed ones, NaN among them excluded; a dense ``X`` as "nan"),
    "error" (never called: NaN was refused). Observed entries must be non-negative. ``sparse``
    is the sparse module of ``X``'s arrays (``cupyx.scipy.sparse`` for CuPy input).
    ``n_nan``, where the validation counted them, is the number of NaN entries of ``X`` (stored
    ones if sparse); then ``X`` is not read again to find whether it has any.

    Raises
    ------
    ValueError
        When a sparse ``X`` has stored NaN with ``missing="nan"`` (its observed entries would
        be all but a few: dense), when no entry is observed, or on a negative observed entry.
    """
    is_sparse = hasattr(X, "tocsr")
    xp = array_namespace(X.data if is_sparse else X)
    if is_sparse and missing == "nan":
        n_nan = int(xp.isnan(X.data).sum()) if n_nan is None else n_nan
        if not n_nan:
            return None
        raise ValueError(stored_nan_message(n_nan))
    if not is_sparse and not (has_nan(X) if n_nan is None else n_nan):
        return None
    observed = observed_matrix(X, sparse)
    if observed.data.shape[0] == 0:
        raise ValueError(f"X has no observed entry (every entry is missing); {who} needs at least one.")
    negative = observed.data < 0
    n_negative = int(negative.sum())
    if n_negative:
        p = int(xp.argmax(negative))
        row = int(xp.searchsorted(observed.indptr, p, side="right")) - 1
        raise ValueError(negative_message("X", who, n_negative, (row, int(observed.indices[p]))))
    return observed


def stored_nan_message(n_nan):
    """The error for a sparse ``X`` with ``n_nan`` stored NaN under ``missing="nan"``."""
    return (
        f"X is sparse with {n_nan} stored NaN entries, and with missing='nan' its unstored entries are "
        f"observed zeros, so almost every entry would be observed (a dense problem); pass "
        f"missing='unstored' (only the stored, non-NaN entries are observed: ratings), or X.toarray()."
    )


def observed_matrix(X, sparse=scipy.sparse, dtype=None):
    """The CSR matrix of ``X``'s non-NaN entries: every non-NaN entry of a dense ``X`` (zeros
    too), the stored non-NaN entries of a sparse one; in ``dtype`` (default ``X``'s)."""
    if hasattr(X, "tocsr"):
        X = X.tocsr()
        xp = array_namespace(X.data)
        keep = ~xp.isnan(X.data)
        rows = entry_rows(xp, X)[keep]
        indptr = xp.concatenate([xp.zeros(1, dtype=X.indptr.dtype),
                                 xp.cumsum(xp.bincount(rows, minlength=X.shape[0])).astype(X.indptr.dtype)])
        data, indices = X.data[keep], X.indices[keep]
    else:
        xp = array_namespace(X)
        mask = ~xp.isnan(X)
        r, indices = xp.nonzero(mask)
        itype = xp.int64 if X.size >= 2**31 else xp.int32
        indptr = xp.concatenate([xp.zeros(1, dtype=itype), xp.cumsum(mask.sum(axis=1)).astype(itype)])
        data, indices = X[r, indices], indices.astype(itype)
    data = data if dtype is None else data.astype(dtype, copy=False)
    return sparse.csr_matrix((data, indices, indptr), shape=X.shape)


# -- the H problem column by column (the Dask driver's form: no residual there) --------------------
class ColumnGramBlock(NamedTuple):
    """A minibatch's ``H`` problem as per-column Grams: what Dask chunks send the driver."""

    G: Any  #: ``(m, k, k)`` float64: ``sum_{i in B observed in c} w_i w_i^T`` for column ``c``
    P: Any  #: ``(m, k)`` float64: ``sum_{i in B observed in c} x_ic w_i``
    n_rows: int  #: ``|B|``
    fit: float  #: ``1/2 ||X_B - W_B H||^2`` over the observed entries at the iterate the Grams are of


def column_grams(backend, X, W):
    """``(G, P)`` of :class:`ColumnGramBlock` for the observed entries ``X`` (CSR) with rows ``W``."""
    xp = backend.xp
    n, k = W.shape
    W64 = W.astype(xp.float64)
    outer = (W64[:, :, None] * W64[:, None, :]).reshape(n, k * k)
    G = xp.asarray(pattern(backend, X).T @ outer).reshape(X.shape[1], k, k)
    return G, xp.asarray(X.T @ W64)


def row_penalty_sums(X, W):
    """``(sum_i s_i sum(w_i), sum_i s_i ||w_i||^2)`` with ``s_i`` the rows' scales (:func:`row_scale`)."""
    xp = array_namespace(W)
    scale, W64 = row_scale(X), W.astype(xp.float64)
    return float(scale @ W64.sum(axis=1)), float(scale @ (W64 * W64).sum(axis=1))


def is_observed_block(block):
    """Whether ``block`` is an ``H`` problem over observed entries (in either form)."""
    return isinstance(block, (ObservedBlock, ColumnGramBlock))


def block_fit(block):
    """``1/2 ||X_B - W_B H||^2`` over a block's observed entries at the iterate it was formed at."""
    return block.fit if isinstance(block, ColumnGramBlock) else fit_loss(block)


def sweep_h(backend, Ht, block, curvature, lr, n_samples, penalty, columns, clips=None, statistics=None,
            max_sweeps=1):
    """The ``H`` sweeps of a block over observed entries: :func:`h_sweeps` (a residual, in memory)
    or :func:`column_gram_h_sweeps` (per-column Grams, from Dask chunks); the clipped-step count."""
    if isinstance(block, ColumnGramBlock):
        return column_gram_h_sweeps(Ht, block, curvature, lr, n_samples, penalty, columns, clips, statistics,
                                    max_sweeps)
    return h_sweeps(backend, Ht, block, curvature, lr, n_samples, penalty, columns, clips, statistics, max_sweeps)


def column_gram_h_sweeps(Ht, block, curvature, lr, n_samples, penalty, columns, clips=None, statistics=None,
                         max_sweeps=1):
    """:func:`h_sweeps` from per-column Grams (host arrays): the same steps, the gradient kept current
    by rank-one updates of the Grams instead of a residual. Returns the clipped-step count."""
    G, P, nb, _ = block
    share = nb / n_samples
    l1, l2, unit = _h_weights(np, penalty, columns, curvature, share)
    h = Ht.astype(np.float64)
    g = np.einsum("cjl,cl->cj", G, h) - P + l1[:, None] + l2[:, None] * h
    if statistics is not None:
        _gather_statistics(np, statistics, g, unit)
    if max_sweeps < 1:
        return 0
    steps = (lr / share) * unit
    k = h.shape[1]
    rel, floor = (np.zeros(k), np.full(k, np.inf)) if clips is None else (
        np.broadcast_to(np.asarray(c, dtype=np.float64), (k,)) for c in clips)
    n_clipped = 0
    for _ in range(max_sweeps):
        for j in range(k):
            old = h[:, j].copy()
            d = np.where(steps[:, j] == 0, 0.0, -steps[:, j] * g[:, j])
            clip = np.maximum(rel[j] * np.abs(old), floor[j])
            over, under = d > clip, d < -clip
            n_clipped += int(np.sum(over | under))
            d = np.where(over, clip, np.where(under, -clip, d))
            new = old + d
            new = np.where(new < 0, 0.0, new).astype(Ht.dtype).astype(np.float64)  # the factor's precision
            delta = new - old
            h[:, j] = new
            g += delta[:, None] * G[:, j, :]
            g[:, j] += l2 * delta
    Ht[...] = h
    return n_clipped


def observed_fraction(observed, shape):
    """The share of entries observed (1.0 without missing entries)."""
    return 1.0 if observed is None else observed.data.shape[0] / (shape[0] * shape[1])


def empty_lines(xp, observed):
    """``(rows, columns)`` without an observed entry, as host integer arrays."""
    n, m = observed.shape
    row_counts = xp.diff(observed.indptr)
    col_counts = xp.bincount(observed.indices, minlength=m)
    to_host = (lambda a: a.get()) if xp is not np else np.asarray
    return np.flatnonzero(to_host(row_counts) == 0), np.flatnonzero(to_host(col_counts) == 0)


def describe_lines(indices, what):
    """``"3 rows (first: 0, 5, 9)"``: a count and the first few indices, for a warning."""
    first = ", ".join(str(int(i)) for i in indices[:5])
    more = ", ..." if len(indices) > 5 else ""
    return f"{len(indices)} {what}{'s' if len(indices) != 1 else ''} ({first}{more})"


def init_matrix(observed, shape):
    """The observed entries scaled by ``1 / observed fraction``: an unbiased stand-in for ``X`` that an
    SVD start can factor (the missing entries count as 0, which alone would shrink the start)."""
    fraction = observed_fraction(observed, shape)
    return observed * (1.0 / fraction) if fraction > 0 and math.isfinite(1.0 / fraction) else observed
