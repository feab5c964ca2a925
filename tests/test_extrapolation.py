"""Extrapolation with restarts in the one-batch epochs (nmfsched.extrapolation)."""

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import low_rank
from sklearn.datasets import load_digits

from nmfsched import StochasticNMF
from nmfsched.extrapolation import Extrapolation


class OneBatchSolver:
    """The little of a solver that Extrapolation touches: ``Ht``, snapshots and a refresh
    whose loss the test sets."""

    def __init__(self, Ht, full_batch=True):
        self.Ht = np.array(Ht, dtype=float)
        self.full_batch = full_batch
        self.refresh_sweeps = 4
        self.refresh_loss = None

    def snapshot(self):
        return self.Ht.copy()

    def restore(self, snapshot):
        self.Ht[...] = snapshot

    def refresh_w(self, max_sweeps):
        return self.refresh_loss


def one_batch_solver(Ht, full_batch=True):
    return OneBatchSolver(Ht, full_batch)


def test_h_moves_on_along_its_last_displacement_and_stays_nonnegative():
    ex = Extrapolation(beta=0.5)
    solver = one_batch_solver([[1.0, 2.0], [0.2, 1.0]])
    ex.extrapolate(solver)  # the first one-batch epoch only remembers its H
    np.testing.assert_array_equal(solver.Ht, [[1.0, 2.0], [0.2, 1.0]])
    ex.observe(10.0, rejected=False)
    solver.Ht = np.array([[2.0, 2.0], [0.0, 1.5]])  # the next epoch's step
    ex.extrapolate(solver)
    # 2 + 0.5 (2 - 1), 2, max(0, 0 - 0.5 * 0.2), 1.5 + 0.5 * 0.5
    np.testing.assert_allclose(solver.Ht, [[2.5, 2.0], [0.0, 1.75]])


def test_nan_stays_visible():
    ex = Extrapolation()
    solver = one_batch_solver([[1.0]])
    ex.extrapolate(solver)
    solver.Ht = np.array([[np.nan]])
    ex.extrapolate(solver)
    assert np.isnan(solver.Ht[0, 0])


def test_minibatch_epochs_do_not_extrapolate_and_forget_the_last_h():
    ex = Extrapolation()
    solver = one_batch_solver([[1.0]])
    ex.extrapolate(solver)
    ex.extrapolate(one_batch_solver([[5.0]], full_batch=False))
    solver.Ht = np.array([[2.0]])
    ex.extrapolate(solver)  # no displacement known: left as it is
    assert solver.Ht[0, 0] == 2.0


def epoch(ex, solver, stepped, loss, rejected=False):
    """One one-batch epoch: the H step gave ``stepped``; the refresh ends at ``loss``."""
    solver.Ht = np.array(stepped, dtype=float)
    ex.extrapolate(solver)
    loss = ex.settle(solver, loss)
    ex.observe(loss, rejected)
    return loss


def test_beta_grows_after_progress_and_a_rise_restarts_from_the_plain_epoch():
    ex = Extrapolation(beta=0.2, growth=1.1, shrink=2.0)
    solver = one_batch_solver([[1.0]])
    epoch(ex, solver, [[1.0]], 10.0)
    epoch(ex, solver, [[2.0]], 9.0)  # progress
    assert solver.Ht[0, 0] == pytest.approx(2.2)
    assert ex.beta == pytest.approx(0.22)
    solver.refresh_loss = 8.5  # what the plain epoch gives
    assert epoch(ex, solver, [[3.0]], 9.5) == 8.5  # the extrapolated epoch rose: restart
    assert solver.Ht[0, 0] == 3.0  # the plain step, not 3 + 0.22 (3 - 2)
    assert ex.beta == pytest.approx(0.11) and ex.beta_max == pytest.approx(0.22)
    assert ex.prev_loss == 8.5
    epoch(ex, solver, [[4.0]], 8.4, rejected=True)  # undone by the guard: no displacement to go on from
    assert ex.beta == pytest.approx(0.055) and ex.prev_loss == 8.5
    epoch(ex, solver, [[5.0]], 8.0)
    assert solver.Ht[0, 0] == 5.0


def test_state_dict_round_trip_continues_identically():
    a = Extrapolation()
    solver = one_batch_solver([[1.0, 0.5]])
    a.extrapolate(solver)
    a.observe(3.0, rejected=False)
    b = Extrapolation()
    host = SimpleNamespace(asarray=np.asarray, to_host=np.asarray)
    scalars, h_prev = a.state_dict(host)
    b.load_state_dict(scalars, h_prev, host)
    s1, s2 = one_batch_solver([[2.0, 0.1]]), one_batch_solver([[2.0, 0.1]])
    a.extrapolate(s1)
    b.extrapolate(s2)
    np.testing.assert_array_equal(s1.Ht, s2.Ht)
    assert a.state_dict(host)[0] == b.state_dict(host)[0]


def test_one_batch_fits_differ_with_it_and_end_lower_on_digits():
    X = load_digits().data
    params = dict(random_state=0, tol=0, max_iter=100)
    plain = StochasticNMF(16, extrapolate=False, **params).fit(X)
    moved = StochasticNMF(16, **params).fit(X)
    assert np.mean(moved.history_["batch_size"] == X.shape[0]) > 0.9  # the batch grows to every row early
    assert not np.allclose(moved.history_["loss"], plain.history_["loss"])
    # measured: 0.25733 against 0.25759 after 100 epochs
    assert moved.history_["rel_error"][-1] < plain.history_["rel_error"][-1]
    assert np.all(moved.history_["loss"] <= moved.stability_certificate_["initial_loss"])


def test_minibatch_fits_are_unchanged_by_it():
    X = low_rank(300, 40, 4, noise=0.05)
    params = dict(random_state=0, tol=0, max_iter=3, batch_size=50, grow_batch=False)
    plain = StochasticNMF(4, extrapolate=False, **params).fit(X)
    moved = StochasticNMF(4, **params).fit(X)
    np.testing.assert_array_equal(moved.history_["loss"], plain.history_["loss"])


def test_extrapolate_must_be_a_boolean():
    with pytest.raises(ValueError, match="extrapolate"):
        StochasticNMF(2, extrapolate="yes").fit(low_rank(20, 10, 2))
