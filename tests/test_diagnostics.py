import numpy as np
from conftest import low_rank

from nmfsched import StochasticNMF
from nmfsched.diagnostics import h_step_expected_change, largest_descending_rate


def test_expected_change_matches_theorem_1_in_its_exact_setting(rng):
    """k = 1, interior H: the measured expectation equals the formula (as in test_theory)."""
    W = rng.random((60, 1)) + 0.5
    X = 4 + rng.random((60, 25))
    H = 1.3 * np.linalg.lstsq(W, X, rcond=None)[0]
    lrs = [0.3, 1.0, 1.7]
    changes, bound = h_step_expected_change(X, W, H, lrs, batch_size=15)
    grad = (W.T @ W @ H - W.T @ X).ravel()
    L = float(W[:, 0] @ W[:, 0])
    # from the bound, recover S_sigma / S_g and check the quadratic model exactly
    s_g = grad @ grad / L
    s_sigma = s_g * (2 / bound - 1)
    predicted = [-lr * s_g + 0.5 * lr**2 * (s_g + s_sigma) for lr in lrs]
    np.testing.assert_allclose(changes, predicted, rtol=1e-8)


def test_small_steps_descend_and_huge_steps_do_not():
    X = low_rank(300, 40, 4, noise=0.3)
    model = StochasticNMF(4, random_state=0, max_iter=3).fit(X)
    W, H = model.transform(X), model.components_
    changes, bound = h_step_expected_change(X, W, H, [1e-3, 50.0])
    assert changes[0] < 0 < changes[1]
    assert 0 < bound <= 2


def test_largest_descending_rate():
    assert largest_descending_rate([0.1, 0.2, 0.4, 0.8], [-3, -2, -1, 0.5]) == 0.4
    assert largest_descending_rate([0.1, 0.2], [-1, -1]) == 0.2
    assert largest_descending_rate([0.1, 0.2], [1, -1]) == 0.0
