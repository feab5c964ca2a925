"""Scale-free fits: the fit of ``c X`` is the fit of ``X`` scaled, for any ``c`` a float can hold."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmfsched import StochasticNMF
from nmfsched.objective import Penalty
from nmfsched.scaling import SAFE_RANGE, DataScale, largest_entry


def low_rank(seed, n=80, m=30, k=3, sparse=False, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.random((n, k)) @ rng.random((k, m)) + 0.05 * rng.random((n, m))
    if sparse:
        X = sp.csr_matrix(np.where(X > np.median(X), X, 0.0))
    return X.astype(dtype)


def fit(X, init=None, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StochasticNMF(3, random_state=0, init=init, max_iter=60, **params)
        W = model.fit_transform(X)
    return model, W


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exponent=st.floats(-300, 300), sparse=st.booleans(), seed=st.integers(0, 1000),
       init=st.sampled_from([None, "nndsvda", "random"]))
def test_the_fit_of_c_x_is_the_fit_of_x_scaled(exponent, sparse, seed, init):
    """Same seed, any scale from 1e-300 to 1e300, the default start (NNDSVDar) and others: the
    product W H of the fit of ``c X`` is ``c`` times that of ``X`` to 1e-12, the error ``c``
    times, the losses ``c^2`` times, the path the same."""
    c = 10.0**exponent
    X = low_rank(seed, sparse=sparse)
    base, W0 = fit(X, init)
    scaled, W1 = fit(X * c, init)
    assert scaled.n_iter_ == base.n_iter_ and scaled.stop_reason_ == base.stop_reason_
    np.testing.assert_array_equal(scaled.history_["batch_size"], base.history_["batch_size"])
    product, expected = W1 @ scaled.components_, c * (W0 @ base.components_)
    assert np.max(np.abs(product - expected)) <= 1e-12 * np.max(np.abs(expected))
    assert scaled.reconstruction_err_ == pytest.approx(c * base.reconstruction_err_, rel=1e-10)
    if np.isfinite(c * c) and c * c > np.finfo(np.float64).tiny:  # c^2 itself a normal float
        np.testing.assert_allclose(scaled.history_["loss"], c * c * base.history_["loss"], rtol=1e-10)
    new_rows = scaled.transform(X[:10] * c) @ scaled.components_
    expected_rows = c * (base.transform(X[:10]) @ base.components_)
    assert np.max(np.abs(new_rows - expected_rows)) <= 1e-12 * np.max(np.abs(expected_rows))


@pytest.mark.parametrize("c", [1e-30, 1e30])
def test_float32_fits_are_scale_free_within_their_range(c):
    X = low_rank(1, dtype=np.float32)
    base, W0 = fit(X)
    scaled, W1 = fit((X * np.float32(c)).astype(np.float32))
    assert W1.dtype == np.float32 and scaled.components_.dtype == np.float32
    expected = c * (W0.astype(np.float64) @ base.components_.astype(np.float64))
    product = W1.astype(np.float64) @ scaled.components_.astype(np.float64)
    assert np.max(np.abs(product - expected)) <= 1e-3 * np.max(np.abs(expected))


@pytest.mark.parametrize("c", [1e100, 1e-200])
def test_the_default_fit_of_extreme_data_neither_overflows_nor_vanishes(c):
    """Before: 1e100 X diverged in epoch 1 (the bound's statistics overflowed), 1e-200 X gave zero
    factors as an "exact" fit. The default init (NNDSVD) is used here."""
    X = low_rank(2)
    base = StochasticNMF(3, random_state=0).fit(X)
    model = StochasticNMF(3, random_state=0).fit(X * c)
    assert model.stop_reason_ == base.stop_reason_ and np.isfinite(model.components_).all()
    assert (model.components_ > 0).any()
    assert model.reconstruction_err_ / c == pytest.approx(base.reconstruction_err_, rel=1e-3)
    assert model.stability_certificate_["descent"]


def test_penalised_fits_keep_their_objective_at_any_scale():
    """The penalties' weights are rescaled with the data: alpha means the same objective at 1e80 X
    as the penalty of X scaled, so the fits agree."""
    X = low_rank(3)
    params = dict(alpha_W=0.01, alpha_H=0.02, l1_ratio=0.4)
    base, W0 = fit(X, **params)
    c = 2.0**200  # the penalised objective is not scale-equivariant for other c; for this one it is, exactly
    scaled_X = X * c
    # with W, H -> sqrt(c) W, sqrt(c) H, the L1 terms grow by c^0.5 and L2 by c: the same objective as
    # alpha rescaled by c^1.5 (L1) and c (L2); here both weights are one alpha, so check the pure cases
    for l1_ratio in (0.0, 1.0):
        weights = dict(alpha_W=0.01, l1_ratio=l1_ratio)
        power = 1.0 if l1_ratio == 0 else 1.5
        a, Wa = fit(X, **weights)
        b, Wb = fit(scaled_X, **{**weights, "alpha_W": 0.01 * c**power})
        np.testing.assert_allclose(Wb @ b.components_, c * (Wa @ a.components_), rtol=1e-9,
                                   atol=1e-12 * c * np.abs(Wa @ a.components_).max())
        np.testing.assert_allclose(b.history_["loss"], c * c * a.history_["loss"], rtol=1e-9)
    assert base.history_["loss"][-1] > 0


def test_data_scale_is_a_power_of_four_outside_the_safe_range_and_one_inside():
    assert DataScale.of(1.0).s == 1.0 and DataScale.of(SAFE_RANGE[1]).s == 1.0 and DataScale.of(0.0).s == 1.0
    for largest in (1e-300, 3e-7, 1e5, 1e300, np.finfo(np.float64).max):
        scale = DataScale.of(largest)
        exponent = np.log2(scale.s)
        assert exponent == round(exponent) and round(exponent) % 2 == 0  # 4^j: its root is a power of 2
        assert 1 <= largest / scale.s < 4 and scale.root**2 == scale.s
    scale = DataScale.of(1e300)
    penalty = scale.penalty(Penalty(l1_W=1.0, l2_W=2.0, l1_H=0.0, l2_H=3.0))
    assert penalty.l1_H == 0.0 and penalty.l2_W == pytest.approx(2.0 / scale.s)
    assert largest_entry(np.array([[np.nan, 2.0], [1.0, np.nan]])) == 2.0 and largest_entry(np.full((2, 2), np.nan)) == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_float32_near_exact_fit_records_its_true_loss_and_never_stops_as_exact_above_zero(seed):
    """The loss from Gram identities cancels below about 1e-5 ||X||^2 in float32; there the epoch's
    loss comes from the residual. Before, seed 1 stopped as "exact" with a recorded loss of 0.0
    while its error was 3.6e-4."""
    X = np.random.default_rng(seed).random((300, 12)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StochasticNMF(12, random_state=0, max_iter=3000, tol=1e-8).fit(X)  # finer than the loss floor
    W = model.transform(X).astype(np.float64)
    direct = 0.5 * np.linalg.norm(X.astype(np.float64) - W @ model.components_.astype(np.float64)) ** 2
    norm = np.linalg.norm(X.astype(np.float64))
    if model.stop_reason_ == "exact":  # only where the error is within float32's rounding of 12-term products
        assert np.sqrt(2 * direct) <= 2 * 14 * np.finfo(np.float32).eps * norm * 1.5  # the final solve moves it a little
    else:
        assert model.history_["loss"][-1] == pytest.approx(direct, rel=0.05)
    assert model.reconstruction_err_ < 1e-5 * norm
