"""The same fit over a row-chunked Dask array, on dask.distributed.

``X`` is a :class:`dask.array.Array` chunked by rows (dense, or SciPy CSR chunks), read from
wherever its graph reads it (zarr, HDF5, a ``.npy`` memmap, memory); it is never gathered.
Each chunk keeps its rows of ``W`` beside it on a worker. A minibatch is a group of chunks:
every chunk of the group sweeps its ``W`` rows against the current ``H`` with the CPU
backend's kernels (on a worker, in parallel) and returns ``W_c^T W_c`` (``k x k``) and
``X_c^T W_c`` (``m x k``); a tree sum on the workers brings one of each to the driver, where
:class:`DaskRows` holds the rows for a :class:`~nmfsched.solver.StochasticSolver` (see
:func:`dask_solver`), which takes the ``H`` step with
the guard, the statistics and the scheduler exactly as in memory. A group of every chunk is
the one-batch epoch (distributed HALS), whose ``W`` refresh also returns the next ``H``
step's product, so it reads ``X`` once per epoch.

Traffic per group: ``H`` once to the cluster (``m k`` numbers), ``k (m + 2k)`` from each
chunk into the tree sum and the same once to the driver, independent of the rows. At each
epoch's end the driver gathers ``W`` (``n k`` numbers, ``k / m`` of a read of ``X``) and
seeds it back as tasks whose data the scheduler holds: a chunk of ``W`` lost with a worker
is recomputed from at most one epoch of steps, and the estimator's ``checkpoint`` writes
that ``W`` to disk.
"""

import contextlib
import math
import threading
from functools import partial
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from . import objective, observed
from ._init import randomized_svd_operator
from ._validation import find_bad_entries, infinite_message, negative_message, non_finite_message
from .kernels.cpu import CPUBackend
from .scaling import DataScale, largest_entry
from .solver import StochasticSolver, solve_w

#: Fixed cost of one group (a minibatch of chunks) in flops: a scheduler round trip, the
#: tree sum and the driver's ``H`` step take milliseconds however small the chunks are.
#: ``batch_size="auto"`` weighs it as the CPU weighs its per-batch call overhead.
DASK_GROUP_OVERHEAD_FLOPS = 1e9
#: Results summed by one task of :meth:`DaskData.tree_sum`.
TREE_FAN_IN = 8
#: ``X`` is kept in the workers' memory when it takes at most this fraction of their limit.
PERSIST_FRACTION = 0.5


# -- tasks: one chunk each, on a worker, with the CPU backend's kernels --------------------
_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None
_blas_controller = None  # finding the BLAS libraries takes milliseconds: once per process


@contextlib.contextmanager
def _one_thread():
    """A task's kernels run on one thread: the parallelism comes from the workers' threads.

    Numba's thread count is per thread; the BLAS limit is per process, so it is taken by
    the first task that enters and given back by the last that leaves (worker threads
    share a process, and a fit on a threads-only cluster shares it with the caller).
    """
    global _blas_users, _blas_limiter, _blas_controller
    import numba
    from threadpoolctl import ThreadpoolController

    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    with _blas_lock:
        if _blas_users == 0:
            if _blas_controller is None:
                _blas_controller = ThreadpoolController()
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield CPUBackend()
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None
        numba.set_num_threads(previous)


def _as_kernel_input(X_c, dtype):
    """A chunk as the CPU kernels take it: C-ordered, or CSR with matching index dtypes."""
    if sp.issparse(X_c):
        return CPUBackend().to_device(X_c.tocsr().astype(dtype, copy=False))
    return np.ascontiguousarray(X_c, dtype=dtype)


def _scan_task(X_c, missing="error"):
    """Per chunk: ``(||X_c||^2, sum(X_c), nnz, (non-finite count, first), (negative count, first),
    missing-entry counts)``, over the observed entries where NaN marks missing ones (``missing``
    other than "error"). The counts are None when the chunk misses none, else a dict of the
    observed entries per column ("columns") and the rows with none ("empty_rows"), or of the
    stored NaN a sparse chunk may not have ("stored_nan")."""
    if not sp.issparse(X_c):
        X_c = np.asarray(X_c)
    allow_nan = missing != "error"
    non_finite = np.isinf if allow_nan else (lambda a: ~np.isfinite(a))
    bad = find_bad_entries(X_c, non_finite), find_bad_entries(X_c, lambda a: a < 0)
    if bad[0][0]:
        return 0.0, 0.0, 0, *bad, None, 0.0
    counts = None
    if allow_nan and (missing == "unstored" and sp.issparse(X_c) or _has_nan(X_c)):
        if sp.issparse(X_c) and missing == "nan":
            return 0.0, 0.0, 0, (0, None), bad[1], {"stored_nan": int(np.isnan(X_c.data).sum())}, 0.0
        X_c = observed.observed_matrix(X_c)
        counts = {"columns": np.bincount(X_c.indices, minlength=X_c.shape[1]),
                  "empty_rows": np.flatnonzero(np.diff(X_c.indptr) == 0)}
    data = (X_c.data if sp.issparse(X_c) else X_c).ravel()
    d = data.astype(np.float64, copy=False)
    nnz = X_c.nnz if sp.issparse(X_c) else int(np.count_nonzero(d))
    return float(d @ d), float(d.sum()), nnz, *bad, counts, largest_entry(X_c)


