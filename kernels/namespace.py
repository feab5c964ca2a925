"""The backend written once over an array namespace (NumPy or CuPy), and its coordinate sweep.

:class:`NamespaceBackend` implements :class:`~nmfsched.kernels.protocol.Backend` with array
operations only, for any namespace ``xp`` whose sparse module mirrors ``scipy.sparse``
(``numpy`` + ``scipy.sparse``, ``cupy`` + ``cupyx.scipy.sparse``). The GPU backend
(:mod:`nmfsched.kernels.gpu`) is this class on CuPy with the hot sweep replaced by a fused
kernel; on NumPy it runs in CI, so the whole GPU code path above the raw kernel is tested on
machines without a GPU, and :func:`projected_cd_rows` is the raw kernel's oracle.
"""

import contextlib

import numpy as np
import scipy.sparse

from ..theory.namespace import is_device_array
from .protocol import GRADIENT_REFRESH_SWEEPS, KKT_RTOL


def projected_cd_rows(xp, Y, G, P, steps, max_sweeps, tol, clip_rel, clip_abs, statistics=None):
    """Projected coordinate sweeps on every row of ``Y`` at once, one component at a time.

    The same algorithm as the CPU kernel :func:`nmfsched.kernels.cpu.projected_cd` (see it
    for the update and the statistics), vectorised over rows: the first sweep computes every
    row's gradient ``Y @ G - P`` (and every
    :data:`~nmfsched.kernels.protocol.GRADIENT_REFRESH_SWEEPS`-th sweep afresh), then each
    walks the components in order, updating column ``j`` of every still-active row and
    keeping the gradients current with a rank-one update. A row
    drops out once a sweep moved it by at most ``tol`` times its l1 norm. Branch-free in
    the data (a zero step leaves its component as it is), so on a GPU it synchronises only
    to stop early when every row has converged.

    Parameters
    ----------
    xp : array namespace (numpy or cupy)
    Y : array of shape (n_rows, k), updated in place
    G : array of shape (k, k), symmetric
    P : array of shape (n_rows, k)
    steps, clip_rel, clip_abs : arrays of shape (k,), in ``Y``'s dtype
    max_sweeps : int
    tol : float
    statistics : tuple (grad_acc, sq_weight, sq_acc) or None
        ``grad_acc`` (``Y``'s shape) gains the gradient at the start; ``sq_acc`` (float64,
        length ``k``) gains ``sq_weight`` times its squared column norms.

    Returns
    -------
    0-d integer array
        The number of clipped coordinate steps.
    """
    n_rows, k = Y.shape
    n_clipped = xp.zeros((), dtype=xp.int64)
    active = xp.ones(n_rows, dtype=bool)
    for sweep in range(max_sweeps):
        if sweep % GRADIENT_REFRESH_SWEEPS == 0:
            g = Y @ G
            g -= P
        if statistics is not None and sweep == 0:
            grad_acc, sq_weight, sq_acc = statistics
            grad_acc += g
            g64 = g.astype(xp.float64)
            sq_acc += sq_weight * xp.sum(g64 * g64, axis=0)
        moved = xp.zeros(n_rows, dtype=xp.float64)
        size = xp.zeros(n_rows, dtype=xp.float64)
        for j in range(k):
            old = Y[:, j].copy()
            d = xp.where(steps[j] == 0, 0, -steps[j] * g[:, j]).astype(Y.dtype)
            clip = xp.maximum(clip_rel[j] * xp.abs(old), clip_abs[j])
            over, under = d > clip, d < -clip
            n_clipped += xp.sum((over | under) & active)
            d = xp.where(over, clip, xp.where(under, -clip, d))
            new = old + d
            new = xp.where(new < 0, xp.zeros((), dtype=Y.dtype), new)  # keeps NaN, as the kernel
            new = xp.where(active, new, old)
            Y[:, j] = new
            delta = new - old
            g += delta[:, None] * G[j][None, :]
            moved += xp.abs(delta)
            size += xp.abs(new)
        active &= ~(moved <= tol * size)
        if sweep + 1 < max_sweeps and not bool(active.any()):
            break
    return n_clipped


#: Entries per slice when the residual is formed (bounds its ``nnz x k`` temporaries).
_RESIDUAL_CHUNK = 1 << 16


