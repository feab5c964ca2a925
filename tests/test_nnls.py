"""Exact non-negative least squares on rows (the final and ``transform`` solves' first step):
the CPU kernel against SciPy's NNLS and the KKT conditions, the array-namespace form against the
kernel, and the solves built on them."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls

from nmfsched.kernels import get_backend
from nmfsched.kernels.namespace import NamespaceBackend
from nmfsched.solver import solve_w

CPU = get_backend("cpu")


def problem(seed, n=200, m=60, k=8, zeros=0.3, dtype=np.float64):
    """Rows ``x`` of a non-negative matrix and ``H``: the block problem ``(H H^T, X H^T)``."""
    rng = np.random.default_rng(seed)
    H = rng.random((k, m))
    X = (rng.random((n, k)) * (rng.random((n, k)) > zeros)) @ H + 0.3 * rng.random((n, m))
    return X.astype(dtype), H.astype(dtype)


def kkt_violation(Y, G, P):
    """The largest violation of ``y >= 0``, ``grad >= 0`` and ``y * grad = 0``, relative to the
    magnitudes in the gradient."""
    Y64 = Y.astype(np.float64)
    grad = Y64 @ G - P
    scale = np.abs(Y64) @ np.abs(G) + np.abs(P) + 1e-300
    return max(np.max(-Y64 / np.abs(Y64).max()), np.max(-grad / scale), np.max(np.abs(Y64 * grad) / (np.abs(Y64) * scale + 1e-300)))


@pytest.mark.parametrize("k", [1, 5, 30, 70])  # 70: supports coded by hash, not bit mask
@pytest.mark.parametrize("start", ["zero", "full", "random", "cold"])
def test_the_kernel_solves_every_row_as_scipy_nnls_does(k, start):
    X, H = problem(k, n=150, m=max(90, 2 * k), k=k)
    G, P = H @ H.T, X @ H.T
    rng = np.random.default_rng(1)
    Y = {"zero": np.zeros, "full": np.ones, "cold": np.zeros}.get(start, lambda s: rng.random(s) * (rng.random(s) > 0.5))(P.shape)
    assert CPU.nnls_rows(Y, G, P, start_free=start == "cold") == 0
    expected = np.array([nnls(H.T, x, maxiter=50 * k)[0] for x in X])
    np.testing.assert_allclose(Y, expected, rtol=0, atol=1e-10 * expected.max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_kernel_meets_the_kkt_conditions_with_penalties(dtype):
    X, H = problem(3, k=12, dtype=dtype)
    l1, l2 = 0.7, 2.0
    G = (H.astype(np.float64) @ H.T.astype(np.float64) + l2 * np.eye(12)).astype(dtype)
    P = (X.astype(np.float64) @ H.T.astype(np.float64) - l1).astype(dtype)
    Y = np.zeros_like(P)
    assert CPU.nnls_rows(Y, G, P) == 0 and Y.dtype == dtype
    assert kkt_violation(Y, G.astype(np.float64), P.astype(np.float64)) < (1e-6 if dtype == np.float32 else 1e-12)
    assert (Y == 0).any() and (Y > 0).any()  # the L1 weight binds somewhere, not everywhere


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), k=st.integers(1, 12), zeros=st.floats(0, 0.9), scale=st.sampled_from([1e-8, 1.0, 1e8]))
def test_every_row_the_kernel_solves_is_optimal_and_the_rest_untouched(seed, k, zeros, scale):
    X, H = problem(seed, n=40, m=3 * k + 2, k=k, zeros=zeros)
    X *= scale
    G, P = H @ H.T, X @ H.T
    Y0 = np.random.default_rng(seed).random(P.shape) * (np.random.default_rng(seed + 1).random(P.shape) > zeros)
    Y = Y0.copy()
    left = CPU.nnls_rows(Y, G, P, max_rounds=3)  # few rounds: some rows may be left
    assert 0 <= left <= Y.shape[0] and np.all(np.isfinite(Y)) and np.all(Y >= 0)
    moved = np.any(Y != Y0, axis=1)
    assert moved.sum() <= Y.shape[0] - left
    if moved.any():
        assert kkt_violation(Y[moved], G, P[moved]) < 1e-9


def test_a_row_gets_the_same_solution_alone_or_with_others():
    X, H = problem(5, n=300, k=10)
    G, P = H @ H.T, X @ H.T
    Y = np.zeros_like(P)
    CPU.nnls_rows(Y, G, P)
    for rows in (np.arange(7), np.arange(150, 300, 3)):
        alone = np.zeros((rows.size, 10))
        CPU.nnls_rows(alone, G, np.ascontiguousarray(P[rows]))
        np.testing.assert_array_equal(alone, Y[rows])


def test_dependent_components_leave_their_rows_to_the_sweeps():
    """A repeated row of ``H`` makes every free set holding both copies singular: the rows that
    need both are left as they were, and the solve (kernel, then sweeps) still reaches the optimum."""
    X, H = problem(6, k=4)
    H = np.vstack([H, H[:1]])  # components 0 and 4 are one direction
    G, P = H @ H.T, X @ H.T
    Y = np.ones_like(P)
    left = CPU.nnls_rows(Y, G, P)
    assert left == P.shape[0]  # from the full support every row meets the singular pair
    np.testing.assert_array_equal(Y, 1.0)
    W = solve_w(CPU, X, H, max_sweeps=2000, tol=1e-10)
    assert kkt_violation(W, G, P) < 1e-6


@pytest.mark.parametrize("zero_dead", [False, True])
def test_a_component_the_data_do_not_see_is_kept_or_zeroed(zero_dead):
    X, H = problem(7, k=5)
    H[2] = 0.0
    G, P = H @ H.T, X @ H.T
    Y = np.full(P.shape, 0.5)
    assert CPU.nnls_rows(Y, G, P, zero_dead=zero_dead) == 0
    np.testing.assert_array_equal(Y[:, 2], 0.0 if zero_dead else 0.5)
    live = [0, 1, 3, 4]
    expected = np.array([nnls(H[live].T, x)[0] for x in X])
    np.testing.assert_allclose(Y[:, live], expected, atol=1e-10 * expected.max())


def test_the_kernel_propagates_nan():
    X, H = problem(8, k=4)
    G, P = H @ H.T, X @ H.T
    P[3, 1] = np.nan
    Y = np.ones_like(P)
    CPU.nnls_rows(Y, G, P)
    assert np.isnan(Y[3]).any() and np.isfinite(np.delete(Y, 3, axis=0)).all()


@pytest.mark.parametrize("start_free", [False, True])
def test_the_array_namespace_form_solves_what_its_support_allows_as_the_kernel_does(start_free):
    X, H = problem(9, n=400, k=6, zeros=0.2)
    G, P = H @ H.T, X @ H.T
    Y0 = np.ones_like(P) if start_free else np.zeros_like(P)
    if not start_free:
        CPU.nnls_rows(Y0, G, P)  # the optimal supports: the one-round form then solves every row
        Y0[::5] = 1.0  # ...except these, whose full support is rarely optimal
    kernel = Y0.copy()
    CPU.nnls_rows(kernel, G, P, start_free=start_free)
    Y = Y0.copy()
    left = NamespaceBackend().nnls_rows(Y, G, P, start_free=start_free)
    as_kernel = np.all(np.abs(Y - kernel) <= 1e-10 * kernel.max(), axis=1)
    untouched = np.all(Y == Y0, axis=1)
    assert np.all(as_kernel | untouched) and as_kernel.sum() >= Y.shape[0] - left
    assert left < Y.shape[0] / (2 if start_free else 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("warm", [False, True])
def test_the_exact_solve_ends_where_sweeps_alone_end_and_never_higher(dtype, warm):
    X, H = problem(10, n=500, m=80, k=15, dtype=dtype)
    W0 = solve_w(CPU, X, H, max_sweeps=2, tol=0.0, exact=False) if warm else None
    exact = solve_w(CPU, X, H, W=W0, max_sweeps=500, tol=1e-6)
    swept = solve_w(CPU, X, H, W=W0, max_sweeps=5000, tol=1e-9, exact=False)
    loss = lambda W: np.linalg.norm(X.astype(np.float64) - W.astype(np.float64) @ H.astype(np.float64))  # noqa: E731
    assert loss(exact) <= loss(swept) * (1 + (1e-6 if dtype == np.float32 else 1e-12))
    np.testing.assert_allclose(exact, swept, atol=(1e-3 if dtype == np.float32 else 1e-6) * swept.max())


def test_a_cold_solve_from_the_clipped_unconstrained_start_ends_where_a_start_from_every_component_ends():
    from nmfsched import objective

    X, H = problem(11, n=400, k=9, zeros=0.4)
    block = objective.BlockProblem(H @ H.T, X @ H.T)
    cold = np.zeros((400, 9))
    objective.solve(CPU, cold, block, max_sweeps=50, tol=1e-6, cold=True)
    every = np.zeros((400, 9))
    assert CPU.nnls_rows(every, block.G, block.P, start_free=True) == 0
    np.testing.assert_allclose(cold, every, rtol=0, atol=1e-12 * every.max())
    singular = objective.BlockProblem(np.zeros((9, 9)) + np.inf, block.P)  # no start: every component instead
    assert not objective._unconstrained_start(CPU, np.zeros((400, 9)), singular.G, singular.P)
