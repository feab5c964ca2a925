"""CPU backend: Numba kernels for the hot loops; dense products are single-threaded BLAS
calls on blocks of rows, one block per Numba thread.

The solver only talks to :class:`CPUBackend`; the kernels below are its private workers
and are tested one by one against plain NumPy oracles (``tests/test_kernels_cpu.py``).

A hot loop indexes a slice from 0 (``chunk = a[start:stop]``, then ``chunk[i]``), never
``a[start + i]``: Numba wraps a negative index around, and where LLVM cannot prove the sum
non-negative the check stays in the loop and can keep it scalar (on an AMD Zen 5 the
float64 sum of a float32 ``X`` ran 6x slower so, though it had vectorised on an Intel CPU).
"""

import functools
import threading

import numba as nb
import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from ._numba_config import EXACT_JIT_OPTIONS, JIT_OPTIONS, PARALLEL_JIT_OPTIONS
from .protocol import GRADIENT_REFRESH_SWEEPS, KKT_RTOL

_FLOATS = (nb.float32, nb.float64)
_INDICES = (nb.int32, nb.int64)


class _PerDtypeKernel:
    """A Numba kernel with explicit signatures, compiled (or loaded from Numba's cache) for
    a float dtype when it first meets one.

    ``nb.njit(signatures)`` builds every signature when the module is imported, so the first
    fit after install compiled every kernel for both dtypes. Here each float dtype has its
    own dispatcher, made on first use with that dtype's signatures only, so a float64 dense
    fit builds just the kernels it calls. ``dtype_arg`` is the argument
    whose dtype picks the dispatcher.

    A kernel made with ``reads_only_data`` only reads its ``dtype_arg`` array (``X``), and a
    read-only one (a memory-mapped file) gets a dispatcher of its own, built on first use from
    ``signatures(f, readonly=True)``: most fits never meet one, and building the variants with
    the others doubled the install's compile time (54 -> 110 s on 2 cores).
    """

    _lock = threading.Lock()

    def __init__(self, py_func, signatures, options, dtype_arg, reads_only_data=False):
        self.py_func = py_func
        self._signatures = signatures  # Numba float type (and readonly) -> that dtype's signatures
        self._options = options
        self._dtype_arg = dtype_arg
        self._reads_only_data = reads_only_data
        self._dispatchers = {}  # per dtype, for writable data
        self._readonly_dispatchers = {}  # per dtype, for read-only data (reads_only_data kernels)
        functools.update_wrapper(self, py_func)

    def compiled(self, dtype, readonly=False):
        """The dispatcher for ``dtype`` (float32 or float64), for read-only data if ``readonly``."""
        dtype = np.dtype(dtype)
        dispatchers = self._readonly_dispatchers if readonly else self._dispatchers
        dispatcher = dispatchers.get(dtype)
        if dispatcher is None:
            if dtype not in (np.float32, np.float64):
                raise TypeError(f"{self.__name__} takes float32 or float64 arrays, got {dtype}")
            with self._lock:
                dispatcher = dispatchers.get(dtype)
                if dispatcher is None:
                    f = nb.from_dtype(dtype)
                    signatures = self._signatures(f, readonly) if self._reads_only_data else self._signatures(f)
                    dispatcher = nb.njit(signatures, **self._options)(self.py_func)
                    dispatchers[dtype] = dispatcher
        return dispatcher

    def __call__(self, *args):
        data = args[self._dtype_arg]
        if self._reads_only_data and not data.flags.writeable:
            return self.compiled(data.dtype, readonly=True)(*args)
        dispatcher = self._dispatchers.get(data.dtype)
        return (dispatcher or self.compiled(data.dtype))(*args)


_KERNELS = []


def _per_dtype(signatures, options, dtype_arg=0, reads_only_data=False):
    """Decorator: a :class:`_PerDtypeKernel` with ``signatures(f)`` for float type ``f``
    (``signatures(f, readonly)`` with ``reads_only_data``)."""

    def wrap(py_func):
        kernel = _PerDtypeKernel(py_func, signatures, options, dtype_arg, reads_only_data)
        _KERNELS.append(kernel)
        return kernel

    return wrap


def compile_kernels(dtypes=(np.float32, np.float64)):
    """Compile the kernels for ``dtypes`` into Numba's cache now rather than in the first
    fit that needs them (``make`` runs it while it sets up the environment)."""
    for dtype in dtypes:
        for kernel in _KERNELS:
            kernel.compiled(dtype)


def _index_signatures(template):
    """``template(f, i)`` for every index type ``i``, as a function of the float type ``f``."""
    return lambda f: [template(f, i) for i in _INDICES]


# --------------------------------------------------------------------------------------
# Fused projected (and clipped) coordinate update
# --------------------------------------------------------------------------------------
_ROWS_PER_TASK = 64
# Below this many flops a call runs on one thread: waking Numba's worker threads costs
# more than the work (measured: ~100 us per call on digits-sized blocks).
PARALLEL_MIN_FLOPS = 1 << 18


def _cd_signature(f):
    # Y, G, P, steps, max_sweeps, tol, clip_rel, clip_abs, grad_acc, sq_weight, sq_acc
    return [
        nb.int64(
            f[:, ::1], f[:, ::1], f[:, ::1], f[::1], nb.int64, f, f[::1], f[::1],
            f[:, ::1], nb.float64, nb.float64[::1],
        )
    ]


#: Rows the coordinate kernel sweeps side by side. A row's coordinate steps form a chain,
#: each waiting on the last, so one row at a time leaves the vector units idle. A group of
#: rows is kept transposed (entry ``j`` of every row in the group contiguous), so each step
#: and each gradient update runs across the group as one vectorised loop; every row's
#: arithmetic, and so its result, is what it was one row at a time.
_LANES = 64


@nb.njit(**JIT_OPTIONS)  # typed by its callers: projected_cd_parallel, projected_cd_serial, dense_w_pass
def _projected_cd_rows(
    Y, G, P, steps, max_sweeps, tol, clip_rel, clip_abs, grad_acc, sq_weight, sq_acc, r0, r1
):  # pragma: no cover
    """Rows ``r0:r1`` of :func:`projected_cd` (serial); returns their clipped-step count.

    The rows are passed on as slices: indices that count from 0 are known non-negative, so
    LLVM drops the negative-index wraparound that kept the group loops scalar."""
    grad = grad_acc[r0:r1] if grad_acc.shape[0] > 0 else grad_acc
    return _projected_cd_block(
        Y[r0:r1], G, P[r0:r1], steps, max_sweeps, tol, clip_rel, clip_abs, grad, sq_weight, sq_acc
    )


@nb.njit(**JIT_OPTIONS)  # typed by its caller, _projected_cd_rows
def _projected_cd_block(
    Y, G, P, steps, max_sweeps, tol, clip_rel, clip_abs, grad_acc, sq_weight, sq_acc
):  # pragma: no cover
    """Every row of ``Y`` by :func:`projected_cd`, :data:`_LANES` rows at a time; returns
    the clipped-step count.

    A last group of fewer rows is padded with lanes held at 0 and never live, so every loop
    over a group runs all :data:`_LANES` lanes: a constant trip count, which LLVM vectorises
    without remainder loops (4 sweeps of a million x 20 float32 ``W``: 10% faster). Lanes do
    not mix, so a row's arithmetic is the same."""
    k = Y.shape[1]
    accumulate = grad_acc.shape[0] > 0
    # Group buffers, index j * _LANES + q for entry j of the group's row q. The flat
    # layout with a constant stride is what lets LLVM vectorise the loops over q.
    y = np.empty(k * _LANES, dtype=Y.dtype)
    g = np.empty(k * _LANES, dtype=Y.dtype)  # the rows' gradients Y G - P
    # In Y's dtype: a float64 step would convert every gradient update of a float32 Y
    delta = np.empty(_LANES, dtype=Y.dtype)
    moved = np.empty(_LANES)
    size = np.empty(_LANES)
    live = np.empty(_LANES, dtype=Y.dtype)  # 1 while the row still sweeps (a padding lane: never)
    clipped = np.zeros(_LANES, dtype=np.int64)
    n_all = Y.shape[0]
    for q0 in range(0, n_all, _LANES):
        n_rows = min(_LANES, n_all - q0)
        for q in range(_LANES):
            live[q] = 1.0 if q < n_rows else 0.0
        for j in range(k):
            for q in range(n_rows):
                y[j * _LANES + q] = Y[q0 + q, j]
            for q in range(n_rows, _LANES):
                y[j * _LANES + q] = 0.0
        for sweep in range(max_sweeps):
            if sweep % GRADIENT_REFRESH_SWEEPS == 0:
                for l in range(k):
                    for q in range(n_rows):
                        g[l * _LANES + q] = -P[q0 + q, l]
                    for q in range(n_rows, _LANES):
                        g[l * _LANES + q] = 0.0
                for j in range(k):
                    n_nonzero = 0
                    for q in range(_LANES):
                        n_nonzero += y[j * _LANES + q] != 0.0
                    if n_nonzero:  # adds exact zeros for the rows whose entry is 0
                        for l in range(k):
                            G_jl = G[j, l]
                            for q in range(_LANES):
                                g[l * _LANES + q] += y[j * _LANES + q] * G_jl
            if accumulate and sweep == 0:  # the gradient at the start of the step, row by row
                for q in range(n_rows):
                    for l in range(k):
                        g_ql = g[l * _LANES + q]
                        grad_acc[q0 + q, l] += g_ql
                        sq_acc[l] += sq_weight * g_ql * g_ql
            for q in range(_LANES):
                moved[q] = 0.0
                size[q] = 0.0
            for j in range(k):
                s = steps[j]
                base = j * _LANES
                if s == 0.0:
                    for q in range(_LANES):
                        size[q] += abs(y[base + q])
                    continue
                rel, floor = clip_rel[j], clip_abs[j]
                n_changed = 0
                for q in range(_LANES):  # branch-free: selects, so it vectorises
                    old = y[base + q]
                    d = -s * g[base + q]
                    clip = max(rel * abs(old), floor)
                    above = d > clip
                    below = d < -clip
                    clipped[q] += (above | below) & (live[q] != 0)
                    d = clip if above else d
                    d = -clip if below else d
                    new = old + d
                    new = 0.0 if new < 0.0 else new  # NaN < 0 is false: NaN stays
                    new = new if live[q] != 0 else old
                    step = new - old
                    delta[q] = step
                    n_changed += step != 0.0
                    y[base + q] = new
                    moved[q] += abs(step)
                    size[q] += abs(new)
                if n_changed:
                    for l in range(k):
                        G_jl = G[j, l]
                        for q in range(_LANES):
                            g[l * _LANES + q] += delta[q] * G_jl
            n_live = 0
            for q in range(_LANES):
                if live[q] != 0 and moved[q] <= tol * size[q]:
                    live[q] = 0.0
                n_live += live[q] != 0
            if n_live == 0:
                break
        for q in range(n_rows):
            for j in range(k):
                Y[q0 + q, j] = y[j * _LANES + q]
    n_clipped = 0
    for q in range(_LANES):
        n_clipped += clipped[q]
    return n_clipped