def observed_residual(xp, X, entry_rows, W, Ht, out):
    """``out = W H - X`` at the stored entries of the CSR ``X`` (``W`` its rows' factor, ``Ht`` = ``H^T``)."""
    for s in range(0, out.shape[0], _RESIDUAL_CHUNK):
        e = slice(s, s + _RESIDUAL_CHUNK)
        out[e] = xp.einsum("ij,ij->i", W[entry_rows[e]], Ht[X.indices[e]]) - X.data[e]
    return out


def observed_w_cd(xp, R, entry_rows, W, Ht, steps, max_sweeps, tol, l1, l2):
    """Projected coordinate sweeps on the rows of ``W`` (in place) over observed entries.

    ``R`` is a CSR matrix of the residual ``W H - X`` at the rows' observed entries, kept
    exact (updated in place); ``entry_rows`` the row of each of its entries; ``steps`` the
    per-entry steps (``rows x k``, float64; 0 leaves an entry as it is, inf takes it to 0
    under an L1 weight); ``l1`` and ``l2`` the rows' penalty weights (scalars or vectors).
    Component by component, every row at once: the gradient is one
    sparse product with ``H``'s column, the residual update one pass over the entries. A
    row stops once a sweep moves it by at most ``tol`` times its l1 norm. The oracle of
    :func:`nmfsched.kernels.cpu.observed_w_cd`.
    """
    n_rows, k = W.shape
    active = xp.ones(n_rows, dtype=bool)
    for _ in range(max_sweeps):
        moved = xp.zeros(n_rows, dtype=xp.float64)
        size = xp.zeros(n_rows, dtype=xp.float64)
        for j in range(k):
            h = xp.ascontiguousarray(Ht[:, j])
            old = W[:, j].copy()
            g = xp.asarray(R @ h).astype(xp.float64) + l1 + l2 * old
            d = xp.where(steps[:, j] == 0, 0.0, -steps[:, j] * g)
            new = old + d
            new = xp.where(new < 0, 0.0, new).astype(W.dtype)  # keeps NaN, as the kernels
            new = xp.where(active, new, old)
            delta = new - old
            W[:, j] = new
            R.data += delta[entry_rows] * h[R.indices]
            moved += xp.abs(delta)
            size += xp.abs(new)
        active &= ~(moved <= tol * size)
        if not bool(active.any()):
            break


def observed_h_cd(xp, R, entry_rows, W, Ht, steps, max_sweeps, l1, l2, clip_rel, clip_abs):
    """Projected, clipped sweeps on ``H`` (given transposed, in place) from one minibatch's observed entries.

    Component by component (Gauss-Seidel), every column at once: the gradient ``R^T w_j +
    l1 + l2 h_j`` (``R`` the batch's residual CSR, kept exact), the step ``steps[:, j]``
    (``m x k``, float64), each move clipped to ``max(clip_rel[j] |h|, clip_abs[j])``; ``l1``
    and ``l2`` the columns' penalty weights (scalars or vectors).
    Returns the clipped-step count (a 0-d integer array). The oracle of
    :func:`nmfsched.kernels.cpu.observed_h_cd`.
    """
    n_features, k = Ht.shape
    n_clipped = xp.zeros((), dtype=xp.int64)
    for _ in range(max_sweeps):
        for j in range(k):
            w = xp.ascontiguousarray(W[:, j])
            old = Ht[:, j].copy()
            g = xp.asarray(R.T @ w).astype(xp.float64).reshape(n_features) + l1 + l2 * old
            d = xp.where(steps[:, j] == 0, 0.0, -steps[:, j] * g)
            clip = xp.maximum(clip_rel[j] * xp.abs(old), clip_abs[j])
            over, under = d > clip, d < -clip
            n_clipped += xp.sum(over | under)
            d = xp.where(over, clip, xp.where(under, -clip, d))
            new = old + d
            new = xp.where(new < 0, 0.0, new).astype(Ht.dtype)
            delta = new - old
            Ht[:, j] = new
            R.data += w[entry_rows] * delta[R.indices]
    return n_clipped


