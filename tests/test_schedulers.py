import math
import pickle

import pytest

from nmfsched import schedulers
from nmfsched.schedulers import ConstantScheduler, Observation, Scheduler, StepScheduler


def obs(epoch, loss=1.0):
    return Observation(epoch=epoch, loss=loss, rel_error=0.1, lr=1.0)


def run(scheduler, lr0, n):
    scheduler.reset(lr0)
    return [scheduler.step(obs(t + 1)) for t in range(n)]


def test_constant_keeps_rate():
    assert run(ConstantScheduler(), 0.7, 5) == [0.7] * 5


def test_step_decays_every_step_size_epochs():
    lrs = run(StepScheduler(step_size=3, gamma=0.5), 1.0, 7)
    # after epochs 1..7: decay once after epoch 3 and again after epoch 6
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_reset_restarts_schedule():
    s = StepScheduler(step_size=1, gamma=0.5)
    run(s, 1.0, 4)
    assert s.lr == 1.0 / 16
    s.reset(2.0)
    assert s.lr == 2.0 and s.last_epoch == 0


def test_state_dict_roundtrip_continues_identically():
    a = StepScheduler(step_size=2, gamma=0.3)
    run(a, 1.0, 3)
    state = a.state_dict()
    b = StepScheduler()
    b.load_state_dict(pickle.loads(pickle.dumps(state)))
    assert [a.step(obs(4 + i)) for i in range(4)] == [b.step(obs(4 + i)) for i in range(4)]
    assert b.step_size == 2 and b.gamma == 0.3


def test_state_dict_is_a_copy():
    s = StepScheduler()
    s.reset(1.0)
    d = s.state_dict()
    d["lr"] = 123.0
    assert s.lr == 1.0


def test_load_state_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys.*bogus"):
        StepScheduler().load_state_dict({"bogus": 1})


def test_step_before_reset_is_an_error():
    with pytest.raises(RuntimeError, match="before reset"):
        StepScheduler().step(obs(1))


@pytest.mark.parametrize("lr0", [0.0, -1.0, math.nan, math.inf])
def test_reset_rejects_bad_initial_rate(lr0):
    with pytest.raises(ValueError, match="initial learning rate"):
        ConstantScheduler().reset(lr0)


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(step_size=0), "step_size"),
        (dict(step_size=2.5), "step_size"),
        (dict(gamma=0.0), "gamma"),
        (dict(gamma=1.5), "gamma"),
    ],
)
def test_step_rejects_invalid_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        StepScheduler(**params)


def test_registry_builds_by_name():
    s = schedulers.get("step", step_size=4, gamma=0.9)
    assert isinstance(s, StepScheduler) and s.step_size == 4 and s.gamma == 0.9
    assert {"constant", "step"} <= set(schedulers.available())


def test_registry_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match=r"Unknown scheduler 'nope'; known schedulers: .*constant.*step"):
        schedulers.get("nope")


def test_registry_unknown_parameter_lists_accepted_ones():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) gama; it accepts: step_size, gamma"):
        schedulers.get("step", gama=0.5)


def test_register_custom_scheduler_and_invalid_output():
    @schedulers.register("test-halving")
    class Halving(Scheduler):
        def _next_lr(self, obs):
            return self.lr / 2

    assert run(schedulers.get("test-halving"), 1.0, 2) == [0.5, 0.25]

    @schedulers.register("test-broken")
    class Broken(Scheduler):
        def _next_lr(self, obs):
            return math.nan

    s = schedulers.get("test-broken")
    s.reset(1.0)
    with pytest.raises(ValueError, match="Broken proposed an invalid learning rate"):
        s.step(obs(1))


def test_register_rejects_name_clash_and_non_schedulers():
    with pytest.raises(ValueError, match="already registered"):
        schedulers.register("step")(type("Other", (Scheduler,), {}))
    with pytest.raises(TypeError):
        schedulers.register("x")(object)