def _has_nan(X_c):
    return bool(np.isnan(X_c.data if sp.issparse(X_c) else X_c).any())


def _observed_chunk(X_c, dtype):
    """A chunk's observed entries (its non-NaN entries; a sparse chunk's stored ones) as kernel-ready CSR."""
    return CPUBackend().to_device(observed.observed_matrix(X_c if sp.issparse(X_c) else np.asarray(X_c), dtype=dtype))


def _observed_w_step_task(X_c, W_c, Ht, sweeps, tol, l1=0.0, l2=0.0):
    """``W_c`` swept over its observed entries against ``H``; returns ``(W_c, (old H constants, old
    Gram, new Gram, column Grams, column products, fit, old penalty sums, new penalty sums))``."""
    with _one_thread() as be:
        Xo = _observed_chunk(X_c, Ht.dtype)
        W = np.array(W_c, dtype=Ht.dtype, order="C", copy=True)
        old = observed.h_curvature(be, Xo, W), be.gram(W), np.array(observed.row_penalty_sums(Xo, W))
        block = observed.block(be, Xo, W, Ht)
        observed.w_sweeps(be, block, Ht, sweeps, tol, l1, l2)
        G, P = observed.column_grams(be, Xo, W)
        new_pen = np.array(observed.row_penalty_sums(Xo, W))
        return W, (old[0], old[1], be.gram(W), G, P, observed.fit_loss(block), old[2], new_pen)


def _observed_product_task(X_c, W_c, Ht):
    """``(Gram, column Grams, column products, fit, penalty sums)`` of a chunk at the current iterate."""
    with _one_thread() as be:
        Xo = _observed_chunk(X_c, Ht.dtype)
        W = np.asarray(W_c, dtype=Ht.dtype)
        G, P = observed.column_grams(be, Xo, W)
        fit = observed.fit_loss(observed.block(be, Xo, W, Ht))
        return be.gram(W), G, P, fit, np.array(observed.row_penalty_sums(Xo, W))


def _observed_curvature_task(X_c, W_c):
    """``(H constants, penalty sums)`` of a chunk's rows of ``W`` over its observed entries."""
    with _one_thread() as be:
        Xo = _observed_chunk(X_c, W_c.dtype)
        return observed.h_curvature(be, Xo, W_c), np.array(observed.row_penalty_sums(Xo, W_c))


def _observed_solve_task(X_c, W_c, H, max_sweeps, tol, l1=0.0, l2=0.0):
    """``W_c`` solved over its observed entries for ``H`` and twice its fit (``||X_c - W_c H||^2`` observed)."""
    with _one_thread() as be:
        Xo = _observed_chunk(X_c, H.dtype)
        W = np.array(W_c, dtype=H.dtype, order="C", copy=True)
        W[np.diff(Xo.indptr) == 0] = 0  # nothing known of these rows (the fit warned)
        fit = observed.solve_w(be, Xo, np.ascontiguousarray(H.T), W, max_sweeps, tol, l1, l2)
        return W, 2.0 * fit


def _w_step_task(X_c, W_c, Ht, G, steps, sweeps, tol, l1=0.0):
    """``W_c`` swept against ``H`` (``G``: ``H H^T`` plus ``W``'s L2 weight, ``l1`` its L1 weight);
    returns ``(W_c, (old Gram, new Gram, <W_c, X_c H^T>, X_c^T W_c))``."""
    with _one_thread() as be:
        X_c = _as_kernel_input(X_c, Ht.dtype)
        k = Ht.shape[1]
        P = be.xb_ht(be.all_rows(X_c), Ht, np.empty((X_c.shape[0], k), Ht.dtype))
        W = np.array(W_c, dtype=Ht.dtype, order="C", copy=True)
        old = be.gram(W)
        # the block's steps come from the driver, computed once for every chunk
        be.projected_cd(W, *objective.penalized(objective.BlockProblem(G, P), l1), steps, max_sweeps=sweeps, tol=tol)
        h = objective.h_block(be, be.all_rows(X_c), W, np.empty(Ht.shape, Ht.dtype))
        return W, (old, h.G, be.inner(W, P), h.P)


