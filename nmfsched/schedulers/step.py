"""Step decay: multiply the learning rate by ``gamma`` every ``step_size`` epochs."""

from ._checks import check_int, check_real
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
        owner = type(self).__name__
        self.step_size = check_int(owner, "step_size", step_size, 1)
        self.gamma = check_real(owner, "gamma", gamma, 0, 1, low_open=True)

    def _next_lr(self, obs):
        return self.lr0 * self.gamma ** (self.last_epoch // self.step_size)
