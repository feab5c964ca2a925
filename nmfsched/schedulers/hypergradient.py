"""Hypergradient descent on the global learning rate (Baydin et al., 2018)."""

import math

from ._checks import check_max_lr, check_real, upper_lr
from .base import Scheduler
from .registry import register


@register("hypergradient")
class HypergradientScheduler(Scheduler):
    """The multiplicative hypergradient rule of Baydin et al. (2018), per epoch.

    The derivative of the loss after a gradient step with respect to the rate is
    ``-<g_t, g_{t-1}>``; descending it multiplicatively (the scale-free form, which suits
    a dimensionless rate) gives::

        lr_{t+1} = lr_t * (1 + beta * cos(g_t, g_{t-1}))

    where ``g_t`` is epoch ``t``'s mean gradient of ``H`` (``Observation.grad_cos``):
    aligned successive gradients mean the steps were too short, opposed ones too long.

    Parameters
    ----------
    beta : float, default=0.2
        The hypergradient learning rate, in (0, 1).
    min_lr : float, default=1e-6
        Lower clamp (> 0).
    max_lr : float or "bound", default="bound"
        Upper clamp: the stability bound of the next epoch, and a number below it.
    """

    def __init__(self, beta=0.2, min_lr=1e-6, max_lr="bound"):
        super().__init__()
        owner = type(self).__name__
        self.beta = check_real(owner, "beta", beta, 0, 1, low_open=True, high_open=True)
        self.min_lr = check_real(owner, "min_lr", min_lr, 0, low_open=True)
        self.max_lr = check_max_lr(owner, max_lr)

    def _next_lr(self, obs):
        cos = obs.grad_cos if math.isfinite(obs.grad_cos) else 0.0
        return min(max(self.lr * (1.0 + self.beta * cos), self.min_lr), upper_lr(self.max_lr, obs))
