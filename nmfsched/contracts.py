"""The epoch loop's contracts: what it tells a scheduler, and what it needs of one.

They live here, below the loop and the schedulers that both use them: :class:`Observation`
is what the loop reports after every epoch, :class:`SchedulerProtocol` everything the loop and
the estimator rely on, and :class:`MinibatchSearch` the one optional extension (a scheduler
that picks each minibatch's rate itself). :mod:`nmfsched.schedulers` re-exports all three.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Observation:
    """What the solver reports to the scheduler after every epoch.

    Attributes
    ----------
    epoch : int
        Epochs completed (1 after the first).
    loss : float
        ``1/2 ||X - W H||_F^2`` at the end of the epoch.
    rel_error : float
        ``||X - W H||_F / ||X||_F``.
    lr : float
        The (dimensionless) learning rate applied during the epoch.
    lr_bound : float
        The stability bound for the next epoch (NaN when not computed); the solver
        never applies more than a safety factor times it.
    grad_sq : float
        Squared norm of the epoch-mean projected gradient of ``H``.
    grad_cos : float
        Cosine between this epoch's mean gradient of ``H`` and the previous one's (the
        signal of hypergradient descent); NaN when either is zero.
    noise_sq : float
        Variance of the minibatch gradient of ``H`` around that mean.
    seconds : float
        Wall time since the fit started.
    rejected : bool
        The guard undid the epoch (it ended above the loss the run started from);
        ``loss`` is then the restored one.
    """

    epoch: int
    loss: float
    rel_error: float
    lr: float
    lr_bound: float = math.nan
    grad_sq: float = math.nan
    grad_cos: float = math.nan
    noise_sq: float = math.nan
    seconds: float = math.nan
    rejected: bool = False


@runtime_checkable
class SchedulerProtocol(Protocol):
    """What the solver needs of a scheduler (any object with these members will do).

    The solver calls ``reset`` once per run, reads ``lr`` for the first epoch's proposal,
    and calls ``step`` after every epoch; the estimator keeps the object and its
    ``state_dict`` to continue a run (``partial_fit``). Rates are dimensionless and may be
    0 (``H`` holds still for an epoch); whatever is proposed, the solver applies at most
    its stability cap.
    """

    lr: float  #: The current proposal: the rate for the next epoch.

    def reset(self, lr0: float, total_epochs: int | None = None) -> None:
        """Start a run from ``lr0``; ``total_epochs`` is its epoch budget (None: unknown)."""

    def step(self, obs: Observation) -> float:
        """Record one epoch's :class:`Observation`; return (and set ``lr`` to) the next rate."""

    def state_dict(self) -> dict:
        """The state as a JSON-safe dict, enough to continue the run after ``load_state_dict``."""

    def load_state_dict(self, state: dict) -> None:
        """Restore a state produced by ``state_dict``."""


@runtime_checkable
class MinibatchSearch(Protocol):
    """A scheduler that also picks each minibatch's rate (the solver detects this method).

    For every minibatch the solver calls ``search_step(trial, cap, n_batches)``, where
    ``trial(t)`` takes the ``H`` step at rate ``t`` on a copy and returns
    ``(change, slope)``: the exact change of the minibatch loss and
    ``<grad f_B, H_t - H>``. The returned rate, in ``[0, cap]``, is applied; ``cap`` is the
    epoch's capped rate and ``n_batches`` the number of minibatches in the epoch.
    """

    def search_step(self, trial: Callable[[float], tuple[float, float]], cap: float, n_batches: int) -> float:
        """The rate for one minibatch, in ``[0, cap]``."""
