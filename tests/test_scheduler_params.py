"""Schedulers speak scikit-learn's parameter protocol: clone, set_params, grids, pipelines."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import Pipeline

from nmfsched import StochasticNMF, schedulers
from nmfsched.schedulers import (
    GreedyLR,
    MultiStepScheduler,
    Observation,
    SchedulerProtocol,
    StepScheduler,
    WarmupScheduler,
)

#: One non-default, valid value per scheduler: clone must keep it.
NON_DEFAULT = {
    "constant": {},
    "step": {"step_size": 3, "gamma": 0.5},
    "multistep": {"milestones": [2, 5], "gamma": 0.25},
    "exponential": {"gamma": 0.9},
    "cosine": {"t_max": 7, "eta_min": 0.01, "restarts": True, "t_mult": 2},
    "linear": {"t_max": 9, "end_lr": 0.05},
    "warmup": {"after": "step", "after_params": {"step_size": 2}, "warmup_epochs": 3},
    "plateau": {"factor": 0.2, "patience": 1, "threshold_mode": "abs"},
    "hypergradient": {"beta": 0.1, "max_lr": 1.5},
    "line_search": {"c": 0.2, "max_lr": 1.2},
    "greedy": {"factor": 0.3, "patience": 2, "window": 4, "max_lr": 1.7},
    "rl": {"policy": str(Path(__file__).parent / "data" / "tiny_policy.npz")},
}


def registered():
    """The names nmfsched registers itself (tests and the README register others)."""
    return [n for n in schedulers.available() if type(schedulers.get(n)).__module__.startswith("nmfsched.")]


def test_every_registered_scheduler_has_a_non_default_case():
    assert sorted(NON_DEFAULT) == registered()


@pytest.mark.parametrize("name", registered())
@pytest.mark.parametrize("non_default", [False, True])
def test_clone_round_trips_every_registered_scheduler(name, non_default):
    original = schedulers.get(name, **(NON_DEFAULT[name] if non_default else {}))
    copy = clone(original)
    assert type(copy) is type(original) and copy is not original
    assert copy.get_params(deep=False).keys() == original.get_params(deep=False).keys()
    assert repr(copy) == repr(original)
    assert isinstance(copy, SchedulerProtocol)
    # and inside the estimator, as GridSearchCV and cross_validate clone it
    model = clone(StochasticNMF(3, scheduler=original))
    assert repr(model.scheduler) == repr(original) and model.scheduler is not original


@pytest.mark.parametrize("name", registered())
def test_a_json_state_round_trip_keeps_the_scheduler_clonable(name):
    s = schedulers.get(name, **NON_DEFAULT[name])
    s.reset(0.5, total_epochs=20)
    for t in range(4):
        s.step(Observation(epoch=t + 1, loss=10.0 - t, rel_error=0.1, lr=s.lr, lr_bound=1.5, grad_cos=0.2))
    restored = schedulers.get(name)
    restored.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert repr(clone(restored)) == repr(s)
    obs = Observation(epoch=5, loss=6.0, rel_error=0.1, lr=s.lr, lr_bound=1.5, grad_cos=0.2)
    assert restored.step(obs) == s.step(obs)


@pytest.mark.parametrize("name", registered())
def test_no_scheduler_takes_a_bool_for_a_number(name):
    """``StepScheduler(gamma=True)`` used to pass; every numeric parameter refuses bools."""
    defaults = schedulers.get(name).get_params(deep=False)
    numeric = [k for k, v in defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for key in numeric:
        with pytest.raises(ValueError, match=key):
            schedulers.get(name, **{key: True})


def test_set_params_checks_values_as_the_constructor_does():
    s = GreedyLR()
    with pytest.raises(ValueError, match="factor"):
        s.set_params(factor=5)
    assert s.factor == 0.5  # a refused value changes nothing
    with pytest.raises(ValueError, match=r"Invalid parameter 'gama' for StepScheduler; valid parameters: step_size, gamma"):
        StepScheduler().set_params(gama=0.5)
    assert StepScheduler().set_params(step_size=np.int64(4)).step_size == 4
    assert type(StepScheduler().set_params(step_size=np.int64(4)).step_size) is int  # canonical: clone keeps it


def test_set_params_keeps_the_run_state():
    s = GreedyLR(factor=0.5)
    s.reset(0.4)
    s.step(Observation(epoch=1, loss=1.0, rel_error=0.1, lr=0.4))
    s.set_params(factor=0.25)
    assert (s.factor, s.lr, s.last_epoch, s.lr0) == (0.25, 0.4 / 0.5, 1, 0.4)


def test_nested_parameters_of_a_scheduler_inside_a_scheduler():
    w = WarmupScheduler(after=StepScheduler(step_size=4))
    params = w.get_params()
    assert params["after__step_size"] == 4 and "after__gamma" in params
    assert "after__step_size" not in w.get_params(deep=False)
    w.set_params(after__gamma=0.5)
    assert w.after.gamma == 0.5
    copy = clone(w)
    assert copy.after is not w.after and copy.get_params()["after__gamma"] == 0.5
    with pytest.raises(ValueError, match="gamma"):
        w.set_params(after__gamma=2.0)
    # the run works on a clone of `after`: a run never changes the instance it was given
    w.reset(1.0, total_epochs=10)
    for t in range(8):
        w.step(Observation(epoch=t + 1, loss=1.0, rel_error=0.1, lr=w.lr))
    assert w.after.last_epoch == 0 and w.inner.last_epoch > 0


def test_multistep_keeps_milestones_as_one_canonical_tuple():
    s = MultiStepScheduler(milestones=[3, 5])
    assert s.milestones == (3, 5)
    same = (3, 5)
    assert MultiStepScheduler(milestones=same).milestones is same  # kept as given: clone's check


def test_estimator_set_params_reaches_the_scheduler_instance():
    model = StochasticNMF(3, scheduler=GreedyLR())
    model.set_params(scheduler__factor=0.25, scheduler__patience=1)
    assert model.get_params()["scheduler__factor"] == 0.25 and model.scheduler.patience == 1


def _digits():
    X, y = load_digits(return_X_y=True)
    return X[:360], y[:360]


def fitted_factor(estimator, X, y=None):
    """A scorer that reads the fitted scheduler's factor: the grid must pick the largest."""
    scheduler = estimator.named_steps["nmf"].scheduler_
    return getattr(scheduler, "factor", -1.0)


