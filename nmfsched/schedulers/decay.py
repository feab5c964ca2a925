"""Fixed decay schedules: multistep, exponential, cosine (with optional restarts), linear.

Each follows its ``torch.optim.lr_scheduler`` namesake; the rate after epoch ``t``
(counting from 1) is the rate of epoch ``t + 1``.
"""

import math

from ._checks import check_bool, check_increasing_ints, check_int, check_real
from .base import Scheduler
from .registry import register


@register("multistep")
class MultiStepScheduler(Scheduler):
    """Multiply the rate by ``gamma`` after each epoch in ``milestones`` (as ``MultiStepLR``).

    Parameters
    ----------
    milestones : sequence of int, default=(30, 60, 90)
        Increasing epoch numbers (>= 1); kept as a tuple.
    gamma : float, default=0.5
        In (0, 1].
    """

    def __init__(self, milestones=(30, 60, 90), gamma=0.5):
        super().__init__()
        owner = type(self).__name__
        self.milestones = check_increasing_ints(owner, "milestones", milestones, 1)
        self.gamma = check_real(owner, "gamma", gamma, 0, 1, low_open=True)

    def _next_lr(self, obs):
        passed = sum(1 for m in self.milestones if m <= self.last_epoch)
        return self.lr0 * self.gamma**passed


@register("exponential")
class ExponentialScheduler(Scheduler):
    """Multiply the rate by ``gamma`` after every epoch (as ``ExponentialLR``).

    Parameters
    ----------
    gamma : float, default=0.97
        In (0, 1].
    """

    def __init__(self, gamma=0.97):
        super().__init__()
        self.gamma = check_real(type(self).__name__, "gamma", gamma, 0, 1, low_open=True)

    def _next_lr(self, obs):
        return self.lr0 * self.gamma**self.last_epoch


def _horizon(scheduler, t_max):
    if t_max is not None:
        return t_max
    if scheduler.total_epochs is None:
        raise ValueError(
            f"{type(scheduler).__name__}: t_max is None and the run gave no total_epochs; "
            f"pass t_max or reset(lr0, total_epochs=...)."
        )
    return scheduler.total_epochs


@register("cosine")
class CosineScheduler(Scheduler):
    """Cosine annealing from the initial rate to ``eta_min`` (as ``CosineAnnealingLR``).

    After ``t`` epochs of a period of length ``T`` the rate is
    ``eta_min + (lr0 - eta_min) * (1 + cos(pi * t / T)) / 2``. Without restarts the rate
    stays at ``eta_min`` after the period (torch's closed form would rise again). With
    ``restarts`` it jumps back to ``lr0`` and the next period is ``t_mult`` times longer
    (as ``CosineAnnealingWarmRestarts`` with ``T_0 = t_max``).

    Parameters
    ----------
    t_max : int, default=None
        Period in epochs; None: the run's ``total_epochs``.
    eta_min : float, default=0.0
        The rate at the end of a period (>= 0).
    restarts : bool, default=False
    t_mult : int, default=1
        Growth factor of the period at each restart (>= 1).
    """

    def __init__(self, t_max=None, eta_min=0.0, restarts=False, t_mult=1):
        super().__init__()
        owner = type(self).__name__
        self.t_max = None if t_max is None else check_int(owner, "t_max", t_max, 1)
        self.eta_min = check_real(owner, "eta_min", eta_min, 0)
        self.restarts = check_bool(owner, "restarts", restarts)
        self.t_mult = check_int(owner, "t_mult", t_mult, 1)

    def _reset(self):
        _horizon(self, self.t_max)  # fail at the start of the run, not after its first epoch
        if self.eta_min > self.lr0:
            raise ValueError(
                f"{type(self).__name__}: eta_min={self.eta_min!r} exceeds the initial rate {self.lr0!r}."
            )

    def _next_lr(self, obs):
        period, t = _horizon(self, self.t_max), self.last_epoch
        if self.restarts:
            while t >= period:
                t -= period
                period *= self.t_mult
        elif t >= period:
            return self.eta_min
        return self.eta_min + (self.lr0 - self.eta_min) * (1 + math.cos(math.pi * t / period)) / 2


@register("linear")
class LinearScheduler(Scheduler):
    """Linear decay from the initial rate to ``end_lr`` over ``t_max`` epochs, then constant.

    The schedule "When, Why and How Much?" (Defazio et al., 2023) recommends, with
    ``end_lr = 0``: after ``t`` epochs the rate is ``lr0 + (end_lr - lr0) * min(t, T) / T``.

    Parameters
    ----------
    t_max : int, default=None
        Length of the decay; None: the run's ``total_epochs``.
    end_lr : float, default=0.0
        The rate reached at ``t_max`` (>= 0).
    """

    def __init__(self, t_max=None, end_lr=0.0):
        super().__init__()
        owner = type(self).__name__
        self.t_max = None if t_max is None else check_int(owner, "t_max", t_max, 1)
        self.end_lr = check_real(owner, "end_lr", end_lr, 0)

    def _reset(self):
        _horizon(self, self.t_max)

    def _next_lr(self, obs):
        horizon = _horizon(self, self.t_max)
        done = min(self.last_epoch, horizon) / horizon
        # a convex combination: never below 0 by rounding, exactly end_lr at the end
        return (1.0 - done) * self.lr0 + done * self.end_lr
