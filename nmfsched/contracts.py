"""The epoch loop's contracts: what it tells a scheduler, and what it needs of one.

They live here, below the loop and the schedulers that both use them: :class:`Observation`
is what the loop reports after every epoch, :class:`SchedulerProtocol` everything the loop and
the estimator rely on, and two optional extensions: :class:`MinibatchSearch` (a scheduler that
picks each minibatch's rate itself) and :class:`BatchPolicy` (one that shapes the batch growth,
told of it by a :class:`BatchProposal`). :mod:`nmfsched.schedulers` re-exports all five.
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
    batch_size : int
        Rows per minibatch during the epoch (0 where not reported).
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
    batch_size: int = 0


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


@dataclass(frozen=True)
class BatchProposal:
    """The batch growth the solver proposes after an epoch (see :class:`BatchPolicy`).

    Attributes
    ----------
    epoch : int
        Epochs completed.
    batch_size : int
        Rows per minibatch during the epoch just run.
    proposed : int
        The rows the solver's rule picks for the next epoch (the norm test, the twofold
        floor below 8 192 rows, one batch where it pays): from ``batch_size`` to ``n_samples``.
    n_samples : int
        Rows of ``X``: a batch of this many is one batch of every row (no gradient noise).
    grad_sq, noise_sq : float
        The epoch's squared mean gradient of ``H`` and its minibatch variance at ``batch_size``.
    """

    epoch: int
    batch_size: int
    proposed: int
    n_samples: int
    grad_sq: float = math.nan
    noise_sq: float = math.nan


@runtime_checkable
class BatchPolicy(Protocol):
    """A scheduler that also shapes the batch growth (the solver detects this method).

    With ``grow_batch=True``, after every epoch that did not already use every row, the
    solver calls ``next_batch_size(proposal)`` and runs the next epoch on that many rows per
    minibatch (the rows split into batches that differ by at most one). The stability bound
    of the next epoch is computed for the size chosen, so the guard stays in force whatever
    the policy picks.
    """

    def next_batch_size(self, proposal: BatchProposal) -> int:
        """Return the rows per minibatch of the next epoch: an int from ``proposal.batch_size``
        (the batch never shrinks) to ``proposal.n_samples``."""