def nnls_rows(xp, Y, G, P, zero_dead, start_free=False, min_rows=1):
    """Exact non-negative least squares for the rows of ``Y`` whose current support is optimal.

    The rows are grouped by their support ``F = {j : Y[r, j] > 0}`` (every component with
    ``start_free``; components with ``G_jj = 0`` excluded, as
    :func:`nmfsched.kernels.cpu.nnls_rows`); each group of at least
    ``min_rows`` rows solves ``G_FF y_F = P[rows, F]`` at once, and a row takes the solution
    where it satisfies the KKT conditions (``y_F >= 0``, gradient ``>= 0`` elsewhere, to
    float64 rounding). One round, no pivoting: the other rows are left as they were (for the
    coordinate sweeps). Returns that number of rows. The CPU kernel pivots; this form serves
    arrays of any namespace and is the CPU kernel's oracle on the rows it solves.
    """
    n, k = Y.shape
    G64 = xp.asarray(G, dtype=xp.float64)
    live = xp.diag(G64) > 0
    live_host = _to_host(live)
    support = ((Y > 0) | start_free) & live[None, :]
    patterns, inverse = np.unique(_to_host(support), axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    solved = 0
    for g, pattern in enumerate(patterns):
        rows_host = np.flatnonzero(inverse == g)
        if rows_host.size < min_rows:
            continue
        rows = xp.asarray(rows_host)
        free, bound = xp.asarray(np.flatnonzero(pattern)), xp.asarray(np.flatnonzero(~pattern & live_host))
        Pr = xp.asarray(P[rows], dtype=xp.float64)
        Z = xp.zeros((rows_host.size, 0)) if free.size == 0 else xp.linalg.solve(G64[free][:, free], Pr[:, free].T).T
        ok = xp.all(Z >= 0, axis=1)
        if bound.size:
            terms = G64[bound][:, free]
            gradient = Z @ terms.T - Pr[:, bound]
            size = xp.abs(Z) @ xp.abs(terms).T + xp.abs(Pr[:, bound])
            ok &= xp.all(gradient >= -KKT_RTOL * size, axis=1)
        done = rows[ok]
        if done.size == 0:
            continue
        new = Y[done]
        new[:, free] = Z[ok].astype(Y.dtype)
        new[:, bound] = 0
        if zero_dead:
            new[:, ~live] = 0
        Y[done] = new
        solved += int(done.size)
    return n - solved


def _to_host(a):
    """``a`` as a NumPy array (a device array is copied to the host)."""
    return a.get() if is_device_array(a) else np.asarray(a)


class _SparseRows:
    """A CSR minibatch: the selected rows as their own CSR matrix (gathered on the device)."""

    __slots__ = ("matrix",)

    def __init__(self, matrix):
        self.matrix = matrix

    @property
    def shape(self):
        return self.matrix.shape


class NamespaceBackend:
    """The solver's primitives as array operations in the namespace ``xp``.

    Parameters
    ----------
    xp : module, default=numpy
        The array namespace (``numpy`` or ``cupy``).
    sparse : module, default=scipy.sparse
        Its sparse-matrix module (``scipy.sparse`` or ``cupyx.scipy.sparse``).
    """

    name = "numpy"
    #: The fixed cost of a minibatch in flops; as the CPU backend's, so that on NumPy it
    #: picks the CPU's batch sizes and its fits can be compared with the CPU's.
    batch_overhead_flops = 1e6

    def __init__(self, xp=np, sparse=scipy.sparse):
        self.xp = xp
        self.sparse = sparse

    # -- data movement ----------------------------------------------------------------
    def is_sparse(self, a):
        return self.sparse.issparse(a) or scipy.sparse.issparse(a)

    def to_device(self, a):
        if self.is_sparse(a):
            a = a.tocsr() if self.sparse.issparse(a) else self.sparse.csr_matrix(scipy.sparse.csr_matrix(a))
            if not a.has_canonical_format:
                a.sum_duplicates()
            return a
        return self.xp.ascontiguousarray(self.xp.asarray(a))

    def to_host(self, a):
        return _to_host(a)

    def compute_context(self):
        return contextlib.nullcontext()

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def asarray(self, a, dtype=None):
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    # -- minibatches --------------------------------------------------------------------
    def take_rows(self, X, rows, buffer=None):
        if self.is_sparse(X):
            return _SparseRows(X[rows])
        if buffer is None:
            return self.xp.take(X, rows, axis=0)
        out = buffer[: rows.shape[0]]
        self.xp.take(X, rows, axis=0, out=out)
        return out

    def all_rows(self, X):
        return _SparseRows(X) if self.is_sparse(X) else X

    # -- products -------------------------------------------------------------------------
    def xb_ht(self, Xb, Ht, out):
        if isinstance(Xb, _SparseRows):
            out[...] = Xb.matrix @ Ht
            return out
        return self.xp.matmul(Xb, Ht, out=out)

    def xbt_wb(self, Xb, Wb, out):
        if isinstance(Xb, _SparseRows):
            out[...] = Xb.matrix.T @ Wb  # .T of a CSR is a CSC view: no transposed copy
            return out
        return self.xp.matmul(Xb.T, Wb, out=out)

    def gram(self, A):
        return (A.T @ A).astype(self.xp.float64)

    def small_matmul(self, A, G, out):
        return self.xp.matmul(A, self.xp.asarray(G, dtype=A.dtype), out=out)

    # -- reductions -----------------------------------------------------------------------
    def inner(self, A, B):
        xp = self.xp
        return float(xp.sum(A.astype(xp.float64) * B.astype(xp.float64)))

    def squared_norm(self, X):
        d = X.data if self.is_sparse(X) else X
        d = d.astype(self.xp.float64)
        return float(self.xp.sum(d * d))

    def all_finite(self, A):
        return bool(self.xp.isfinite(A).all())

    def column_sq_norms(self, A, mask=None):
        xp = self.xp
        A = A.astype(xp.float64)
        if mask is not None:
            A = xp.where(mask, A, 0.0)
        return xp.sum(A * A, axis=0)

    def projected_column_sq_norms(self, G, Y):
        return self.column_sq_norms(G, mask=(Y > 0) | (G < 0))

    # -- the fused update -----------------------------------------------------------------
    def _sweep_arguments(self, Y, G, steps, clips):
        """``G``, ``steps`` and the clipping limits as device arrays in ``Y``'s dtype."""
        xp, k = self.xp, Y.shape[1]
        G = xp.ascontiguousarray(xp.asarray(G, dtype=Y.dtype))
        steps = xp.ascontiguousarray(xp.asarray(steps, dtype=Y.dtype))
        if clips is None:
            clip_rel, clip_abs = xp.zeros(k, dtype=Y.dtype), xp.full(k, xp.inf, dtype=Y.dtype)
        else:
            clip_rel, clip_abs = (
                xp.ascontiguousarray(xp.broadcast_to(xp.asarray(c, dtype=Y.dtype), (k,))) for c in clips
            )
        return G, steps, clip_rel, clip_abs

    def projected_cd(self, Y, G, P, steps, *, max_sweeps=1, tol=0.0, clips=None, statistics=None):
        G, steps, clip_rel, clip_abs = self._sweep_arguments(Y, G, steps, clips)
        return projected_cd_rows(self.xp, Y, G, P, steps, int(max_sweeps), float(tol), clip_rel, clip_abs, statistics)

    def nnls_rows(self, Y, G, P, *, zero_dead=False, start_free=False):
        return nnls_rows(self.xp, Y, G, P, zero_dead, start_free, min_rows=max(1, Y.shape[1]))

    # -- sweeps over observed entries (missing entries) ------------------------------------
    def observed_residual(self, X, entry_rows, W, Ht, out):
        return observed_residual(self.xp, X, entry_rows, W, Ht, out)

    def observed_w_cd(self, R, entry_rows, W, Ht, steps, *, max_sweeps=1, tol=0.0, l1=0.0, l2=0.0):
        observed_w_cd(self.xp, R, entry_rows, W, Ht, steps, int(max_sweeps), float(tol), l1, l2)

    def observed_h_cd(self, R, entry_rows, W, Ht, steps, *, max_sweeps=1, l1=0.0, l2=0.0, clips=None):
        xp, k = self.xp, Ht.shape[1]
        if clips is None:
            clip_rel, clip_abs = xp.zeros(k), xp.full(k, xp.inf)
        else:
            clip_rel, clip_abs = (xp.broadcast_to(xp.asarray(c, dtype=xp.float64), (k,)) for c in clips)
        return observed_h_cd(xp, R, entry_rows, W, Ht, steps, int(max_sweeps), l1, l2, clip_rel, clip_abs)
