"""Missing entries: the objective over the observed entries, its steps and bound, and the estimator's surface."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import rounding_slack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmfsched import StochasticNMF, observed
from nmfsched.kernels import get_backend
from nmfsched.objective import NO_PENALTY, Penalty
from nmfsched.solver import StochasticSolver
from nmfsched.theory import lr_upper_bound

BACKENDS = ["cpu", "numpy"]
DTYPES = [np.float64, np.float32]


# -- NumPy oracles: the masked objective written out densely ----------------------------------
def masked_loss(X, M, W, H):
    R = M * (W @ H - np.where(M, X, 0.0))
    return 0.5 * float(np.sum(R**2))


def masked_residual(X, M, W, H):
    return M * (W @ H - np.where(M, X, 0.0))


def oracle_w_sweeps(X, M, W, H, sweeps, l1=0.0, l2=0.0):
    """Projected coordinate descent on every row of W, one entry at a time, over the observed entries;
    row i's penalty weights are ``l1``, ``l2`` times its observed share of the columns."""
    W = W.astype(np.float64).copy()
    for _ in range(sweeps):
        for i in range(W.shape[0]):
            scale = M[i].mean()
            for j in range(W.shape[1]):
                r = M[i] * (W[i] @ H - np.where(M[i], X[i], 0.0))
                curvature = np.sum(M[i] * H[j] ** 2) + l2 * scale
                if curvature == 0:
                    continue
                g = r @ H[j] + (l1 + l2 * W[i, j]) * scale
                W[i, j] = max(0.0, W[i, j] - g / curvature)
    return W


def oracle_h_sweeps(X, M, W, H, lr, sweeps, l1=0.0, l2=0.0):
    """One-batch H sweeps at rate ``lr``: component by component, every column at once, step ``lr / L_jc``."""
    H = H.astype(np.float64).copy()
    L = (M.T @ (W**2)).T + l2  # k x m
    for _ in range(sweeps):
        for j in range(H.shape[0]):
            R = masked_residual(X, M, W, H)
            g = W[:, j] @ R + l1 + l2 * H[j]
            step = np.where(L[j] > 0, lr / np.where(L[j] > 0, L[j], 1.0), 0.0)
            H[j] = np.maximum(0.0, H[j] - step * g)
    return H


