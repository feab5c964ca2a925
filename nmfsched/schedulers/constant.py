"""The constant schedule: the initial learning rate for every epoch."""

from .base import Scheduler
from .registry import register


@register("constant")
class ConstantScheduler(Scheduler):
    """Keep the learning rate at its initial value."""

    def _next_lr(self, obs):
        return self.lr0
