"""The epoch loop: guard the rate, run the epoch, record it, ask the scheduler, decide to stop.

:func:`run_epochs` drives a :class:`~nmfsched.solver.StochasticSolver` for the estimator
(and for experiments that build their own solver and guard). Each epoch is one
:class:`EpochRecord`; the history row and the scheduler's
:class:`~nmfsched.contracts.Observation` are both read from it.
"""

import math
import time
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import numpy as np

from . import objective
from .contracts import BatchPolicy, MinibatchSearch, Observation
from .theory import lr_upper_bound


@dataclass(frozen=True)
class EpochRecord:
    """Everything known about one finished epoch."""

    epoch: int  #: epochs completed, counting from 1
    seconds: float  #: wall time since the fit started
    loss: float  #: ``1/2 ||X - W H||^2`` at the end (the restored loss when rejected)
    rel_error: float  #: ``||X - W H|| / ||X||``
    lr: float  #: the rate applied (mean over rows for a per-minibatch search)
    lr_proposed: float  #: what the scheduler proposed
    lr_bound: float  #: the stability bound in force during the epoch
    grad_sq: float  #: squared projected epoch-mean gradient of ``H``
    noise_sq: float  #: minibatch gradient variance around that mean
    h_step_min: float  #: smallest absolute ``H`` step ``lr / L_j`` over live components
    h_step_max: float  #: largest one
    n_clipped: int  #: ``H`` coordinate steps that hit their clipping limit
    n_trials: int  #: trial ``H`` steps of a per-minibatch search
    batch_size: int  #: rows per minibatch during the epoch
    rejected: bool  #: the epoch ended above the start and was undone
    # told to the scheduler, not kept in history_
    next_lr_bound: float = field(metadata={"history": False})  #: the bound for the next epoch
    grad_cos: float = field(metadata={"history": False})  #: cosine of this and the last epoch's mean gradients

    def observation(self):
        """What the scheduler is told (its ``lr_bound`` is the next epoch's bound)."""
        return Observation(
            epoch=self.epoch,
            loss=self.loss,
            rel_error=self.rel_error,
            lr=self.lr,
            lr_bound=self.next_lr_bound,
            grad_sq=self.grad_sq,
            grad_cos=self.grad_cos,
            noise_sq=self.noise_sq,
            seconds=self.seconds,
            rejected=self.rejected,
            batch_size=self.batch_size,
        )


#: The per-epoch entries of ``history_``.
HISTORY_KEYS = tuple(f.name for f in fields(EpochRecord) if f.metadata.get("history", True))


class History:
    """Per-epoch records, returned as a dict of equal-length NumPy arrays."""

    def __init__(self, initial=None):
        self._rows = {key: [] for key in HISTORY_KEYS}
        if initial:
            for key in HISTORY_KEYS:
                self._rows[key].extend(np.asarray(initial[key]).tolist())

    def append(self, record):
        """Add an :class:`EpochRecord`."""
        for key in HISTORY_KEYS:
            self._rows[key].append(getattr(record, key))

    def __len__(self):
        return len(self._rows["epoch"])

    def losses(self):
        return self._rows["loss"]

    def last(self, key):
        """The last epoch's ``key`` entry (the history must not be empty)."""
        return self._rows[key][-1]

    def as_arrays(self):
        out = {key: np.asarray(values, dtype=np.float64) for key, values in self._rows.items()}
        out["epoch"] = out["epoch"].astype(np.int64)
        for key in ("n_clipped", "n_trials", "batch_size"):
            out[key] = out[key].astype(np.int64)
        out["rejected"] = out["rejected"].astype(bool)
        return out


#: The ``tol`` test judges a loss relative to itself, but never finer than this fraction of
#: ``1/2 ||X||^2`` (the loss of a zero fit; a relative error of 3.2%): nearly exact fits
#: otherwise run on to ``max_iter`` while their squared relative error falls by less than
#: 1e-6 a window (docs/user-guide/how-it-works.md, "When to stop").
LOSS_FLOOR = 1e-3


