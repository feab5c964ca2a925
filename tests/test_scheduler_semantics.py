"""Each scheduler's semantics pinned with scripted loss sequences; then the per-minibatch
search against the solver's exact trial steps, and every scheduler driving a guarded fit."""

import json
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmfsched import schedulers
from nmfsched.schedulers import (
    CosineScheduler,
    ExponentialScheduler,
    GreedyLR,
    HypergradientScheduler,
    LinearScheduler,
    LineSearchScheduler,
    MultiStepScheduler,
    Observation,
    PlateauScheduler,
    WarmupScheduler,
)


def drive(scheduler, lr0, losses, *, bound=math.inf, cos=math.nan, total_epochs=None):
    """Feed one loss per epoch; returns the rate proposed after each."""
    scheduler.reset(lr0, total_epochs)
    return [
        scheduler.step(
            Observation(epoch=t + 1, loss=loss, rel_error=0.0, lr=scheduler.lr, lr_bound=bound, grad_cos=cos)
        )
        for t, loss in enumerate(losses)
    ]


BUILT_IN = [
    "constant",
    "step",
    "multistep",
    "exponential",
    "cosine",
    "linear",
    "warmup",
    "plateau",
    "hypergradient",
    "greedy",
    "line_search",
]


def greedy(**params):
    params = {
        "smooth": False,
        "threshold": 0.0,
        "patience": 0,
        "factor": 0.5,
        "min_lr": 1e-3,
        "max_lr": 100.0,
    } | params
    return GreedyLR(**params)


# -- GreedyLR ----------------------------------------------------------------------------
def test_greedy_raises_while_improving_and_lowers_when_worsening():
    assert drive(greedy(), 1.0, [10, 9, 8, 9, 10]) == [2.0, 4.0, 8.0, 4.0, 2.0]


def test_greedy_patience_needs_more_than_patience_epochs_in_a_row():
    # patience=1: the second improvement in a row raises; a worse epoch breaks the streak
    assert drive(greedy(patience=1), 1.0, [10, 9, 8, 7, 8, 9]) == [1.0, 2.0, 2.0, 4.0, 4.0, 2.0]


def test_greedy_threshold_rel_makes_small_changes_count_as_neither():
    g = greedy(threshold=0.05)
    # 10 -> 9.9 is a 1% improvement: neither; 9.0 is 10% better: improved; 9.2 is within 5% of 9: neither
    assert drive(g, 1.0, [10, 9.9, 9.0, 9.2, 10.0]) == [2.0, 2.0, 4.0, 4.0, 2.0]


def test_greedy_threshold_abs():
    g = greedy(threshold=0.5, threshold_mode="abs")
    assert drive(g, 1.0, [10, 9.7, 9.4, 10.2]) == [2.0, 2.0, 4.0, 2.0]


def test_greedy_smoothing_uses_the_rolling_mean():
    # raw losses 10, 6, 11: means 10, 8, 9 -> improved, improved, worse (than best 8)
    assert drive(greedy(smooth=True, window=2), 1.0, [10, 6, 11]) == [2.0, 4.0, 2.0]
    # window=2 drops the first loss: means 10, 8, 8.5
    g = greedy(smooth=True, window=2)
    drive(g, 1.0, [10, 6, 11])
    assert g.losses == [6.0, 11.0]


def test_greedy_cooldown_holds_increases_after_an_increase():
    # cooldown=2: counters start at 0, so the first two epochs hold increases too
    assert drive(greedy(cooldown=2), 1.0, [10, 9, 8, 7, 6, 5, 4]) == [1.0, 1.0, 2.0, 2.0, 2.0, 4.0, 4.0]


def test_greedy_warmup_holds_decreases_after_a_decrease():
    # the first epoch improves on the initial best (inf) and raises; then every decrease
    # is followed by one held epoch
    assert drive(greedy(warmup=1), 1.0, [10, 11, 12, 13, 14]) == [2.0, 1.0, 1.0, 0.5, 0.5]


def test_greedy_clamps_to_min_and_max():
    assert drive(greedy(max_lr=3.0), 1.0, [10, 9, 8]) == [2.0, 3.0, 3.0]
    assert drive(greedy(min_lr=0.3), 1.0, [10, 11, 12, 13, 14]) == [2.0, 1.0, 0.5, 0.3, 0.3]