def _product_task(X_c, W_c):
    """``(W_c^T W_c, X_c^T W_c)``: what a zero step of ``H`` (the probe) needs."""
    with _one_thread() as be:
        X_c = _as_kernel_input(X_c, W_c.dtype)
        return tuple(objective.h_block(be, be.all_rows(X_c), W_c, np.empty((X_c.shape[1], W_c.shape[1]), W_c.dtype)))


def _solve_task(X_c, W_c, H, max_sweeps, tol, l1=0.0, l2=0.0):
    """``W_c`` solved for ``H`` (transform-grade, with ``W``'s penalty weights) and ``||X_c - W_c H||^2``."""
    from .metrics import frobenius_error

    with _one_thread() as be:
        X_c = _as_kernel_input(X_c, H.dtype)
        W = np.asarray(solve_w(be, X_c, H, W=W_c, max_sweeps=max_sweeps, tol=tol, l1=l1, l2=l2))
        return W, frobenius_error(X_c, W, H) ** 2


def _transform_block(X_c, H, max_sweeps, tol, who, l1=0.0, l2=0.0, missing="error", block_info=None):
    """One block of :func:`transform`: its entries checked (global row in the message), ``W`` solved
    (over the observed entries where some are missing)."""
    row0 = block_info[0]["array-location"][0][0] if block_info else 0
    allow_nan = missing != "error"
    non_finite = (np.isinf, infinite_message) if allow_nan else (lambda a: ~np.isfinite(a), non_finite_message)
    for is_bad, message in (non_finite, (lambda a: a < 0, negative_message)):
        count, first = find_bad_entries(X_c, is_bad)
        if count:
            raise ValueError(message("X", who, count, (row0 + first[0], first[1])) + " (counted in its chunk)")
    masked = allow_nan and (missing == "unstored" and sp.issparse(X_c) or _has_nan(X_c))
    if masked and sp.issparse(X_c) and missing == "nan":
        raise ValueError(observed.stored_nan_message(int(np.isnan(X_c.data).sum())))
    scale = DataScale.of(largest_entry(X_c))  # the block's own scale: its rows are solved on their own
    X_c, H = scale.data(X_c), scale.factors_in(H)
    penalty = scale.penalty(objective.Penalty(l1_W=l1, l2_W=l2))
    with _one_thread() as be:
        if masked:
            W = np.zeros((X_c.shape[0], H.shape[0]), dtype=H.dtype)
            observed.solve_w(be, _observed_chunk(X_c, H.dtype), np.ascontiguousarray(H.T), W, max_sweeps, tol,
                             penalty.l1_W, penalty.l2_W)
        else:
            W = np.asarray(solve_w(be, _as_kernel_input(X_c, H.dtype), H, max_sweeps=max_sweeps, tol=tol,
                                   l1=penalty.l1_W, l2=penalty.l2_W))
        return scale.factors_out(W)


def _init_view(X_c, fill_scale):
    """The chunk an SVD start factors: as it is, or (``fill_scale`` given) its missing entries 0
    and its observed ones times ``fill_scale`` (see :func:`nmfsched.observed.init_matrix`)."""
    if fill_scale is None:
        return X_c
    return observed.observed_matrix(X_c if sp.issparse(X_c) else np.asarray(X_c)) * fill_scale


def _matmul_task(X_c, B, fill_scale=None):
    return np.asarray(_init_view(X_c, fill_scale) @ B)


def _rmatmul_task(X_c, Q_c, fill_scale=None):
    return np.asarray(_init_view(X_c, fill_scale).T @ Q_c)


def _sum(*parts):
    """The sum of arrays, or of tuples of arrays (element by element)."""
    if isinstance(parts[0], tuple):
        return tuple(_sum(*column) for column in zip(*parts))
    total = parts[0].copy() if isinstance(parts[0], np.ndarray) else parts[0]
    for part in parts[1:]:
        total += part
    return total


def _identity(a):
    return a


def _nbytes(value):
    if isinstance(value, tuple):
        return sum(map(_nbytes, value))
    return int(getattr(value, "nbytes", 8))