class StoppingRules(NamedTuple):
    """When a run stops: ``max_epochs`` more epochs at most, and sooner on any other rule.

    ``tol``: the best loss of the last ``n_iter_no_change`` epochs is less than ``tol``
    times the best loss before them (or than ``tol`` times ``floor``, where that is larger)
    below it (a stochastic loss is not monotone, so single epochs are not compared; 0
    disables it). ``floor``: :data:`LOSS_FLOOR` times the zero fit's loss ``1/2 ||X||^2``
    as the run gives it, 0 for a test relative to the loss alone. ``max_time``: seconds
    since the fit started. A loss of exactly 0 always stops.
    """

    max_epochs: int
    tol: float = 0.0
    n_iter_no_change: int = 10
    max_time: float | None = None
    floor: float = 0.0

    def reason(self, record, losses):
        """Why to stop after ``record`` ("exact", "tol", "max_time"), or None to go on."""
        if record.loss == 0.0:
            return "exact"
        if self.tol > 0 and _stalled(losses, self.tol, self.n_iter_no_change, self.floor):
            return "tol"
        if self.max_time is not None and record.seconds >= self.max_time:
            return "max_time"
        return None


def _stalled(losses, tol, window, floor=0.0):
    """True when the best of the last ``window`` losses beats the earlier best by less than
    ``tol`` times the larger of that best and ``floor``."""
    if len(losses) <= window:
        return False
    best_before = min(losses[:-window])
    return best_before - min(losses[-window:]) <= tol * max(best_before, floor)


def run_epochs(solver, scheduler, guard, history, *, start_loss, stopping, t_start=None, grow_batch=False,
               verbose=0, current_loss=None, on_epoch=None, extrapolation=None):
    """Run epochs until a :class:`StoppingRules` rule or its ``max_epochs`` says stop.

    The scheduler must already be ``reset`` and ``guard.bound`` set (from
    :meth:`~nmfsched.solver.StochasticSolver.probe` or a previous epoch); ``start_loss``
    is the loss of the solver's current iterate, and epochs are numbered on from
    ``len(history)``. ``current_loss`` is the loss of the current iterate when the run
    started earlier (a caller that runs one epoch per call, as the RL environment does);
    None means ``start_loss``. Every epoch:

    1. runs at the guard's rate for the scheduler's proposal, and is undone when the guard
       rejects it (it ended above ``start_loss``);
    2. with ``grow_batch``, grows the batch where its gradient noise exceeded its signal
       (small batches at least twofold; :meth:`~nmfsched.solver.StochasticSolver.grow_batch`),
       or as a scheduler that is a :class:`~nmfsched.contracts.BatchPolicy` decides, and sets
       the bound of the next (:func:`_next_bound`);
    3. is recorded, and the scheduler told, from one :class:`EpochRecord`;
    4. stops the run if a rule says so;
    5. is handed to ``on_epoch(record, reason)`` when given (``reason`` None unless the run
       stops here), after the scheduler's step: a checkpoint written there holds the whole
       state of the run.

    With an ``extrapolation`` (:class:`~nmfsched.extrapolation.Extrapolation`), a one-batch
    epoch moves ``H`` on along its last displacement between its ``H`` step and its ``W``
    refresh, and falls back to the plain epoch where that ended higher (not with a
    per-minibatch search).

    Returns
    -------
    stop_reason : str
        "max_epochs", "tol", "max_time" or "exact".
    """
    t_start = time.perf_counter() if t_start is None else t_start
    search = scheduler if isinstance(scheduler, MinibatchSearch) else None
    batch_policy = scheduler if isinstance(scheduler, BatchPolicy) else None
    proposed = scheduler.lr
    previous_loss = start_loss if current_loss is None else current_loss  # the iterate's loss
    last_epoch = len(history) + stopping.max_epochs
    for epoch in range(len(history) + 1, last_epoch + 1):
        report, loss, rejected, (grad_sq, noise_sq, lipschitz) = _guarded_epoch(
            solver, guard, proposed, search, epoch, start_loss, previous_loss,
            None if search is not None else extrapolation,
        )
        seconds = time.perf_counter() - t_start
        previous_loss = loss
        bound_in_force, batch_size = guard.bound, solver.batch_size
        guard.bound = _next_bound(solver, grad_sq, noise_sq, lipschitz, grow_batch, batch_policy, epoch)
        record = _record(solver, epoch, seconds, loss, report, proposed, bound_in_force, grad_sq, noise_sq,
                         batch_size, rejected, guard.bound)
        history.append(record)
        if verbose:
            _print_epoch(record)
        proposed = scheduler.step(record.observation())
        reason = stopping.reason(record, history.losses())
        if reason is None and epoch == last_epoch:
            reason = "max_epochs"
        if on_epoch is not None:
            on_epoch(record, reason)
        if reason is not None:
            return reason
    return "max_epochs"


