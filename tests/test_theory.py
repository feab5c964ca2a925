"""nmfsched.theory: the formulas, and Theorem 1 checked against the real kernel step."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nmfsched import theory
from nmfsched.kernels import get_backend

finite_pos = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)


def test_lipschitz_constants_match_numpy(rng):
    W = rng.random((30, 4))
    gram = W.T @ W
    assert theory.block_lipschitz(gram) == pytest.approx(np.linalg.norm(gram, 2))
    np.testing.assert_allclose(theory.component_lipschitz(gram), (W**2).sum(axis=0))
    Wb = W[:10]
    assert theory.minibatch_lipschitz(Wb.T @ Wb, 30, 10) == pytest.approx(3 * np.linalg.norm(Wb.T @ Wb, 2))
    assert theory.block_lipschitz(np.zeros((0, 0))) == 0.0


def test_bound_limits():
    L = np.array([1.0, 2.0])
    assert theory.lr_upper_bound([1.0, 3.0], [0.0, 0.0], L) == 2.0  # noiseless: the deterministic 2
    assert theory.lr_upper_bound([0.0, 0.0], [1.0, 1.0], L) == 0.0  # stationary with noise: no step is safe
    assert theory.lr_upper_bound([0.0, 0.0], [0.0, 0.0], L) == 2.0  # nothing to do, nothing to fear
    # S_g = 1 + 1 = 2, S_sigma = 2 + 0 = 2
    assert theory.lr_upper_bound([1.0, 2.0], [2.0, 0.0], L) == pytest.approx(1.0)
    # a component with L = 0 cannot move and does not count
    assert theory.lr_upper_bound([1.0, 5.0], [0.0, 100.0], [1.0, 0.0]) == 2.0


@settings(max_examples=300, deadline=None)
@given(
    k=st.integers(1, 6),
    data=st.data(),
    lr=st.floats(1e-4, 10.0),
)
def test_expected_change_is_negative_exactly_below_the_bound(k, data, lr):
    g = data.draw(arrays(np.float64, k, elements=finite_pos))
    s = data.draw(arrays(np.float64, k, elements=finite_pos))
    L = data.draw(arrays(np.float64, k, elements=st.floats(1e-3, 1e3)))
    bound = theory.lr_upper_bound(g, s, L)
    change = theory.expected_sweep_change(lr, g, s, L)
    assert 0.0 <= bound <= 2.0
    if not np.isclose(lr, bound, rtol=1e-9) and np.sum(g / L) > 1e-12:
        assert (change < 0) == (lr < bound)
    # half the bound is the best rate of the model
    if bound > 0:
        best = theory.expected_sweep_change(bound / 2, g, s, L)
        assert best <= change + 1e-9 * (abs(change) + abs(best))


def test_noise_is_the_variance_over_the_batch_partition(rng):
    batch_grads = [rng.normal(size=(5, 3)) for _ in range(4)]
    p = np.array([0.4, 0.3, 0.2, 0.1])
    mean = sum(pi * g for pi, g in zip(p, batch_grads))
    expected = sum(pi * ((g - mean) ** 2).sum(axis=0) for pi, g in zip(p, batch_grads))
    weighted = sum(pi * (g**2).sum(axis=0) for pi, g in zip(p, batch_grads))
    np.testing.assert_allclose(theory.minibatch_gradient_noise(weighted, (mean**2).sum(axis=0)), expected)
    assert (theory.minibatch_gradient_noise([1.0], [1.0 + 1e-15]) == 0).all()  # rounding clamps at 0


@settings(max_examples=300, deadline=None)
@given(
    m=st.integers(1, 50),
    rho=st.floats(0.01, 10.0),
    scale=st.sampled_from([1e-8, 1.0, 1e8]),
    seed=st.integers(0, 2**32 - 1),
    sparse=st.booleans(),
)
def test_clipped_updates_keep_curvature_within_tolerance(m, rho, scale, seed, sparse):
    """Proposition 2: any update within the entry limits changes ||h_j||^2 by at most 1+rho."""
    rng = np.random.default_rng(seed)
    H = rng.random((3, m)) * scale
    if sparse:
        H[rng.random(H.shape) < 0.8] = 0
    sq = (H**2).sum(axis=1)
    rel, absolute = theory.entry_clip_limits(sq, m, rho)
    norm_limits = theory.update_norm_limits(sq, rho)
    c = np.sqrt(1 + rho) - 1
    for j in range(3):
        limit = np.maximum(rel[j] * np.abs(H[j]), absolute[j])
        update = limit * rng.choice([-1.0, 1.0], size=m)  # the worst case: every entry at its limit
        assert np.linalg.norm(update) <= norm_limits[j] * (1 + 1e-12)
        before, after = theory.curvature_after_update(H[j], update)
        n_j = norm_limits[j] / c
        assert after <= (1 + rho) * n_j**2 * (1 + 1e-9)
        if sq.mean() > 0 and before >= sq.mean():  # components at least RMS-sized: relative statement
            assert after <= (1 + rho) * before * (1 + 1e-9)
            assert after >= max(1 - c, 0.0) ** 2 * before * (1 - 1e-9)


def test_clip_of_all_zero_h_is_unlimited():
    rel, absolute = theory.entry_clip_limits(np.zeros(3), 10)
    assert np.isinf(absolute).all()
    with pytest.raises(ValueError, match="curvature_tolerance"):
        theory.update_norm_limits(np.ones(2), 0.0)


@pytest.mark.parametrize("lr", [0.2, 0.9, 1.5, 2.5])
def test_theorem_1_is_exact_for_one_interior_component(rng, lr):
    """With k = 1 (so Gauss-Seidel = Jacobi, A3) and H far from 0 (no truncation, A2), the
    exact expected change of the real kernel step over the batch partition equals
    -lr S_g + lr^2/2 (S_g + S_sigma), so its sign flips exactly at the bound."""
    n, m = 60, 25
    W = rng.random((n, 1)) + 0.5
    X = 4 + rng.random((n, m))
    h_star = np.linalg.lstsq(W, X, rcond=None)[0]  # > 0 here
    H = 1.3 * h_star  # interior, near the optimum: even lr = 2.5 steps stay > 0
    batches = np.array_split(rng.permutation(n), 4)
    be = get_backend("cpu")
    L = float(W[:, 0] @ W[:, 0])

    def f(Hm):
        return 0.5 * ((X - W @ Hm) ** 2).sum()

    grad = (W.T @ W @ H - W.T @ X).ravel()
    changes, weighted_sq = [], 0.0
    for rows in batches:
        Wb, Xb = W[rows], X[rows]
        Ht = H.T.copy()
        be.projected_cd(Ht, Wb.T @ Wb, Xb.T @ Wb, np.array([lr * n / len(rows) / L]))
        assert (Ht > 0).all()  # A2 holds: nothing was truncated
        changes.append(len(rows) / n * (f(Ht.T) - f(H)))
        g_b = (n / len(rows)) * (Wb.T @ Wb @ H - Wb.T @ Xb).ravel()
        weighted_sq += len(rows) / n * g_b @ g_b
    noise = theory.minibatch_gradient_noise([weighted_sq], [grad @ grad])
    predicted = theory.expected_sweep_change(lr, [grad @ grad], noise, [L])
    assert sum(changes) == pytest.approx(predicted, rel=1e-8)
    bound = theory.lr_upper_bound([grad @ grad], noise, [L])
    assert (sum(changes) < 0) == (lr < bound)


# -- the noise scaling law and the batch-size rule ---------------------------------------
def test_noise_scales_as_sampling_without_replacement(rng):
    """The minibatch variance of the solver's own gradient estimate, measured over every
    split, follows (n - b) / b."""
    n, m = 60, 5
    rows = rng.random((n, m))  # per-row contributions x_i; g_B = (n/b) sum_{i in B} x_i
    total = rows.sum(axis=0)

    def variance(b):
        estimates = [(n / b) * rows[rng.choice(n, b, replace=False)].sum(axis=0) for _ in range(20000)]
        return float(np.mean(np.sum((np.asarray(estimates) - total) ** 2, axis=1)))

    measured_10, measured_30 = variance(10), variance(30)
    predicted_30 = theory.noise_at_batch_size(measured_10, 10, 30, n)
    assert predicted_30 == pytest.approx(measured_30, rel=0.05)
    assert theory.noise_at_batch_size([3.0], 10, 60, 60) == pytest.approx([0.0])  # one batch: no noise
    assert theory.noise_at_batch_size([3.0], 60, 10, 60) == pytest.approx([0.0])  # none measured, none predicted
    with pytest.raises(ValueError, match="batch sizes must be in"):
        theory.noise_at_batch_size([1.0], 0, 10, 60)


@settings(max_examples=200, deadline=None)
@given(
    g=arrays(np.float64, 3, elements=finite_pos),
    s=arrays(np.float64, 3, elements=finite_pos),
    L=arrays(np.float64, 3, elements=st.floats(1e-3, 1e3)),
    n=st.integers(2, 5000),
    frac=st.floats(0.0, 1.0),
    ratio=st.sampled_from([1.0, 4.0, 0.25]),
)
def test_batch_for_noise_is_the_smallest_that_passes_the_norm_test(g, s, L, n, frac, ratio):
    b = min(n, max(1, int(frac * n)))
    new = theory.batch_size_for_noise(g, s, L, b, n, noise_ratio=ratio)
    assert 1 <= new <= n
    s_g = ratio * float(np.sum(g / L))  # the noise allowed

    def predicted(size):
        return float(np.sum(theory.noise_at_batch_size(s, b, size, n) / L))

    if b == n:
        assert new == n
        return
    assert predicted(new) <= s_g * (1 + 1e-9) + 1e-300  # passes: the bound there is >= 1
    if new > 1:
        assert predicted(new - 1) >= s_g * (1 - 1e-9)  # and one row fewer would not
    if predicted(new) > 0:  # the bound there is >= 2 / (1 + ratio)
        assert theory.lr_upper_bound(g, theory.noise_at_batch_size(s, b, new, n), L) >= 2 / (1 + ratio) - 1e-9


def test_batch_for_noise_edges():
    L = np.ones(2)
    assert theory.batch_size_for_noise([0.0, 0.0], [1.0, 1.0], L, 10, 100) == 100  # only noise: every row
    assert theory.batch_size_for_noise([1.0, 1.0], [0.0, 0.0], L, 10, 100) == 1  # no noise: any batch
    assert theory.batch_size_for_noise([1.0, 1.0], [5.0, 5.0], L, 100, 100) == 100  # already all rows
    assert theory.batch_size_for_noise([1.0], [1.0], [0.0], 10, 100) == 10  # nothing can move
    with pytest.raises(ValueError, match="batch_size must be in"):
        theory.batch_size_for_noise([1.0], [1.0], [1.0], 200, 100)


def test_one_batch_pays_once_the_noise_constant_outweighs_the_signal_over_the_gain():
    L = np.ones(2)
    n, b = 10_000, 100
    assert not theory.one_batch_pays([1.0, 1.0], [0.01, 0.01], L, b, n, gain=3.0)  # quiet: minibatches
    assert theory.one_batch_pays([1.0, 1.0], [50.0, 50.0], L, b, n, gain=3.0)  # loud: one batch
    # the threshold: gain (b S_g + A (n - b)) = n S_g, with S_sigma = A (n - b) / b split over 2 components
    s_g, gain = 2.0, 10.0
    a = (n * s_g / gain - b * s_g) / (n - b)
    per_component = a * (n - b) / b / 2
    assert theory.one_batch_pays([1.0, 1.0], [1.01 * per_component] * 2, L, b, n, gain=gain)
    assert not theory.one_batch_pays([1.0, 1.0], [0.99 * per_component] * 2, L, b, n, gain=gain)
    assert theory.one_batch_pays([1.0, 1.0], [0.0, 0.0], L, 1000, n, gain=gain)  # 10 batches: one is worth them
    assert theory.one_batch_pays([1.0], [1.0], [1.0], n, n)  # already one batch