def test_greedy_max_lr_bound_follows_the_reported_bound():
    assert drive(greedy(max_lr="bound"), 1.0, [10, 9, 8], bound=1.5) == [1.5, 1.5, 1.5]
    # no bound reported (NaN): no upper clamp
    assert drive(greedy(max_lr="bound"), 1.0, [10, 9], bound=math.nan) == [2.0, 4.0]


def test_greedy_resets_once_after_reset_after_epochs():
    g = greedy(reset_after=3)
    lrs = drive(g, 1.0, [10, 9, 8, 7, 6, 5, 4])
    # up, up, then back to 1.0 after epoch 3 with a fresh best (7 improves on inf), up again
    assert lrs == [2.0, 4.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert g.has_reset


def test_greedy_state_dict_roundtrip_continues_identically():
    a = GreedyLR(patience=1, window=2)
    drive(a, 1.0, [10, 9, 9.5, 8])
    state = json.loads(json.dumps(a.state_dict()))  # JSON-friendly
    b = GreedyLR()
    b.load_state_dict(state)
    more = [7.5, 7.9, 8.5, 9.0, 6.0]
    assert [a.step(Observation(5 + i, x, 0.0, a.lr)) for i, x in enumerate(more)] == [
        b.step(Observation(5 + i, x, 0.0, b.lr)) for i, x in enumerate(more)
    ]


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(factor=1.0), "factor"),
        (dict(factor=0.0), "factor"),
        (dict(patience=-1), "patience"),
        (dict(patience=1.5), "patience"),
        (dict(window=0), "window"),
        (dict(smooth="yes"), "smooth"),
        (dict(threshold=-1e-3), "threshold"),
        (dict(threshold_mode="relative"), "threshold_mode"),
        (dict(cooldown=-1), "cooldown"),
        (dict(warmup=None), "warmup"),
        (dict(min_lr=0.0), "min_lr"),
        (dict(max_lr="inf"), "max_lr"),
        (dict(max_lr=1e-9), "below min_lr"),
        (dict(reset_after=-2), "reset_after"),
    ],
)
def test_greedy_rejects_each_invalid_parameter(params, match):
    with pytest.raises(ValueError, match=match):
        GreedyLR(**params)


# -- the baselines ---------------------------------------------------------------------
def test_multistep_decays_at_milestones():
    assert drive(MultiStepScheduler(milestones=[2, 4], gamma=0.5), 1.0, [1] * 5) == [
        1.0,
        0.5,
        0.5,
        0.25,
        0.25,
    ]
    for bad in ([3, 2], [0], "x"):
        with pytest.raises(ValueError, match="milestone"):
            MultiStepScheduler(milestones=bad)


def test_exponential_decays_every_epoch():
    np.testing.assert_allclose(drive(ExponentialScheduler(gamma=0.5), 2.0, [1] * 3), [1.0, 0.5, 0.25])


def test_cosine_anneals_to_eta_min_and_stays():
    lrs = drive(CosineScheduler(t_max=4, eta_min=0.1), 1.0, [1] * 6)
    expected = [0.1 + 0.9 * (1 + math.cos(math.pi * t / 4)) / 2 for t in (1, 2, 3)] + [0.1, 0.1, 0.1]
    np.testing.assert_allclose(lrs, expected)


def test_cosine_with_restarts_and_growing_periods():
    lrs = drive(CosineScheduler(t_max=2, restarts=True, t_mult=2), 1.0, [1] * 6)
    # period 2 (epochs 0-1), then period 4 (epochs 2-5), then a restart at 6
    np.testing.assert_allclose(
        lrs, [0.5, 1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.5 - 0.5 * math.cos(math.pi / 4), 1.0]
    )


def test_cosine_and_linear_take_the_run_budget_or_fail_clearly():
    np.testing.assert_allclose(
        drive(LinearScheduler(), 1.0, [1] * 5, total_epochs=4), [0.75, 0.5, 0.25, 0.0, 0.0]
    )
    with pytest.raises(ValueError, match="t_max is None and the run gave no total_epochs"):
        CosineScheduler().reset(1.0)


