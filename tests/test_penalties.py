"""Penalised factors (alpha_W, alpha_H, l1_ratio): scikit-learn's objective, under the same guarantee."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import low_rank, make_matrix, rounding_slack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.decomposition import NMF

from nmfsched import StochasticNMF
from nmfsched.kernels import get_backend
from nmfsched.objective import Penalty, penalized, w_block
from nmfsched.solver import solve_w


def penalised_objective(X, W, H, alpha_W, l1_ratio, alpha_H=None):
    """scikit-learn's documented NMF objective, written out in NumPy."""
    alpha_H = alpha_W if alpha_H is None else alpha_H
    n, m = X.shape
    R = (X.toarray() if sp.issparse(X) else X) - W @ H
    return (0.5 * np.sum(R**2)
            + alpha_W * m * (l1_ratio * W.sum() + 0.5 * (1 - l1_ratio) * np.sum(W**2))
            + alpha_H * n * (l1_ratio * H.sum() + 0.5 * (1 - l1_ratio) * np.sum(H**2)))


@pytest.mark.parametrize(("alpha_W", "alpha_H", "l1_ratio"), [(0.1, "same", 0.3), (0.2, 0.05, 1.0), (0.0, 0.4, 0.0)])
def test_weights_are_scaled_as_scikit_learn_scales_them(alpha_W, alpha_H, l1_ratio):
    X = np.ones((30, 7))
    expected = NMF(3, alpha_W=alpha_W, alpha_H=alpha_H, l1_ratio=l1_ratio)._compute_regularization(X)
    got = Penalty.from_params(alpha_W, alpha_H, l1_ratio, *X.shape)
    np.testing.assert_allclose([got.l1_W, got.l1_H, got.l2_W, got.l2_H], expected)
    assert Penalty.from_params(0.0, "same", 0.5, 30, 7) == Penalty() and not Penalty().active


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize(("l1", "l2"), [(0.0, 0.0), (0.3, 0.0), (0.0, 2.0), (0.2, 1.5)])
def test_the_penalised_w_solve_meets_the_optimality_conditions(backend, l1, l2, rng):
    """KKT of min 1/2 ||X - W H||^2 + l1 |W|_1 + l2/2 ||W||^2 over W >= 0: the gradient is >= 0
    where W = 0 and 0 where W > 0 (a NumPy oracle of the kernel's fixed point)."""
    X, H = rng.random((40, 12)), rng.random((4, 12))
    W = get_backend(backend).to_host(solve_w(get_backend(backend), X, H, max_sweeps=5000, tol=1e-12, l1=l1, l2=l2))
    grad = W @ (H @ H.T) + l2 * W - X @ H.T + l1
    assert (W >= 0).all()
    np.testing.assert_allclose(grad[W > 0], 0, atol=1e-8)
    assert (grad[W == 0] >= -1e-8).all()


def test_penalised_keeps_the_callers_block(rng):
    be = get_backend("cpu")
    Ht = rng.random((9, 3))
    block = w_block(be, rng.random((5, 9)), Ht, np.empty((5, 3)))
    G0, P0 = block.G.copy(), block.P.copy()
    G, P = penalized(block, 0.5, 2.0)
    np.testing.assert_array_equal(G, G0 + 2.0 * np.eye(3))
    np.testing.assert_array_equal(P, P0 - 0.5)
    np.testing.assert_array_equal(block.G, G0)
    np.testing.assert_array_equal(block.P, P0)
    assert penalized(block) is block


