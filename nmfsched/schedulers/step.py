"""Step decay: multiply the learning rate by ``gamma`` every ``step_size`` epochs."""

import math
from numbers import Integral

from .base import Scheduler
from .registry import register


@register("step")
class StepScheduler(Scheduler):
    """Step decay, as ``torch.optim.lr_scheduler.StepLR``.

    After epoch ``t`` (counting from 1) the learning rate is
    ``lr0 * gamma ** (t // step_size)``.

    Parameters
    ----------
    step_size : int, default=8
        Epochs between decays (>= 1).
    gamma : float, default=0.7
        Multiplicative decay, in (0, 1].
    """

    def __init__(self, step_size=8, gamma=0.7):
        super().__init__()
        if isinstance(step_size, bool) or not isinstance(step_size, Integral) or step_size < 1:
            raise ValueError(f"StepScheduler: step_size must be an integer >= 1, got {step_size!r}.")
        if not (isinstance(gamma, (int, float)) and 0 < gamma <= 1 and math.isfinite(gamma)):
            raise ValueError(f"StepScheduler: gamma must be in (0, 1], got {gamma!r}.")
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def _next_lr(self, obs):
        return self.lr0 * self.gamma ** (self.last_epoch // self.step_size)