def _record(solver, epoch, seconds, loss, report, proposed, bound_in_force, grad_sq, noise_sq, batch_size, rejected,
            next_bound):
    """The :class:`EpochRecord` of an epoch that just ended (the batch size and bound it ran with)."""
    step_min, step_max = objective.step_range(report.lr_mean, solver.lipschitz())
    return EpochRecord(
        epoch=epoch,
        seconds=seconds,
        loss=loss,
        rel_error=solver.rel_error(loss),
        lr=report.lr_mean,
        lr_proposed=proposed,
        lr_bound=bound_in_force,
        grad_sq=float(np.sum(grad_sq)),
        noise_sq=float(np.sum(noise_sq)),
        h_step_min=step_min,
        h_step_max=step_max,
        n_clipped=report.n_clipped,
        n_trials=report.n_trials,
        batch_size=batch_size,
        rejected=rejected,
        next_lr_bound=next_bound,
        grad_cos=solver.gradient_cosine(),
    )


def _next_bound(solver, grad_sq, noise_sq, lipschitz, grow_batch, batch_policy=None, epoch=0):
    """The bound for the next epoch, after growing the batch where ``grow_batch`` says so
    (as the scheduler says, for a :class:`~nmfsched.contracts.BatchPolicy`).

    The noise is the measured one rescaled to the batch size in force
    (:meth:`~nmfsched.solver.StochasticSolver.grow_batch`); one batch of all rows has none,
    whatever rounding left in the measured spread, so its bound is the deterministic limit
    2 wherever the gradient is not 0 (theory/README.md, Proposition 3).
    """
    next_noise_sq = solver.grow_batch(grad_sq, noise_sq, lipschitz, batch_policy, epoch) if grow_batch else noise_sq
    if solver.full_batch:
        next_noise_sq = np.zeros_like(next_noise_sq)
    return lr_upper_bound(grad_sq, next_noise_sq, lipschitz)


def _guarded_epoch(solver, guard, proposed, search, epoch, start_loss, previous_loss, extrapolation=None):
    """One epoch at the guard's rate; undone when the guard rejects it.

    Returns ``(report, loss, rejected, gradient statistics)``: the statistics are those of
    the pass just made (at the epoch's own final ``H``, even when it is undone).
    """
    rate = guard.apply(proposed)
    before = solver.snapshot() if guard.enforce else None
    # Overflow is detected below and reported as one clear error, not as warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        report = solver.sgd_epoch(rate, guard.clip_tolerance, search=search)
        if extrapolation is not None:
            extrapolation.extrapolate(solver)
        loss = solver.refresh_w(solver.refresh_sweeps)
        if extrapolation is not None:
            loss = extrapolation.settle(solver, loss)
        statistics = solver.gradient_statistics()
    if not math.isfinite(loss) or not solver.backend.all_finite(solver.Ht):
        raise FloatingPointError(_divergence_message(epoch, report.lr_max, loss, guard.enforce, solver.dtype))
    guard.record(report.lr_max, report.n_clipped)
    rejected = guard.should_reject(loss, start_loss)
    if rejected:
        solver.restore(before)
        loss = previous_loss
        guard.reject()
    else:
        guard.accept()
    if extrapolation is not None:
        extrapolation.observe(loss, rejected)
    return report, loss, rejected, statistics


def _divergence_message(epoch, lr, loss, enforced, dtype):
    """What went wrong when an epoch ended with a non-finite loss or ``H``, and the one remedy
    that applies (never a setting already in force)."""
    where = f"The factorization diverged in epoch {epoch} at learning rate {lr:.4g} (loss {loss!r})"
    if not enforced:
        return f"{where}; use a smaller learning_rate or set enforce_bound=True."
    # Under the guard the rate is within the stability bound, so the epoch's arithmetic overflowed.
    return (f"{where}, within the stability bound: an intermediate overflowed {np.dtype(dtype).name}. "
            f"Fit the data in float64 (X.astype('float64')) if it is float32; otherwise report this as a bug.")


def _print_epoch(record):
    print(
        f"epoch {record.epoch:4d}  loss {record.loss:.6e}  rel_error {record.rel_error:.5f}  "
        f"lr {record.lr:.4g}  next bound {record.next_lr_bound:.4g}  {record.seconds:.2f} s",
        flush=True,
    )