@pytest.mark.parametrize(("alpha_W", "l1_ratio"), [(0.01, 0.0), (0.01, 1.0), (0.005, 0.5)])
def test_reaches_scikit_learns_penalised_objective(alpha_W, l1_ratio):
    X = low_rank(300, 60, 8, seed=0, noise=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's ConvergenceWarning at max_iter
        peer = NMF(8, alpha_W=alpha_W, l1_ratio=l1_ratio, max_iter=2000, tol=1e-6, init="nndsvda", random_state=0)
        W_peer = peer.fit_transform(X)
    model = StochasticNMF(8, alpha_W=alpha_W, l1_ratio=l1_ratio, random_state=0, tol=1e-5)
    W = model.fit_transform(X)
    ours = penalised_objective(X, W, model.components_, alpha_W, l1_ratio)
    assert ours <= 1.005 * penalised_objective(X, W_peer, peer.components_, alpha_W, l1_ratio)


def test_history_records_the_penalised_loss_and_the_plain_relative_error():
    X = low_rank(200, 30, 5, seed=1, noise=0.1)
    model = StochasticNMF(5, alpha_W=0.02, alpha_H=0.01, l1_ratio=0.5, random_state=0, tol=1e-6).fit(X)
    H = model.components_
    W = solve_w(get_backend("cpu"), X, H, max_sweeps=2000, tol=1e-10, l1=0.02 * 30 * 0.5, l2=0.02 * 30 * 0.5)
    np.testing.assert_allclose(model.history_["loss"][-1], penalised_objective(X, W, H, 0.02, 0.5, 0.01), rtol=1e-4)
    plain = np.linalg.norm(X - W @ H) / np.linalg.norm(X)
    np.testing.assert_allclose(model.history_["rel_error"][-1], plain, rtol=1e-4)
    np.testing.assert_allclose(model.reconstruction_err_, np.linalg.norm(X - model.transform(X) @ H), rtol=1e-6)
    assert (model.history_["lr"] <= 0.9 * model.history_["lr_bound"] * (1 + 1e-12)).all()


def test_l1_makes_the_factors_sparser():
    X = low_rank(200, 40, 6, seed=2, noise=0.05)
    zeros = []
    for alpha in (0.0, 0.005, 0.02):
        model = StochasticNMF(6, alpha_W=alpha, l1_ratio=1.0, random_state=0).fit(X)
        zeros.append((np.mean(model.transform(X) == 0), np.mean(model.components_ == 0)))
    assert zeros[0][0] < zeros[1][0] < zeros[2][0]
    assert zeros[0][1] < zeros[2][1]


def test_transform_solves_the_penalised_w_problem():
    X = low_rank(120, 25, 4, seed=3)
    model = StochasticNMF(4, alpha_W=0.05, l1_ratio=0.5, random_state=0).fit(X)
    H = model.components_
    penalty = Penalty.from_params(0.05, "same", 0.5, *X.shape)

    def w_objective(W):
        return 0.5 * np.sum((X - W @ H) ** 2) + penalty.l1_W * W.sum() + 0.5 * penalty.l2_W * np.sum(W**2)

    plain = StochasticNMF(4, random_state=0).fit(X)
    plain.components_ = H  # the same H, solved without the penalty
    assert w_objective(model.transform(X)) < w_objective(plain.transform(X))


def test_partial_fit_takes_the_penalty_on_each_chunk():
    X = low_rank(240, 20, 3, seed=4, noise=0.05)
    model = StochasticNMF(3, alpha_W=0.01, l1_ratio=0.5, random_state=0)
    for chunk in np.array_split(X, 3):
        model.partial_fit(chunk)
    assert np.isfinite(model.history_["loss"]).all() and model.n_iter_ == 3
    assert (model.components_ >= 0).all()


def test_parameters_are_checked():
    X = low_rank(20, 6, 2)
    for bad in (dict(alpha_W=-1.0), dict(alpha_H="different"), dict(l1_ratio=1.5)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            StochasticNMF(2, **bad).fit(X)


def test_a_dask_fit_takes_the_penalties_as_in_memory():
    """One group of every chunk is the in-memory one-batch epoch: the same penalised objective."""
    da = pytest.importorskip("dask.array")
    pytest.importorskip("distributed")
    X = low_rank(120, 12, 3, seed=6, noise=0.1)
    params = dict(alpha_W=0.02, alpha_H=0.01, l1_ratio=0.5, random_state=0, max_iter=6, tol=0, batch_size=120,
                  grow_batch=False, init="random", extrapolate=False)
    memory = StochasticNMF(3, **params)
    W_memory = memory.fit_transform(X)
    dask = StochasticNMF(3, **params)
    W = dask.fit_transform(da.from_array(X, chunks=(40, 12))).compute()
    np.testing.assert_allclose(dask.history_["loss"], memory.history_["loss"], rtol=1e-9)
    np.testing.assert_allclose(W, W_memory, rtol=1e-7, atol=1e-10)  # the final solve, penalised, per chunk
    lazy = dask.transform(da.from_array(X, chunks=(40, 12))).compute()
    np.testing.assert_allclose(lazy, dask.transform(X), rtol=1e-9, atol=1e-12)


problems = dict(
    n=st.integers(2, 50), m=st.integers(2, 30), k=st.integers(1, 5), sparse=st.booleans(),
    log_scale=st.integers(-3, 3), seed=st.integers(0, 2**31 - 1),
    alpha=st.floats(0.0, 0.5), l1_ratio=st.floats(0.0, 1.0),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lr=st.floats(0.05, 1.99), **problems)
def test_penalised_one_batch_epochs_below_two_never_raise_the_objective(n, m, k, sparse, log_scale, seed, alpha,
                                                                       l1_ratio, lr):
    """Proposition 3 (a) for the penalised objective: the L2 weight adds to the curvature the
    steps use, the L1 weight shifts the gradient; each block stays a quadratic, so one-batch
    epochs at a rate below 2 still descend."""
    X = make_matrix(np.random.default_rng(seed), n, m, 10.0**log_scale, sparse, np.float64)
    alpha = alpha * 10.0**log_scale / max(n, m)  # in proportion to the data's scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StochasticNMF(k, alpha_W=alpha, l1_ratio=l1_ratio, scheduler="constant", learning_rate=lr,
                              enforce_bound=False, batch_size=n, max_iter=12, tol=0, init="random",
                              random_state=seed).fit(X)
    losses = np.concatenate([[model.stability_certificate_["initial_loss"]], model.history_["loss"]])
    assert np.isfinite(losses).all()
    assert (np.diff(losses) <= rounding_slack(X) + 1e-12 * losses[0]).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_size=st.integers(1, 40), **problems)