# -- the data on the cluster ------------------------------------------------------------------
class DaskData:
    """A row-chunked Dask array on a client: its chunks, their rows, and tasks over them.

    Counts the bytes of the arrays the driver sends to the cluster and of the results it
    gathers (:attr:`bytes_sent`, :attr:`bytes_received`).

    Parameters
    ----------
    X : dask.array.Array
        Chunked by rows; column chunks are merged (one chunk spans every column).
    client : distributed.Client
    """

    def __init__(self, X, client):
        if X.ndim != 2:
            raise ValueError(f"Expected a 2-D Dask array, got {X.ndim}-D input of shape {X.shape}.")
        if any(math.isnan(s) for s in X.shape):
            raise ValueError("X has chunks of unknown size; call X.compute_chunk_sizes() first.")
        if len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})
        self.X = X
        self.client = client
        self.shape = tuple(int(s) for s in X.shape)
        self.rows = tuple(int(r) for r in X.chunks[0])
        self.offsets = np.concatenate([[0], np.cumsum(self.rows)]).astype(np.int64)
        self.blocks = list(X.to_delayed().ravel())
        self.bytes_sent = 0
        self.bytes_received = 0
        self.persisted = False
        #: Tasks :meth:`run` keeps queued or running: two per worker thread.
        self.max_in_flight = 2 * worker_threads(client)
        self._place_chunks()

    def _place_chunks(self):
        """A home worker per chunk: where its data is (once persisted), else the workers in
        turn. A chunk's tasks and its rows of ``W`` go there, so neither ``X`` nor ``W``
        moves between workers (the scheduler's work stealing would move 20 MB chunks to run
        75 ms tasks); the placement is a preference, so a lost worker's chunks go elsewhere."""
        workers = sorted(self.client.scheduler_info().get("workers", {}))
        self.homes = [workers[c % len(workers)] if workers else None for c in range(self.n_chunks)]
        if self.persisted:
            who_has = self.client.who_has(self.X)
            for c, (key,) in enumerate(self.X.__dask_keys__()):
                holders = who_has.get(key) or who_has.get(str(key)) or ()
                if holders:
                    self.homes[c] = sorted(holders)[0]

    def _placement(self, c):
        home = self.homes[c]
        return {"workers": [home], "allow_other_workers": True} if home else {}

    def persist_if_it_fits(self, nbytes, fraction=None):
        """Keep ``X``'s chunks in the workers' memory when ``nbytes`` (its size) is at most
        ``fraction`` (default :data:`PERSIST_FRACTION`) of the memory their limits leave
        free; returns whether it did.

        Otherwise every pass reads the chunks from ``X``'s source again (zarr, HDF5, a
        memmap): out of core. An in-memory array must be persisted, or each pass would ship
        its chunks inside the graph (a threads-only local cluster keeps them without a copy).
        """
        fraction = PERSIST_FRACTION if fraction is None else fraction
        workers = self.client.scheduler_info().get("workers", {}).values()
        limit = sum(w.get("memory_limit", 0) or 0 for w in workers)
        used = sum(w.get("metrics", {}).get("memory", 0) or 0 for w in workers)
        if (limit and nbytes > fraction * (limit - used)) or fraction <= 0:
            return False
        self.X = self.client.persist(self.X)
        from distributed import wait

        wait(self.X)
        self.blocks = list(self.X.to_delayed().ravel())
        self.persisted = True
        self._place_chunks()
        return True

    @property
    def n_chunks(self):
        return len(self.rows)

    def run(self, fn, chunks, *per_chunk, shared=(), nout=None):
        """Futures of ``fn(X_c, *per_chunk[i], *shared)`` for the chunks ``chunks`` (one task each).

        With ``nout``, ``fn`` returns that many values and the result is one list of
        futures per value (each task still runs once). At most :attr:`max_in_flight`
        tasks are queued or running at a time (the call waits for earlier ones to finish
        before it submits more), so a worker never holds more than a few chunks of an
        ``X`` read from disk, whatever the scheduler's ordering.
        """
        import dask
        from distributed import as_completed

        shared_bytes = sum(_nbytes(a) for a in shared if isinstance(a, np.ndarray))  # embedded in each task
        results, pending = [], as_completed()
        for i, c in enumerate(chunks):
            if pending.count() >= self.max_in_flight:
                next(pending)
            args = [a[i] for a in per_chunk]
            self.bytes_sent += shared_bytes + sum(_nbytes(a) for a in args if isinstance(a, np.ndarray))
            task = dask.delayed(fn, pure=False, nout=nout)(self.blocks[c], *args, *shared)
            parts = self.client.compute(list(task) if nout else [task], **self._placement(c))  # one graph
            pending.add(parts[0])
            results.append(parts)
        if nout is None:
            return [parts[0] for parts in results]
        return [[parts[j] for parts in results] for j in range(nout)]

    def submit(self, value, chunk=None):
        """A future holding the host array ``value`` (sent once, shared by later tasks); with
        ``chunk``, held by that chunk's home worker."""
        self.bytes_sent += _nbytes(value)
        placement = {} if chunk is None else self._placement(chunk)
        return self.client.submit(_identity, value, pure=False, **placement)

    def gather(self, futures):
        """The results of ``futures`` on the driver."""
        results = self.client.gather(list(futures))
        self.bytes_received += sum(map(_nbytes, results))
        return results

    def tree_sum(self, futures, fan_in=TREE_FAN_IN):
        """The sum of the results of ``futures``, added in a tree on the workers (``fan_in``
        results per addition: fewer tasks than pairs, each still holding few ``m x k`` parts)."""
        futures = list(futures)
        while len(futures) > 1:
            futures = [
                self.client.submit(_sum, *futures[i : i + fan_in], pure=False) if len(futures[i : i + fan_in]) > 1
                else futures[i]
                for i in range(0, len(futures), fan_in)
            ]
        return self.gather(futures)[0]

    def split(self, A):
        """``A``'s rows cut as ``X``'s chunks."""
        return [A[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def seed(self, A):
        """Futures holding the row chunks of the host array ``A``; the scheduler keeps the
        data in the task, so a chunk lost with a worker is recomputed from it."""
        return [self.submit(part, chunk=c) for c, part in enumerate(self.split(A))]


def stored_bytes(shape, dtype, nnz, sparse):
    """Bytes of ``X`` in memory: dense, or CSR (values, column indices, row pointers)."""
    itemsize = np.dtype(dtype).itemsize
    if sparse:
        return nnz * (itemsize + 4) + 8 * (shape[0] + 1)
    return shape[0] * shape[1] * itemsize


class Scan(NamedTuple):
    """What one pass over the chunks learns of ``X`` (see :func:`scan`)."""

    sq_norm: float  #: ``||X||^2`` over the observed entries
    mean: float  #: the mean observed entry
    nnz: int  #: stored (or observed) nonzeros
    column_counts: np.ndarray | None  #: observed entries per column; None when none is missing
    n_observed: int  #: observed entries
    empty_rows: np.ndarray  #: rows without an observed entry
    largest: float  #: the largest observed entry


def scan(data, who, missing="error"):
    """One pass: the norm, mean and nonzeros of ``X`` (a :class:`Scan`); a non-finite (where NaN
    does not mark a missing entry: infinite) or negative entry raises with its place."""
    results = data.gather(data.run(_scan_task, range(data.n_chunks), shared=(missing,)))
    stored_nan = sum(r[5].get("stored_nan", 0) for r in results if r[5] is not None)
    if stored_nan:
        raise ValueError(observed.stored_nan_message(stored_nan))
    non_finite = infinite_message if missing != "error" else partial(non_finite_message, nan_hint=True)
    for index, message in ((3, non_finite), (4, negative_message)):
        count = sum(r[index][0] for r in results)
        if count:
            c = next(i for i, r in enumerate(results) if r[index][0])
            row, col = results[c][index][1]
            raise ValueError(message("X", who, count, (int(data.offsets[c]) + row, col)))
    n, m = data.shape
    counts, empty_rows = None, np.zeros(0, dtype=np.int64)
    if any(r[5] is not None for r in results):  # some chunk misses entries: count every chunk's observed ones
        counts = np.zeros(m, dtype=np.int64)
        for c, r in enumerate(results):
            if r[5] is None:
                counts += data.rows[c]
            else:
                counts += r[5]["columns"]
                empty_rows = np.concatenate([empty_rows, data.offsets[c] + r[5]["empty_rows"]])
    n_observed = int(counts.sum()) if counts is not None else n * m
    if n_observed == 0:
        raise ValueError(f"X has no observed entry (every entry is missing); {who} needs at least one.")
    total = sum(r[1] for r in results)
    return Scan(sum(r[0] for r in results), total / n_observed, sum(r[2] for r in results), counts, n_observed,
                empty_rows, max(r[6] for r in results))


def randomized_svd_chunks(data, k, rng, fill_scale=None):
    """Top-``k`` singular triplets of the chunked ``X``: each product with ``X`` is one task
    per chunk, the range basis and the small factors live on the driver (see
    :func:`nmfsched._init.randomized_svd_operator`). With missing entries, ``fill_scale``
    (1 / the observed fraction) makes the factored matrix the observed entries scaled by it."""
    chunks = range(data.n_chunks)
    return randomized_svd_operator(
        lambda B: np.concatenate(data.gather(data.run(_matmul_task, chunks, shared=(B, fill_scale)))),
        lambda Q: data.tree_sum(data.run(_rmatmul_task, chunks, data.split(Q), shared=(fill_scale,))),
        data.shape, np.float64, k, rng,
    )


# -- the solver ---------------------------------------------------------------------------------
class DaskRows:
    """A :class:`~nmfsched.row_stores.RowStore` of Dask chunks: each keeps its rows of ``W`` on a worker.

    A minibatch is a group of whole chunks, at least one chunk per worker thread (so every
    thread has a chunk), drawn in a fresh random order every epoch; the ``H`` step, the
    running ``W^T W``, the statistics, the guard's snapshots and the batch growth are the
    solver's, on the driver.

    Parameters
    ----------
    data : DaskData
    W : ndarray
        Initial ``W`` (host), sent to the workers chunk by chunk.
    sq_norm_X : float
    min_group : int, default=1
        Chunks per group at least (the number of worker threads).
    """

    supports_search = False  # trial steps would need every minibatch's rows on the driver
    observed = False  # missing entries are refused before a Dask fit starts

    def __init__(self, data, W, *, sq_norm_X, min_group=1):
        self.data = data
        self.backend = CPUBackend()
        self.n_samples, self.n_features = data.shape
        self.dtype = np.dtype(W.dtype)
        self.k = W.shape[1]
        self.min_group = max(1, int(min_group))
        self.sq_norm_X = float(sq_norm_X)
        self._ct_full = None  # X^T W of the last refresh: the next one-batch H step's product
        self._set_w(np.asarray(W, dtype=self.dtype))

    # -- W on the workers -------------------------------------------------------------
    def _set_w(self, W, WtW=None):
        """Seed the chunks of ``W`` from the host (cuts their lineage) and set ``W^T W``
        (``WtW`` where the caller has it already)."""
        self._W_host = W
        self.W = self.data.seed(W)
        self.WtW = self.backend.gram(W) if WtW is None else WtW

    def W_host(self):
        """``W`` on the driver (gathered once per change)."""
        if self._W_host is None:
            self._W_host = np.concatenate(self.data.gather(self.W))
        return self._W_host

    def snapshot(self, spare=None):
        return list(self.W), self._W_host, self.WtW.copy()  # futures are immutable: nothing to reuse

    def restore(self, snapshot):
        W, W_host, WtW = snapshot
        self.W, self._W_host = list(W), W_host
        self.WtW = WtW.copy()

    # -- minibatches of chunks ----------------------------------------------------------------
    def even_batch_size(self, batch_size):
        return min(self.n_samples, max(1, int(batch_size)))  # rounded up to whole chunks per group

    def resize(self, batch_size):
        pass  # chunk tasks allocate their own

    def chunks_per_group(self, batch_size):
        mean_rows = self.n_samples / self.data.n_chunks
        wanted = max(self.min_group, math.ceil(batch_size / mean_rows - 1e-9))
        return min(self.data.n_chunks, wanted)

    def full_batch(self, batch_size):
        return self.chunks_per_group(batch_size) >= self.data.n_chunks

    def n_batches(self, batch_size):
        return -(-self.data.n_chunks // self.chunks_per_group(batch_size))

    def minibatches(self, batch_size, rng):
        """Chunk numbers of each group of one epoch (None: one group of every chunk)."""
        if self.full_batch(batch_size):
            yield None
            return
        n_chunks, n_groups = self.data.n_chunks, self.n_batches(batch_size)
        order = rng.permutation(n_chunks)
        for i in range(n_groups):
            yield order[i * n_chunks // n_groups : (i + 1) * n_chunks // n_groups]

    # -- the W half and the passes ---------------------------------------------------------
    def _sweep_chunks(self, chunks, Ht, sweeps, penalty, tol=0.0):
        """Every chunk in ``chunks`` sweeps its ``W`` against ``H`` (penalised by ``penalty``'s
        weights on ``W``); returns the summed ``(old Grams, new Grams, <W, X H^T>, X^T W)`` and ``H H^T``."""
        HHt = self.backend.gram(Ht)
        G = objective.add_to_diagonal(HHt, penalty.l2_W) if penalty.l2_W else HHt
        steps = objective.unit_steps(G, penalty.l1_W)
        shared_Ht = self.data.submit(Ht.copy())
        W_new, stats = self.data.run(
            _w_step_task, chunks, [self.W[c] for c in chunks],
            shared=(shared_Ht, G.astype(self.dtype), steps.astype(self.dtype), sweeps, tol, penalty.l1_W), nout=2,
        )
        for c, future in zip(chunks, W_new):
            self.W[c] = future
        self._W_host = None
        return self.data.tree_sum(stats), HHt

    def w_half(self, group, Ht, w_sweeps, penalty):
        (old, new, _, Ct), HHt = self._sweep_chunks(list(group), Ht, w_sweeps, penalty)
        self.WtW = self.WtW - old + new
        nb = int(sum(self.data.rows[c] for c in group))
        return nb, HHt, objective.BlockProblem(new, Ct)

    def refresh(self, Ht, max_sweeps, tol, penalty):
        """Sweeps on every chunk's ``W``; also gathers ``W`` and seeds it back (see the module's
        notes on faults), and keeps the summed ``X^T W`` for the next one-batch ``H`` step."""
        (_, WtW, cross, Ct), HHt = self._sweep_chunks(range(self.data.n_chunks), Ht, max_sweeps, penalty, tol)
        # the workers' sum (bitwise as the in-memory fit's order of rows allows), not a
        # second n x k^2 product on the driver
        self._set_w(self.W_host(), WtW)
        self._ct_full = Ct
        return objective.loss_from_grams(self.sq_norm_X, cross, WtW, HHt), HHt

    def all_rows_h_block(self):
        return objective.BlockProblem(self.WtW, self._ct_full)

    def refreshed_block(self, HHt):
        return None  # X H^T lives in the chunks; the final solve is the chunks' own (dask_fit)

    def regram(self, Ht):
        """``W^T W`` and the summed ``X^T W`` again by one product pass (no sweeps)."""
        chunks = range(self.data.n_chunks)
        self.WtW, self._ct_full = self.data.tree_sum(self.data.run(_product_task, chunks, self.W))

    def probe_blocks(self, batch_size, rng, Ht):
        for group in self.minibatches(batch_size, rng):
            chunks = range(self.data.n_chunks) if group is None else list(group)
            WbtWb, Ct = self.data.tree_sum(self.data.run(_product_task, chunks, [self.W[c] for c in chunks]))
            yield int(sum(self.data.rows[c] for c in chunks)), objective.BlockProblem(WbtWb, Ct)

    def W_sum(self):
        return float(self.W_host().sum())  # gathered once per change (every refresh gathers it anyway)

    def finish(self, H, max_sweeps, tol, penalty=objective.NO_PENALTY):
        """``W`` solved for the final ``H`` chunk by chunk (host, with ``penalty``'s weights on
        ``W``), and ``||X - W H||_F``."""
        W_new, errors = self.data.run(
            _solve_task, range(self.data.n_chunks), self.W, shared=(H, max_sweeps, tol, penalty.l1_W, penalty.l2_W),
            nout=2,
        )
        W = np.concatenate(self.data.gather(W_new))
        return W, math.sqrt(sum(self.data.gather(errors)))


class ObservedDaskRows(DaskRows):
    """:class:`DaskRows` of an ``X`` with missing entries: the chunks sweep their ``W`` over their
    observed entries and send per-column Grams (:class:`~nmfsched.observed.ColumnGramBlock`), from
    which the driver takes the ``H`` step exactly as in memory; traffic per chunk and group is
    ``m k (k + 2)`` numbers (against ``k (m + 2k)`` without missing entries).

    Parameters
    ----------
    data : DaskData
    W : ndarray
    sq_norm_X : float
        ``||X||^2`` over the observed entries.
    column_counts : ndarray of shape (n_features,)
        Observed entries per column.
    min_group : int, default=1
    """

    observed = True

    def __init__(self, data, W, *, sq_norm_X, column_counts, min_group=1):
        super().__init__(data, W, sq_norm_X=sq_norm_X, min_group=min_group)
        self.column_scale = np.asarray(column_counts, dtype=np.float64) / self.n_samples
        self._all = None
        curvature, pen = self.data.tree_sum(self.data.run(_observed_curvature_task, range(self.data.n_chunks), self.W))
        self.curvature, self._penalty_sums = curvature, pen

    def _sweep_chunks(self, chunks, Ht, sweeps, penalty, tol=0.0):
        HHt = self.backend.gram(Ht)
        shared_Ht = self.data.submit(Ht.copy())
        W_new, stats = self.data.run(
            _observed_w_step_task, chunks, [self.W[c] for c in chunks],
            shared=(shared_Ht, sweeps, tol, penalty.l1_W, penalty.l2_W), nout=2,
        )
        for c, future in zip(chunks, W_new):
            self.W[c] = future
        self._W_host = None
        return self.data.tree_sum(stats), HHt

    @staticmethod
    def _new_curvature(G):
        return np.ascontiguousarray(np.diagonal(G, axis1=1, axis2=2))

    def w_half(self, group, Ht, w_sweeps, penalty):
        (old_curv, old_gram, new_gram, G, P, fit, old_pen, new_pen), HHt = self._sweep_chunks(
            list(group), Ht, w_sweeps, penalty)
        self.WtW = self.WtW - old_gram + new_gram
        self.curvature = self.curvature - old_curv + self._new_curvature(G)
        self._penalty_sums = self._penalty_sums - old_pen + new_pen
        nb = int(sum(self.data.rows[c] for c in group))
        return nb, HHt, observed.ColumnGramBlock(G, P, nb, fit)

    def refresh(self, Ht, max_sweeps, tol, penalty):
        (_, _, WtW, G, P, fit, _, pen), HHt = self._sweep_chunks(range(self.data.n_chunks), Ht, max_sweeps, penalty, tol)
        self._set_w(self.W_host(), WtW)
        self.curvature, self._penalty_sums = self._new_curvature(G), pen
        self._all = observed.ColumnGramBlock(G, P, self.n_samples, fit)
        return fit, HHt

    def all_rows_h_block(self):
        return self._all

    def regram(self, Ht):
        for _, block in self.probe_blocks(self.n_samples, None, Ht):
            self._all = block
            self.curvature = self._new_curvature(block.G)

    def probe_blocks(self, batch_size, rng, Ht):
        groups = [None] if rng is None else self.minibatches(batch_size, rng)
        for group in groups:
            chunks = range(self.data.n_chunks) if group is None else list(group)
            WtW, G, P, fit, pen = self.data.tree_sum(
                self.data.run(_observed_product_task, chunks, [self.W[c] for c in chunks], shared=(Ht.copy(),)))
            if group is None:
                self.WtW, self._penalty_sums = WtW, pen
            nb = int(sum(self.data.rows[c] for c in chunks))
            yield nb, observed.ColumnGramBlock(G, P, nb, fit)

    def snapshot(self, spare=None):
        return super().snapshot(), self.curvature.copy(), self._penalty_sums.copy()

    def restore(self, snapshot):
        rows, curvature, pen = snapshot
        super().restore(rows)
        self.curvature, self._penalty_sums = curvature.copy(), pen.copy()
        self._all = None

    def penalty_value(self, penalty, Ht):
        """The penalties' part of the objective (rows scaled on the workers, columns here)."""
        H64 = np.asarray(Ht, dtype=np.float64)
        a, b = self._penalty_sums
        return float(penalty.l1_W * a + 0.5 * penalty.l2_W * b
                     + self.column_scale @ (penalty.l1_H * H64.sum(axis=1) + 0.5 * penalty.l2_H * (H64 * H64).sum(axis=1)))

    def finish(self, H, max_sweeps, tol, penalty=objective.NO_PENALTY):
        """``W`` solved over each chunk's observed entries for the final ``H``, and ``||X - W H||_F`` over them."""
        W_new, errors = self.data.run(
            _observed_solve_task, range(self.data.n_chunks), self.W,
            shared=(H, max_sweeps, tol, penalty.l1_W, penalty.l2_W), nout=2,
        )
        W = np.concatenate(self.data.gather(W_new))
        return W, math.sqrt(sum(self.data.gather(errors)))


def dask_solver(data, W, H, *, sq_norm_X, batch_size, w_sweeps, rng, min_group=1, penalty=objective.NO_PENALTY,
                column_counts=None):
    """A :class:`~nmfsched.solver.StochasticSolver` over the chunks of ``data`` (:class:`DaskRows`, or
    :class:`ObservedDaskRows` given the observed ``column_counts`` of an ``X`` with missing entries)."""
    if column_counts is not None:
        rows = ObservedDaskRows(data, W, sq_norm_X=sq_norm_X, column_counts=column_counts, min_group=min_group)
        return StochasticSolver.over(rows, H, batch_size=batch_size, w_sweeps=w_sweeps, rng=rng, penalty=penalty)
    rows = DaskRows(data, W, sq_norm_X=sq_norm_X, min_group=min_group)
    return StochasticSolver.over(rows, H, batch_size=batch_size, w_sweeps=w_sweeps, rng=rng, penalty=penalty)


# -- the client ---------------------------------------------------------------------------------
@contextlib.contextmanager
def dask_client(address=None):
    """A ``distributed.Client`` for one fit.

    ``address`` (a scheduler address, or a ``Client``) is used as given; without one, the
    ambient client (``distributed.get_client()``) if there is one, else a ``LocalCluster``
    started for the fit and closed after it: one worker whose threads (one per core) run in
    this process, since the kernels release the GIL and nothing needs pickling. For worker
    processes, a memory limit or several machines, start a cluster and pass its address
    (or make a ``Client`` before fitting).
    """
    from distributed import Client, LocalCluster, get_client

    if address is not None:
        if isinstance(address, Client):
            yield address
            return
        with Client(address) as client:
            yield client
        return
    try:
        ambient = get_client()
    except ValueError:  # no client in this context
        ambient = None
    if ambient is not None:
        yield ambient
        return
    with LocalCluster(processes=False, n_workers=1, dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def worker_threads(client):
    """Threads over all the client's workers."""
    return max(1, sum(client.nthreads().values()))


def describe_cluster(client):
    """``{"scheduler", "workers", "threads", "memory_limit"}`` of the client's cluster (for reports);
    ``memory_limit`` is the sum over workers in bytes (0 where unlimited)."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    return {
        "scheduler": info.get("address"),
        "workers": len(workers),
        "threads": sum(w.get("nthreads", 0) for w in workers.values()),
        "memory_limit": sum(w.get("memory_limit", 0) or 0 for w in workers.values()),
    }


def transform(X, H, max_sweeps, tol, who, penalty=objective.NO_PENALTY, missing="error"):
    """``argmin_{W >= 0} ||X - W H||`` (plus ``penalty``'s terms on ``W``) per chunk of the Dask
    array ``X``, as a lazy Dask array (each block checks its own entries when computed)."""
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    k = H.shape[0]
    return X.map_blocks(
        _transform_block, H, max_sweeps, tol, who, penalty.l1_W, penalty.l2_W, missing, chunks=(X.chunks[0], (k,)),
        dtype=H.dtype,
        meta=np.empty((0, 0), dtype=H.dtype),
    )
