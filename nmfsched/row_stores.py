"""Where the rows live: the rows of ``X`` and ``W``, and the ``W`` half of the loop over them.

The solver (:class:`~nmfsched.solver.StochasticSolver`) owns ``H``, its step, the gradient
statistics and the batch size; a *row store* owns the rows and answers, per minibatch, with
what the ``H`` step needs. Two stores implement :class:`RowStore`:
:class:`InMemoryRows` (a dense or CSR ``X`` on any backend) and
:class:`~nmfsched.distributed.DaskRows` (chunks of a Dask array on dask.distributed workers).
A new place for rows (out-of-core files, another cluster engine) is a new store; the loop,
the guard and the schedulers do not change.
"""

from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import objective, observed
from .metrics import frobenius_error


@runtime_checkable
class RowStore(Protocol):
    """The rows of a factorization and the ``W`` half over them.

    ``WtW`` is the running ``W^T W`` (``k x k``): kept exact to rounding as rows of ``W``
    change, and recomputed by every :meth:`refresh`. A *selection* is what
    :meth:`minibatches` yields for one minibatch; None selects every row.
    """

    backend: Any
    n_samples: int
    n_features: int
    dtype: np.dtype
    k: int
    sq_norm_X: float  #: ``||X||_F^2``
    WtW: Any
    supports_search: bool  #: whether a per-minibatch step search can run here (it needs rows in memory)
    observed: bool  #: whether only some entries are observed (the ``H`` constants are then per entry)

    def even_batch_size(self, batch_size: int) -> int:
        """The batch size this store runs for a requested ``batch_size``."""

    def full_batch(self, batch_size: int) -> bool:
        """Whether one minibatch holds every row at ``batch_size``."""

    def n_batches(self, batch_size: int) -> int:
        """Minibatches per epoch at ``batch_size``."""

    def resize(self, batch_size: int) -> None:
        """Prepare the per-minibatch buffers for ``batch_size``."""

    def minibatches(self, batch_size: int, rng: np.random.Generator):
        """The selections of one epoch, in a fresh random order drawn from ``rng`` (a single None
        when one batch holds every row)."""

    def w_half(self, selection, Ht, w_sweeps: int, penalty) -> tuple:
        """Sweep the selected rows of ``W`` against ``H`` (with ``penalty``'s weights on ``W``);
        ``(|B|, H H^T, block)``, the block being the minibatch's unpenalised ``H`` problem: an
        :class:`~nmfsched.objective.BlockProblem` ``(W_B^T W_B, X_B^T W_B)``, or an
        :class:`~nmfsched.observed.ObservedBlock` when only some entries are observed."""

    def refresh(self, Ht, max_sweeps: int, tol: float, penalty) -> tuple:
        """Sweep every row of ``W`` against ``H`` and make ``WtW`` exact; ``(1/2 ||X - W H||^2, H H^T)``
        (the data's part of the loss, not clamped at 0)."""

    def W_sum(self) -> float:
        """``sum(W)`` (an L1 penalty's value)."""

    def all_rows_h_block(self) -> Any:
        """The ``H`` block over every row, right after :meth:`refresh` (a one-batch ``H`` step)."""

    def regram(self, Ht) -> None:
        """Make ``WtW`` (and what :meth:`all_rows_h_block` returns) exact for the current ``W``
        and ``H`` without sweeping ``W`` (a continued run)."""

    def refreshed_block(self, HHt) -> Any:
        """``(H H^T, X H^T)`` of the last :meth:`refresh` (``HHt`` its ``H H^T``) while they still
        hold, for the final solve; None where the store keeps no such block."""

    def probe_blocks(self, batch_size: int, rng: np.random.Generator, Ht):
        """Per minibatch of one epoch, ``(|B|, block)`` at the current ``W`` and ``H`` (as :meth:`w_half`'s)."""

    def snapshot(self, spare=None) -> Any:
        """A copy of ``W`` and ``WtW`` for :meth:`restore`. ``spare``, an earlier snapshot of
        this store that nothing holds any more, may be overwritten instead of allocating one."""

    def restore(self, snapshot) -> None: ...

    def W_host(self) -> np.ndarray:
        """``W`` as a host array."""


