"""Reduce the learning rate when the loss stops improving (ReduceLROnPlateau)."""

from ._checks import check_choice, check_int, check_real, is_better
from .base import Scheduler
from .registry import register


@register("plateau")
class PlateauScheduler(Scheduler):
    """Reduce-only: the semantics and parameter names of ``torch``'s ``ReduceLROnPlateau`` (mode "min").

    An epoch whose loss is not better than the best by the threshold is *bad*; after more
    than ``patience`` bad epochs in a row the rate is multiplied by ``factor`` (not below
    ``min_lr``; a change smaller than ``eps`` is skipped), and the next ``cooldown`` epochs
    count as good. The defaults are shorter than torch's (factor 0.1, patience 10)
    because an NMF epoch is a full pass and runs last tens of epochs, not thousands of steps.

    Parameters
    ----------
    factor : float, default=0.5
        In (0, 1).
    patience : int, default=3
    threshold : float, default=1e-4
    threshold_mode : {"rel", "abs"}, default="rel"
    cooldown : int, default=0
    min_lr : float, default=0.0
    eps : float, default=1e-8
    """

    def __init__(
        self, factor=0.5, patience=3, threshold=1e-4, threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8
    ):
        super().__init__()
        owner = type(self).__name__
        self.factor = check_real(owner, "factor", factor, 0, 1, low_open=True, high_open=True)
        self.patience = check_int(owner, "patience", patience, 0)
        self.threshold = check_real(owner, "threshold", threshold, 0)
        self.threshold_mode = check_choice(owner, "threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = check_int(owner, "cooldown", cooldown, 0)
        self.min_lr = check_real(owner, "min_lr", min_lr, 0)
        self.eps = check_real(owner, "eps", eps, 0)
        self._reset()

    def _reset(self):
        self.best = float("inf")
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _next_lr(self, obs):
        if is_better(float(obs.loss), self.best, self.threshold, self.threshold_mode):
            self.best = float(obs.loss)
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        lr = self.lr
        if self.num_bad_epochs > self.patience:
            reduced = max(lr * self.factor, self.min_lr)
            if lr - reduced > self.eps:
                lr = reduced
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return lr