@_per_dtype(_cd_signature, PARALLEL_JIT_OPTIONS)
def projected_cd_parallel(
    Y, G, P, steps, max_sweeps, tol, clip_rel, clip_abs, grad_acc, sq_weight, sq_acc
):  # pragma: no cover
    """:func:`projected_cd` with rows spread over Numba's threads."""
    n_rows, k = Y.shape
    n_tasks = (n_rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    partial_sq = np.zeros((n_tasks, k))  # one row per task: no race on the sums
    n_clipped = 0
    for task in nb.prange(n_tasks):
        r0 = task * _ROWS_PER_TASK
        n_clipped += _projected_cd_rows(
            Y, G, P, steps, max_sweeps, tol, clip_rel, clip_abs, grad_acc, sq_weight,
            partial_sq[task], r0, min(n_rows, r0 + _ROWS_PER_TASK),
        )
    for task in range(n_tasks):
        for l in range(k):
            sq_acc[l] += partial_sq[task, l]
    return n_clipped


def projected_cd_serial(Y, G, P, steps, max_sweeps, tol, clip_rel, clip_abs, grad_acc, sq_weight, sq_acc):
    """:func:`projected_cd` on one thread (a plain call of the compiled row kernel: one
    compiled copy of it fewer to build at install).

    The row kernel takes its types from its callers, so the scalars are given
    :func:`projected_cd_parallel`'s (``tol`` in ``Y``'s dtype), and both share one copy.
    """
    if not _compiled_operands(Y, G, P, grad_acc) or Y.dtype != steps.dtype:
        raise TypeError("projected_cd_serial takes C-contiguous 2-D arrays of one float dtype")
    return _projected_cd_rows(
        Y, G, P, steps, int(max_sweeps), Y.dtype.type(tol), clip_rel, clip_abs, grad_acc,
        float(sq_weight), sq_acc, 0, Y.shape[0],
    )


def projected_cd(Y, G, P, steps, max_sweeps, tol, clip_rel, clip_abs, grad_acc, sq_weight, sq_acc):
    """Projected coordinate steps on every row of ``Y`` for the gradient ``Y @ G - P``.

    Row ``r`` of ``Y`` is updated component by component (Gauss-Seidel)::

        d = steps[j] * (P[r, j] - Y[r, :] @ G[:, j])
        c = max(clip_rel[j] * |Y[r, j]|, clip_abs[j])       # the entry's clipping limit
        Y[r, j] = max(0, Y[r, j] + clip_to(d, [-c, c]))

    When ``grad_acc`` is not empty (shape ``Y.shape``), the gradient ``Y @ G - P`` at the
    start of the step is added to it, and ``sq_weight`` times its squared column norms to
    ``sq_acc`` (float64, length ``k``): the statistics of the learning-rate bound, at no
    extra pass over the data.

    ``G`` must be symmetric (a Gram matrix). The row's gradient is computed at the first
    sweep and then kept current with one axpy per moved component (the fast-HALS form),
    formed afresh every :data:`~nmfsched.kernels.protocol.GRADIENT_REFRESH_SWEEPS` sweeps.
    Rows are independent, so they run in parallel and a row's result never depends on
    the other rows. A row stops after ``max_sweeps`` sweeps, or earlier once a sweep
    moves it by at most ``tol`` times its l1 norm (``tol=0``: only when a sweep changes
    nothing). A component with ``steps[j] == 0`` is left as it is. NaN propagates
    (``NaN < 0`` is false, so the projection keeps it). Returns the number of clipped
    coordinate steps.
    """
    rows, k = Y.shape
    kernel = projected_cd_parallel if rows * k * k * max_sweeps >= PARALLEL_MIN_FLOPS else projected_cd_serial
    return kernel(Y, G, P, steps, max_sweeps, tol, clip_rel, clip_abs, grad_acc, sq_weight, sq_acc)


# --------------------------------------------------------------------------------------
# Exact non-negative least squares on rows (block principal pivoting)
# --------------------------------------------------------------------------------------
#: Rows per parallel task of :func:`nnls_rows`; a task reuses its last factorization while
#: consecutive rows (ordered by :func:`support_codes`) keep the same free set.
_NNLS_ROWS_PER_TASK = 256
#: A Cholesky pivot below this fraction of its diagonal entry means the free components are
#: (numerically) dependent: the row is left to coordinate sweeps.
_PIVOT_RTOL = 1e-10
#: Full exchanges tried without fewer infeasible components before single ones (Kim & Park).
_FULL_EXCHANGES = 3


def _nnls_signature(f):
    # Y, G, P, order, zero_dead, max_rounds, start_free
    return [nb.int64(f[:, ::1], f[:, ::1], f[:, ::1], nb.int64[::1], nb.boolean, nb.int64, nb.boolean)]


@nb.njit(**JIT_OPTIONS)  # typed by its caller
def _cholesky_leading(A, L, f):  # pragma: no cover - compiled
    """``L L^T = A[:f, :f]`` (lower triangle of ``A`` read); False when a pivot falls below
    :data:`_PIVOT_RTOL` of its diagonal entry."""
    for j in range(f):
        s = A[j, j]
        for l in range(j):
            s -= L[j, l] * L[j, l]
        if not s > _PIVOT_RTOL * A[j, j]:
            return False
        d = np.sqrt(s)
        L[j, j] = d
        for i in range(j + 1, f):
            t = A[i, j]
            for l in range(j):
                t -= L[i, l] * L[j, l]
            L[i, j] = t / d
    return True


@_per_dtype(_nnls_signature, PARALLEL_JIT_OPTIONS)
def nnls_rows(Y, G, P, order, zero_dead, max_rounds, start_free):  # pragma: no cover - compiled
    """Solve ``min_{y >= 0} 1/2 y G y - y . P[r]`` exactly for every row ``r`` of ``Y`` (in place).

    Block principal pivoting (Kim & Park, 2011) for each row, started from the row's current
    support, the free set ``{j : Y[r, j] > 0}`` (with ``start_free``, from every component: a
    cold start's rows then share their first factorization); each round solves the free
    components' equations ``G_FF y_F = P[r, F]`` (Cholesky, in float64) and checks the KKT
    conditions (``y_F >= 0``, gradient ``>= 0`` on the bound components); infeasible
    components change sides, all of them while that reduces their count (with
    :data:`_FULL_EXCHANGES` tries more), then the last one alone. A row whose conditions hold
    gets its solution; a row still infeasible after ``max_rounds`` rounds, or whose free
    components are dependent, is left as it was. Rows are taken in ``order`` (a permutation
    of the rows, grouped by support: :func:`support_codes`), :data:`_NNLS_ROWS_PER_TASK` per
    parallel task; within a task each round solves the rows that share a free set side by
    side and reuses the last factorization (:func:`_nnls_task`). A row's arithmetic, and so
    its solution, does not depend on the rows beside it. A component with ``G_jj = 0`` (the
    other factor's is 0) does not enter the problem: it is set to 0 with ``zero_dead`` (an
    L1 weight makes 0 its minimiser), else kept. Returns the number of rows left as they were.
    """
    n, k = Y.shape
    n_tasks = (n + _NNLS_ROWS_PER_TASK - 1) // _NNLS_ROWS_PER_TASK
    unsolved = np.zeros(n_tasks, dtype=np.int64)
    for task in nb.prange(n_tasks):
        t0, t1 = task * _NNLS_ROWS_PER_TASK, min(n, (task + 1) * _NNLS_ROWS_PER_TASK)
        unsolved[task] = _nnls_task(Y, G, P, order[t0:t1], zero_dead, max_rounds, start_free)
    total = 0
    for task in range(n_tasks):
        total += unsolved[task]
    return total


@nb.njit(**JIT_OPTIONS)  # typed by its caller
def _nnls_task(Y, G, P, rows, zero_dead, max_rounds, start_free):  # pragma: no cover - compiled
    """:func:`nnls_rows` for ``rows`` (one task): every round takes the rows still pivoting,
    ordered by free set, and solves each run of rows that share one side by side
    (:func:`_nnls_group_round`); each row's pivoting is Kim and Park's for that row alone.
    Returns the number of rows left as they were."""
    k = Y.shape[1]
    m = rows.shape[0]
    Gd = np.empty((k, k))
    for i in range(k):
        for j in range(k):
            Gd[i, j] = G[i, j]
    A = np.empty((k, k))
    L = np.empty((k, k))
    factored = np.zeros(k, dtype=np.bool_)
    idx = np.empty(k, dtype=np.int64)
    state = np.zeros(2, dtype=np.int64)  # (valid, free count) of the cached factorization
    free = np.zeros((m, k), dtype=np.bool_)  # each row's current free set
    fewest = np.full(m, k + 1, dtype=np.int64)
    chances = np.full(m, _FULL_EXCHANGES, dtype=np.int64)
    pending = np.arange(m)
    codes = np.empty(m, dtype=np.uint64)
    zb = np.empty((k, _LANES))  # a group's solutions, entry a of lane l at [a, l]
    g = np.empty(_LANES)
    size = np.empty(_LANES)
    n_bad = np.empty(_LANES, dtype=np.int64)
    last_bad = np.empty(_LANES, dtype=np.int64)
    bad = np.empty((_LANES, k), dtype=np.bool_)
    lanes = np.empty(_LANES, dtype=np.int64)
    for i in range(m):
        for j in range(k):
            free[i, j] = (start_free or Y[rows[i], j] > 0.0) and Gd[j, j] > 0.0
    n_pending, n_unsolved = m, 0
    for _ in range(max_rounds):
        if n_pending == 0:
            break
        for p in range(n_pending):  # group the rows by free set (the first round: already)
            code = np.uint64(0)
            for j in range(k):
                if free[pending[p], j]:
                    code += _support_term(j, k)
            codes[p] = code
        sorted_pending = pending[:n_pending][np.argsort(codes[:n_pending], kind="mergesort")]
        n_next = 0
        p = 0
        while p < n_pending:
            first = sorted_pending[p]
            lanes[0] = first
            q = 1
            while q < _LANES and p + q < n_pending:
                other = sorted_pending[p + q]
                same = True
                for j in range(k):
                    if free[other, j] != free[first, j]:
                        same = False
                        break
                if not same:
                    break
                lanes[q] = other
                q += 1
            p += q
            if not _nnls_factor(Gd, free[first], factored, idx, A, L, state, k):
                n_unsolved += q  # dependent free components: left to the sweeps
                continue
            _nnls_group_round(Y, P, Gd, free[first], idx, L, zb, g, size, n_bad, last_bad, bad, rows, lanes, q,
                              int(state[1]), zero_dead, k)
            for lane in range(q):
                i = lanes[lane]
                if n_bad[lane] == 0:
                    continue
                if n_bad[lane] < fewest[i] or chances[i] > 0:  # all infeasible change sides...
                    if n_bad[lane] < fewest[i]:
                        fewest[i], chances[i] = n_bad[lane], _FULL_EXCHANGES
                    else:
                        chances[i] -= 1
                    for j in range(k):
                        if bad[lane, j]:
                            free[i, j] = not free[i, j]
                else:  # ... or, when that stopped helping, the last one alone
                    free[i, last_bad[lane]] = not free[i, last_bad[lane]]
                pending[n_next] = i
                n_next += 1
        n_pending = n_next
    return n_unsolved + n_pending


@nb.njit(**JIT_OPTIONS)  # typed by its caller
def _nnls_factor(Gd, free, factored, idx, A, L, state, k):  # pragma: no cover - compiled
    """Make ``L`` the Cholesky factor of ``G`` on the free set (kept when ``factored`` is that
    set already); ``state`` holds (factor valid, free count). False for dependent components."""
    same = state[0] != 0
    for j in range(k):
        if same and free[j] != factored[j]:
            same = False
    if same:
        return True
    n_free = 0
    for j in range(k):
        factored[j] = free[j]
        if free[j]:
            idx[n_free] = j
            n_free += 1
    for a in range(n_free):
        for b in range(a + 1):
            A[a, b] = Gd[idx[a], idx[b]]
    valid = _cholesky_leading(A, L, n_free)
    state[0], state[1] = 1 if valid else 0, n_free
    return valid


@nb.njit(**JIT_OPTIONS)  # typed by its caller
def _nnls_group_round(Y, P, Gd, free, idx, L, zb, g, size, n_bad, last_bad, bad, rows, lanes, q, n_free, zero_dead,
                      k):  # pragma: no cover - compiled
    """One pivoting round for the ``q`` rows ``rows[lanes[:q]]`` that share the free set
    ``free``, side by side (the loops over the lanes vectorise; each lane's arithmetic is
    the same whatever the others): per lane its count of infeasible components, the last
    of them and which (``n_bad``, ``last_bad``, ``bad``); a row with none gets its solution."""
    for a in range(n_free):  # L z = P[r, F]
        col = idx[a]
        for lane in range(q):
            zb[a, lane] = float(P[rows[lanes[lane]], col])
        for b in range(a):
            coefficient = L[a, b]
            for lane in range(q):
                zb[a, lane] -= coefficient * zb[b, lane]
        pivot = L[a, a]
        for lane in range(q):
            zb[a, lane] /= pivot
    for a in range(n_free - 1, -1, -1):  # L^T y = z
        for b in range(a + 1, n_free):
            coefficient = L[b, a]
            for lane in range(q):
                zb[a, lane] -= coefficient * zb[b, lane]
        pivot = L[a, a]
        for lane in range(q):
            zb[a, lane] /= pivot
    for lane in range(q):
        n_bad[lane] = 0
        last_bad[lane] = -1
    a = 0
    for j in range(k):
        if free[j]:  # the free components: feasible when >= 0
            for lane in range(q):
                infeasible = zb[a, lane] < 0.0
                bad[lane, j] = infeasible
                if infeasible:
                    n_bad[lane] += 1
                    last_bad[lane] = j
            a += 1
            continue
        if not Gd[j, j] > 0.0:  # a dead component: not in the problem
            for lane in range(q):
                bad[lane, j] = False
            continue
        for lane in range(q):  # the bound ones: feasible when the gradient is >= 0
            g[lane] = -float(P[rows[lanes[lane]], j])
            size[lane] = abs(g[lane])
        for b in range(n_free):
            coefficient = Gd[j, idx[b]]
            for lane in range(q):
                term = coefficient * zb[b, lane]
                g[lane] += term
                size[lane] += abs(term)
        for lane in range(q):
            infeasible = g[lane] < -KKT_RTOL * size[lane]
            bad[lane, j] = infeasible
            if infeasible:
                n_bad[lane] += 1
                last_bad[lane] = j
    for lane in range(q):
        if n_bad[lane] == 0:
            r = rows[lanes[lane]]
            for j in range(k):
                if Gd[j, j] > 0.0 or zero_dead:
                    Y[r, j] = 0.0
            for b in range(n_free):
                Y[r, idx[b]] = zb[b, lane]


def _support_signature(f):
    return [nb.void(f[:, ::1], nb.uint64[::1])]


#: Odd 64-bit multipliers, one per component, for :func:`support_codes`' hash (k > 64).
_SUPPORT_MULTIPLIERS = np.random.default_rng(20261207).integers(1, 2**63, size=4096, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


@_per_dtype(_support_signature, PARALLEL_JIT_OPTIONS)
def support_codes(Y, out):  # pragma: no cover - compiled
    """``out[r]``: a code of row ``r``'s support ``{j : Y[r, j] > 0}``, equal for equal supports
    (the bit mask where ``k <= 64``, else a multiplicative hash: unequal supports then rarely
    share a code, which costs only a factorization's reuse)."""
    n, k = Y.shape
    for r in nb.prange(n):
        code = np.uint64(0)
        for j in range(k):
            if Y[r, j] > 0.0:
                code += _support_term(j, k)
        out[r] = code


@nb.njit(**JIT_OPTIONS)  # typed by its callers
def _support_term(j, k):  # pragma: no cover - compiled
    """Component ``j``'s share of a support code (:func:`support_codes`; ``_nnls_task`` groups by it too)."""
    return (np.uint64(1) << np.uint64(j)) if k <= 64 else _SUPPORT_MULTIPLIERS[j % 4096]


# --------------------------------------------------------------------------------------
# Dense products and gathers, split over Numba's threads
# --------------------------------------------------------------------------------------
# BLAS runs single-threaded inside the solver (see CPUBackend.compute_context), so the
# cores are used by giving each Numba thread its own block of rows and its own BLAS call:
# one thread pool, nothing to fight over.
#: Products below this many flops run as one BLAS call on the calling thread.
PARALLEL_MIN_PRODUCT_FLOPS = 1 << 21
#: Gathers below this many bytes run as one ``np.take``.
PARALLEL_MIN_GATHER_BYTES = 1 << 18
#: Per dtype, whether a block of ``X.T @ W`` is computed as ``(W_c.T @ X_c).T`` (else as
#: ``X_c.T @ W_c``): the BLAS Numba calls (SciPy's OpenBLAS) runs the first orientation
#: faster in float64 and the second in float32 (up to 1.8x either way, measured on shapes
#: from 1797 x 64 to a million x 300).
T_PRODUCT_K_BY_M = {np.dtype(np.float32): False, np.dtype(np.float64): True}


def _data_type(f, readonly, ndim=2):
    """A C-ordered array of ``f`` as a kernel that only reads it takes it: writable, or
    read-only (a memory-mapped ``.npy`` file, an array whose owner set ``writeable=False``)."""
    return nb.types.Array(f, ndim, "C", readonly=readonly)


@nb.njit([nb.types.UniTuple(nb.int64, 2)(nb.int64, nb.int64, nb.int64)], **JIT_OPTIONS)
def _block_rows(n_rows, n_blocks, block):  # pragma: no cover - compiled
    """``(r0, r1)``: the rows of block ``block`` when ``n_rows`` rows are split into
    ``n_blocks`` blocks of nearly equal size (the last ones may be empty)."""
    size = (n_rows + n_blocks - 1) // n_blocks
    r0 = min(n_rows, block * size)
    return r0, min(n_rows, r0 + size)


@_per_dtype(lambda f, ro: [nb.void(_data_type(f, ro), f[:, ::1], f[:, ::1], nb.int64)], PARALLEL_JIT_OPTIONS,
            reads_only_data=True)
def dense_matmul(A, B, out, n_blocks):  # pragma: no cover - compiled
    """``out = A @ B``, each of ``n_blocks`` blocks of rows of ``A`` on its own thread."""
    for block in nb.prange(n_blocks):
        r0, r1 = _block_rows(A.shape[0], n_blocks, block)
        if r1 > r0:
            np.dot(A[r0:r1], B, out[r0:r1])


@nb.njit(**PARALLEL_JIT_OPTIONS)  # typed by its callers
def _sum_blocks(partial, out):  # pragma: no cover - compiled
    """``out = partial.sum(axis=0)``, split over the rows of ``out`` (``partial`` may be a
    strided view, such as a transposed scratch)."""
    n_blocks, m, k = partial.shape
    for i in nb.prange(m):
        for j in range(k):
            total = partial[0, i, j]
            for block in range(1, n_blocks):
                total += partial[block, i, j]
            out[i, j] = total


@_per_dtype(lambda f, ro: [nb.void(_data_type(f, ro), f[:, ::1], f[:, ::1], f[:, :, ::1])], PARALLEL_JIT_OPTIONS,
            reads_only_data=True)
def dense_t_matmul(A, B, out, partial):  # pragma: no cover - compiled
    """``out = A.T @ B``: block ``c`` of rows gives its product in ``partial[c]``, then the
    blocks are summed into ``out``.

    ``partial`` is scratch of shape ``(n_blocks,) + out.shape`` (each block's ``A_c.T @ B_c``)
    or ``(n_blocks, B.shape[1], A.shape[1])`` (``B_c.T @ A_c``, transposed as it is summed):
    which BLAS orientation is faster depends on the dtype (see
    :data:`T_PRODUCT_K_BY_M`).
    """
    n_blocks = partial.shape[0]
    direct = partial.shape[1] == out.shape[0] and partial.shape[2] == out.shape[1]
    for block in nb.prange(n_blocks):
        r0, r1 = _block_rows(A.shape[0], n_blocks, block)
        if r1 <= r0:
            partial[block, :, :] = 0.0
        elif direct:
            np.dot(A[r0:r1].T, B[r0:r1], partial[block])
        else:
            np.dot(B[r0:r1].T, A[r0:r1], partial[block])
    _sum_product_blocks(partial, out)


@nb.njit(**JIT_OPTIONS)  # typed by its callers; the sum itself is _sum_blocks' (parallel)
def _sum_product_blocks(partial, out):  # pragma: no cover - compiled
    """``out`` = the sum of the blocks of ``X.T @ W`` in ``partial``: each ``out``-shaped, or
    ``out``'s transpose (the orientation :data:`T_PRODUCT_K_BY_M` picks)."""
    if partial.shape[1] == out.shape[0] and partial.shape[2] == out.shape[1]:
        _sum_blocks(partial, out)
    else:
        _sum_blocks(partial.transpose((0, 2, 1)), out)


@_per_dtype(lambda f, ro: [nb.void(_data_type(f, ro), nb.int64[::1], f[:, ::1])], PARALLEL_JIT_OPTIONS,
            reads_only_data=True)
def gather_rows(X, rows, out):  # pragma: no cover - compiled
    """``out[i] = X[rows[i]]`` (``np.take(..., out=...)`` is 5x slower on wide rows)."""
    for i in nb.prange(rows.shape[0]):
        out[i, :] = X[rows[i], :]


# --------------------------------------------------------------------------------------
# The W half of a large dense minibatch in one pass over its rows of X
# --------------------------------------------------------------------------------------
#: The smallest minibatch (bytes of its rows of ``X``) whose ``W`` half :meth:`CPUBackend.dense_w_pass`
#: fuses. Measured faster from 22 MB up; smaller data keeps the separate calls (and its rounding).
W_PASS_MIN_BYTES = 1 << 24
_NO_ROWS = np.empty(0, dtype=np.int64)
#: Bytes of ``X`` one thread of :func:`dense_w_pass` takes at a time (256 rows of 300 float32
#: columns): they stay in the core's cache from the first product to the second.
W_PASS_STEP_BYTES = 256 * 300 * 4
#: The fewest rows a step of :func:`dense_w_pass` may take: on wider rows each step's small
#: products and its ``m x k`` sum cost more than the pass saves (8-17x slower at 20 000 columns).
W_PASS_MIN_STEP_ROWS = 64


def _w_pass_signatures(f, readonly):
    # X, rows, gather, Ht, G, l1, steps, max_sweeps, tol, W, P_out, C_part, gram_part, inner_part, step_rows
    return [
        nb.void(
            _data_type(f, readonly), nb.int64[::1], nb.boolean, f[:, ::1], f[:, ::1], f, f[::1], nb.int64, f,
            f[:, ::1], f[:, ::1], f[:, :, ::1], nb.float64[:, :, :, ::1], nb.float64[::1], nb.int64,
        )
    ]


@_per_dtype(_w_pass_signatures, PARALLEL_JIT_OPTIONS, reads_only_data=True)
def dense_w_pass(X, rows, gather, Ht, G, l1, steps, max_sweeps, tol, W, P_out, C_part, gram_part, inner_part,
                 step_rows):  # pragma: no cover - compiled
    """The ``W`` half of a dense minibatch, reading its rows of ``X`` from memory once.

    The minibatch is ``X[rows]`` (``gather``) or every row of ``X``. Block ``c`` of its rows
    (one per thread, ``C_part.shape[0]`` blocks) is taken ``step_rows`` rows at a time:
    ``P = X_s H^T``; ``W_s`` swept ``max_sweeps`` times as :func:`projected_cd` sweeps it for
    ``(G, P - l1)`` at ``steps`` and ``tol`` (no clipping); then, while ``X_s`` is still in
    cache, ``X_s^T W_s`` is added to ``C_part[c]`` (its transpose where ``C_part`` is
    ``(blocks, k, m)``), ``W_s^T W_s`` after the sweeps to ``gram_part[c, 1]`` and, for a
    gathered minibatch, before them to ``gram_part[c, 0]`` (float64), and ``<W_s, P>`` to
    ``inner_part[c]``. For every row, ``P`` is written to ``P_out`` and ``W`` swept in place.
    The separate kernels read each row of ``X`` twice, and a gathered minibatch a third and
    fourth time (its copy's write and read).
    """
    n = rows.shape[0] if gather else X.shape[0]
    m, k = X.shape[1], W.shape[1]
    n_blocks = C_part.shape[0]
    clip_rel = np.zeros(k, dtype=W.dtype)
    clip_abs = np.full(k, np.inf, dtype=W.dtype)
    no_grad = np.empty((0, k), dtype=W.dtype)
    for block in nb.prange(n_blocks):
        r0, r1 = _block_rows(n, n_blocks, block)
        xb = np.empty((step_rows if gather else 0, m), dtype=X.dtype)
        wb = np.empty((step_rows, k), dtype=W.dtype)
        pb = np.empty((step_rows, k), dtype=W.dtype)
        shifted = np.empty((step_rows if l1 != 0.0 else 0, k), dtype=W.dtype)
        direct = C_part.shape[1] == m and C_part.shape[2] == k  # else (X_s^T W_s)^T: T_PRODUCT_K_BY_M
        product = np.empty((C_part.shape[1], C_part.shape[2]), dtype=W.dtype)
        small = np.empty((k, k), dtype=W.dtype)
        no_sq = np.zeros(k)
        C_part[block, :, :] = 0.0
        gram_part[block, :, :, :] = 0.0
        cross = 0.0
        for s0 in range(r0, r1, step_rows):
            s = min(r1, s0 + step_rows) - s0
            if gather:
                for i in range(s):
                    xb[i, :] = X[rows[s0 + i], :]
                    wb[i, :] = W[rows[s0 + i], :]
                xs, ws, ps = xb[:s], wb[:s], pb[:s]
                np.dot(ws.T, ws, small)
                gram_part[block, 0] += small
            else:  # every row: W and P in place
                xs, ws, ps = X[s0:s0 + s], W[s0:s0 + s], P_out[s0:s0 + s]
            np.dot(xs, Ht, ps)
            # the rows swept: Y[a:b] against P[a:b] (W's own rows in place, else the step's copy)
            Y, P, a, b = (wb, pb, 0, s) if gather else (W, P_out, s0, s0 + s)
            if l1 != 0.0:
                for i in range(s):
                    for j in range(k):
                        shifted[i, j] = ps[i, j] - l1
                wb[:s] = ws  # a no-op for a gathered step (ws is wb[:s])
                Y, P, a, b = wb, shifted, 0, s
            _projected_cd_rows(Y, G, P, steps, max_sweeps, tol, clip_rel, clip_abs, no_grad, 0.0, no_sq, a, b)
            if l1 != 0.0 and not gather:
                ws[:, :] = wb[:s]
            if gather:
                for i in range(s):
                    W[rows[s0 + i], :] = wb[i, :]
            np.dot(ws.T, ws, small)
            gram_part[block, 1] += small
            if direct:
                np.dot(xs.T, ws, product)
            else:
                np.dot(ws.T, xs, product)
            C_part[block] += product
            for i in range(s):
                for j in range(k):
                    cross += np.float64(ws[i, j]) * np.float64(ps[i, j])
        inner_part[block] = cross


# --------------------------------------------------------------------------------------
# Column norms of the gradient statistics (one pass, no temporaries)
# --------------------------------------------------------------------------------------
@_per_dtype(lambda f: [nb.void(f[:, ::1], nb.float64[::1])], JIT_OPTIONS)
def column_sq_norms_into(A, out):  # pragma: no cover - compiled
    """``out = sum(A**2, axis=0)``, accumulated in float64."""
    out[:] = 0.0
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            a = np.float64(A[i, j])
            out[j] += a * a


@_per_dtype(lambda f: [nb.void(f[:, ::1], f[:, ::1], nb.float64[::1])], JIT_OPTIONS)
def projected_column_sq_norms_into(G, Y, out):  # pragma: no cover - compiled
    """``out[j] = sum of G[i, j]**2 over the entries with Y[i, j] > 0 or G[i, j] < 0``
    (float64; a NaN in a counted entry makes its column NaN)."""
    out[:] = 0.0
    for i in range(G.shape[0]):
        for j in range(G.shape[1]):
            g = np.float64(G[i, j])
            if Y[i, j] > 0 or g < 0:
                out[j] += g * g


# --------------------------------------------------------------------------------------
# CSR products restricted to a subset of rows (no gather, no densification)
# --------------------------------------------------------------------------------------
@_per_dtype(
    _index_signatures(lambda f, i: nb.void(i[::1], i[::1], f[::1], nb.int64[::1], f[:, ::1], f[:, ::1])),
    PARALLEL_JIT_OPTIONS,
    dtype_arg=2,
)
def csr_rows_matmul(indptr, indices, data, rows, B, out):  # pragma: no cover - compiled
    """``out[i] = X[rows[i]] @ B`` for CSR ``X`` (``B`` is ``n_features x k``)."""
    k = B.shape[1]
    for i in nb.prange(rows.shape[0]):
        r = rows[i]
        for j in range(k):
            out[i, j] = 0.0
        for p in range(indptr[r], indptr[r + 1]):
            v = data[p]
            c = indices[p]
            for j in range(k):
                out[i, j] += v * B[c, j]


@nb.njit(**JIT_OPTIONS)  # typed by its caller, csr_rows_t_matmul
def _csr_t_block(indptr, indices, data, rows, Wb, r0, r1, out):  # pragma: no cover - compiled
    """``out = X[rows[r0:r1]].T @ Wb[r0:r1]`` (overwritten)."""
    k = Wb.shape[1]
    out[:, :] = 0.0
    for i in range(r0, r1):
        r = rows[i]
        for p in range(indptr[r], indptr[r + 1]):
            v = data[p]
            c = indices[p]
            for j in range(k):
                out[c, j] += v * Wb[i, j]


@_per_dtype(
    _index_signatures(
        lambda f, i: nb.void(i[::1], i[::1], f[::1], nb.int64[::1], f[:, ::1], f[:, ::1], f[:, :, ::1])
    ),
    PARALLEL_JIT_OPTIONS,
    dtype_arg=2,
)
def csr_rows_t_matmul(indptr, indices, data, rows, Wb, out, partial):  # pragma: no cover - compiled
    """``out = X[rows].T @ Wb`` for CSR ``X`` (``out`` is ``n_features x k``, overwritten).

    Block ``c`` of the selected rows scatters into ``partial[c]`` (scratch of shape
    ``(n_blocks, n_features, k)``), so the threads never write to the same entry; the
    blocks are summed at the end. With one block it scatters into ``out`` directly.
    """
    n_blocks = partial.shape[0]
    if n_blocks == 1:
        _csr_t_block(indptr, indices, data, rows, Wb, 0, rows.shape[0], out)
        return
    for block in nb.prange(n_blocks):
        r0, r1 = _block_rows(rows.shape[0], n_blocks, block)
        _csr_t_block(indptr, indices, data, rows, Wb, r0, r1, partial[block])
    _sum_blocks(partial, out)


# --------------------------------------------------------------------------------------
# Sweeps over observed entries (missing entries): the residual kept exact, CSR rows
# --------------------------------------------------------------------------------------
@_per_dtype(
    _index_signatures(lambda f, i: nb.void(i[::1], i[::1], f[::1], f[:, ::1], f[:, ::1], nb.float64[:, ::1],
                                           nb.int64, nb.float64, nb.float64[::1], nb.float64[::1])),
    PARALLEL_JIT_OPTIONS,
    dtype_arg=2,
)
def observed_w_cd_rows(indptr, indices, r, W, H, steps, max_sweeps, tol, l1, l2):  # pragma: no cover - compiled
    """:func:`nmfsched.kernels.namespace.observed_w_cd` row by row, rows over Numba's threads.

    ``r`` is the residual at the stored entries of the CSR ``(indptr, indices)``, updated in
    place; a row reads and writes only its own entries, so rows run independently. ``l1`` and
    ``l2`` are the rows' penalty weights. ``H`` is
    ``k x m`` (not transposed): a component's entries are contiguous, so the gathers of one
    component stay within one row of ``H`` (measured on MovieLens, k=10: 2x faster than
    gathering from ``H^T``).
    """
    n, k = W.shape
    n_tasks = (n + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for t in nb.prange(n_tasks):
        i0, i1 = t * _ROWS_PER_TASK, min(n, (t + 1) * _ROWS_PER_TASK)
        width = 0
        for i in range(i0, i1):
            width = max(width, indptr[i + 1] - indptr[i])
        # the row's columns of H, gathered once for all its sweeps: the sweeps then read them in order
        local = np.empty((k, width), dtype=H.dtype)
        for i in range(i0, i1):
            p0, p1 = indptr[i], indptr[i + 1]
            size_i = p1 - p0
            # the row's entries as slices, indexed from 0: known non-negative, so the loops vectorise
            columns, r_i = indices[p0:p1], r[p0:p1]
            for j in range(k):
                for q in range(size_i):
                    local[j, q] = H[j, columns[q]]
            for _ in range(max_sweeps):
                moved = 0.0
                size = 0.0
                for j in range(k):
                    old = np.float64(W[i, j])
                    s = steps[i, j]
                    if s == 0.0:
                        size += abs(old)
                        continue
                    g = 0.0
                    for q in range(size_i):
                        g += np.float64(r_i[q]) * np.float64(local[j, q])
                    g += l1[i] + l2[i] * old
                    new = old - s * g
                    new = 0.0 if new < 0.0 else new  # NaN < 0 is false: NaN stays
                    new = np.float64(W.dtype.type(new))
                    step = new - old
                    if step != 0.0:
                        W[i, j] = new
                        for q in range(size_i):
                            r_i[q] += step * local[j, q]
                    moved += abs(step)
                    size += abs(new)
                if moved <= tol * size:
                    break


@_per_dtype(
    _index_signatures(lambda f, i: nb.void(i[::1], i[::1], f[::1], f[:, ::1], f[:, ::1], f[::1])),
    PARALLEL_JIT_OPTIONS,
    dtype_arg=2,
)
def observed_residual_rows(indptr, indices, x, W, H, out):  # pragma: no cover - compiled
    """``out[p] = W[i] . H[:, c] - x[p]`` at every stored entry ``p = (i, c)`` of the CSR
    ``(indptr, indices, x)`` (``H`` is ``k x m``), accumulated in float64, rows over threads."""
    k = W.shape[1]
    for i in nb.prange(W.shape[0]):
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            acc = 0.0
            for j in range(k):
                acc += np.float64(W[i, j]) * np.float64(H[j, c])
            out[p] = acc - x[p]


@_per_dtype(
    _index_signatures(lambda f, i: nb.int64(i[::1], i[::1], f[::1], f[:, ::1], f[:, ::1], nb.float64[:, ::1],
                                            nb.int64, nb.float64[::1], nb.float64[::1], nb.float64[::1],
                                            nb.float64[::1], nb.int64[::1], nb.float64[:, ::1])),
    PARALLEL_JIT_OPTIONS,
    dtype_arg=2,
)
def observed_h_cd_columns(indptr, indices, r, W, Ht, steps, max_sweeps, l1, l2, clip_rel, clip_abs, bounds,
                          partial):  # pragma: no cover - compiled
    """:func:`nmfsched.kernels.namespace.observed_h_cd` in one pass per component: scatter the
    gradient over the entries, step every column, then update the residual; returns the
    clipped-step count (``l1`` and ``l2`` are the columns' penalty weights).

    The rows are split into ``partial.shape[0]`` blocks, block ``b`` the rows
    ``bounds[b]:bounds[b + 1]``, one task each: a block scatters its
    rows' gradient into its own row of ``partial`` (``n_blocks x m``), and the column's
    gradient is their sum in block order, so the result depends on the number of blocks only;
    with one block it is the serial scatter's, bit for bit. The residual's entries are updated
    by the rows' blocks too (a row owns its entries).
    """
    k = W.shape[1]
    m = Ht.shape[0]
    n_blocks = partial.shape[0]
    delta = np.empty(m)
    n_clipped = 0
    for _ in range(max_sweeps):
        for j in range(k):
            for b in nb.prange(n_blocks):
                g = partial[b]
                g[:] = 0.0
                for i in range(bounds[b], bounds[b + 1]):
                    w = np.float64(W[i, j])
                    if w != 0.0:
                        for p in range(indptr[i], indptr[i + 1]):
                            g[indices[p]] += w * np.float64(r[p])
            rel, floor = clip_rel[j], clip_abs[j]
            n_moved = 0
            for c in nb.prange(m):
                old = np.float64(Ht[c, j])
                s = steps[c, j]
                if s == 0.0:
                    delta[c] = 0.0
                    continue
                grad = partial[0, c]
                for b in range(1, n_blocks):
                    grad += partial[b, c]
                d = -s * (grad + l1[c] + l2[c] * old)
                clip = max(rel * abs(old), floor)
                if d > clip:
                    d = clip
                    n_clipped += 1
                elif d < -clip:
                    d = -clip
                    n_clipped += 1
                new = old + d
                new = 0.0 if new < 0.0 else new
                new = np.float64(Ht.dtype.type(new))
                Ht[c, j] = new
                delta[c] = new - old
                if delta[c] != 0.0:
                    n_moved += 1
            if n_moved:
                for b in nb.prange(n_blocks):
                    for i in range(bounds[b], bounds[b + 1]):
                        w = np.float64(W[i, j])
                        if w != 0.0:
                            for p in range(indptr[i], indptr[i + 1]):
                                r[p] += w * delta[indices[p]]
    return n_clipped


_blas_controller = None


def single_threaded_blas():
    """A context manager in which BLAS runs on one thread (see :meth:`CPUBackend.compute_context`).

    Finding the loaded BLAS libraries takes milliseconds (3-4 ms measured, about 5% of a fit
    of digits to scikit-learn's error), so it is done once per process, at the first call,
    when NumPy and SciPy have loaded theirs; a BLAS loaded later (say by PyTorch) is left as
    it is.
    """
    global _blas_controller
    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


def _compiled_operands(*arrays):
    """Whether the compiled kernels take these arrays: 2-D, C-contiguous, one float dtype."""
    dtypes = {a.dtype for a in arrays}
    return (
        len(dtypes) == 1
        and dtypes.pop() in (np.float32, np.float64)
        and all(isinstance(a, np.ndarray) and a.ndim == 2 and a.flags.c_contiguous for a in arrays)
    )


#: Entries per slice when a float32 reduction is accumulated in float64: a float64 copy of a
#: whole float32 ``X`` (480 MB at 200 000 x 300) cost a second in ``squared_norm`` alone.
_DOT_CHUNK = 1 << 16


#: Independent float64 sums per task in :func:`dot_in_float64`: with one running sum each add
#: waits on the last, and the scan runs at a fraction of memory speed.
_DOT_LANES = 8


@_per_dtype(lambda f, ro: [nb.float64(_data_type(f, ro, 1), _data_type(f, ro, 1))], PARALLEL_JIT_OPTIONS,
            reads_only_data=True)
def dot_in_float64(a, b):  # pragma: no cover - compiled
    """``a @ b`` accumulated in float64, :data:`_DOT_CHUNK` entries per thread task, each
    summed in :data:`_DOT_LANES` interleaved lanes (a fixed split and order: the sum does not
    depend on the thread count)."""
    n = a.shape[0]
    n_chunks = (n + _DOT_CHUNK - 1) // _DOT_CHUNK
    partial = np.zeros(n_chunks)
    for c in nb.prange(n_chunks):
        start, stop = c * _DOT_CHUNK, min(n, (c + 1) * _DOT_CHUNK)
        partial[c] = _dot_lanes(a[start:stop], b[start:stop])
    return partial.sum()


@nb.njit(**JIT_OPTIONS)  # typed by its caller, dot_in_float64
def _dot_lanes(a, b):  # pragma: no cover - compiled
    """``a @ b`` in float64, in :data:`_DOT_LANES` interleaved lanes. Whole arrays, indexed
    from 0: LLVM keeps a loop over ``a[start + i]`` scalar (the index might be negative and
    wrap), 6x slower on a million x 300 float32."""
    lanes = np.zeros(_DOT_LANES)
    n = a.shape[0]
    whole = n // _DOT_LANES * _DOT_LANES
    for i in range(0, whole, _DOT_LANES):
        for j in range(_DOT_LANES):
            lanes[j] += np.float64(a[i + j]) * np.float64(b[i + j])
    for i in range(whole, n):
        lanes[0] += np.float64(a[i]) * np.float64(b[i])
    return lanes.sum()


#: Interleaved lanes of :func:`scan_entries`' screen (as :data:`_DOT_LANES`: one
#: running value per task leaves the scan waiting on each add).
_SCREEN_LANES = 16


def _scan_signatures(f):
    """Writable and read-only (a memory-mapped file's) 1-D arrays of ``f``."""
    result = nb.types.Tuple((nb.int64[::1], nb.float64))
    return [result(f[::1]), result(nb.types.Array(f, 1, "C", readonly=True))]


#: Interleaved lanes of :func:`_largest_in`: with 8 or 16 LLVM left the loop scalar (3-4x
#: slower), with 32 it vectorises.
_MAX_LANES = 32


@nb.njit(**JIT_OPTIONS)  # typed by its caller, scan_entries
def _largest_in(values):  # pragma: no cover - compiled
    """The largest of ``values`` (none NaN) and 0, in :data:`_MAX_LANES` lanes. A loop of its
    own: taken in the screen's loop, the maximum kept that loop scalar."""
    tops = np.zeros(_MAX_LANES, dtype=values.dtype)
    n = values.shape[0]
    whole = n // _MAX_LANES * _MAX_LANES
    for i in range(0, whole, _MAX_LANES):
        for j in range(_MAX_LANES):
            tops[j] = max(tops[j], values[i + j])
    for i in range(whole, n):
        tops[0] = max(tops[0], values[i])
    return tops.max()


@nb.njit(**JIT_OPTIONS)  # typed by its caller, scan_entries
def _screen(values):  # pragma: no cover - compiled
    """The sum of ``v * 0 + (v - |v|)`` over ``values`` in :data:`_SCREEN_LANES` lanes: 0
    exactly when every entry is finite and not below 0 (see :func:`scan_entries`). Whole
    arrays indexed from 0, as :func:`_dot_lanes`, so the loop vectorises."""
    lanes = np.zeros(_SCREEN_LANES, dtype=values.dtype)
    zero = values.dtype.type(0)
    n = values.shape[0]
    whole = n // _SCREEN_LANES * _SCREEN_LANES
    for i in range(0, whole, _SCREEN_LANES):
        for j in range(_SCREEN_LANES):
            v = values[i + j]
            lanes[j] += v * zero + (v - abs(v))
    for i in range(whole, n):
        v = values[i]
        lanes[0] += v * zero + (v - abs(v))
    return lanes.sum()


@_per_dtype(_scan_signatures, PARALLEL_JIT_OPTIONS)
def scan_entries(values):  # pragma: no cover - compiled
    """``([NaN, infinite, negative] counts, largest entry)`` of ``values`` in one pass,
    :data:`_DOT_CHUNK` entries per thread task. The largest ignores NaN and is 0 where every
    entry is NaN or below 0 (a validated ``X``'s scale; see :mod:`nmfsched.scaling`).

    Each task first screens its entries by summing ``v * 0 + (v - |v|)``: every term is
    ``+-0`` for a finite ``v >= 0`` (``-0.0`` included), negative for ``v < 0`` and NaN for
    a NaN or infinite ``v``, so the sum is 0 exactly when all are good; only a task whose
    sum is not 0 counts its entries (and takes its largest) one by one. Input validation's
    scan, which also gives the data's scale: one pass instead of three NumPy passes."""
    n = values.shape[0]
    n_chunks = (n + _DOT_CHUNK - 1) // _DOT_CHUNK
    counts = np.zeros((n_chunks, 3), dtype=np.int64)
    largest = np.zeros(n_chunks)
    zero = values.dtype.type(0)
    for c in nb.prange(n_chunks):
        start, stop = c * _DOT_CHUNK, min(n, (c + 1) * _DOT_CHUNK)
        chunk = values[start:stop]
        if _screen(chunk) == 0:
            largest[c] = _largest_in(chunk)
            continue
        top = zero
        for i in range(chunk.shape[0]):
            v = chunk[i]
            counts[c, 0] += v != v
            counts[c, 1] += abs(v) == np.inf
            counts[c, 2] += v < 0
            top = v if v > top else top  # NaN > top is false
        largest[c] = top
    return counts.sum(axis=0), largest.max() if n_chunks else 0.0


def _dot64(a, b):
    """``a @ b`` of two 1-D arrays accumulated in float64, float32 ones a slice at a time (no copy of the whole)."""
    if a.dtype == np.float64 and b.dtype == np.float64:
        return float(np.dot(a, b))
    if a.shape[0] < 2 * _DOT_CHUNK:  # one task: waking the threads would cost more than the copies
        return float(np.dot(a.astype(np.float64), b.astype(np.float64)))
    if a.dtype == np.float32 and b.dtype == np.float32 and a.flags.c_contiguous and b.flags.c_contiguous:
        return float(dot_in_float64(a, b))
    total = 0.0
    for s in range(0, a.shape[0], _DOT_CHUNK):
        total += float(np.dot(a[s : s + _DOT_CHUNK].astype(np.float64), b[s : s + _DOT_CHUNK].astype(np.float64)))
    return total


def _per_line(weight, n):
    """A penalty weight (a scalar or one per row/column) as a float64 vector of length ``n``."""
    return np.array(np.broadcast_to(np.asarray(weight, dtype=np.float64), (n,)))


def _n_threads():
    """The threads Numba's parallel kernels run on (``numba.set_num_threads`` changes it)."""
    return nb.get_num_threads()


# --------------------------------------------------------------------------------------
# NNDSVD's factor from singular vectors (the initial W of a tall matrix)
# --------------------------------------------------------------------------------------
# NumPy spent a second of a million-row start on the n x k temporaries of these few
# expressions; the kernels make one pass each and round exactly as those expressions did.
@_per_dtype(lambda f: [nb.types.UniTuple(f[::1], 3)(f[:, ::1], nb.float64)], EXACT_JIT_OPTIONS)
def split_column_norms(U, rtol):  # pragma: no cover - compiled
    """``(scale, pos_sq, neg_sq)`` per column of ``U``, in ``U``'s dtype: its largest ``|U|``,
    and the squared norms of its positive and negative parts once entries at most
    ``rtol * scale`` (in float64) are taken as 0. The sums run down the rows in order, as
    NumPy's ``axis=0`` reductions of a C-ordered array do."""
    n, k = U.shape
    scale = np.zeros(k, dtype=U.dtype)
    for i in range(n):
        for j in range(k):
            a = abs(U[i, j])
            if a > scale[j] or a != a:
                scale[j] = a
    threshold = rtol * scale.astype(np.float64)
    pos_sq, neg_sq = np.zeros(k, dtype=U.dtype), np.zeros(k, dtype=U.dtype)
    for i in range(n):
        for j in range(k):
            u = U[i, j]
            if not abs(np.float64(u)) <= threshold[j]:
                if u > 0.0:
                    pos_sq[j] += u * u
                else:
                    neg_sq[j] += u * u
    return scale, pos_sq, neg_sq


@_per_dtype(lambda f: [nb.void(g[:, ::1], nb.float64[::1], nb.boolean[::1], nb.float64[::1], nb.float64, f[:, ::1])
                       for g in _FLOATS], EXACT_JIT_OPTIONS, dtype_arg=5)
def signed_part_columns(U, threshold, positive, ratio, lead, out):  # pragma: no cover - compiled
    """``out[:, j] = ratio[j] * max(+-U[:, j], 0)`` (``+`` where ``positive[j]``) and
    ``out[:, 0] = lead * |U[:, 0]|``, entries with ``|U| <= threshold[j]`` taken as 0, in
    ``out``'s dtype."""
    n, k = U.shape
    for i in range(n):
        for j in range(k):
            u = U[i, j]
            if abs(np.float64(u)) <= threshold[j]:
                u = 0.0
            if j == 0:
                out[i, j] = lead * abs(u)
            else:
                v = u if positive[j] else -u
                out[i, j] = (v if v > 0.0 else 0.0) * ratio[j]


#: Rows per task of :func:`zero_counts` and :func:`fill_zeros_by_block`.
ZERO_FILL_ROWS_PER_TASK = 4096


@_per_dtype(lambda f: [nb.int64[::1](f[:, ::1])], PARALLEL_JIT_OPTIONS)
def zero_counts(a):  # pragma: no cover - compiled
    """The number of zeros (``-0.0`` too) in each :data:`ZERO_FILL_ROWS_PER_TASK` rows of a
    C-ordered ``a``, blocks over Numba's threads."""
    n = a.shape[0]
    n_tasks = (n + ZERO_FILL_ROWS_PER_TASK - 1) // ZERO_FILL_ROWS_PER_TASK
    counts = np.zeros(n_tasks, dtype=np.int64)
    for t in nb.prange(n_tasks):
        block = a[t * ZERO_FILL_ROWS_PER_TASK:min(n, (t + 1) * ZERO_FILL_ROWS_PER_TASK)]
        c = 0
        for r in range(block.shape[0]):
            for j in range(block.shape[1]):
                c += block[r, j] == 0
        counts[t] = c
    return counts


@_per_dtype(lambda f: [nb.void(f[:, ::1], nb.float64[::1], nb.int64[::1])], dict(EXACT_JIT_OPTIONS, parallel=True))
def fill_zeros_by_block(a, values, starts):  # pragma: no cover - compiled
    """:func:`fill_zeros` with the zeros of block ``t`` (of :data:`ZERO_FILL_ROWS_PER_TASK`
    rows) taking ``values[starts[t]:]``, blocks over Numba's threads."""
    n = a.shape[0]
    for t in nb.prange(starts.shape[0] - 1):
        block = a[t * ZERO_FILL_ROWS_PER_TASK:min(n, (t + 1) * ZERO_FILL_ROWS_PER_TASK)]
        j = starts[t]
        for r in range(block.shape[0]):
            for c in range(block.shape[1]):
                if block[r, c] == 0:
                    block[r, c] = values[j]
                    j += 1


def fill_zeros(a, values, counts=None):
    """``a[a == 0] = values`` for a C-ordered ``a``: its zeros (``-0.0`` too), in order, take
    ``values`` (one per zero), rounded to ``a``'s dtype as NumPy's assignment rounds them.
    NNDSVDar's fill: the boolean-mask assignment was 0.1 s of a million-row start, and one
    thread in order 0.1 s too. ``counts``: :func:`zero_counts` of ``a``, if already known."""
    if counts is None:
        counts = zero_counts(a)
    starts = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    if starts[-1] != values.shape[0]:
        raise ValueError(f"fill_zeros: {starts[-1]} zeros but {values.shape[0]} values")
    fill_zeros_by_block(a, np.ascontiguousarray(values, dtype=np.float64), starts)


# --------------------------------------------------------------------------------------
# Backend
# --------------------------------------------------------------------------------------
class _CSRRows:
    """A minibatch of a CSR matrix: the matrix's arrays plus the selected row numbers."""

    __slots__ = ("indptr", "indices", "data", "rows")

    def __init__(self, X, rows):
        self.indptr, self.indices, self.data, self.rows = X.indptr, X.indices, X.data, rows

    @property
    def shape(self):
        return (self.rows.shape[0], None)


class CPUBackend:
    """The array primitives of the solver loop on the CPU (a :class:`~nmfsched.kernels.protocol.Backend`).

    Dense data goes through BLAS (split over Numba's threads when large); CSR data through
    the Numba kernels above. Arrays are NumPy arrays, so ``to_device``/``to_host`` are
    (almost) free.
    """

    name = "cpu"
    xp = np
    #: The fixed cost of a minibatch (the Python loop and kernel calls, ~50-100 us) in flops.
    batch_overhead_flops = 1e6

    def __init__(self):
        self._scratch_arrays = {}

    # -- data movement ----------------------------------------------------------------
    def to_device(self, a):
        """A C-contiguous array, or a CSR matrix with matching index dtypes."""
        if sp.issparse(a):
            a = a.tocsr()
            if a.indptr.dtype != a.indices.dtype:
                itype = np.result_type(a.indptr.dtype, a.indices.dtype)
                a = sp.csr_matrix(
                    (a.data, a.indices.astype(itype), a.indptr.astype(itype)), shape=a.shape
                )
            return a
        return np.ascontiguousarray(a)

    def to_host(self, a):
        return a

    def compute_context(self):
        """Context for the solver loop: single-threaded BLAS.

        The loop interleaves small GEMMs with Numba's parallel kernels; letting OpenBLAS
        spin up its own threads next to Numba's costs 2-7x on a 2-core machine (measured
        on digits and olivetti), so BLAS runs on one thread and the kernels use the cores.
        """
        return single_threaded_blas()

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def asarray(self, a, dtype=None):
        return np.ascontiguousarray(a, dtype=dtype)

    # -- minibatches --------------------------------------------------------------------
    def take_rows(self, X, rows, buffer=None):
        """The minibatch ``X[rows]``: gathered into ``buffer`` (dense) or a row view (CSR)."""
        if sp.issparse(X):
            return _CSRRows(X, rows)
        if buffer is None:
            return X[rows]
        out = buffer[: rows.shape[0]]
        compiled = X.dtype == out.dtype and rows.dtype == np.int64 and X.flags.c_contiguous and out.flags.c_contiguous
        if compiled and out.nbytes >= PARALLEL_MIN_GATHER_BYTES:
            gather_rows(X, rows, out)
        else:
            np.take(X, rows, axis=0, out=out)
        return out

    def all_rows(self, X):
        """The whole of ``X`` as a minibatch."""
        if sp.issparse(X):
            return _CSRRows(X, np.arange(X.shape[0], dtype=np.int64))
        return X

    # -- products -------------------------------------------------------------------------
    def xb_ht(self, Xb, Ht, out):
        """``out = X_B @ H.T`` where ``Ht`` stores ``H.T`` (``n_features x k``)."""
        if isinstance(Xb, _CSRRows):
            csr_rows_matmul(Xb.indptr, Xb.indices, Xb.data, Xb.rows, Ht, out)
            return out
        n_blocks = self._product_blocks(Xb, Ht, out)
        if n_blocks > 1:
            dense_matmul(Xb, Ht, out, n_blocks)
        else:
            np.matmul(Xb, Ht, out=out)
        return out

    def xbt_wb(self, Xb, Wb, out):
        """``out = X_B.T @ W_B`` (``n_features x k``), i.e. ``(W_B.T @ X_B).T``."""
        if isinstance(Xb, _CSRRows):
            n_blocks = self._scatter_blocks(Xb, out)
            # one block scatters straight into out; more need a scratch block each
            partial = self._scratch((n_blocks,) + out.shape, out.dtype) if n_blocks > 1 else out[np.newaxis]
            csr_rows_t_matmul(Xb.indptr, Xb.indices, Xb.data, Xb.rows, Wb, out, partial)
            return out
        n_blocks = self._product_blocks(Xb, Wb, out)
        if n_blocks > 1:
            dense_t_matmul(Xb, Wb, out, self._t_product_scratch(n_blocks, out))
        else:
            np.matmul(Xb.T, Wb, out=out)
        return out

    def fuses_w_pass(self, X, n_rows, W):
        """Whether :meth:`dense_w_pass` runs the ``W`` half of a minibatch of ``n_rows`` rows of
        ``X``: dense, ``W``'s dtype, C-ordered, at least :data:`W_PASS_MIN_BYTES` of it, and rows
        narrow enough for steps of :data:`W_PASS_MIN_STEP_ROWS` rows."""
        return (
            _compiled_operands(X, W)
            and n_rows * X.shape[1] * X.itemsize >= W_PASS_MIN_BYTES
            and self._w_pass_step_rows(X) >= W_PASS_MIN_STEP_ROWS
        )

    @staticmethod
    def _w_pass_step_rows(X):
        return max(1, W_PASS_STEP_BYTES // (X.shape[1] * X.itemsize))

    def dense_w_pass(self, X, rows, Ht, G, steps, l1, W, *, max_sweeps, tol, C_out, P_out=None):
        """The ``W`` half of the minibatch ``X[rows]`` (every row for ``rows`` None) in one pass
        over its rows of ``X`` (see :func:`dense_w_pass`; :meth:`fuses_w_pass` says where it pays).

        ``W``'s selected rows are swept ``max_sweeps`` times (to ``tol``) for ``(G, X_B H^T - l1)``
        at ``steps``, as :meth:`projected_cd` sweeps them; ``C_out`` gets ``X_B^T W_B``, and
        ``P_out`` (required for every row, unused otherwise) ``X H^T``. Returns
        ``(W_B^T W_B before, after, <W_B, X_B H^T>)``, the Grams as float64 host arrays
        (``k x k``; "before" only for a selection, else zeros) and the inner product a float.
        """
        dtype = W.dtype
        gather = rows is not None
        n_rows = rows.shape[0] if gather else X.shape[0]
        m, k = C_out.shape
        step_rows = self._w_pass_step_rows(X)
        n_blocks = max(1, min(_n_threads(), -(-n_rows // step_rows)))
        C_part = self._t_product_scratch(n_blocks, C_out)
        gram_part = np.empty((n_blocks, 2, k, k))
        inner_part = np.empty(n_blocks)
        dense_w_pass(
            X, rows if gather else _NO_ROWS, gather, Ht, np.ascontiguousarray(G, dtype=dtype), dtype.type(l1),
            np.ascontiguousarray(steps, dtype=dtype), int(max_sweeps), dtype.type(tol), W,
            W if gather else P_out, C_part, gram_part, inner_part, step_rows,
        )
        _sum_product_blocks(C_part, C_out)
        grams = gram_part.sum(axis=0)
        return grams[0], grams[1], float(inner_part.sum())

    @staticmethod
    def _product_blocks(A, B, out):
        """Row blocks to split a product of ``A`` (rows x inner, or its transpose) with
        ``B`` over: one per Numba thread, or 1 (a plain BLAS call) for a small product or
        for arrays the compiled kernels do not take (mixed dtypes, not C-contiguous)."""
        flops = 2.0 * A.shape[0] * A.shape[1] * B.shape[1]
        if flops < PARALLEL_MIN_PRODUCT_FLOPS or not _compiled_operands(A, B, out):
            return 1
        return max(1, min(_n_threads(), A.shape[0]))

    @staticmethod
    def _scatter_blocks(Xb, out):
        """Row blocks for ``X_B.T @ W_B`` with CSR ``X_B``: one per thread where the
        scatter outweighs zeroing and summing a private ``out`` per block, else 1."""
        n_rows, (m, k) = Xb.rows.shape[0], out.shape
        n_threads = _n_threads()
        n_total = Xb.indptr.shape[0] - 1
        nnz = float(Xb.indptr[n_total]) * n_rows / max(1, n_total)  # expected entries (int32 would overflow)
        if n_threads < 2 or 2.0 * nnz * k < PARALLEL_MIN_PRODUCT_FLOPS or nnz < 2 * n_threads * m:
            return 1
        return min(n_threads, n_rows)

    def _t_product_scratch(self, n_blocks, out):
        """Scratch for ``n_blocks`` blocks of ``X.T @ W`` (``out``-shaped), each in the orientation
        BLAS runs faster for ``out``'s dtype (:data:`T_PRODUCT_K_BY_M`)."""
        block_shape = out.shape[::-1] if T_PRODUCT_K_BY_M[out.dtype] else out.shape
        return self._scratch((n_blocks,) + block_shape, out.dtype)

    def _scratch(self, shape, dtype):
        """A reusable scratch array (contents undefined), kept per shape and dtype."""
        key = (shape, np.dtype(dtype))
        if key not in self._scratch_arrays:
            self._scratch_arrays.clear()  # one size is in use at a time; hoard no memory
            self._scratch_arrays[key] = np.empty(shape, dtype=dtype)
        return self._scratch_arrays[key]

    def gram(self, A):
        """``A.T @ A`` as a float64 host array (``k x k``)."""
        return np.asarray(A.T @ A, dtype=np.float64)

    def small_matmul(self, A, G, out):
        """``A @ G`` into ``out`` for a device array ``A`` and a small host matrix ``G``."""
        return np.matmul(A, np.asarray(G, dtype=A.dtype), out=out)

    def inner(self, A, B):
        """``sum(A * B)`` accumulated in float64."""
        return _dot64(A.ravel(), B.ravel())

    def squared_norm(self, X):
        """``||X||_F^2`` in float64, for dense or sparse ``X``."""
        d = (X.data if sp.issparse(X) else X).ravel()
        return _dot64(d, d)

    def all_finite(self, A):
        return bool(np.isfinite(A).all())

    # -- the fused update ---------------------------------------------------------------
    def projected_cd(self, Y, G, P, steps, *, max_sweeps=1, tol=0.0, clips=None, statistics=None):
        """Projected coordinate steps on the rows of ``Y`` in place; see :func:`projected_cd`.

        ``clips``, a pair ``(relative, absolute)`` of per-component vectors (default: no
        limit), bounds the step of entry ``(r, j)`` by ``max(relative[j] * |Y[r, j]|, absolute[j])``.
        ``statistics``, a triple ``(grad_acc, sq_weight, sq_acc)``, accumulates the gradient
        at the start of the step (see :func:`projected_cd`).
        """
        k = Y.shape[1]
        clip_rel, clip_abs = (np.zeros(k), np.full(k, np.inf)) if clips is None else clips
        grad_acc, sq_weight, sq_acc = (
            (self._no_accumulator(Y.dtype), 0.0, np.zeros(k)) if statistics is None else statistics
        )
        return int(
            projected_cd(
                Y,
                np.ascontiguousarray(G, dtype=Y.dtype),
                P,
                np.ascontiguousarray(steps, dtype=Y.dtype),
                int(max_sweeps),
                Y.dtype.type(tol),
                np.array(np.broadcast_to(clip_rel, (k,)), dtype=Y.dtype),
                np.array(np.broadcast_to(clip_abs, (k,)), dtype=Y.dtype),
                grad_acc,
                float(sq_weight),
                sq_acc,
            )
        )

    def nnls_rows(self, Y, G, P, *, zero_dead=False, start_free=False, max_rounds=None):
        """Exact non-negative least squares on the rows of ``Y`` in place (see :func:`nnls_rows`),
        the rows visited grouped by support; returns the number left as they were."""
        k = Y.shape[1]
        if start_free:
            order = np.arange(Y.shape[0], dtype=np.int64)
        else:
            codes = np.empty(Y.shape[0], dtype=np.uint64)
            support_codes(Y, codes)
            order = np.argsort(codes, kind="stable").astype(np.int64)
        rounds = 4 * k if max_rounds is None else max_rounds
        return int(nnls_rows(Y, np.ascontiguousarray(G, dtype=Y.dtype), np.ascontiguousarray(P, dtype=Y.dtype),
                             order, bool(zero_dead), int(rounds), bool(start_free)))

    @staticmethod
    def _no_accumulator(dtype):
        return np.empty((0, 0), dtype=dtype)

    # -- sweeps over observed entries (missing entries) ------------------------------------
    def observed_residual(self, X, entry_rows, W, Ht, out):
        """``out = W H - X`` at the stored entries of the CSR ``X`` (see :func:`observed_residual_rows`)."""
        observed_residual_rows(X.indptr, X.indices, X.data, np.ascontiguousarray(W), np.ascontiguousarray(Ht.T), out)
        return out

    def observed_w_cd(self, R, entry_rows, W, Ht, steps, *, max_sweeps=1, tol=0.0, l1=0.0, l2=0.0):
        """Sweeps on the rows of ``W`` over their observed entries (see :func:`observed_w_cd_rows`)."""
        n = W.shape[0]
        observed_w_cd_rows(R.indptr, R.indices, R.data, W, np.ascontiguousarray(Ht.T), np.ascontiguousarray(steps),
                           int(max_sweeps), float(tol), _per_line(l1, n), _per_line(l2, n))

    def observed_h_cd(self, R, entry_rows, W, Ht, steps, *, max_sweeps=1, l1=0.0, l2=0.0, clips=None):
        """Sweeps on ``H`` from a minibatch's observed entries (see :func:`observed_h_cd_columns`)."""
        k = Ht.shape[1]
        clip_rel, clip_abs = (np.zeros(k), np.full(k, np.inf)) if clips is None else clips
        m = Ht.shape[0]
        nnz = R.data.shape[0]
        # one block where threads would cost more than they save (the serial scatter's sums)
        n_blocks = _n_threads() if nnz * k >= PARALLEL_MIN_FLOPS else 1
        # blocks of about equal entries, not rows: ratings' rows differ in length by 100x
        bounds = np.searchsorted(R.indptr, np.arange(n_blocks + 1) * (nnz / n_blocks)).astype(np.int64)
        bounds[0], bounds[-1] = 0, W.shape[0]
        return int(observed_h_cd_columns(
            R.indptr, R.indices, R.data, np.ascontiguousarray(W), Ht, np.ascontiguousarray(steps),
            int(max_sweeps), _per_line(l1, m), _per_line(l2, m), np.array(np.broadcast_to(clip_rel, (k,)), dtype=np.float64),
            np.array(np.broadcast_to(clip_abs, (k,)), dtype=np.float64), bounds, self._scratch((n_blocks, m), np.float64),
        ))

    def column_sq_norms(self, A, mask=None):
        """``sum(A**2, axis=0)`` as a float64 host vector, optionally over ``mask`` only."""
        if mask is None and _compiled_operands(A):
            out = np.empty(A.shape[1])
            column_sq_norms_into(A, out)
            return out
        A = A if mask is None else np.where(mask, A, 0)
        return np.einsum("ij,ij->j", A, A, dtype=np.float64)

    def projected_column_sq_norms(self, G, Y):
        """Per column, ``||G||^2`` over the entries that a projected step can move:
        those with ``Y > 0`` or ``G < 0`` (the support of the gradient mapping).

        One compiled pass where it can (the mask and the masked copy cost 5x as much on
        olivetti's ``4096 x 40`` gradient, measured: 0.7 ms an epoch)."""
        if _compiled_operands(G, Y) and G.shape == Y.shape:
            out = np.empty(G.shape[1])
            projected_column_sq_norms_into(G, Y, out)
            return out
        return self.column_sq_norms(G, mask=(Y > 0) | (G < 0))