@given(lr0=st.floats(1e-6, 10), horizon=st.integers(1, 500), end_lr=st.sampled_from([0.0, 1e-7]))
@settings(max_examples=200, deadline=None)
def test_linear_and_cosine_never_go_negative_and_end_where_asked(lr0, horizon, end_lr):
    """Found by the scheduler benchmark: lr0 + (0 - lr0) * T / T rounded to -1e-16."""
    end_lr = min(end_lr, lr0)
    lin = drive(LinearScheduler(end_lr=end_lr), lr0, [1.0] * (horizon + 2), total_epochs=horizon)
    cos = drive(CosineScheduler(eta_min=end_lr), lr0, [1.0] * (horizon + 2), total_epochs=horizon)
    assert min(lin) >= 0 and min(cos) >= 0
    assert lin[horizon - 1] == end_lr and cos[-1] == end_lr


def test_linear_decays_to_end_lr():
    np.testing.assert_allclose(drive(LinearScheduler(t_max=2, end_lr=0.2), 1.0, [1] * 3), [0.6, 0.2, 0.2])


def test_warmup_ramps_then_hands_over():
    w = WarmupScheduler(after="exponential", after_params=dict(gamma=0.5), warmup_epochs=2, start_factor=0.5)
    w.reset(1.0)
    assert w.lr == 0.5  # the first epoch's rate
    np.testing.assert_allclose(
        [w.step(Observation(t, 1.0, 0.0, w.lr)) for t in range(1, 6)], [0.75, 1.0, 0.5, 0.25, 0.125]
    )


def test_warmup_wraps_an_instance_and_roundtrips_its_state():
    w = WarmupScheduler(after=CosineScheduler(t_max=3), warmup_epochs=1)
    drive(w, 1.0, [1, 1])
    state = pickle.loads(pickle.dumps(w.state_dict()))
    json.dumps(state)
    other = WarmupScheduler()
    other.load_state_dict(state)
    assert [w.step(Observation(3, 1.0, 0.0, 1.0)) for _ in range(2)] == [
        other.step(Observation(3, 1.0, 0.0, 1.0)) for _ in range(2)
    ]
    with pytest.raises(ValueError, match="after"):
        WarmupScheduler(after="warmup")
    with pytest.raises(ValueError, match="Unknown scheduler"):
        WarmupScheduler(after="nope")


def test_plateau_reduces_after_patience_bad_epochs_with_cooldown():
    p = PlateauScheduler(factor=0.5, patience=1, cooldown=1, threshold=0.0)
    # bad epochs: 2 (10 not < 10), 3 -> reduce after epoch 3; cooldown absorbs epoch 4
    assert drive(p, 1.0, [10, 10, 10, 10, 10, 10]) == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    # never raises
    assert drive(PlateauScheduler(), 1.0, [10, 5, 2, 1]) == [1.0] * 4


def test_plateau_min_lr_and_eps():
    p = PlateauScheduler(factor=0.5, patience=0, min_lr=0.3, threshold=0.0)
    assert drive(p, 1.0, [1, 1, 1, 1]) == [1.0, 0.5, 0.3, 0.3]


def test_hypergradient_follows_the_gradient_cosine():
    h = HypergradientScheduler(beta=0.5, max_lr=10.0)
    assert drive(h, 1.0, [1, 1], cos=1.0) == [1.5, 2.25]
    assert drive(h, 1.0, [1, 1], cos=-1.0) == [0.5, 0.25]
    assert drive(h, 1.0, [1], cos=math.nan) == [1.0]  # no signal, no change
    assert drive(HypergradientScheduler(beta=0.5), 1.0, [1, 1], cos=1.0, bound=1.2) == [1.2, 1.2]


class ScriptedTrials:
    """A minibatch whose loss change at rate t is t^2 - t (Armijo with c: t <= 1 - c)."""

    def __init__(self):
        self.tried = []

    def __call__(self, t):
        self.tried.append(t)
        return t * t - t, -t


