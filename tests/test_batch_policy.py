"""A scheduler that is a BatchPolicy shapes the batch growth: it sees the solver's proposal after
every epoch, its choice is run, checked, and the guard's bound is computed for it."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from nmfsched import StochasticNMF
from nmfsched.schedulers import BatchPolicy, BatchProposal, GreedyLR

X = load_digits().data  # 1797 rows


class Holding(GreedyLR):
    """GreedyLR that keeps the batch for ``hold`` epochs, then takes the solver's proposal."""

    def __init__(self, hold=3, **params):
        super().__init__(**params)
        self.hold = hold
        self.proposals = []
        self.observed_batches = []

    def next_batch_size(self, proposal):
        self.proposals.append(proposal)
        return proposal.batch_size if proposal.epoch < self.hold else proposal.proposed

    def step(self, obs):
        self.observed_batches.append(obs.batch_size)
        return super().step(obs)


def _fit(scheduler, **params):
    params = {"batch_size": 256, "max_iter": 8, "tol": 0, "random_state": 0, **params}
    return StochasticNMF(8, scheduler=scheduler, **params).fit(X)


def test_a_policy_holds_the_batch_then_takes_the_proposal():
    scheduler = Holding(hold=3)
    assert isinstance(scheduler, BatchPolicy)
    model = _fit(scheduler)
    batches = model.history_["batch_size"]
    assert batches[0] == batches[1] == batches[2] < batches[3]  # held after epochs 1 and 2
    fitted = model.scheduler_
    assert [p.epoch for p in fitted.proposals] == list(range(1, len(fitted.proposals) + 1))
    for p in fitted.proposals:
        assert p.n_samples == X.shape[0] and p.batch_size <= p.proposed <= p.n_samples
        assert p.grad_sq >= 0 and p.noise_sq >= 0
    assert fitted.observed_batches == list(batches)  # the scheduler is told the batch of each epoch


def test_a_policy_can_go_to_one_batch_and_the_bound_follows():
    class AllRows(GreedyLR):
        def next_batch_size(self, proposal):
            return proposal.n_samples

    model = _fit(AllRows())
    batches, bounds = model.history_["batch_size"], model.history_["lr_bound"]
    assert batches[0] < X.shape[0] and (batches[1:] == X.shape[0]).all()
    assert bounds[0] < 2 and np.allclose(bounds[1:], 2.0)  # one batch of every row: no noise, bound 2


@pytest.mark.parametrize("bad", [10, 10**6, 300.0, True, "512"])
def test_a_size_out_of_range_or_not_an_int_is_refused_with_its_name(bad):
    class Bad(GreedyLR):
        def next_batch_size(self, proposal):
            return bad

    with pytest.raises(ValueError, match=r"Bad\.next_batch_size returned .* after epoch 1; it must be an int "
                                         r"from the batch in force \(\d+ rows\) to the number of rows \(1797\)"):
        _fit(Bad())


def test_without_grow_batch_the_policy_is_not_asked():
    class Asked(GreedyLR):
        def next_batch_size(self, proposal):
            raise AssertionError("asked")

    model = _fit(Asked(), grow_batch=False)
    assert (model.history_["batch_size"] == model.history_["batch_size"][0]).all()


def test_the_default_schedulers_are_not_batch_policies():
    assert not isinstance(GreedyLR(), BatchPolicy)
    assert BatchProposal(1, 256, 512, 1797).proposed == 512


class Random(GreedyLR):
    def __init__(self, seed=0, **params):
        super().__init__(**params)
        self.seed = seed

    def next_batch_size(self, proposal):
        rng = np.random.default_rng(self.seed + proposal.epoch)
        return int(rng.integers(proposal.batch_size, proposal.n_samples + 1))


@pytest.mark.filterwarnings("ignore::nmfsched.stability.StabilityWarning")  # rates far above the bound, on purpose
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), lr=st.floats(0.05, 50.0))
def test_whatever_sizes_a_policy_picks_the_guard_holds(seed, lr):
    """The applied rate never exceeds the safety factor times the bound of its epoch, which
    is computed for the batch the policy chose, and the loss stays finite and below its start."""
    model = _fit(Random(seed=seed), learning_rate=lr, max_iter=6)
    h = model.history_
    assert (np.diff(h["batch_size"]) >= 0).all()
    assert (h["lr"] <= 0.9 * h["lr_bound"] * (1 + 1e-12)).all()
    cert = model.stability_certificate_
    assert cert["all_losses_finite"] and cert["descent"]
