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

import numpy as np
import scipy.sparse as sp

from . import objective
from ._init import randomized_svd_operator
from ._validation import find_bad_entries, negative_message, non_finite_message
from .kernels.cpu import CPUBackend
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


def _scan_task(X_c):
    """Per chunk: ``(||X_c||^2, sum(X_c), nnz, (non-finite count, first), (negative count, first))``."""
    if not sp.issparse(X_c):
        X_c = np.asarray(X_c)
    data = (X_c.data if sp.issparse(X_c) else X_c).ravel()
    bad = find_bad_entries(X_c, lambda a: ~np.isfinite(a)), find_bad_entries(X_c, lambda a: a < 0)
    if bad[0][0]:
        return 0.0, 0.0, 0, *bad
    d = data.astype(np.float64, copy=False)
    nnz = X_c.nnz if sp.issparse(X_c) else int(np.count_nonzero(d))
    return float(d @ d), float(d.sum()), nnz, *bad


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


def _transform_block(X_c, H, max_sweeps, tol, who, l1=0.0, l2=0.0, block_info=None):
    """One block of :func:`transform`: its entries checked (global row in the message), ``W`` solved."""
    row0 = block_info[0]["array-location"][0][0] if block_info else 0
    for is_bad, message in ((lambda a: ~np.isfinite(a), non_finite_message), (lambda a: a < 0, negative_message)):
        count, first = find_bad_entries(X_c, is_bad)
        if count:
            raise ValueError(message("X", who, count, (row0 + first[0], first[1])) + " (counted in its chunk)")
    with _one_thread() as be:
        return np.asarray(solve_w(be, _as_kernel_input(X_c, H.dtype), H, max_sweeps=max_sweeps, tol=tol, l1=l1, l2=l2))


def _matmul_task(X_c, B):
    return np.asarray(X_c @ B)


def _rmatmul_task(X_c, Q_c):
    return np.asarray(X_c.T @ Q_c)


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


def _dask_non_finite_message(name, who, count, first):
    return non_finite_message(name, who, count, first)[:-1] + (
        "; missing entries (NaN) are fitted in memory only (pass the matrix, or its CSR of ratings, as a NumPy "
        "or SciPy input)."
    )


def scan(data, who):
    """``(||X||^2, mean(X), nnz)`` in one pass; a non-finite or negative entry raises with its place."""
    results = data.gather(data.run(_scan_task, range(data.n_chunks)))
    for index, message in ((3, _dask_non_finite_message), (4, negative_message)):
        count = sum(r[index][0] for r in results)
        if count:
            c = next(i for i, r in enumerate(results) if r[index][0])
            row, col = results[c][index][1]
            raise ValueError(message("X", who, count, (int(data.offsets[c]) + row, col)))
    total = sum(r[1] for r in results)
    return sum(r[0] for r in results), total / (data.shape[0] * data.shape[1]), sum(r[2] for r in results)


def randomized_svd_chunks(data, k, rng):
    """Top-``k`` singular triplets of the chunked ``X``: each product with ``X`` is one task
    per chunk, the range basis and the small factors live on the driver (see
    :func:`nmfsched._init.randomized_svd_operator`)."""
    chunks = range(data.n_chunks)
    return randomized_svd_operator(
        lambda B: np.concatenate(data.gather(data.run(_matmul_task, chunks, shared=(B,)))),
        lambda Q: data.tree_sum(data.run(_rmatmul_task, chunks, data.split(Q))),
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

    def snapshot(self):
        return list(self.W), self._W_host, self.WtW.copy()  # futures are immutable

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


def dask_solver(data, W, H, *, sq_norm_X, batch_size, w_sweeps, rng, min_group=1, penalty=objective.NO_PENALTY):
    """A :class:`~nmfsched.solver.StochasticSolver` over the chunks of ``data`` (:class:`DaskRows`)."""
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


def transform(X, H, max_sweeps, tol, who, penalty=objective.NO_PENALTY):
    """``argmin_{W >= 0} ||X - W H||`` (plus ``penalty``'s terms on ``W``) per chunk of the Dask
    array ``X``, as a lazy Dask array (each block checks its own entries when computed)."""
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    k = H.shape[0]
    return X.map_blocks(
        _transform_block, H, max_sweeps, tol, who, penalty.l1_W, penalty.l2_W, chunks=(X.chunks[0], (k,)), dtype=H.dtype,
        meta=np.empty((0, 0), dtype=H.dtype),
    )
