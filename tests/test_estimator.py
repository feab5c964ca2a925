"""Behaviour of StochasticNMF and factorize as a user sees them."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import low_rank
from sklearn.utils.estimator_checks import parametrize_with_checks

from nmfsched import StochasticNMF, factorize
from nmfsched.row_stores import even_batch_size_at_most
from nmfsched.schedulers import StepScheduler


@parametrize_with_checks([StochasticNMF(n_components=3, max_iter=15), StochasticNMF(max_iter=5)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_loss_decreases_and_history_is_consistent():
    X = low_rank(300, 40, 5, noise=0.2)
    model = StochasticNMF(5, random_state=0, max_iter=40).fit(X)
    h = model.history_
    assert set(h) >= {"epoch", "seconds", "loss", "rel_error", "lr", "lr_bound"}
    lengths = {len(v) for v in h.values()}
    assert lengths == {model.n_iter_}
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert np.isfinite(h["loss"]).all()
    # reconstruction_err_ uses the final W = transform(X), at least as good as the last epoch
    assert model.reconstruction_err_ <= np.sqrt(2 * h["loss"][-1]) * (1 + 1e-9)


def test_reaches_near_exact_fit_on_low_rank_data():
    """At the exact step (lr=1, constant), clipped updates still converge to an exact fit."""
    X = low_rank(200, 50, 4)
    model = StochasticNMF(4, random_state=0, max_iter=300, tol=0, scheduler="constant", learning_rate=1.0).fit(X)
    assert model.history_["rel_error"][-1] < 0.01


@pytest.mark.parametrize("init", [None, "nndsvd", "random"])
def test_dense_and_sparse_give_the_same_result(init):
    X = low_rank(120, 60, 4, noise=0.1)
    X[X < np.quantile(X, 0.6)] = 0
    params = dict(n_components=4, random_state=3, init=init)  # a full default-length run
    W_d = StochasticNMF(**params).fit_transform(X)
    for fmt in (sp.csr_matrix, sp.csc_matrix):
        m = StochasticNMF(**params)
        W_s = m.fit_transform(fmt(X))
        np.testing.assert_allclose(W_s, W_d, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(m.components_, StochasticNMF(**params).fit(X).components_, rtol=1e-8, atol=1e-10)


def test_sparse_input_is_not_densified(monkeypatch):
    X = sp.random(200, 100, density=0.05, format="csr", random_state=0)

    def refuse(*a, **k):
        raise AssertionError("X was densified")

    monkeypatch.setattr(sp.csr_matrix, "toarray", refuse)
    monkeypatch.setattr(sp.csr_matrix, "todense", refuse)
    StochasticNMF(3, max_iter=3, random_state=0).fit(X)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(dtype):
    X = low_rank(50, 20, 3).astype(dtype)
    model = StochasticNMF(3, max_iter=5, random_state=0)
    W = model.fit_transform(X)
    assert W.dtype == dtype and model.components_.dtype == dtype
    assert model.transform(X).dtype == dtype


def test_integer_input_is_accepted_as_float64():
    X = (low_rank(30, 10, 2) * 10).astype(np.int64)
    assert StochasticNMF(2, max_iter=3).fit_transform(X).dtype == np.float64


def test_random_state_makes_runs_reproducible():
    X = low_rank(100, 30, 3, noise=0.3)
    a = StochasticNMF(3, random_state=42, max_iter=8).fit(X)
    b = StochasticNMF(3, random_state=42, max_iter=8).fit(X)
    c = StochasticNMF(3, random_state=43, max_iter=8, init="random").fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert not np.allclose(a.components_, c.components_)


@pytest.mark.parametrize("init", ["nndsvd", "nndsvda", "nndsvdar", "random"])
def test_every_init_method_fits(init):
    X = low_rank(80, 20, 3, noise=0.1)
    model = StochasticNMF(3, init=init, random_state=0, max_iter=30).fit(X)
    assert model.history_["rel_error"][-1] < 0.2


def test_nndsvd_variants_differ_only_where_nndsvd_has_zeros():
    from nmfsched._init import initialize_factors

    X = low_rank(60, 30, 4, noise=0.1)
    plain, filled, small = (
        initialize_factors(X, 4, init, np.random.default_rng(0), np.float64) for init in ("nndsvd", "nndsvda", "nndsvdar")
    )
    fill = np.sqrt(X.mean() / 4)  # in the factors' units
    for a, b, c in zip(plain, filled, small):
        zeros = a == 0
        assert zeros.any()
        np.testing.assert_array_equal(b[~zeros], a[~zeros])
        np.testing.assert_array_equal(c[~zeros], a[~zeros])
        np.testing.assert_allclose(b[zeros], fill)
        assert np.all(c[zeros] > 0) and np.all(c[zeros] < fill / 10)  # |fill N(0,1)| / 100


def test_custom_init_is_used_and_not_modified():
    X = low_rank(40, 12, 2)
    W0, H0 = np.full((40, 2), 0.5), np.full((2, 12), 0.5)
    W0c, H0c = W0.copy(), H0.copy()
    model = StochasticNMF(init="custom", max_iter=1, random_state=0)
    model.fit(X, W=W0, H=H0)
    assert model.n_components_ == 2  # "auto" taken from H
    np.testing.assert_array_equal(W0, W0c)
    np.testing.assert_array_equal(H0, H0c)


def test_transform_matches_fit_transform_and_inverse_transform_reconstructs():
    X = low_rank(100, 30, 4, noise=0.05)
    model = StochasticNMF(4, random_state=0)
    W = model.fit_transform(X)
    np.testing.assert_allclose(model.transform(X), W, atol=1e-4 * np.abs(W).max())
    Xr = model.inverse_transform(W)
    assert Xr.shape == X.shape
    assert np.linalg.norm(X - Xr) == pytest.approx(model.reconstruction_err_, rel=1e-6)


def test_inverse_transform_checks_columns():
    model = StochasticNMF(3, max_iter=2).fit(low_rank(20, 10, 3))
    with pytest.raises(ValueError, match="X has 2 columns but the model has 3 components"):
        model.inverse_transform(np.ones((4, 2)))


def test_partial_fit_streams_chunks():
    X = low_rank(400, 30, 3, noise=0.05)
    model = StochasticNMF(3, random_state=0, scheduler="constant", learning_rate=0.5)
    for _ in range(3):
        for chunk in np.array_split(X, 4):
            model.partial_fit(chunk)
    assert model.n_iter_ == 12
    assert len(model.history_["loss"]) == 12
    np.testing.assert_array_equal(model.history_["epoch"], np.arange(1, 13))
    assert (np.diff(model.history_["seconds"]) >= 0).all()
    err = np.linalg.norm(X - model.transform(X) @ model.components_) / np.linalg.norm(X)
    assert err < 0.1
    # reconstruction_err_ is the last chunk's error with its refreshed W: never below the
    # optimal-W error, and close to it
    last = np.array_split(X, 4)[-1]
    best = np.linalg.norm(last - model.transform(last) @ model.components_)
    assert best * (1 - 1e-9) <= model.reconstruction_err_ <= 1.2 * best
    with pytest.raises(ValueError, match="X has 5 features"):
        model.partial_fit(np.ones((3, 5)))


def test_scheduler_instance_is_copied_and_fitted_one_exposed():
    sched = StepScheduler(step_size=1, gamma=0.5)
    model = StochasticNMF(2, scheduler=sched, max_iter=4, tol=0).fit(low_rank(30, 10, 2))
    assert np.isnan(sched.lr)  # the user's object was not touched
    np.testing.assert_allclose(model.history_["lr"], [1.0, 0.5, 0.25, 0.125])
    assert model.scheduler_.lr == 1.0 / 16


def test_scheduler_by_name_with_params_and_learning_rate():
    model = StochasticNMF(
        2, scheduler="step", scheduler_params=dict(step_size=2, gamma=0.1), learning_rate=0.3,
        max_iter=4, tol=0,
    ).fit(low_rank(30, 10, 2))
    np.testing.assert_allclose(model.history_["lr"], [0.3, 0.3, 0.03, 0.03])


def test_max_time_stops_early():
    model = StochasticNMF(3, max_iter=10_000, tol=0, max_time=0.2).fit(low_rank(300, 50, 3, noise=0.5))
    assert model.stop_reason_ == "max_time"
    assert model.n_iter_ < 10_000


def test_verbose_prints_one_line_per_epoch(capsys):
    StochasticNMF(2, max_iter=3, tol=0, verbose=1).fit(low_rank(20, 8, 2))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 3 and "rel_error" in lines[0]


def test_progress_bar_counts_the_epochs_and_says_why_the_fit_stopped(capsys):
    X = low_rank(40, 10, 2)
    model = StochasticNMF(2, max_iter=5, tol=0, progress_bar=True, random_state=0).fit(X)
    err = capsys.readouterr().err
    assert f"{model.n_iter_}/5" in err and "epoch" in err and "stopped: max_epochs" in err
    assert f"rel_error={model.history_['rel_error'][-1]:.4g}" in err
    StochasticNMF(2, max_iter=5, tol=0, random_state=0).fit(X)
    assert capsys.readouterr().err == ""  # off by default, as scikit-learn's estimators are quiet


def test_progress_bar_ends_where_tol_stops_the_fit(capsys):
    model = StochasticNMF(2, max_iter=1000, progress_bar=True, random_state=0).fit(low_rank(40, 10, 2))
    assert model.n_iter_ < 1000
    assert f"{model.n_iter_}/1000" in capsys.readouterr().err.splitlines()[-1].split("\r")[-1]


def test_zero_matrix_gives_zero_error_not_nan():
    model = StochasticNMF(2, max_iter=3, init="random").fit(np.zeros((10, 5)))
    assert model.reconstruction_err_ == 0.0
    assert np.isfinite(model.components_).all()


def test_factorize_returns_factors_and_history():
    X = low_rank(60, 15, 3)
    W, H, history = factorize(X, 3, random_state=0, max_iter=20)
    assert W.shape == (60, 3) and H.shape == (3, 15)
    assert len(history["loss"]) == 20 or history["loss"].size < 20
    model = StochasticNMF(3, random_state=0, max_iter=20).fit(X)
    np.testing.assert_array_equal(H, model.components_)


def test_get_feature_names_out():
    model = StochasticNMF(3, max_iter=2).fit(low_rank(20, 10, 3))
    assert list(model.get_feature_names_out()) == ["stochasticnmf0", "stochasticnmf1", "stochasticnmf2"]


def test_batch_grows_where_noise_dominates_and_can_be_held_fixed():
    X = low_rank(3000, 40, 4, noise=0.3)
    grown = StochasticNMF(4, random_state=0, max_iter=30, tol=0, batch_size=100).fit(X)
    sizes = grown.history_["batch_size"]
    assert sizes[0] == 100 and (np.diff(sizes) >= 0).all() and sizes[-1] > sizes[0]  # only ever grows
    assert grown.batch_size_ == sizes[-1]
    assert grown.stability_certificate_["descent"]
    fixed = StochasticNMF(4, random_state=0, max_iter=30, tol=0, grow_batch=False, batch_size=100).fit(X)
    assert (fixed.history_["batch_size"] == 100).all() and fixed.batch_size_ == 100
    # "auto" on a narrow matrix: per-batch overheads dominate, so one batch from the start
    assert StochasticNMF(4, random_state=0, max_iter=1).fit(X).history_["batch_size"][0] == 3000


def test_partial_fit_carries_the_batch_size_over():
    X = low_rank(2000, 30, 3, noise=0.3)
    model = StochasticNMF(3, random_state=0, batch_size=50)
    for chunk in np.array_split(X, 2):
        model.partial_fit(chunk)
    first = model.history_["batch_size"]
    assert first[0] == 50 and model.batch_size_ >= first[-1]
    model_batch_before = model.batch_size_  # the next chunk starts from it (capped at its rows, evened)
    model.partial_fit(X[:700])
    assert model.history_["batch_size"][-1] == even_batch_size_at_most(700, model_batch_before)


def test_the_init_svd_takes_few_power_iterations_at_no_cost_in_start_quality():
    from sklearn.utils.extmath import randomized_svd

    from nmfsched._init import init_power_iterations, nndsvd_from_svd
    from nmfsched.metrics import relative_error

    X = low_rank(600, 300, 8, noise=0.2)
    assert init_power_iterations(8, *X.shape) == 2 and init_power_iterations(40, *X.shape) == 4
    errors = [
        relative_error(X, *nndsvd_from_svd(*randomized_svd(X, 8, n_iter=n_iter, random_state=0), "nndsvda", X.mean()))
        for n_iter in (2, 7)
    ]
    assert errors[0] <= 1.01 * errors[1]


def test_a_fit_stopped_by_max_iter_before_tol_warns_as_scikit_learn_does():
    from sklearn.exceptions import ConvergenceWarning

    X = low_rank(60, 10, 3, seed=0, noise=0.1)
    with pytest.warns(ConvergenceWarning, match="max_iter=2 before the tol=0.001"):
        StochasticNMF(3, max_iter=2, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        StochasticNMF(3, max_iter=2, tol=0, random_state=0).fit(X)  # a fixed number of epochs asked
        model = StochasticNMF(3, random_state=0).fit(X)  # stops by tol
    assert model.stop_reason_ in ("tol", "exact")


def test_max_epochs_is_the_deprecated_name_of_max_iter():
    X = low_rank(30, 8, 2, seed=0)
    with pytest.warns(FutureWarning, match="max_epochs was renamed max_iter"):
        model = StochasticNMF(2, max_epochs=3, tol=0, random_state=0).fit(X)
    assert model.n_iter_ == 3
    assert StochasticNMF(2).get_params()["max_epochs"] == "deprecated"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert StochasticNMF(2, max_iter=3, tol=0, random_state=0).fit(X).n_iter_ == 3


def test_timings_say_where_the_fit_went_and_verbose_prints_them(capsys):
    import time

    X = low_rank(60, 12, 3)
    start = time.perf_counter()
    model = StochasticNMF(3, max_iter=4, tol=0, verbose=1).fit(X)
    wall = time.perf_counter() - start
    assert list(model.timings_) == ["validate", "backend", "prepare", "init", "setup", "probe", "epochs", "finish"]
    assert all(seconds >= 0 for seconds in model.timings_.values())
    assert sum(model.timings_.values()) <= wall
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("fit: ") and "init " in last and "epochs " in last and "s an epoch" in last


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_size", [60, 600])  # minibatches (gathered); one batch of every row
def test_a_memory_mapped_x_fits_as_its_copy_in_memory_does(tmp_path, monkeypatch, dtype, batch_size):
    """A read-only X (np.load with mmap_mode) runs the same compiled kernels as a writable one,
    bit for bit: they only read it. The size thresholds are 0 so every threaded and fused
    kernel takes it (before, the first threaded product failed deep in Numba's dispatch)."""
    from nmfsched.kernels import cpu

    for name in ("PARALLEL_MIN_PRODUCT_FLOPS", "PARALLEL_MIN_GATHER_BYTES", "W_PASS_MIN_BYTES"):
        monkeypatch.setattr(cpu, name, 0)
    X = low_rank(600, 300, 5, noise=0.1).astype(dtype)  # 180 000 entries: the chunked float32 norm
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert not mapped.flags.writeable

    def fit(data):
        model = StochasticNMF(5, batch_size=batch_size, max_iter=6, tol=0, random_state=0)
        return model.fit_transform(data), model.transform(data), model.components_

    for got, expected in zip(fit(mapped), fit(X)):
        np.testing.assert_array_equal(got, expected)