def problem(seed, n=40, m=30, k=3, hidden=0.3, sparse=False, dtype=np.float64):
    """``(X as the estimator takes it, the full X, the observed mask, W, H)``: a random masked problem."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, m)) * (rng.random((n, m)) < 0.8)  # observed zeros too
    M = rng.random((n, m)) >= hidden
    M[0, 0] = True
    if sparse:  # ratings: only stored entries are observed, explicit zeros among them
        rows, cols = np.nonzero(M)
        given_X = sp.csr_matrix((X[rows, cols], (rows, cols)), shape=X.shape, dtype=dtype)
        assert given_X.nnz == M.sum()
    else:
        given_X = np.where(M, X, np.nan).astype(dtype)
    return given_X, X.astype(dtype), M, rng.random((n, k)).astype(dtype), rng.random((k, m)).astype(dtype)


def observed_of(given_X, sparse):
    return observed.observed_entries(given_X, "unstored" if sparse else "nan", "test")


# -- the objective over observed entries ----------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_gradient_and_constants_match_the_numpy_masked_objective(backend, sparse, dtype):
    given_X, X, M, W, H = problem(0, sparse=sparse, dtype=dtype)
    be = get_backend(backend)
    Xo = be.to_device(observed_of(given_X, sparse))
    assert Xo.nnz == M.sum() and Xo.dtype == dtype
    Ht = np.ascontiguousarray(H.T)
    block = observed.block(be, Xo, W.copy(), Ht)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    X64, W64, H64 = (a.astype(np.float64) for a in (X, W, H))
    assert observed.fit_loss(block) == pytest.approx(masked_loss(X64, M, W64, H64), rel=rtol)
    np.testing.assert_allclose(observed.w_curvature(be, Xo, Ht), M @ (H64.T**2), rtol=rtol)
    curvature = observed.h_curvature(be, Xo, W)
    np.testing.assert_allclose(curvature, M.T @ W64**2, rtol=rtol)
    grad = np.zeros((X.shape[1], 3), dtype=dtype)
    sq = np.zeros(3)
    observed.h_sweeps(be, Ht.copy(), block, curvature, 0.0, X.shape[0], NO_PENALTY, statistics=(grad, 2.0, sq),
                      max_sweeps=0)
    expected = (W64.T @ masked_residual(X64, M, W64, H64)).T / np.sqrt(M.T @ W64**2)
    np.testing.assert_allclose(grad, expected, rtol=10 * rtol, atol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(sq, 2.0 * np.sum(expected**2, axis=0), rtol=10 * rtol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize(("l1", "l2"), [(0.0, 0.0), (0.05, 0.3)])
def test_w_sweeps_are_the_numpy_coordinate_descent_over_observed_entries(backend, sparse, l1, l2):
    given_X, X, M, W, H = problem(1, n=12, m=9, sparse=sparse)
    be = get_backend(backend)
    Xo = be.to_device(observed_of(given_X, sparse))
    Ht = np.ascontiguousarray(H.T)
    block = observed.block(be, Xo, W.copy(), Ht)
    observed.w_sweeps(be, block, Ht, 3, 0.0, l1, l2)
    expected = oracle_w_sweeps(X, M, W, H, 3, l1, l2)
    np.testing.assert_allclose(block.W, expected, rtol=1e-10, atol=1e-12)
    # the residual was kept exact along the way
    np.testing.assert_allclose(observed.fit_loss(block), masked_loss(X, M, expected, H), rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("lr", [0.7, 1.0, 1.8])
def test_one_batch_h_sweeps_are_the_numpy_steps_over_observed_entries(backend, sparse, lr):
    given_X, X, M, W, H = problem(2, n=15, m=11, sparse=sparse)
    be = get_backend(backend)
    Xo = be.to_device(observed_of(given_X, sparse))
    Ht = np.ascontiguousarray(H.T)
    block = observed.block(be, Xo, W, Ht)
    n_clipped = observed.h_sweeps(be, Ht, block, observed.h_curvature(be, Xo, W), lr, X.shape[0], NO_PENALTY,
                                  max_sweeps=2)
    assert n_clipped == 0
    np.testing.assert_allclose(Ht.T, oracle_h_sweeps(X, M, W, H, lr, 2), rtol=1e-10, atol=1e-12)


def test_the_minibatch_gradients_average_to_the_full_masked_gradient():
    """Unbiased: over an epoch's partition, the minibatch gradients' mean is the full one."""
    given_X, X, M, W, H = problem(3, n=60, m=20)
    solver = StochasticSolver(observed_of(given_X, False), W, H, backend=get_backend("cpu"), batch_size=13,
                              w_sweeps=1, rng=np.random.default_rng(0), observed=True)
    assert solver.n_batches == 5
    loss = solver.probe()
    assert loss == pytest.approx(masked_loss(X, M, W, H), rel=1e-12)
    full = (W.T @ masked_residual(X, M, W, H)).T / np.sqrt(M.T @ W**2)
    np.testing.assert_allclose(solver.statistics.mean_gradient, full, rtol=1e-10, atol=1e-12)
    grad_sq, noise_sq, weights = solver.gradient_statistics()
    np.testing.assert_array_equal(weights, 1.0)
    assert (noise_sq > 0).all()
    # the bound is Theorem 1 column by column: S_g = sum_jc G_jc^2 / L_jc
    s_g, s_sigma = grad_sq.sum(), noise_sq.sum()
    assert solver.lr_bound() == pytest.approx(2 * s_g / (s_g + s_sigma))
    assert lr_upper_bound(grad_sq, noise_sq, weights) < 2


def masked_penalty(M, W, H, penalty):
    """The penalties with row i of W weighted by its observed share of columns, column c of H by its share of rows."""
    rows, cols = M.mean(axis=1), M.mean(axis=0)
    return float(rows @ (penalty.l1_W * W.sum(1) + 0.5 * penalty.l2_W * (W**2).sum(1))
                 + cols @ (penalty.l1_H * H.sum(0) + 0.5 * penalty.l2_H * (H**2).sum(0)))


def test_the_epoch_loss_is_the_masked_objective_of_its_factors():
    given_X, X, M, W, H = problem(4, n=50, m=25)
    penalty = Penalty(l1_W=0.01, l2_W=0.2, l1_H=0.03, l2_H=0.1)
    solver = StochasticSolver(observed_of(given_X, False), W, H, backend=get_backend("cpu"), batch_size=20,
                              w_sweeps=2, rng=np.random.default_rng(0), penalty=penalty, observed=True)
    solver.probe()
    for _ in range(3):
        solver.sgd_epoch(0.5, curvature_tolerance=1.0)
        loss = solver.refresh_w(solver.refresh_sweeps)
        Wf, Hf = solver.W_host(), solver.H
        expected = masked_loss(X, M, Wf, Hf) + masked_penalty(M, Wf, Hf, penalty)
        assert loss == pytest.approx(expected, rel=1e-10)
        np.testing.assert_allclose(solver.rows.curvature, M.T @ Wf**2, rtol=1e-9, atol=1e-12)
        assert solver.rel_error(loss) == pytest.approx(
            np.sqrt(2 * masked_loss(X, M, Wf, Hf) / np.sum((M * X) ** 2)), rel=1e-9)


# -- recovery ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True], ids=["dense-nan", "ratings-csr"])
def test_a_fit_recovers_an_exactly_low_rank_matrix_from_70_percent_of_its_entries(sparse):
    rng = np.random.default_rng(7)
    n, m, k = 120, 90, 4
    X = rng.random((n, k)) @ rng.random((k, m))
    hidden = rng.random(X.shape) < 0.3
    if sparse:
        rows, cols = np.nonzero(~hidden)
        given = sp.csr_matrix((X[rows, cols], (rows, cols)), shape=X.shape)
        model = StochasticNMF(k, missing="unstored", tol=1e-6, random_state=0, max_iter=3000)
    else:
        given = np.where(hidden, np.nan, X)
        model = StochasticNMF(k, tol=1e-6, random_state=0, max_iter=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exact data: the loss falls on until max_iter
        completed = model.inverse_transform(model.fit_transform(given))
    assert model.observed_fraction_ == pytest.approx(1 - hidden.mean())
    error = np.linalg.norm((completed - X)[hidden]) / np.linalg.norm(X[hidden])
    assert error <= 1e-3


# -- the bound's guarantee, with missing entries and penalties ----------------------------------
problems = dict(
    n=st.integers(3, 40), m=st.integers(3, 25), k=st.integers(1, 4), hidden=st.floats(0.0, 0.7),
    log_scale=st.integers(-3, 3), seed=st.integers(0, 2**31 - 1), alpha=st.floats(0.0, 0.3),
    l1_ratio=st.floats(0.0, 1.0),
)


def masked_matrix(seed, n, m, hidden, log_scale):
    rng = np.random.default_rng(seed)
    X = 10.0**log_scale * rng.random((n, m))
    mask = rng.random((n, m)) < hidden
    mask[0, 0] = False  # at least one observed entry
    return np.where(mask, np.nan, X)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lr=st.floats(0.05, 1.99), **problems)
def test_masked_one_batch_epochs_below_two_never_raise_the_objective(n, m, k, hidden, log_scale, seed, alpha,
                                                                     l1_ratio, lr):
    """Proposition 3 (a) column by column: every column of H (row of W) is its own quadratic with
    per-entry constants, so one-batch epochs at a rate below 2 descend."""
    X = masked_matrix(seed, n, m, hidden, log_scale)
    alpha = alpha * 10.0**log_scale / max(n, m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StochasticNMF(k, alpha_W=alpha, l1_ratio=l1_ratio, scheduler="constant", learning_rate=lr,
                              enforce_bound=False, batch_size=n, max_iter=10, tol=0, init="random",
                              random_state=seed, extrapolate=False).fit(X)
    losses = np.concatenate([[model.stability_certificate_["initial_loss"]], model.history_["loss"]])
    assert np.isfinite(losses).all()
    assert (np.diff(losses) <= rounding_slack(np.nan_to_num(X)) + 1e-12 * losses[0]).all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_size=st.integers(1, 40), **problems)
def test_masked_minibatch_fits_stay_finite_under_the_cap_and_below_their_start(n, m, k, hidden, log_scale, seed,
                                                                              alpha, l1_ratio, batch_size):
    X = masked_matrix(seed, n, m, hidden, log_scale)
    alpha = alpha * 10.0**log_scale / max(n, m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StochasticNMF(k, alpha_W=alpha, l1_ratio=l1_ratio, batch_size=batch_size, max_iter=8, tol=0,
                              init="random", random_state=seed).fit(X)
    h = model.history_
    assert np.isfinite(h["loss"]).all() and np.isfinite(model.components_).all()
    assert h["loss"][-1] <= model.stability_certificate_["initial_loss"] + rounding_slack(np.nan_to_num(X))
    assert (h["lr"][1:] <= 0.9 * h["lr_bound"][1:] * (1 + 1e-12)).all()


@pytest.mark.parametrize("seed", range(5))
def test_above_two_a_masked_one_batch_epoch_raises_the_objective(seed):
    """The other direction: the limit 2 is sharp for the per-entry steps too. One component, ``H``
    far from 0 (the projection never acts): each column's step at rate ``lr`` changes its part of
    the objective by ``(lr^2 / 2 - lr) g^2 / L``, positive above 2."""
    given_X, X, M, W, H = problem(seed, n=20, m=15, k=1)
    H = H + 5.0
    be = get_backend("cpu")
    Xo = be.to_device(observed_of(given_X, False))
    for lr, rises in ((1.9, False), (2.2, True)):
        Ht = np.ascontiguousarray(H.T)
        block = observed.block(be, Xo, W.copy(), Ht)
        before = observed.fit_loss(block)
        observed.h_sweeps(be, Ht, block, observed.h_curvature(be, Xo, W), lr, X.shape[0], NO_PENALTY)
        assert (observed.fit_loss(block) > before) == rises
        assert observed.fit_loss(block) == pytest.approx(masked_loss(X, M, W, Ht.T), rel=1e-10)


# -- the estimator's surface ----------------------------------------------------------------
def test_every_backend_and_precision_fits_the_same_masked_problem():
    given_X, *_ = problem(5, n=80, m=30)
    params = dict(random_state=0, max_iter=12, tol=0)
    ref = StochasticNMF(3, backend="cpu", **params).fit(given_X)
    ns = StochasticNMF(3, backend="numpy", **params).fit(given_X)
    np.testing.assert_allclose(ns.history_["loss"], ref.history_["loss"], rtol=1e-9)
    f32 = StochasticNMF(3, backend="cpu", **params).fit(given_X.astype(np.float32))
    assert f32.components_.dtype == np.float32
    np.testing.assert_allclose(f32.history_["loss"], ref.history_["loss"], rtol=1e-3)


def test_missing_modes_and_the_observed_fraction():
    given_X, X, M, *_ = problem(6, n=30, m=20)
    model = StochasticNMF(3, random_state=0, max_iter=5, tol=0).fit(given_X)
    assert model.observed_fraction_ == pytest.approx(M.mean())
    assert np.isfinite(model.reconstruction_err_) and np.isfinite(model.components_).all()
    with pytest.raises(ValueError, match=r"contains NaN or infinity: \d+ non-finite entries .*missing='nan'"):
        StochasticNMF(3, missing="error").fit(given_X)
    complete = StochasticNMF(3, random_state=0, max_iter=5, tol=0).fit(X)
    assert complete.observed_fraction_ == 1.0
    # sparse: unstored entries are zeros unless missing="unstored"
    S = sp.csr_matrix(np.where(M, X, 0.0))
    as_zeros = StochasticNMF(3, random_state=0, max_iter=5, tol=0).fit(S)
    as_missing = StochasticNMF(3, random_state=0, max_iter=5, tol=0, missing="unstored").fit(S)
    assert as_zeros.observed_fraction_ == 1.0
    assert as_missing.observed_fraction_ == pytest.approx(S.nnz / np.prod(S.shape))
    S.data[0] = np.nan
    with pytest.raises(ValueError, match="stored NaN entries.*missing='unstored'"):
        StochasticNMF(3).fit(S)
    fitted = StochasticNMF(3, random_state=0, max_iter=5, tol=0, missing="unstored").fit(S)
    assert fitted.observed_fraction_ == pytest.approx((S.nnz - 1) / np.prod(S.shape))


@pytest.mark.parametrize(("make", "message"), [
    (lambda X: np.full_like(X, np.nan), r"X has no observed entry \(every entry is missing\)"),
    (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 7, -1.0, X), r"1 negative entry \(first at row 0, column 7\)"),
    (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 25, np.inf, X), r"contains infinity: 1 infinite entry \(first at row 1, column 5\)"),
])
def test_bad_masked_input_is_one_clear_error(make, message):
    X = np.random.default_rng(0).random((6, 20))
    X[2, 3] = np.nan
    with pytest.raises(ValueError, match=message):
        StochasticNMF(2).fit(make(X))


def test_rows_and_columns_without_an_observed_entry_warn_and_get_zeros():
    given_X, *_ = problem(8, n=30, m=20)
    given_X[4] = np.nan
    given_X[:, 6] = np.nan
    with pytest.warns(UserWarning) as record:
        model = StochasticNMF(3, random_state=0, max_iter=10, tol=0)
        W = model.fit_transform(given_X)
    messages = " ".join(str(w.message) for w in record)
    assert "1 row (4) with no observed entry" in messages and "1 column (6) with no observed entry" in messages
    np.testing.assert_array_equal(W[4], 0)
    np.testing.assert_array_equal(model.components_[:, 6], 0)
    completed = model.inverse_transform(W)
    assert np.isfinite(completed).all()
    with pytest.warns(UserWarning, match="1 row"):
        np.testing.assert_array_equal(model.transform(given_X[2:6])[2], 0)


def test_transform_solves_over_the_observed_entries_and_inverse_transform_completes():
    given_X, X, M, *_ = problem(9, n=60, m=25)
    model = StochasticNMF(3, random_state=0, max_iter=30, tol=0).fit(given_X)
    W = model.transform(given_X)
    H = model.components_
    # optimal over the observed entries: the projected gradient vanishes row by row
    grad = masked_residual(X, M, W, H) @ H.T
    np.testing.assert_allclose(np.where(W > 0, grad, np.minimum(grad, 0)), 0, atol=1e-5 * np.abs(grad).max())
    # the same rows without their missing entries' values give the same codes: only observed entries count
    noisy = np.where(M, X, 1e6)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(model.transform(noisy), W)
    completed = model.inverse_transform(W)
    np.testing.assert_allclose(completed, W @ H)
    assert np.isfinite(completed).all()


def test_partial_fit_and_checkpoints_take_missing_entries(tmp_path):
    given_X, *_ = problem(10, n=80, m=20)
    model = StochasticNMF(3, random_state=0)
    for chunk in np.array_split(given_X, 4):
        model.partial_fit(chunk)
    assert np.isfinite(model.components_).all() and 0 < model.observed_fraction_ < 1
    params = dict(random_state=0, tol=0, checkpoint=tmp_path / "fit.npz")
    whole = StochasticNMF(3, max_iter=8, random_state=0, tol=0).fit(given_X)
    StochasticNMF(3, max_iter=4, **params).fit(given_X)
    resumed = StochasticNMF(3, max_iter=8, **params).fit(given_X)
    np.testing.assert_allclose(resumed.history_["loss"], whole.history_["loss"], rtol=1e-10)
    np.testing.assert_allclose(resumed.components_, whole.components_, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense-nan", "ratings-csr"])
def test_a_dask_fit_over_observed_entries_takes_the_in_memory_steps(sparse):
    """One group of every chunk is the in-memory one-batch epoch: the chunks send per-column
    Grams, the driver's H sweeps from them equal the residual sweeps in memory."""
    da = pytest.importorskip("dask.array")
    pytest.importorskip("distributed")
    given_X, X, M, *_ = problem(12, n=120, m=14)
    given_X[7] = np.nan  # a row with nothing observed
    if sparse:
        rows, cols = np.nonzero(~np.isnan(given_X))
        given_X = sp.csr_matrix((given_X[rows, cols], (rows, cols)), shape=X.shape)
    params = dict(alpha_W=0.02, alpha_H=0.01, l1_ratio=0.5, random_state=0, max_iter=6, tol=0, batch_size=120,
                  grow_batch=False, init="random", extrapolate=False, missing="unstored" if sparse else "nan")
    with pytest.warns(UserWarning, match=r"1 row \(7\) with no observed entry"):
        memory = StochasticNMF(3, **params)
        W_memory = memory.fit_transform(given_X)
    chunked = da.from_array(given_X, chunks=(40, 14), asarray=False)
    with pytest.warns(UserWarning, match=r"1 row \(7\) with no observed entry"):
        dask = StochasticNMF(3, **params)
        W = dask.fit_transform(chunked).compute()
    assert dask.observed_fraction_ == pytest.approx(memory.observed_fraction_)
    np.testing.assert_allclose(dask.history_["loss"], memory.history_["loss"], rtol=1e-9)
    np.testing.assert_allclose(dask.components_, memory.components_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(W, W_memory, rtol=1e-7, atol=1e-10)
    assert dask.reconstruction_err_ == pytest.approx(memory.reconstruction_err_, rel=1e-9)
    np.testing.assert_array_equal(W[7], 0)
    lazy = dask.transform(chunked).compute()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(lazy, dask.transform(given_X), rtol=1e-9, atol=1e-12)


def test_a_dask_minibatch_fit_over_observed_entries_descends_under_the_cap():
    da = pytest.importorskip("dask.array")
    pytest.importorskip("distributed")
    given_X, *_ = problem(13, n=200, m=12)
    model = StochasticNMF(3, random_state=0, max_iter=6, tol=0, batch_size=40)
    model.fit(da.from_array(given_X, chunks=(20, 12)))
    h = model.history_
    assert h["batch_size"][0] < 200 and np.isfinite(h["loss"]).all()
    assert h["loss"][-1] < model.stability_certificate_["initial_loss"]
    assert (h["lr"][1:] <= 0.9 * h["lr_bound"][1:] * (1 + 1e-12)).all()


def test_bad_dask_input_with_missing_entries_is_one_clear_error():
    da = pytest.importorskip("dask.array")
    pytest.importorskip("distributed")
    X = np.random.default_rng(0).random((40, 10))
    X[5, 2] = np.nan
    X[25, 3] = np.inf
    with pytest.raises(ValueError, match=r"contains infinity: 1 infinite entry \(first at row 25, column 3\)"):
        StochasticNMF(2, max_iter=2).fit(da.from_array(X, chunks=(10, 10)))
    with pytest.raises(ValueError, match=r"first at row 5, column 2.*missing=.nan. to treat NaN as a missing entry"):
        StochasticNMF(2, max_iter=2, missing="error").fit(da.from_array(X, chunks=(10, 10)))


@pytest.mark.parametrize("sweeps", [0, 1, 3])
def test_the_column_gram_sweeps_take_the_residual_sweeps_steps(sweeps):
    """The Dask driver's form (per-column Grams) and the in-memory one (a residual) of the same
    minibatch H step: equal steps, clips, statistics, with penalties and a minibatch share."""
    given_X, X, M, W, H = problem(14, n=30, m=12)
    be = get_backend("cpu")
    Xo = be.to_device(observed_of(given_X, False))
    rows = np.arange(10)
    Xb, Wb = Xo[rows], W[rows].copy()
    penalty = Penalty(l1_W=0.0, l2_W=0.0, l1_H=0.05, l2_H=0.3)
    columns = observed.column_scale(Xo)
    curvature = observed.h_curvature(be, Xo, W)
    clips = (np.full(3, 0.2), np.full(3, 0.01))
    results = []
    for form in ("residual", "grams"):
        Ht = np.ascontiguousarray(H.T)
        stats = (np.zeros_like(Ht), 3.0, np.zeros(3))
        if form == "residual":
            block = observed.block(be, Xb, Wb, Ht)
        else:
            G, P = observed.column_grams(be, Xb, Wb)
            block = observed.ColumnGramBlock(G, P, len(rows), 0.0)
        n_clipped = observed.sweep_h(be, Ht, block, curvature, 1.3, 30, penalty, columns, clips, stats, sweeps)
        results.append((Ht, n_clipped, stats))
    (H1, c1, s1), (H2, c2, s2) = results
    np.testing.assert_allclose(H2, H1, rtol=1e-10, atol=1e-13)
    assert c1 == c2 and (sweeps == 0 or c1 > 0)
    np.testing.assert_allclose(s2[0], s1[0], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(s2[2], s1[2], rtol=1e-10)


@pytest.mark.gpu
@pytest.mark.parametrize("sparse", [False, True], ids=["dense-nan", "ratings-csr"])
def test_on_a_gpu_the_masked_fit_takes_the_cpu_steps(sparse):
    from nmfsched.kernels import unavailable_reason

    if unavailable_reason("gpu"):
        pytest.skip(unavailable_reason("gpu"))
    import cupy
    import cupyx.scipy.sparse

    given_X, *_ = problem(15, n=300, m=40)
    if sparse:
        rows, cols = np.nonzero(~np.isnan(given_X))
        given_X = sp.csr_matrix((given_X[rows, cols], (rows, cols)), shape=given_X.shape)
    params = dict(random_state=0, max_iter=10, tol=0, alpha_W=0.01, missing="unstored" if sparse else "nan")
    cpu = StochasticNMF(3, backend="cpu", **params).fit(given_X)
    gpu = StochasticNMF(3, backend="gpu", **params).fit(given_X)
    np.testing.assert_allclose(gpu.history_["loss"], cpu.history_["loss"], rtol=1e-7)
    device = cupyx.scipy.sparse.csr_matrix(given_X) if sparse else cupy.asarray(given_X)
    W = StochasticNMF(3, **params).fit_transform(device)
    assert isinstance(W, cupy.ndarray)


def test_a_per_minibatch_step_search_is_refused_with_missing_entries():
    given_X, *_ = problem(16, n=40, m=10)
    with pytest.raises(ValueError, match="every entry observed.*use an epoch scheduler"):
        StochasticNMF(3, scheduler="line_search", max_iter=2).fit(given_X)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_has_nan_finds_one_nan_and_is_not_fooled_by_an_overflowing_sum(dtype):
    from nmfsched.observed import has_nan

    big = np.finfo(dtype).max
    X = np.full((64, 8), big / 4, dtype=dtype)  # the sum overflows to +inf, never NaN
    assert not has_nan(X)
    X[37, 5] = np.nan
    assert has_nan(X)
    assert not has_nan(np.zeros((3, 2), dtype=dtype))