def test_line_search_grows_from_the_last_rate_and_backtracks_to_armijo():
    ls = LineSearchScheduler(c=0.1, backtrack=0.5, growth=2.0)
    ls.reset(0.2)
    trials = ScriptedTrials()
    # n_batches=1: the start grows by the full factor 2 per minibatch
    assert ls.search_step(trials, cap=10.0, n_batches=1) == 0.4
    assert ls.search_step(trials, cap=10.0, n_batches=1) == 0.8
    trials.tried.clear()
    # start 1.6 fails (1.6^2 - 1.6 > -0.16), 0.8 passes
    assert ls.search_step(trials, cap=10.0, n_batches=1) == 0.8
    assert trials.tried == [1.6, 0.8]
    # four minibatches per epoch: the start grows by 2 ** (1/4), to 0.95 > 1 - c, and backtracks once
    trials.tried.clear()
    assert ls.search_step(trials, cap=10.0, n_batches=4) == pytest.approx(0.8 * 2**0.25 * 0.5)
    assert trials.tried == pytest.approx([0.8 * 2**0.25, 0.8 * 2**0.25 * 0.5])


def test_line_search_respects_the_cap_and_gives_up_with_a_zero_step():
    ls = LineSearchScheduler(backtrack=0.5, max_backtracks=2)
    ls.reset(1.0)
    trials = ScriptedTrials()
    assert ls.search_step(trials, cap=0.3, n_batches=1) == 0.3
    assert trials.tried == [0.3]
    assert ls.search_step(lambda t: (1.0, -t), cap=10.0, n_batches=1) == 0.0  # never decreases
    assert ls.batch_lr == pytest.approx(0.6 * 0.5**3)  # the next search starts where it gave up
    assert ls.search_step(trials, cap=0.0, n_batches=1) == 0.0


def test_line_search_ceiling_follows_the_bound():
    ls = LineSearchScheduler()
    ls.reset(0.5)
    assert ls.lr == 2.0  # the largest value the bound takes, before one is reported
    assert drive(ls, 0.5, [1.0, 0.9], bound=0.7) == [0.7, 0.7]
    # a number is a ceiling of its own, never above the bound
    assert drive(LineSearchScheduler(max_lr=3.0), 0.5, [1.0], bound=0.7) == [0.7]
    assert drive(LineSearchScheduler(max_lr=0.5), 0.5, [1.0], bound=0.7) == [0.5]


@pytest.mark.parametrize(
    "params, match",
    [
        ({"c": 0}, "c must be"),
        ({"c": 1}, "c must be"),
        ({"backtrack": 1.0}, "backtrack must be"),
        ({"growth": 0.5}, "growth must be"),
        ({"max_backtracks": -1}, "max_backtracks must be"),
        ({"max_lr": "auto"}, "max_lr"),
    ],
)
def test_line_search_rejects_each_invalid_parameter(params, match):
    with pytest.raises(ValueError, match=match):
        LineSearchScheduler(**params)


def test_warmup_refuses_a_per_minibatch_search():
    with pytest.raises(ValueError, match="minibatch"):
        WarmupScheduler(after="line_search")


def test_solver_trial_steps_report_the_exact_minibatch_loss_change():
    from nmfsched.kernels import get_backend
    from nmfsched.solver import StochasticSolver

    class Recorder:
        def __init__(self):
            self.trials = []

        def search_step(self, trial, cap, n_batches):
            for t in (cap, cap / 2):  # two trials; accept the second
                self.trials.append((t, *trial(t)))
            return cap / 2

    rng = np.random.default_rng(3)
    X, W, H = rng.random((40, 15)), rng.random((40, 3)), rng.random((3, 15))
    # one minibatch of all rows: the minibatch loss is the full loss
    solver = StochasticSolver(X, W.copy(), H.copy(), backend=get_backend("cpu"), batch_size=40, w_sweeps=1, rng=rng)
    H0 = solver.H.copy()
    rec = Recorder()
    report = solver.sgd_epoch(0.8, search=rec)
    W1, H1 = solver.W_host(), solver.H  # W after its step (before any refresh), H after the accepted step
    loss = lambda H_: 0.5 * np.linalg.norm(X - W1 @ H_) ** 2  # noqa: E731
    t, change, slope = rec.trials[-1]
    np.testing.assert_allclose(change, loss(H1) - loss(H0), rtol=1e-9)
    np.testing.assert_allclose(slope, np.vdot(W1.T @ (W1 @ H0 - X), H1 - H0), rtol=1e-9)
    assert (report.lr_mean, report.lr_max, report.n_trials) == (0.4, 0.4, 2)
    # the accepted step is the plain step at that rate
    plain = StochasticSolver(X, W, H, backend=get_backend("cpu"), batch_size=40, w_sweeps=1, rng=rng)
    plain.sgd_epoch(0.4)
    np.testing.assert_allclose(solver.H, plain.H, rtol=1e-12)


