"""Stochastic Armijo line search on the minibatch loss (Vaswani et al., 2019)."""

import math

from ..theory import MAX_LR_BOUND
from ._checks import check_int, check_max_lr, check_real, upper_lr
from .base import Scheduler
from .registry import register


@register("line_search")
class LineSearchScheduler(Scheduler):
    """Backtrack each minibatch's rate until the minibatch loss decreases enough (SLS).

    A :class:`~nmfsched.schedulers.MinibatchSearch`: the solver hands every minibatch to
    :meth:`search_step`.

    For every minibatch ``B`` the solver offers trial ``H`` steps; starting from the
    previous minibatch's accepted rate times ``growth ** (1 / n_batches)`` (the SLS reset
    that lets the rate grow by ``growth`` per epoch), capped at the epoch's ceiling, the
    rate is multiplied by ``backtrack`` until the projected Armijo condition holds::

        f_B(H_t) - f_B(H) <= c * <grad f_B(H), H_t - H>

    (for an unconstrained step this is SLS's ``f_B(w - t g) <= f_B(w) - c t ||g||^2``).
    When ``max_backtracks`` tries all fail, ``H`` is left unchanged for that minibatch.
    Every trial costs one extra ``H`` step on a copy; the loss change is exact, from the
    minibatch Gram matrix, without another pass over ``X_B``.

    The epoch-level rate (``lr``, what the guard caps) is the ceiling of the search:
    the stability bound of the coming epoch, or ``max_lr`` below it (before a bound is
    known: 2, the largest value it takes, or ``max_lr``). ``history_["lr"]`` records the rate the
    minibatches actually used, averaged over rows.

    Parameters
    ----------
    c : float, default=0.1
        Armijo constant, in (0, 1).
    backtrack : float, default=0.9
        Factor applied to the rate after a failed trial, in (0, 1).
    growth : float, default=2.0
        Growth of the starting rate per epoch (``>= 1``; 1 never grows).
    max_backtracks : int, default=30
        Failed trials after which a minibatch's ``H`` step is skipped.
    max_lr : float or "bound", default="bound"
        The ceiling of the search: the bound, and a number below it.

    References
    ----------
    S. Vaswani, A. Mishkin, I. Laradji, M. Schmidt, G. Gidel, S. Lacoste-Julien. Painless
    stochastic gradient: interpolation, line-search, and convergence rates. NeurIPS 2019.
    """

    def __init__(self, c=0.1, backtrack=0.9, growth=2.0, max_backtracks=30, max_lr="bound"):
        super().__init__()
        owner = type(self).__name__
        self.c = check_real(owner, "c", c, 0, 1, low_open=True, high_open=True)
        self.backtrack = check_real(owner, "backtrack", backtrack, 0, 1, low_open=True, high_open=True)
        self.growth = check_real(owner, "growth", growth, 1)
        self.max_backtracks = check_int(owner, "max_backtracks", max_backtracks, 0)
        self.max_lr = check_max_lr(owner, max_lr)
        self.batch_lr = math.nan

    def _reset(self):
        self.batch_lr = self.lr0
        # before any bound is reported, the ceiling is the largest value the bound takes
        self.lr = MAX_LR_BOUND if self.max_lr == "bound" else self.max_lr

    def search_step(self, trial, cap, n_batches):
        """The rate for one minibatch, in ``[0, cap]``; 0 when every trial failed.

        ``trial(t)`` returns ``(change, slope)`` of the step at rate ``t``: the minibatch
        loss change and ``<grad f_B, step>``.
        """
        if math.isnan(self.lr0):
            raise RuntimeError(f"{type(self).__name__}.search_step() called before reset(lr0).")
        rate = min(self.batch_lr * self.growth ** (1.0 / n_batches), cap)
        if rate <= 0.0:
            return 0.0
        for _ in range(self.max_backtracks + 1):
            change, slope = trial(rate)
            if change <= self.c * slope:
                self.batch_lr = rate
                return rate
            rate *= self.backtrack
        self.batch_lr = rate  # start the next minibatch where this search gave up
        return 0.0

    def _next_lr(self, obs):
        ceiling = upper_lr(self.max_lr, obs)
        return ceiling if math.isfinite(ceiling) else self.lr
