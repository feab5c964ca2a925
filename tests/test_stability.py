"""The stability guarantee: bound enforcement and clipping, under adversarial schedules."""

import warnings

import numpy as np
import pytest
from conftest import low_rank, make_matrix, rounding_slack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmfsched import StochasticNMF
from nmfsched.schedulers import Scheduler
from nmfsched.stability import StabilityGuard, StabilityWarning


class Adversarial(Scheduler):
    """Always proposes ``factor`` times the current bound (or ``factor`` when it is 0)."""

    def __init__(self, factor=1e6):
        super().__init__()
        self.factor = factor

    def _next_lr(self, obs):
        return self.factor * (obs.lr_bound if obs.lr_bound > 0 else 1.0)


def fit_quietly(X, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StabilityWarning)
        return StochasticNMF(**params).fit(X)


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 40),
    m=st.integers(2, 30),
    k=st.integers(1, 6),
    sparse=st.booleans(),
    dtype=st.sampled_from([np.float64, np.float32]),
    log_scale=st.integers(-8, 8),
    log_factor=st.floats(0, 6),
    batch_size=st.integers(1, 50),
    init=st.sampled_from([None, "random", "nndsvd"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_enforced_runs_stay_finite_and_never_end_above_their_start(
    n, m, k, sparse, dtype, log_scale, log_factor, batch_size, init, seed
):
    rng = np.random.default_rng(seed)
    X = make_matrix(rng, n, m, 10.0**log_scale, sparse, dtype)
    if init == "nndsvd" and k > min(n, m):
        init = "random"
    factor = 10.0**log_factor
    model = fit_quietly(
        X, n_components=k, scheduler=Adversarial(factor), learning_rate=factor,
        batch_size=batch_size, max_iter=4, tol=0, init=init, random_state=seed,
    )
    h, cert = model.history_, model.stability_certificate_
    assert np.isfinite(h["loss"]).all() and cert["all_losses_finite"]
    assert h["loss"][-1] <= cert["initial_loss"] + rounding_slack(X)
    assert (h["loss"] <= cert["initial_loss"]).all()  # no epoch ends above the start
    # the applied rate never exceeds the safety factor times the bound in force
    assert (h["lr"] <= 0.9 * h["lr_bound"] * (1 + 1e-12)).all()
    assert cert["max_lr_to_bound"] <= 0.9 * (1 + 1e-12)
    assert np.isfinite(model.components_).all() and (model.components_ >= 0).all()


def converged_start(X, k):
    model = StochasticNMF(k, random_state=0, max_iter=300, tol=0, scheduler="step").fit(X)
    return model.transform(X), model.components_


@pytest.mark.parametrize("enforce", [True, False])
def test_enforcement_is_what_keeps_an_adversarial_run_from_ending_above_its_start(enforce):
    """From a near-optimal start on noisy data, a constant rate of 50 makes the loss rise
    without enforcement (so the property above is not vacuous), and not with it."""
    X = low_rank(300, 40, 4, noise=0.5, seed=1)
    W0, H0 = converged_start(X, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StabilityWarning)
        model = StochasticNMF(
            4, init="custom", scheduler="constant", learning_rate=50.0, batch_size=16,
            max_iter=5, tol=0, random_state=0, enforce_bound=enforce,
        ).fit(X, W=W0, H=H0)
    cert = model.stability_certificate_
    if enforce:
        assert cert["descent"]
        assert model.history_["loss"][-1] <= cert["initial_loss"]
    else:
        assert not cert["descent"]
        assert model.history_["loss"][-1] > 1.05 * cert["initial_loss"]
        assert cert["max_lr_to_bound"] > 1  # the bound was computed, just not enforced


def test_rejected_epochs_restore_the_iterate_and_halve_the_cap(monkeypatch):
    """An epoch that ends above the loss the fit started from is undone and the next cap
    halved, whatever made the epoch go wrong. Epochs 2 and 3 are spoiled on purpose (the
    found case below depends on one batch split): after the real epoch, H is zeroed, so
    the loss jumps to 1/2 ||X||^2, far above the start."""
    from nmfsched.solver import StochasticSolver

    real_epoch = StochasticSolver.sgd_epoch
    calls = []

    def spoiled_epoch(self, *args, **kwargs):
        report = real_epoch(self, *args, **kwargs)
        calls.append(1)
        if len(calls) in (2, 3):
            self.Ht[...] = 0
        return report

    monkeypatch.setattr(StochasticSolver, "sgd_epoch", spoiled_epoch)
    X = low_rank(60, 12, 3, noise=0.05, seed=0)
    params = dict(n_components=3, scheduler=Adversarial(1.0), batch_size=20, max_iter=6, tol=0, random_state=0)
    model = fit_quietly(X, **params)
    h, cert = model.history_, model.stability_certificate_
    np.testing.assert_array_equal(h["rejected"], [False, True, True, False, False, False])
    assert cert["n_rejected_epochs"] == 2
    losses = np.concatenate([[cert["initial_loss"]], h["loss"]])
    for i in np.flatnonzero(h["rejected"]):
        assert losses[i + 1] == losses[i]  # the restored iterate has exactly the old loss
    assert h["lr"][2] <= 0.45 * h["lr_bound"][2] * (1 + 1e-12)  # cap halved once ...
    assert h["lr"][3] <= 0.225 * h["lr_bound"][3] * (1 + 1e-12)  # ... and again
    assert h["lr"][4] > 0.45 * h["lr_bound"][4]  # an accepted epoch restores the full cap
    assert cert["descent"]
    calls.clear()
    unguarded = fit_quietly(X, enforce_bound=False, **params)
    assert unguarded.history_["loss"].max() > cert["initial_loss"]  # what the rejection prevents


def test_the_case_hypothesis_found_no_longer_needs_a_rejection():
    """Hypothesis once found: a near-optimal NNDSVD start, rates at the cap, 23 rows in
    batches of 11 + 11 + a one-row remainder, whose step (weighted 23x) ended an unguarded
    epoch above the initial loss and made the guard reject. The rows are now split into
    minibatches whose sizes differ by at most one (8 + 8 + 7): the same run needs no
    rejection, and without the guard it stays below its start as well."""
    X = make_matrix(np.random.default_rng(0), 23, 4, 1.0, False, np.float64)
    params = dict(
        n_components=2, scheduler=Adversarial(1.0), learning_rate=1.0, batch_size=11,
        max_iter=8, tol=0, init="nndsvd", random_state=0, grow_batch=False,
    )
    model = fit_quietly(X, **params)
    h, cert = model.history_, model.stability_certificate_
    assert (h["batch_size"] == 8).all()
    assert cert["n_rejected_epochs"] == 0 and not h["rejected"].any()
    assert cert["n_capped_epochs"] == 8  # the scheduler asked for more every epoch
    unguarded = fit_quietly(X, enforce_bound=False, **params)
    assert unguarded.history_["loss"].max() < cert["initial_loss"]


def test_learning_rate_1e6_finishes_finite_and_below_its_start():
    X = low_rank(500, 60, 6, noise=0.3, seed=2)
    with pytest.warns(StabilityWarning) as record:
        model = StochasticNMF(6, learning_rate=1e6, random_state=0, max_iter=50).fit(X)
    stability = [r for r in record if issubclass(r.category, StabilityWarning)]
    assert len(stability) == 1  # one warning, not one per epoch (a ConvergenceWarning may come too)
    message = str(stability[0].message)
    assert "learning_rate=1e+06 exceeds the stability bound" in message
    bound = model.history_["lr_bound"][0]
    assert f"{bound:.4g}" in message and f"{0.9 * bound:.4g}" in message
    h = model.history_
    assert np.isfinite(h["loss"]).all()
    assert h["loss"][-1] < model.stability_certificate_["initial_loss"]
    # the request is capped; GreedyLR then proposes at most min(1.6, bound) on its own
    assert h["lr"][0] == pytest.approx(0.9 * bound) and model.stability_certificate_["n_capped_epochs"] >= 1


def test_auto_learning_rate_starts_at_half_the_bound_and_no_warning():
    X = low_rank(200, 30, 3, noise=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StabilityWarning)
        model = StochasticNMF(3, scheduler="constant", random_state=0, max_iter=3).fit(X)
    h = model.history_
    assert h["lr_proposed"][0] == pytest.approx(h["lr_bound"][0] / 2)


def test_certificate_contents():
    X = low_rank(200, 30, 3, noise=0.2)
    cert = StochasticNMF(3, random_state=0, max_iter=10).fit(X).stability_certificate_
    assert set(cert) == {
        "enforced", "safety_factor", "curvature_tolerance", "max_lr_to_bound", "n_capped_epochs",
        "n_clipped_steps", "n_rejected_epochs", "initial_loss", "final_loss", "all_losses_finite",
        "descent",
    }
    assert cert["enforced"] and cert["descent"] and cert["final_loss"] < cert["initial_loss"]


def test_unenforced_run_records_the_bound_but_applies_the_proposal():
    X = low_rank(200, 30, 3, noise=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StabilityWarning)  # no warning without enforcement
        model = StochasticNMF(
            3, scheduler="constant", learning_rate=7.0, enforce_bound=False, max_iter=3, random_state=0
        ).fit(X)
    h = model.history_
    np.testing.assert_array_equal(h["lr"], 7.0)
    assert np.isfinite(h["lr_bound"]).all()
    assert (h["n_clipped"] == 0).all()
    assert model.stability_certificate_["n_capped_epochs"] == 0


def test_probe_gives_the_exact_initial_loss_and_full_gradient():
    from nmfsched.kernels import get_backend
    from nmfsched.solver import StochasticSolver

    rng = np.random.default_rng(0)
    X = low_rank(50, 20, 3, noise=0.3)
    W, H = rng.random((50, 3)), rng.random((3, 20))
    solver = StochasticSolver(X, W, H, backend=get_backend("cpu"), batch_size=12, w_sweeps=1, rng=rng)
    assert solver.probe() == pytest.approx(0.5 * ((X - W @ H) ** 2).sum(), rel=1e-10)
    full_grad = W.T @ W @ H - W.T @ X  # the batches partition the rows: their sum is exact
    np.testing.assert_allclose(solver.statistics.mean_gradient.T, full_grad, rtol=1e-10, atol=1e-12)
    grad_sq, noise_sq, L = solver.gradient_statistics()
    free = (H > 0) | (full_grad < 0)
    np.testing.assert_allclose(grad_sq, (np.where(free, full_grad, 0) ** 2).sum(axis=1), rtol=1e-10)
    assert (noise_sq > 0).all()
    np.testing.assert_allclose(L, (W**2).sum(axis=0))


def test_full_batch_has_no_noise_and_the_bound_is_2():
    X = low_rank(40, 20, 3, noise=0.3)
    model = StochasticNMF(3, batch_size=100, random_state=0, max_iter=5).fit(X)
    np.testing.assert_allclose(model.history_["noise_sq"], 0, atol=1e-9 * model.history_["grad_sq"].max())
    np.testing.assert_allclose(model.history_["lr_bound"], 2.0)


def test_guard_caps_only_when_enforcing():
    g = StabilityGuard(enforce=True, safety_factor=0.5)
    g.bound = 1.2
    assert g.apply(5.0) == pytest.approx(0.6) and g.n_capped == 1
    assert g.apply(0.1) == 0.1 and g.n_capped == 1
    g.record(0.6, 3)
    assert g.max_ratio == pytest.approx(0.5) and g.n_clipped == 3
    off = StabilityGuard(enforce=False)
    off.bound = 1.0
    assert off.apply(5.0) == 5.0 and off.clip_tolerance is None