class InMemoryRows:
    """Rows of a dense or CSR ``X`` and of ``W`` in one process, on any backend (see :mod:`nmfsched.kernels`).

    Parameters
    ----------
    X : ndarray or CSR matrix, validated (finite, non-negative, float32 or float64)
    W : ndarray of shape (n_samples, k)
    backend : backend object
    dtype : numpy dtype
        The factors' precision.
    """

    supports_search = True
    observed = False

    def __init__(self, X, W, backend, dtype):
        be = self._bind(X, W, backend, dtype)
        self._is_sparse = hasattr(X, "tocsr")
        self._ct_buf = be.empty((self.n_features, self.k), self.dtype)
        self._p_full = be.empty((self.n_samples, self.k), self.dtype)  # X H^T after a refresh
        self._p_full_current = False  # whether _p_full is X H^T for the W and H of the last refresh
        self._c_full = None  # X^T W from a fused refresh, for the next one-batch H step
        self._c_full_current = False  # whether _c_full is X^T W for the current W
        self._one_batch = False  # whether the epochs are one batch of every row (see resize)
        self._xb_buf = self._xht_buf = self._wb_buf = None
        self.WtW = be.gram(self.W)

    def _bind(self, X, W, backend, dtype):
        """Hold ``X`` on the backend's device, ``W`` in ``dtype``, their shapes and ``||X||^2``; the backend."""
        self.backend = be = backend
        self.X = be.to_device(X)
        self.n_samples, self.n_features = X.shape
        self.dtype = np.dtype(dtype)
        self.k = W.shape[1]
        self.W = be.asarray(W, dtype=self.dtype)
        self.sq_norm_X = be.squared_norm(self.X)
        return be

    # -- minibatches ----------------------------------------------------------------------
    def even_batch_size(self, batch_size):
        return even_batch_size_at_most(self.n_samples, batch_size)

    def full_batch(self, batch_size):
        return batch_size >= self.n_samples

    def n_batches(self, batch_size):
        return -(-self.n_samples // batch_size)

    def resize(self, batch_size):
        be, k = self.backend, self.k
        self._one_batch = self.full_batch(batch_size)
        if self._one_batch:  # one batch of all rows works on X and W themselves
            self._xb_buf = self._xht_buf = self._wb_buf = None
            return
        self._xb_buf = None if self._is_sparse else be.empty((batch_size, self.n_features), self.dtype)
        self._xht_buf = be.empty((batch_size, k), self.dtype)
        self._wb_buf = be.empty((batch_size, k), self.dtype)

    def minibatches(self, batch_size, rng):
        """Row numbers (a backend integer array) of each minibatch, sizes differing by at most one."""
        if self.full_batch(batch_size):
            yield None
            return
        n, n_batches = self.n_samples, self.n_batches(batch_size)
        order = self.backend.asarray(rng.permutation(n).astype(np.int64))
        for i in range(n_batches):
            yield order[i * n // n_batches : (i + 1) * n // n_batches]

    # -- the W half -----------------------------------------------------------------------
    def w_half(self, rows, Ht, w_sweeps, penalty):
        """Sweeps on the rows' ``W`` against ``H``; the running ``W^T W`` changes by their Gram's change."""
        be = self.backend
        nb = rows.shape[0]
        self._c_full_current = False
        if self._fuses(nb):
            HHt = be.gram(Ht)
            before, after, _ = self._fused_w_half(rows, Ht, HHt, w_sweeps, 0.0, penalty, self._ct_buf)
            self.WtW -= before
            self.WtW += after
            return nb, HHt, objective.BlockProblem(after, self._ct_buf)
        Xb = be.take_rows(self.X, rows, self._xb_buf)
        block = objective.w_block(be, Xb, Ht, self._xht_buf[:nb])
        Wb = be.take_rows(self.W, rows, self._wb_buf)
        self.WtW -= be.gram(Wb)
        objective.sweep(be, Wb, block, w_sweeps, 0.0, penalty.l1_W, penalty.l2_W)
        self.W[rows] = Wb
        WbtWb = be.gram(Wb)
        self.WtW += WbtWb
        return nb, block.G, objective.BlockProblem(WbtWb, be.xbt_wb(Xb, Wb, self._ct_buf))

    def refresh(self, Ht, max_sweeps, tol, penalty):
        be = self.backend
        self._p_full_current = True
        if self._one_batch and self._fuses(self.n_samples):
            # the next one-batch epoch's X^T W from the same pass (after a minibatch epoch it
            # would go unused, and it costs as much compute as it saves in memory traffic)
            if self._c_full is None:
                self._c_full = be.empty((self.n_features, self.k), self.dtype)
            HHt = be.gram(Ht)
            _, self.WtW, cross = self._fused_w_half(None, Ht, HHt, max_sweeps, tol, penalty, self._c_full,
                                                    self._p_full)
            self._c_full_current = True
            loss = objective.loss_from_grams(self.sq_norm_X, cross, self.WtW, HHt)
            block = objective.BlockProblem(HHt, self._p_full)
        else:
            self._c_full_current = False
            block = objective.w_block(be, be.all_rows(self.X), Ht, self._p_full)
            objective.sweep(be, self.W, block, max_sweeps, tol, penalty.l1_W, penalty.l2_W)
            self.WtW = be.gram(self.W)
            loss = objective.loss_from_grams(self.sq_norm_X, be.inner(self.W, block.P), self.WtW, block.G)
        # float32 only: in float64 the identity resolves what float64 can, and the dense and sparse
        # fits' epochs stay bitwise alike
        if self.dtype != np.float64 and objective.below_gram_resolution(loss, self.sq_norm_X, self.dtype):
            loss = 0.5 * frobenius_error(self.X, self.W, be.to_host(Ht).T) ** 2  # one pass, in float64
            if objective.exact_to_precision(loss, self.sq_norm_X, self.dtype, self.k):
                loss = 0.0  # the stopping rule's "exact"
        return loss, block.G

    def all_rows_h_block(self):
        be = self.backend
        if self._c_full_current:
            return objective.BlockProblem(self.WtW, self._c_full)
        return objective.BlockProblem(self.WtW, be.xbt_wb(be.all_rows(self.X), self.W, self._ct_buf))

    def regram(self, Ht):
        self.WtW = self.backend.gram(self.W)
        self._p_full_current = self._c_full_current = False

    def _fuses(self, n_rows):
        """Whether the backend runs the ``W`` half of ``n_rows`` rows in one pass over them
        (:meth:`CPUBackend.dense_w_pass <nmfsched.kernels.cpu.CPUBackend.dense_w_pass>`)."""
        fuses = getattr(self.backend, "fuses_w_pass", None)
        return not self._is_sparse and fuses is not None and fuses(self.X, n_rows, self.W)

    def _fused_w_half(self, rows, Ht, HHt, max_sweeps, tol, penalty, C_out, P_out=None):
        """The backend's one-pass ``W`` half (see :meth:`_fuses`) for ``H``'s Gram ``HHt``, with
        :func:`~nmfsched.objective.sweep`'s penalised problem and steps."""
        G = objective.add_to_diagonal(HHt, penalty.l2_W) if penalty.l2_W else HHt
        return self.backend.dense_w_pass(
            self.X, rows, Ht, G, objective.unit_steps(G, penalty.l1_W), penalty.l1_W, self.W,
            max_sweeps=max_sweeps, tol=tol, C_out=C_out, P_out=P_out,
        )

    def refreshed_block(self, HHt):
        """``(H H^T, X H^T)`` of the last :meth:`refresh` (``HHt`` its ``H H^T``), or None when a
        :meth:`restore` or :meth:`regram` came after it."""
        return objective.BlockProblem(HHt, self._p_full) if self._p_full_current else None

    def probe_blocks(self, batch_size, rng, Ht):
        be = self.backend
        for rows in self.minibatches(batch_size, rng):
            if rows is None:
                Xb, Wb, nb = be.all_rows(self.X), self.W, self.n_samples
            else:
                Xb = be.take_rows(self.X, rows, self._xb_buf)
                Wb, nb = be.take_rows(self.W, rows, self._wb_buf), rows.shape[0]
            yield nb, objective.h_block(be, Xb, Wb, self._ct_buf)

    # -- state ----------------------------------------------------------------------------
    def snapshot(self, spare=None):
        return _copy_into(spare[0] if spare is not None else None, self.W), self.WtW.copy()

    def restore(self, snapshot):
        W, WtW = snapshot
        self.W[...] = W
        self.WtW = WtW.copy()
        self._p_full_current = self._c_full_current = False

    def W_host(self):
        return self.backend.to_host(self.W)

    def W_sum(self):
        return float(self.backend.to_host(self.W.sum()))


class ObservedRows(InMemoryRows):
    """Rows of an ``X`` with missing entries, in one process on any backend.

    ``X`` is the CSR matrix of the observed entries (its explicit zeros are observed zeros;
    see :func:`nmfsched.observed.observed_entries`). The minibatches' ``W`` sweeps and ``H``
    blocks run over those entries only (:mod:`nmfsched.observed`), and the ``H`` steps'
    constants are per entry: :attr:`curvature` (``m x k``) is kept up to date as rows of
    ``W`` change, as ``WtW`` is. :attr:`row_scale` and :attr:`column_scale` scale the
    penalties of each row and column by its observed entries (see :mod:`nmfsched.observed`).
    """

    supports_search = False  # the searched step's trials are written for Gram blocks
    observed = True

    def __init__(self, X, W, backend, dtype):  # not InMemoryRows': no Gram-form buffers
        be = self._bind(X, W, backend, dtype)
        self.WtW = be.gram(self.W)
        self.curvature = observed.h_curvature(be, self.X, self.W)
        self.row_scale, self.column_scale = observed.row_scale(self.X), observed.column_scale(self.X)
        self._all = None  # every row's block, from the last refresh

    def resize(self, batch_size):
        pass  # a minibatch's entries are selected afresh (CSR row selection)

    def refreshed_block(self, HHt):
        return None  # no Gram-form block: the final solve runs over the observed entries

    def w_half(self, rows, Ht, w_sweeps, penalty):
        be = self.backend
        Xb, Wb = self.X[rows], self.W[rows]
        self.WtW -= be.gram(Wb)
        self.curvature -= observed.h_curvature(be, Xb, Wb)
        block = observed.block(be, Xb, Wb, Ht)
        observed.w_sweeps(be, block, Ht, w_sweeps, 0.0, penalty.l1_W, penalty.l2_W)
        self.W[rows] = Wb
        self.WtW += be.gram(Wb)
        self.curvature += observed.h_curvature(be, Xb, Wb)
        return rows.shape[0], be.gram(Ht), block

    def refresh(self, Ht, max_sweeps, tol, penalty):
        be = self.backend
        self._all = observed.block(be, self.X, self.W, Ht)
        observed.w_sweeps(be, self._all, Ht, max_sweeps, tol, penalty.l1_W, penalty.l2_W)
        self.regram(None)
        return observed.fit_loss(self._all), be.gram(Ht)

    def all_rows_h_block(self):
        return self._all

    def regram(self, Ht):
        be = self.backend
        self.WtW = be.gram(self.W)
        self.curvature = observed.h_curvature(be, self.X, self.W)
        if Ht is not None:
            self._all = observed.block(be, self.X, self.W, Ht)

    def probe_blocks(self, batch_size, rng, Ht):
        be = self.backend
        for rows in self.minibatches(batch_size, rng):
            if rows is None:
                yield self.n_samples, observed.block(be, self.X, self.W, Ht)
            else:
                yield rows.shape[0], observed.block(be, self.X[rows], self.W[rows], Ht)

    def snapshot(self, spare=None):
        return (*super().snapshot(spare), self.curvature.copy())

    def restore(self, snapshot):
        W, WtW, curvature = snapshot
        self.W[...] = W
        self.WtW, self.curvature = WtW.copy(), curvature.copy()
        self._all = None

    def penalty_value(self, penalty, Ht):
        """The penalties' part of the objective, each row and column at its own scale."""
        return observed.penalty_value(penalty, self.W, Ht, self.row_scale, self.column_scale)


def even_batch_size(n_samples, n_batches):
    """The batch size that splits ``n_samples`` rows into ``n_batches`` minibatches of
    nearly equal size (no small, noisy remainder)."""
    return -(-n_samples // n_batches)


def even_batch_size_at_most(n_samples, batch_size):
    """The size of the fewest minibatches of at most ``batch_size`` rows that split
    ``n_samples`` rows nearly evenly. A short last batch (say 1 row after 33) would take an
    ``H`` step scaled by ``n / |B|`` from a handful of rows, a heavy-tailed step that the
    bound's variance estimate, made for batches of one size, does not foresee."""
    b = min(max(1, int(batch_size)), n_samples)
    return even_batch_size(n_samples, -(-n_samples // b))


def _copy_into(out, a):
    """A copy of ``a``: into ``out`` where it has ``a``'s shape and dtype, else a new array."""
    if out is None or out.shape != a.shape or out.dtype != a.dtype:
        return a.copy()
    out[...] = a
    return out