def test_line_search_fit_satisfies_armijo_on_every_minibatch_and_stays_under_the_cap():
    from nmfsched.kernels import get_backend
    from nmfsched.solver import StochasticSolver

    class Checked(LineSearchScheduler):
        def search_step(self, trial, cap, n_batches):
            def checked(t):
                change, slope = trial(t)
                self.seen.append((t, cap, change, slope))
                return change, slope

            rate = super().search_step(checked, cap, n_batches)
            if rate > 0:
                t, _, change, slope = self.seen[-1]
                assert t == rate and change <= self.c * slope
            return rate

    rng = np.random.default_rng(4)
    X = rng.random((300, 5)) @ rng.random((5, 40)) + 0.1 * rng.random((300, 40))
    solver = StochasticSolver(
        X, rng.random((300, 5)), rng.random((5, 40)), backend=get_backend("cpu"), batch_size=32, w_sweeps=1, rng=rng
    )
    ls = Checked()
    ls.seen = []
    ls.reset(1.0)
    for _ in range(5):
        solver.sgd_epoch(1.95, search=ls)
    assert ls.seen and all(t <= cap for t, cap, _, _ in ls.seen)
    assert any(change > ls.c * slope for _, _, change, slope in ls.seen)  # it did backtrack


def test_every_registered_scheduler_roundtrips_and_stays_valid():
    names = set(schedulers.available())
    assert set(BUILT_IN) <= names
    rng = np.random.default_rng(0)
    for name in sorted(names):
        if name.startswith("test-"):
            continue
        s = schedulers.get(name)
        lrs = drive(s, 1.0, list(10 + rng.normal(size=30)), bound=1.5, cos=0.3, total_epochs=30)
        assert all(math.isfinite(x) and x >= 0 for x in lrs), name
        json.dumps(s.state_dict())


# -- in the estimator -------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_scheduler_drives_a_guarded_fit(name):
    from nmfsched import StochasticNMF

    rng = np.random.default_rng(1)
    X = rng.random((120, 4)) @ rng.random((4, 30)) + 0.05 * rng.random((120, 30))
    model = StochasticNMF(4, scheduler=name, batch_size=32, max_iter=15, tol=0, random_state=0).fit(X)
    cert, hist = model.stability_certificate_, model.history_
    assert cert["all_losses_finite"] and cert["descent"]
    assert np.all(hist["lr"] <= model.safety_factor * hist["lr_bound"] * (1 + 1e-12))
    assert model.scheduler_.last_epoch == 15
    n_batches = -(-120 // hist["batch_size"])  # per epoch: the batch may grow
    if name == "line_search":  # at least one trial step per minibatch, each epoch
        assert (hist["n_trials"] >= n_batches).all()
    else:
        assert (hist["n_trials"] == 0).all()


def test_solver_reports_the_cosine_of_successive_mean_gradients():
    from nmfsched.kernels import get_backend
    from nmfsched.solver import StochasticSolver

    rng = np.random.default_rng(2)
    X, W, H = rng.random((50, 12)), rng.random((50, 3)), rng.random((3, 12))
    solver = StochasticSolver(X, W, H, backend=get_backend("cpu"), batch_size=16, w_sweeps=1, rng=rng)
    solver.probe()
    assert math.isnan(solver.gradient_cosine())  # one pass: nothing to compare with
    g0 = (
        solver.H.T @ (solver.W_host().T @ solver.W_host()) - X.T @ solver.W_host()
    )  # probe: the full gradient
    solver.sgd_epoch(0.5)
    g1 = solver.statistics.mean_gradient.copy()
    expected = np.vdot(g0, g1) / np.linalg.norm(g0) / np.linalg.norm(g1)
    np.testing.assert_allclose(solver.gradient_cosine(), expected, rtol=1e-10)
