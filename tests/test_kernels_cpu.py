"""Each CPU kernel against a plain NumPy oracle."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_oracles import cd_oracle, random_cd_problem

from nmfsched.kernels import cpu


def NO_STATS(dtype, k):
    """The kernel's statistics arguments, switched off."""
    return np.empty((0, 0), dtype=dtype), 0.0, np.zeros(k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows", [1, 7, 300])  # 300 rows x k=12 x 3 sweeps takes the parallel path
@pytest.mark.parametrize("sweeps,tol", [(1, 0.0), (3, 0.0), (50, 1e-3)])
def test_projected_cd_matches_oracle(rng, dtype, n_rows, sweeps, tol):
    Y, G, P, steps = random_cd_problem(rng, n_rows, 12 if n_rows == 300 else 5, dtype)
    rel, absolute = np.zeros(Y.shape[1], dtype=dtype), np.full(Y.shape[1], np.inf, dtype=dtype)
    expected, _ = cd_oracle(Y, G.astype(np.float64), P.astype(np.float64), steps.astype(np.float64), sweeps, tol, rel, absolute)
    cpu.projected_cd(Y, G, P, steps, sweeps, dtype(tol), rel, absolute, *NO_STATS(dtype, 12 if n_rows == 300 else 5))
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(Y, expected, rtol=rtol, atol=rtol)
    assert Y.dtype == dtype


def test_serial_and_parallel_paths_agree(rng):
    Y, G, P, steps = random_cd_problem(rng, 500, 10, np.float64)
    Y2 = Y.copy()
    rel, absolute = np.full(10, 0.1), np.full(10, 0.05)
    assert cpu.projected_cd_serial(Y, G, P, steps, 4, 0.0, rel, absolute, *NO_STATS(np.float64, 10)) == cpu.projected_cd_parallel(Y2, G, P, steps, 4, 0.0, rel, absolute, *NO_STATS(np.float64, 10))
    np.testing.assert_array_equal(Y, Y2)


def test_projected_cd_clips_and_counts(rng):
    Y, G, P, steps = random_cd_problem(rng, 20, 4, np.float64)
    P *= 100  # large gradients, so most steps want to move far
    rel = np.array([0.1, 0.0, 0.0, 0.5])  # relative part of each component's limit
    absolute = np.array([0.05, 0.5, np.inf, 0.01])  # and its floor
    expected, expected_count = cd_oracle(Y, G, P, steps, 1, 0.0, rel, absolute)
    count = cpu.projected_cd(Y, G, P, steps, 1, 0.0, rel, absolute, *NO_STATS(np.float64, 4))
    np.testing.assert_allclose(Y, expected, rtol=1e-12)
    assert count == expected_count > 0


def test_projected_cd_zero_step_freezes_component(rng):
    Y, G, P, steps = random_cd_problem(rng, 10, 4, np.float64)
    steps[2] = 0.0
    before = Y[:, 2].copy()
    cpu.projected_cd(Y, G, P, steps, 3, 0.0, np.zeros(4), np.full(4, np.inf), *NO_STATS(np.float64, 4))
    np.testing.assert_array_equal(Y[:, 2], before)


def test_projected_cd_propagates_nan(rng):
    """fastmath must keep NaN semantics: a NaN gradient may not be projected to 0."""
    Y, G, P, steps = random_cd_problem(rng, 3, 4, np.float64)
    P[1, 2] = np.nan
    cpu.projected_cd(Y, G, P, steps, 1, 0.0, np.zeros(4), np.full(4, np.inf), *NO_STATS(np.float64, 4))
    assert np.isnan(Y[1, 2])
    assert np.isfinite(Y[0]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_swept_side_by_side_get_what_each_gets_alone(rng, dtype):
    """The kernel sweeps groups of ``cpu._LANES`` rows at once. Across group boundaries,
    with a NaN row, a row pinned at 0 and rows that stop at different sweeps, every row
    ends exactly where it ends when swept alone, with the same clip count and statistics."""
    n, k, sweeps, tol = 2 * cpu._LANES + 3, 6, 40, dtype(1e-3)
    Y, G, P, steps = random_cd_problem(rng, n, k, dtype)
    P[5, 1] = np.nan
    Y[70], P[70] = 0, -1  # its gradient is positive everywhere: it stays at 0 and stops
    rel, absolute = np.full(k, 0.2, dtype=dtype), np.full(k, 0.01, dtype=dtype)
    together, grad_together, sq_together = Y.copy(), np.zeros_like(Y), np.zeros(k)
    count = cpu.projected_cd_serial(together, G, P, steps, sweeps, tol, rel, absolute, grad_together, 0.5, sq_together)
    grad_alone, sq_alone, count_alone = np.zeros_like(Y), np.zeros(k), 0
    for r in range(n):
        row = Y[r : r + 1].copy()
        count_alone += cpu.projected_cd_serial(
            row, G, P[r : r + 1], steps, sweeps, tol, rel, absolute, grad_alone[r : r + 1], 0.5, sq_alone
        )
        np.testing.assert_array_equal(together[r], row[0], err_msg=f"row {r}")
    assert count == count_alone > 0
    np.testing.assert_array_equal(grad_together, grad_alone)
    np.testing.assert_array_equal(sq_together, sq_alone)  # same rows, same order: same sums
    assert np.isnan(together[5]).any() and np.isfinite(np.delete(together, 5, axis=0)).all()
    np.testing.assert_array_equal(together[70], 0)


@settings(max_examples=150, deadline=None)
@given(
    n_rows=st.integers(1, 150),
    k=st.integers(1, 8),
    scale=st.sampled_from([1e-6, 1.0, 1e6]),
    seed=st.integers(0, 2**32 - 1),
)
def test_exact_coordinate_steps_never_increase_row_objective(n_rows, k, scale, seed):
    """Steps 1/G_jj are exact coordinate minimisers: each row's objective cannot rise
    and every entry stays >= 0 (up to 150 rows: across the kernel's groups of rows)."""
    rng = np.random.default_rng(seed)
    Hm = rng.random((k, 2 * k + 1)) * scale
    X = rng.random((n_rows, 2 * k + 1)) * scale
    G = Hm @ Hm.T
    P = X @ Hm.T
    Y = rng.random((n_rows, k)) * rng.random() * 3

    def objective(W):
        return 0.5 * ((X - W @ Hm) ** 2).sum(axis=1)

    before = objective(Y)
    cpu.projected_cd(Y, G, P, 1.0 / np.diag(G), 2, 0.0, np.zeros(k), np.full(k, np.inf), *NO_STATS(np.float64, k))
    after = objective(Y)
    assert (Y >= 0).all()
    assert (after <= before + 1e-9 * (before + scale**2)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_csr_row_products_match_dense(rng, dtype, index_dtype):
    X = sp.random(60, 45, density=0.2, format="csr", random_state=0, dtype=dtype)
    X.indices = X.indices.astype(index_dtype)
    X.indptr = X.indptr.astype(index_dtype)
    rows = rng.permutation(60)[:17].astype(np.int64)
    Ht = rng.random((45, 6)).astype(dtype)
    Wb = rng.random((17, 6)).astype(dtype)
    dense = X.toarray()
    rtol = 1e-5 if dtype == np.float32 else 1e-12

    out = np.full((17, 6), np.nan, dtype=dtype)
    cpu.csr_rows_matmul(X.indptr, X.indices, X.data, rows, Ht, out)
    np.testing.assert_allclose(out, dense[rows] @ Ht, rtol=rtol)

    for n_blocks in (1, 3, 40):  # one block writes into out; more scatter into their own
        out_t = np.full((45, 6), np.nan, dtype=dtype)  # must be overwritten, not accumulated into
        partial = np.full((n_blocks, 45, 6), np.nan, dtype=dtype)
        cpu.csr_rows_t_matmul(X.indptr, X.indices, X.data, rows, Wb, out_t, partial if n_blocks > 1 else out_t[None])
        np.testing.assert_allclose(out_t, dense[rows].T @ Wb, rtol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_blocks", [1, 2, 3, 50])  # 50 > rows: some blocks are empty
def test_dense_block_products_match_numpy(rng, dtype, n_blocks):
    A = rng.random((37, 23)).astype(dtype)
    B = rng.random((23, 5)).astype(dtype)
    C = rng.random((37, 5)).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12

    out = np.full((37, 5), np.nan, dtype=dtype)
    cpu.dense_matmul(A, B, out, n_blocks)
    np.testing.assert_allclose(out, A @ B, rtol=rtol)

    for block_shape in [(5, 23), (23, 5)]:  # both BLAS orientations (T_PRODUCT_K_BY_M)
        out_t = np.full((23, 5), np.nan, dtype=dtype)
        cpu.dense_t_matmul(A, C, out_t, np.full((n_blocks,) + block_shape, np.nan, dtype=dtype))
        np.testing.assert_allclose(out_t, A.T @ C, rtol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_rows_matches_take(rng, dtype):
    X = rng.random((30, 7)).astype(dtype)
    rows = rng.permutation(30)[:11].astype(np.int64)
    out = np.empty((11, 7), dtype=dtype)
    cpu.gather_rows(X, rows, out)
    np.testing.assert_array_equal(out, X[rows])


def test_backend_parallel_paths_match_serial(rng, monkeypatch):
    """With the size thresholds at 0 every product and gather takes its threaded path,
    and must give what the plain NumPy/serial path gives."""
    be = cpu.CPUBackend()
    X = rng.random((64, 40))
    Xs = be.to_device(sp.random(64, 40, density=0.8, format="csr", random_state=3))
    rows = rng.permutation(64)[:48].astype(np.int64)
    Ht, Wb = rng.random((40, 3)), rng.random((48, 3))

    def run():
        Xb = be.take_rows(X, rows, np.empty((64, 40)))
        Sb = be.take_rows(Xs, rows)
        return [
            Xb.copy(),
            be.xb_ht(Xb, Ht, np.empty((48, 3))).copy(),
            be.xbt_wb(Xb, Wb, np.empty((40, 3))).copy(),
            be.xbt_wb(Sb, Wb, np.empty((40, 3))).copy(),
        ]

    serial = run()
    monkeypatch.setattr(cpu, "PARALLEL_MIN_PRODUCT_FLOPS", 0)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_GATHER_BYTES", 0)
    monkeypatch.setattr(cpu, "_n_threads", lambda: 3)  # blocks of 16 rows whatever the machine
    calls = []
    for name in ("gather_rows", "dense_matmul", "dense_t_matmul", "csr_rows_t_matmul"):
        kernel = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, _k=kernel, _n=name: calls.append((_n, np.shape(a[-1]))) or _k(*a))
    threaded = run()
    assert [name for name, _ in calls] == ["gather_rows", "dense_matmul", "dense_t_matmul", "csr_rows_t_matmul"]
    assert calls[2][1][0] == calls[3][1][0] == 3  # a scratch block per thread
    for a, b in zip(serial, threaded):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(threaded[3], Xs.toarray()[rows].T @ Wb, rtol=1e-12)


def test_backend_products_agree_dense_and_sparse(rng):
    be = cpu.CPUBackend()
    X = sp.random(50, 30, density=0.3, format="csr", random_state=1)
    rows = rng.permutation(50)[:20].astype(np.int64)
    Ht = rng.random((30, 4))
    Wb = rng.random((20, 4))
    dense_b = be.take_rows(X.toarray(), rows, np.empty((20, 30)))
    sparse_b = be.take_rows(be.to_device(X), rows)
    np.testing.assert_allclose(
        be.xb_ht(dense_b, Ht, np.empty((20, 4))), be.xb_ht(sparse_b, Ht, np.empty((20, 4)))
    )
    np.testing.assert_allclose(
        be.xbt_wb(dense_b, Wb, np.empty((30, 4))), be.xbt_wb(sparse_b, Wb, np.empty((30, 4)))
    )
    assert be.squared_norm(X) == pytest.approx(be.squared_norm(X.toarray()))


@pytest.mark.parametrize("n", [1, cpu._DOT_CHUNK, 2 * cpu._DOT_CHUNK, 5 * cpu._DOT_CHUNK + 3])
def test_inner_accumulates_float32_in_float64(rng, n):
    """Short or long (the threaded kernel, a ragged last task included), a float32 inner
    product equals NumPy's in float64, far beyond what a float32 sum would resolve."""
    be = cpu.CPUBackend()
    a, b = rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)
    a[-1] = 1e30  # a float32 accumulator would lose every other term next to it
    expected = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
    assert be.inner(a, b) == pytest.approx(expected, rel=1e-14)
    assert be.inner(a.reshape(-1, 1), b.reshape(-1, 1)) == be.inner(a, b)
    a[0] = np.nan
    assert np.isnan(be.inner(a, b))


def numpy_scan(values):
    """The oracle of :func:`cpu.scan_entries`: NumPy's masks, and the largest non-NaN entry floored at 0."""
    counts = [np.isnan(values).sum(), np.isinf(values).sum(), (values < 0).sum()]
    finite = values[~np.isnan(values)]
    return counts, max(0.0, float(finite.max())) if finite.size else 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 17, cpu._DOT_CHUNK, 3 * cpu._DOT_CHUNK + 5])
@pytest.mark.parametrize("n_bad", [0, 7])
def test_scan_entries_matches_numpy(rng, dtype, n, n_bad):
    """NaN, infinite and negative counts as NumPy's masks give them (-0.0 is not negative,
    -inf is both infinite and negative), and the largest entry as NaN-ignoring max."""
    values = (rng.random(n) * 10).astype(dtype)
    bad = rng.choice(n, size=min(n, n_bad), replace=False)
    values[bad] = np.array([np.nan, np.inf, -np.inf, -1.0, -0.0, np.nan, -2.5], dtype=dtype)[: bad.size]
    expected_counts, expected_largest = numpy_scan(values)
    for _ in range(2):
        counts, largest = cpu.scan_entries(values)
        np.testing.assert_array_equal(counts, expected_counts)
        assert largest == expected_largest
        values.flags.writeable = False  # as a memory-mapped .npy opened read-only


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scan_entries_screen_edges(dtype):
    """The screen's sum is 0 for zeros of either sign and not 0 for the smallest negative
    subnormal, or for negatives large enough to overflow it; the largest entry is found in a
    clean task and beside a NaN in a flagged one, and is 0 where all are NaN or negative."""
    tiny, huge = np.finfo(dtype).smallest_subnormal, np.finfo(dtype).max
    cases = {(-0.0, 0.0): ([0, 0, 0], 0.0), (0.0, -tiny): ([0, 0, 1], 0.0), (-huge, -huge): ([0, 0, 2], 0.0),
             (np.inf, -huge): ([0, 1, 1], np.inf), (np.nan, 3.0): ([1, 0, 0], 3.0), (huge, 1.0): ([0, 0, 0], huge)}
    for entries, (expected_counts, expected_largest) in cases.items():
        values = np.zeros(2 * cpu._DOT_CHUNK + 1, dtype=dtype)
        values[-len(entries):] = entries
        counts, largest = cpu.scan_entries(values)
        np.testing.assert_array_equal(counts, expected_counts, err_msg=str(entries))
        assert largest == float(dtype(expected_largest)), entries
    counts, largest = cpu.scan_entries(np.full(5, np.nan, dtype=dtype))
    assert list(counts) == [5, 0, 0] and largest == 0.0


@pytest.mark.parametrize("rows", [301, 3 * cpu.ZERO_FILL_ROWS_PER_TASK + 5])  # one block; four, on the threads
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fill_zeros_matches_numpys_mask_assignment(rng, dtype, rows):
    a = rng.random((rows, 7)).astype(dtype)
    a[a < 0.4] = 0
    a[0, 0], a[5, 6] = -0.0, 0.0  # -0.0 == 0: filled as NumPy's mask takes it
    values = rng.standard_normal(int(np.count_nonzero(a == 0))) * 1e-3  # float64, rounded on the way in
    expected = a.copy()
    expected[expected == 0] = values
    counts = cpu.zero_counts(a)
    assert counts.sum() == values.shape[0] and counts.shape[0] == -(-rows // cpu.ZERO_FILL_ROWS_PER_TASK)
    cpu.fill_zeros(a, values)
    np.testing.assert_array_equal(a, expected)
    with pytest.raises(ValueError, match="zeros but"):  # too few values: refused before any write
        cpu.fill_zeros(expected.copy() * 0, values)
    with pytest.raises(TypeError):  # not C-ordered: refused, never filled in a copy
        cpu.fill_zeros(np.asfortranarray(a), values)


def test_backend_accepts_mixed_index_dtypes():
    X = sp.random(10, 8, density=0.5, format="csr", random_state=2)
    X.indices = X.indices.astype(np.int32)
    X.indptr = X.indptr.astype(np.int64)
    Xd = cpu.CPUBackend().to_device(X)
    assert Xd.indices.dtype == Xd.indptr.dtype
    np.testing.assert_array_equal(Xd.toarray(), X.toarray())


def test_kernel_accumulates_the_start_gradient(rng):
    """The fused statistics equal Y @ G - P at the start of the step, for both code paths."""
    for n_rows in (5, 400):
        Y, G, P, steps = random_cd_problem(rng, n_rows, 8, np.float64)
        expected = Y @ G - P
        grad_acc = np.ones_like(Y)
        sq_acc = np.full(8, 2.0)
        be = cpu.CPUBackend()
        be.projected_cd(Y, G, P, steps, max_sweeps=3, statistics=(grad_acc, 0.5, sq_acc))
        np.testing.assert_allclose(grad_acc, 1 + expected, rtol=1e-12)
        np.testing.assert_allclose(sq_acc, 2 + 0.5 * (expected**2).sum(axis=0), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["compiled", "strided"])
def test_backend_column_norms_match_numpy(rng, dtype, layout):
    """The compiled one-pass norms (C-ordered operands) and the NumPy fallback (a strided
    view) both equal the float64 oracle."""
    be = cpu.CPUBackend()
    G = rng.normal(size=(300, 7)).astype(dtype)
    Y = (rng.random((300, 7)) * (rng.random((300, 7)) > 0.5)).astype(dtype)
    if layout == "strided":
        G, Y = np.asfortranarray(G), np.asfortranarray(Y)
    G64 = G.astype(np.float64)
    got = be.column_sq_norms(G)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, (G64**2).sum(axis=0), rtol=1e-12)
    free = (Y > 0) | (G < 0)
    np.testing.assert_allclose(be.projected_column_sq_norms(G, Y), (np.where(free, G64, 0) ** 2).sum(axis=0), rtol=1e-12)


def test_projected_column_norms_count_nan_where_a_step_could_move():
    be = cpu.CPUBackend()
    G = np.array([[np.nan, 1.0], [2.0, -1.0]])
    Y = np.array([[1.0, 0.0], [0.0, 0.0]])  # (0, 0) is free (Y > 0): its NaN counts
    got = be.projected_column_sq_norms(G, Y)
    assert np.isnan(got[0]) and got[1] == 1.0  # (0, 1) is held at 0 (G > 0, Y = 0); (1, 1) moves
    Y[0, 0] = 0.0  # now NaN's entry is held: NaN < 0 is false, so it is not counted
    assert be.projected_column_sq_norms(G, Y)[0] == 0.0


def test_scatter_blocks_survive_int32_index_overflow(monkeypatch):
    """The expected nonzeros of a batch are estimated from int32 ``indptr``; the product
    ``nnz * rows`` must not wrap around (it did, and made a large batch run on one thread)."""
    monkeypatch.setattr(cpu, "_n_threads", lambda: 2)
    indptr = np.array([0, 1_000_000_000, 2_000_000_000], dtype=np.int32)  # 1e9 entries per row
    batch = cpu._CSRRows(sp.csr_matrix((1, 1)), np.arange(2, dtype=np.int64))
    batch.indptr = indptr
    assert cpu.CPUBackend._scatter_blocks(batch, np.empty((1000, 8))) == 2


def test_compute_context_runs_blas_on_one_thread_and_gives_the_threads_back():
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    with threadpool_limits(limits=2, user_api="blas"):  # more than one, even on a 1-core runner
        before = blas_threads()
        assert before and all(n == 2 for n in before)
        for _ in range(2):  # the second fit reuses the process's controller
            with cpu.CPUBackend().compute_context():
                assert all(n == 1 for n in blas_threads())
            assert blas_threads() == before


def test_kernels_are_built_per_dtype_on_first_use():
    """A float dtype's copy is built when that dtype first comes, with that dtype's explicit
    signatures only; other dtypes are refused with a clear error."""
    import numba as nb

    def add_one(a):  # pragma: no cover - compiled
        for i in range(a.shape[0]):
            a[i] += 1.0

    kernel = cpu._PerDtypeKernel(add_one, lambda f: [nb.void(f[::1])], dict(cache=False), dtype_arg=0)
    a = np.zeros(3)
    kernel(a)
    np.testing.assert_array_equal(a, 1.0)
    assert list(kernel._dispatchers) == [np.dtype(np.float64)]
    assert len(kernel.compiled(np.float64).signatures) == 1
    b = np.zeros(2, dtype=np.float32)
    kernel(b)
    assert set(kernel._dispatchers) == {np.dtype(np.float32), np.dtype(np.float64)}
    assert kernel.compiled(np.float32).signatures[0][0].dtype == nb.float32
    with pytest.raises(TypeError, match="add_one takes float32 or float64 arrays, got int64"):
        kernel(np.zeros(2, dtype=np.int64))


def test_compile_kernels_builds_every_kernel_for_the_dtypes_asked():
    cpu.compile_kernels((np.float64,))
    assert cpu._KERNELS and all(np.dtype(np.float64) in k._dispatchers for k in cpu._KERNELS)


def test_serial_coordinate_kernel_refuses_operands_it_was_not_built_for(rng):
    Y, G, P, steps = random_cd_problem(rng, 4, 3, np.float64)
    rel, absolute = np.zeros(3), np.full(3, np.inf)
    with pytest.raises(TypeError, match="C-contiguous"):
        cpu.projected_cd_serial(np.asfortranarray(Y), G, P, steps, 1, 0.0, rel, absolute, *NO_STATS(np.float64, 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("selection", ["every row", "gathered"])
@pytest.mark.parametrize("l1,l2,tol", [(0.0, 0.0, 0.0), (0.3, 0.2, 1e-3)])
def test_dense_w_pass_matches_the_separate_steps(rng, monkeypatch, dtype, selection, l1, l2, tol):
    """The fused W half gives what a gather, the two products and the coordinate oracle give:
    the swept rows (the rest untouched), X_B^T W_B, the Grams before and after, <W_B, X_B H^T>
    and, for every row, X H^T. Rows split into blocks of several steps of 50 rows (and a short one)."""
    monkeypatch.setattr(cpu, "_n_threads", lambda: 3)
    n, m, k = 1100, 37, 6
    monkeypatch.setattr(cpu, "W_PASS_STEP_BYTES", 50 * m * np.dtype(dtype).itemsize)
    X = rng.random((n, m)).astype(dtype)
    Ht = rng.random((m, k)).astype(dtype)
    W = rng.random((n, k)).astype(dtype)
    rows = None if selection == "every row" else rng.permutation(n)[:700].astype(np.int64)
    G = Ht.astype(np.float64).T @ Ht + l2 * np.eye(k)
    steps = 1.0 / np.diag(G)
    be = cpu.CPUBackend()
    C, P_out, W_fused = np.full((m, k), np.nan, dtype), np.full((n, k), np.nan, dtype), W.copy()
    before, after, cross = be.dense_w_pass(X, rows, Ht, G, steps, l1, W_fused, max_sweeps=3, tol=tol, C_out=C,
                                           P_out=P_out if rows is None else None)

    picked = np.arange(n) if rows is None else rows
    Xb, Wb = X[picked].astype(np.float64), W[picked].astype(np.float64)
    P = Xb @ Ht.astype(np.float64)
    no_clip = np.zeros(k), np.full(k, np.inf)
    swept, _ = cd_oracle(Wb, G, P - l1, steps, 3, tol, *no_clip)
    rtol = 2e-4 if dtype == np.float32 else 1e-10
    expected_W = W.astype(np.float64)
    expected_W[picked] = swept
    np.testing.assert_allclose(W_fused, expected_W, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(C, Xb.T @ swept, rtol=rtol)
    np.testing.assert_allclose(after, swept.T @ swept, rtol=rtol)
    np.testing.assert_allclose(cross, np.sum(swept * P), rtol=rtol)
    if rows is None:
        np.testing.assert_allclose(P_out, P, rtol=rtol)
        np.testing.assert_array_equal(before, 0.0)
    else:
        np.testing.assert_allclose(before, Wb.T @ Wb, rtol=rtol)


def test_dense_w_pass_runs_only_where_it_pays(rng, monkeypatch):
    be = cpu.CPUBackend()
    X, W = rng.random((50, 8)), rng.random((50, 3))
    monkeypatch.setattr(cpu, "W_PASS_MIN_BYTES", 0)
    assert be.fuses_w_pass(X, 50, W)
    assert not be.fuses_w_pass(X.astype(np.float32), 50, W)  # mixed dtypes
    assert not be.fuses_w_pass(np.asfortranarray(X), 50, W)
    assert not be.fuses_w_pass(sp.csr_matrix(X), 50, W)
    monkeypatch.setattr(cpu, "W_PASS_MIN_BYTES", 8 * 8 * 50)
    assert be.fuses_w_pass(X, 50, W) and not be.fuses_w_pass(X, 49, W)
    wide = rng.random((50, cpu.W_PASS_STEP_BYTES // (8 * cpu.W_PASS_MIN_STEP_ROWS) + 1))
    assert not be.fuses_w_pass(wide, 50, W)  # steps of too few rows


def test_read_only_data_gets_its_own_dispatcher_built_on_first_use(rng):
    """Kernels that only read X build their read-only variant when a read-only X first comes
    (compile_kernels builds the writable ones only), and it computes what the writable one does."""
    cpu.compile_kernels((np.float64,))
    X, B = rng.random((40, 7)), rng.random((7, 3))
    kernel = cpu.dense_matmul
    kernel._readonly_dispatchers.clear()
    expected = np.empty((40, 3))
    kernel(X, B, expected, 2)
    assert not kernel._readonly_dispatchers
    X.setflags(write=False)
    out = np.empty((40, 3))
    kernel(X, B, out, 2)
    assert list(kernel._readonly_dispatchers) == [np.dtype(np.float64)]
    np.testing.assert_array_equal(out, expected)


def _observed_problem(seed, n, m, k, dtype):
    """A residual CSR of rows of very different lengths (empty ones too), ``W`` with zeros,
    per-entry steps with zeros, and penalty weights: what the observed kernels take."""
    rng = np.random.default_rng(seed)
    density = rng.choice([0.0, 0.05, 0.5, 1.0], size=n)
    mask = rng.random((n, m)) < density[:, None]
    R = sp.csr_matrix(np.where(mask, rng.standard_normal((n, m)), 0.0).astype(dtype))
    R.data[R.data == 0] = 0.5  # keep every drawn entry stored
    entry_rows = np.repeat(np.arange(n), np.diff(R.indptr))
    W = (rng.random((n, k)) * (rng.random((n, k)) < 0.7)).astype(dtype)
    Ht = rng.random((m, k)).astype(dtype)
    w_steps = rng.random((n, k)) * (rng.random((n, k)) < 0.9)
    h_steps = rng.random((m, k)) * (rng.random((m, k)) < 0.9)
    return R, entry_rows, W, Ht, w_steps, h_steps, rng.random(n) * 0.1, rng.random(n) * 0.1


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-4)])
@pytest.mark.parametrize("parallel", [False, True], ids=["one block", "blocks"])
@pytest.mark.parametrize("seed", [0, 1])
def test_observed_kernels_match_their_numpy_oracles(monkeypatch, dtype, rtol, parallel, seed):
    from nmfsched.kernels import namespace

    # the threshold decides between one block (the serial scatter) and a block per thread
    monkeypatch.setattr(cpu, "PARALLEL_MIN_FLOPS", 0 if parallel else 1 << 62)
    monkeypatch.setattr(cpu, "_n_threads", lambda: 3)  # blocks of unequal work, whatever the machine
    be = cpu.CPUBackend()
    R, entry_rows, W, Ht, w_steps, h_steps, l1, l2 = _observed_problem(seed, 150, 40, 5, dtype)
    atol = rtol * 10

    R_ref, W_ref = R.copy(), W.copy()
    namespace.observed_w_cd(np, R_ref, entry_rows, W_ref, Ht, w_steps, 3, 0.0, l1, l2)
    be.observed_w_cd(R, entry_rows, W, Ht, w_steps, max_sweeps=3, tol=0.0, l1=l1, l2=l2)
    np.testing.assert_allclose(W, W_ref, rtol=rtol, atol=atol)
    np.testing.assert_allclose(R.data, R_ref.data, rtol=rtol, atol=atol)

    clips = (np.full(5, 0.3), np.full(5, 0.02))
    R_ref, Ht_ref = R.copy(), Ht.copy()
    hl1, hl2 = l1[:40], l2[:40]
    n_ref = namespace.observed_h_cd(np, R_ref, entry_rows, W, Ht_ref, h_steps, 2, hl1, hl2, *clips)
    n_clipped = be.observed_h_cd(R, entry_rows, W, Ht, h_steps, max_sweeps=2, l1=hl1, l2=hl2, clips=clips)
    np.testing.assert_allclose(Ht, Ht_ref, rtol=rtol, atol=atol)
    np.testing.assert_allclose(R.data, R_ref.data, rtol=rtol, atol=atol)
    assert n_clipped == int(n_ref) > 0