def test_grid_search_over_a_pipeline_with_a_scheduler_instance_and_names():
    X, y = _digits()
    instance = GreedyLR(factor=0.5)
    pipe = Pipeline([
        ("nmf", StochasticNMF(8, scheduler=instance, max_iter=3, tol=0, random_state=0)),
        ("clf", LogisticRegression(max_iter=300)),
    ])
    grid = [
        {"nmf__scheduler__factor": [0.2, 0.7, 0.4]},
        {"nmf__scheduler": ["step", "constant"]},
    ]
    search = GridSearchCV(pipe, grid, cv=2, scoring=fitted_factor).fit(X, y)
    assert len(search.cv_results_["params"]) == 5
    assert search.best_params_ == {"nmf__scheduler__factor": 0.7}
    best = search.best_estimator_.named_steps["nmf"]
    assert isinstance(best.scheduler_, GreedyLR) and best.scheduler_.factor == 0.7
    assert best.scheduler_.last_epoch == 3
    names = [type(p.get("nmf__scheduler")).__name__ for p in search.cv_results_["params"]]
    assert names.count("str") == 2
    # the instance the user built is never touched: not refitted, not re-parametrised
    assert instance.factor == 0.5 and instance.last_epoch == 0 and math.isnan(instance.lr)
    # and the pipeline predicts with the refitted best candidate
    assert search.best_estimator_.predict(X[:5]).shape == (5,)


def test_cross_validate_clones_a_scheduler_instance_per_fold():
    X, y = _digits()
    pipe = Pipeline([
        ("nmf", StochasticNMF(6, scheduler=StepScheduler(step_size=1, gamma=0.5), max_iter=2, tol=0)),
        ("clf", LogisticRegression(max_iter=300)),
    ])
    out = cross_validate(pipe, X, y, cv=3, return_estimator=True)
    fitted = [est.named_steps["nmf"].scheduler_ for est in out["estimator"]]
    assert len({id(s) for s in fitted}) == 3 and all(s.last_epoch == 2 for s in fitted)
    assert all(np.isfinite(out["test_score"]))


class HalvingByHand:
    """A scheduler written without the base class: the members of SchedulerProtocol only."""

    def __init__(self):
        self.lr = float("nan")

    def reset(self, lr0, total_epochs=None):
        self.lr = lr0

    def step(self, obs):
        self.lr = self.lr / 2
        return self.lr

    def state_dict(self):
        return {"lr": self.lr}

    def load_state_dict(self, state):
        self.lr = state["lr"]


def test_the_estimator_takes_exactly_what_the_protocol_declares():
    X = load_digits().data[:200]
    model = StochasticNMF(4, scheduler=HalvingByHand(), learning_rate=0.8, max_iter=3, tol=0, random_state=0).fit(X)
    np.testing.assert_allclose(model.history_["lr_proposed"], [0.8, 0.4, 0.2])
    assert isinstance(clone(model).scheduler, HalvingByHand)  # no get_params: clone deep-copies it

    class NoLearningRate(HalvingByHand):
        def __init__(self):
            pass  # no `lr`: the solver reads it before the first epoch

    for bad in (NoLearningRate(), object()):
        with pytest.raises(ValueError, match="scheduler.*SchedulerProtocol"):
            StochasticNMF(4, scheduler=bad).fit(X)