def test_penalised_minibatch_fits_stay_finite_and_under_the_cap(n, m, k, sparse, log_scale, seed, alpha, l1_ratio,
                                                                batch_size):
    X = make_matrix(np.random.default_rng(seed), n, m, 10.0**log_scale, sparse, np.float64)
    alpha = alpha * 10.0**log_scale / max(n, m)
    model = StochasticNMF(k, alpha_W=alpha, l1_ratio=l1_ratio, batch_size=batch_size, max_iter=10, tol=0,
                          init="random", random_state=seed).fit(X)
    h = model.history_
    assert np.isfinite(h["loss"]).all() and np.isfinite(model.components_).all()
    assert h["loss"][-1] <= model.stability_certificate_["initial_loss"] + rounding_slack(X)
    assert (h["lr"][1:] <= 0.9 * h["lr_bound"][1:] * (1 + 1e-12)).all()


@pytest.mark.parametrize("sparse", [False, True])
def test_the_gpu_code_path_fits_the_same_penalised_objective(sparse):
    """The array-namespace backend (the GPU backend's code, on NumPy) takes the same steps."""
    X = low_rank(150, 20, 3, seed=5, noise=0.1)
    X = sp.csr_matrix(X * (X > 0.8)) if sparse else X
    params = dict(alpha_W=0.01, alpha_H=0.02, l1_ratio=0.4, random_state=0, max_iter=15, tol=0)
    cpu = StochasticNMF(3, backend="cpu", **params).fit(X)
    ns = StochasticNMF(3, backend="numpy", **params).fit(X)
    np.testing.assert_allclose(ns.history_["loss"], cpu.history_["loss"], rtol=1e-7)
    np.testing.assert_allclose(ns.components_, cpu.components_, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_l1_zeroes_a_component_the_data_do_not_see(backend, rng):
    """h_j = 0 exactly: w_j has no data term, only its L1 penalty, minimised at 0 (an infinite
    step; without L1 it is left as it is)."""
    X, H = rng.random((30, 8)), rng.random((3, 8))
    H[1] = 0.0
    be = get_backend(backend)
    W0 = rng.random((30, 3)) + 0.5
    W = be.to_host(solve_w(be, X, H, W=W0, max_sweeps=50, tol=0.0, l1=0.1))
    assert np.isfinite(W).all() and (W[:, 1] == 0).all() and (W[:, [0, 2]] > 0).any()
    kept = be.to_host(solve_w(be, X, H, W=W0, max_sweeps=50, tol=0.0))
    np.testing.assert_array_equal(kept[:, 1], W0[:, 1])


def test_a_fit_with_pure_l1_drops_dead_components_from_both_factors():
    X = load_digits_like()
    model = StochasticNMF(12, alpha_W=0.05 * np.mean(X**2), l1_ratio=1.0, random_state=0).fit(X)
    W, H = model.transform(X), model.components_
    dead = ~W.any(axis=0)
    assert dead.sum() >= 1  # this penalty leaves some components unused (11 of 12 when measured)
    assert np.isfinite(H).all() and np.isfinite(model.history_["loss"]).all()
    assert not H[dead].any()  # a component no row uses carries no H either


def load_digits_like():
    from sklearn.datasets import load_digits

    return load_digits().data[:600]


@pytest.mark.parametrize("kernel", ["cpu", "numpy", "cuda source"])
def test_every_kernel_takes_an_infinite_step_to_zero_without_nan(kernel, rng, tmp_path):
    """The L1 rule for a component the data do not see: its step is inf and its gradient exactly
    l1 > 0, in every implementation of the sweep (the CUDA source compiled as C++ on the CPU)."""
    from nmfsched.objective import BlockProblem, unit_steps

    k, j, l1 = 4, 2, 0.3
    A = rng.random((6, k))
    A[:, j] = 0.0
    G = A.T @ A
    P = rng.random((15, k))
    P[:, j] = 0.0
    G, P = penalized(BlockProblem(G, P), l1=l1)
    steps = unit_steps(G, l1)
    assert np.isinf(steps[j]) and np.isfinite(np.delete(steps, j)).all()
    Y = rng.random((15, k)) + 0.5
    rel, absolute = np.full(k, 0.2), np.full(k, np.inf)  # the H clip lifted for the dead component
    grad, sq = np.zeros_like(Y), np.zeros(k)
    if kernel == "cuda source":
        from cuda_emulation import EmulatedSweep, compiler

        if compiler() is None:
            pytest.skip("no C++ compiler")
        EmulatedSweep(tmp_path)(Y, G, P, steps, 3, 0.0, rel, absolute, (grad, 1.0, sq))
    else:
        be = get_backend(kernel)
        Yd = be.asarray(Y)
        be.projected_cd(Yd, be.asarray(G), be.asarray(P), be.asarray(steps), max_sweeps=3, clips=(rel, absolute))
        Y = be.to_host(Yd)
    assert np.isfinite(Y).all() and (Y[:, j] == 0).all() and (np.delete(Y, j, axis=1) > 0).any()
    assert np.isfinite(grad).all() and np.isfinite(sq).all()
