"""One factorization from start to finish: :class:`FitRun` owns its state and its lifecycle.

A run holds the rows and factors (a :class:`~nmfsched.solver.StochasticSolver` over rows in
memory or over Dask chunks, see :mod:`nmfsched.row_stores`), the stability guard,
the scheduler, the history, the random generator and the extrapolation's state. Its life:

1. :meth:`FitRun.start` probes the initial factors (the initial loss and the first bound) and
   resets the scheduler at the first rate; or :meth:`FitRun.load_state_dict` continues a saved
   run (a checkpoint);
2. :meth:`FitRun.run_epochs`, as often as wanted (the estimator runs them all at once,
   ``partial_fit`` one per chunk on a run :meth:`FitRun.carry_on` made, the RL environment one
   per step);
3. :meth:`FitRun.finish` solves the final ``W``.

:meth:`FitRun.state_dict` holds everything a continuation needs; the checkpoint file writes it.
"""

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_random_state

from . import objective, observed
from ._init import check_custom_factors_wanted, initialize_factors, resolve_init
from .epochs import LOSS_FLOOR, History, StoppingRules, run_epochs
from .extrapolation import Extrapolation
from .metrics import frobenius_error
from .objective import Penalty
from .progress import EpochProgress
from .scaling import DataScale
from .solver import MAX_FIRST_EPOCH_BATCHES, StochasticSolver, resolve_batch_size, resolve_w_sweeps, solve_w
from .stability import StabilityGuard, StabilityWarning
from .theory.namespace import is_device_array


@dataclass(frozen=True)
class RunSettings:
    """The estimator's parameters as a run uses them (see :class:`~nmfsched.StochasticNMF`)."""

    learning_rate: float | str = "auto"
    batch_size: int | str = "auto"
    grow_batch: bool = True
    extrapolate: bool = True
    max_epochs: int = 1000
    tol: float = 1e-3
    n_iter_no_change: int = 10
    max_time: float | None = None
    init: str | None = None
    w_sweeps: int | str = "auto"
    transform_max_sweeps: int = 500
    transform_tol: float = 1e-6
    enforce_bound: bool = True
    safety_factor: float = 0.9
    curvature_tolerance: float = 1.0
    alpha_W: float = 0.0
    alpha_H: float | str = "same"
    l1_ratio: float = 0.0
    verbose: int = 0
    progress_bar: bool = False
    data_scale: float = 1.0  #: the fit runs on ``X / data_scale`` (see :mod:`nmfsched.scaling`)

    def penalty(self, n_samples, n_features):
        """The factors' penalties on an ``n_samples x n_features`` matrix (:class:`~nmfsched.objective.Penalty`),
        for the fit of ``X / data_scale``."""
        penalty = Penalty.from_params(self.alpha_W, self.alpha_H, self.l1_ratio, n_samples, n_features)
        return DataScale(self.data_scale).penalty(penalty)

    @property
    def first_epoch_batches(self):
        """The most minibatches "auto" gives the first epoch: a growing batch's stochastic
        phase stays short (see :data:`~nmfsched.solver.MAX_FIRST_EPOCH_BATCHES`)."""
        return MAX_FIRST_EPOCH_BATCHES if self.grow_batch else None


def run_rng(random_state):
    """The generator of a run seeded by ``random_state`` (an int, a ``RandomState`` or None)."""
    return np.random.default_rng(check_random_state(random_state).randint(2**31 - 1))


def initial_factors(X, k, settings, rng, W=None, H=None, who="StochasticNMF"):
    """``(W0, H0)`` of ``X`` at rank ``k`` by ``settings.init`` (``W``/``H`` for "custom")."""
    check_custom_factors_wanted(W, H, settings.init)
    init = resolve_init(settings.init, k, *X.shape)
    return initialize_factors(X, k, init, rng, X.dtype, W=W, H=H, who=who)


def in_memory_solver(X, W, H, rng, backend, settings, batch_size=None, observed=False):
    """A :class:`~nmfsched.solver.StochasticSolver` of ``X`` (already on the backend's device or not).

    ``batch_size`` (a continued run's) replaces ``settings.batch_size``; "auto" is resolved
    from the shape and the backend's per-minibatch overhead. ``observed``: ``X`` is the CSR
    matrix of the observed entries of a matrix with missing entries.
    """
    k = W.shape[1]
    w_sweeps = resolve_w_sweeps(settings.w_sweeps, k, X.shape[1])
    nnz = X.nnz if hasattr(X, "tocsr") else X.size  # SciPy or cupyx sparse
    batch_size = resolve_batch_size(
        settings.batch_size if batch_size is None else batch_size, *X.shape, k, nnz, w_sweeps,
        backend.batch_overhead_flops, settings.first_epoch_batches,
    )
    return StochasticSolver(X, W, H, backend=backend, batch_size=batch_size, w_sweeps=w_sweeps, rng=rng,
                            penalty=settings.penalty(*X.shape), observed=observed)


class FitRun:
    """One factorization's state and lifecycle (see the module docstring).

    Parameters
    ----------
    solver : StochasticSolver
        The rows and factors, at the initial factors (or a saved run's).
    scheduler : Scheduler
        Used as it is (not copied); :meth:`start` resets it. The RL environment replaces it
        between epochs with the rate its agent chose.
    settings : RunSettings
    rng : numpy.random.Generator
        The generator the solver draws its row orders from (saved with the run).

    Attributes
    ----------
    guard : StabilityGuard
    history : History
    loss : float
        The loss of the current iterate (None before :meth:`start`).
    start_loss : float
        The loss the guard compares each epoch with: the initial loss, or for
        ``partial_fit`` the current chunk's.
    stop_reason : str or None
    """

    def __init__(self, solver, scheduler, settings, rng):
        self.solver, self.scheduler, self.settings, self.rng = solver, scheduler, settings, rng
        self.guard = StabilityGuard(settings.enforce_bound, settings.safety_factor, settings.curvature_tolerance)
        self.history = History()
        self.extrapolation = Extrapolation() if settings.extrapolate else None
        self.loss = self.start_loss = None
        self.stop_reason = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, warn_stacklevel=2):
        """Probe the initial factors and reset the scheduler at the first rate; returns ``self``.

        The probe gives the initial loss and the first bound; ``learning_rate="auto"`` starts
        at half the bound, a larger explicit rate is capped (with a
        :class:`~nmfsched.stability.StabilityWarning` pointing ``warn_stacklevel`` frames up).
        """
        guard, settings = self.guard, self.settings
        guard.initial_loss = self.loss = self.start_loss = self.solver.probe()
        guard.bound = self.solver.lr_bound()
        if settings.learning_rate == "auto":
            # Half the bound maximises the expected decrease (theory/README.md, Theorem 1).
            # A bound of 0 means a stationary point: any start works, the cap holds H still.
            lr0 = guard.bound / 2 if guard.bound > 0 else 1.0
        else:
            lr0 = float(settings.learning_rate)
            if settings.enforce_bound and lr0 > guard.cap:
                warnings.warn(
                    f"learning_rate={lr0:.4g} exceeds the stability bound {guard.bound:.4g} "
                    f"(x safety_factor {settings.safety_factor:g} = {guard.cap:.4g}) at the "
                    f"initial factors; learning rates are capped at the bound of each epoch. "
                    f"Set enforce_bound=False only to experiment without the guarantee.",
                    StabilityWarning,
                    stacklevel=warn_stacklevel + 1,
                )
        self.scheduler.reset(lr0, total_epochs=settings.max_epochs)
        return self

    def carry_on(self, solver, settings=None):
        """This run carried on over other rows (``partial_fit``'s next chunk), as a new run.

        The new run keeps the scheduler, guard, history and generator, takes ``settings``
        (default these) and probes ``solver``'s rows for their own reference loss and bound.
        """
        run = FitRun(solver, self.scheduler, self.settings if settings is None else settings, self.rng)
        run.guard, run.history = self.guard, self.history
        run.loss = run.start_loss = solver.probe()
        run.guard.bound = solver.lr_bound()
        return run

    @property
    def finished(self):
        """Whether the run stopped on its own (a rule other than its epoch budget)."""
        return self.stop_reason not in (None, "max_epochs")

    def run_epochs(self, max_epochs=None, t_start=None, on_epoch=None):
        """Run epochs until a stopping rule says stop, or the settings' ``max_epochs`` in all.

        An explicit ``max_epochs`` runs at most that many more, whatever the settings' budget
        and whatever stopped the run before (``partial_fit`` and the RL environment run one).
        ``t_start`` (``time.perf_counter()`` when the caller began; default now) times the
        history: "seconds" go on from the run's last epoch. ``on_epoch(run, reason)`` is called
        after every epoch (``reason`` None unless the run stops there); the run's
        :meth:`state_dict` then holds the whole state. Returns the stop reason.
        """
        settings = self.settings
        if max_epochs is None:
            remaining = 0 if self.finished else settings.max_epochs - len(self.history)
        else:
            remaining = max_epochs
        if remaining <= 0:
            self.stop_reason = self.stop_reason or "max_epochs"
            return self.stop_reason
        t_start = time.perf_counter() if t_start is None else t_start
        if len(self.history):
            t_start -= float(self.history.last("seconds"))
        stopping = StoppingRules(remaining, settings.tol, settings.n_iter_no_change, settings.max_time,
                                 floor=LOSS_FLOOR * 0.5 * self.solver.sq_norm_X)
        with EpochProgress(settings.progress_bar, len(self.history) + remaining, len(self.history)) as bar:
            self.stop_reason = run_epochs(
                self.solver, self.scheduler, self.guard, self.history, start_loss=self.start_loss, stopping=stopping,
                t_start=t_start, grow_batch=settings.grow_batch, verbose=settings.verbose, current_loss=self.loss,
                on_epoch=lambda record, reason: self._after_epoch(on_epoch, bar, record, reason),
                extrapolation=self.extrapolation,
            )
        self.loss = self.history.losses()[-1]
        return self.stop_reason

    def _after_epoch(self, on_epoch, bar, record, reason):
        bar.epoch_done(record, reason)
        if on_epoch is not None:
            self.stop_reason = reason  # None while the run goes on
            on_epoch(self, reason)

    def finish(self, X):
        """The final ``W``, solved transform-grade for the final ``H``, and ``||X - W H||_F`` (over
        the observed entries when some are missing).

        ``X`` is the data as the caller holds it: device input gets a device ``W`` back.
        """
        solver, settings = self.solver, self.settings
        solver.drop_snapshot()
        H = solver.H
        if solver.rows.observed:  # the error over the observed entries, from the solve's residual
            W = solver.W.copy()
            fit = observed.solve_w(solver.backend, solver.X, solver.Ht, W, settings.transform_max_sweeps,
                                   settings.transform_tol, solver.penalty.l1_W, solver.penalty.l2_W)
            return (W if is_device_array(X) else solver.backend.to_host(W)), math.sqrt(2.0 * fit)
        be = solver.backend
        W, block = solve_w(be, solver.X, H, W=solver.W, max_sweeps=settings.transform_max_sweeps,
                           tol=settings.transform_tol, l1=solver.penalty.l1_W, l2=solver.penalty.l2_W, return_block=True,
                           block=solver.refreshed_w_block())
        # the error from the solve's own products (no pass over X), unless it is below their rounding
        fit = objective.loss_from_grams(solver.sq_norm_X, be.inner(W, block.P), be.gram(W), block.G)
        if objective.below_gram_resolution(fit, solver.sq_norm_X, solver.dtype):
            error = frobenius_error(solver.X, W, H)
        else:
            error = math.sqrt(2.0 * fit)
        return (W if is_device_array(X) else be.to_host(W)), error

    def release(self):
        """Drop the solver (the data and the per-batch buffers) and the extrapolation's last ``H``;
        the scheduler, guard, history and generator stay for :meth:`carry_on`."""
        self.solver = self.extrapolation = None

    # -- results --------------------------------------------------------------------------
    def certificate(self):
        """The stability certificate of the epochs so far (see ``StochasticNMF.stability_certificate_``)."""
        return self.guard.certificate(self.history.losses())

    # -- state ----------------------------------------------------------------------------
    def state_dict(self):
        """Everything a continuation needs, as host arrays and JSON-safe values."""
        solver = self.solver
        return {
            "W": solver.W_host(),
            "H": solver.H,
            "history": self.history.as_arrays(),
            "scheduler": self.scheduler.state_dict(),
            "guard": self.guard.state_dict(),
            "rng": self.rng.bit_generator.state,
            "batch_size": int(solver.batch_size),
            "stop_reason": self.stop_reason,
            "refreshed": bool(solver.refreshed),
            "extrapolation": None if self.extrapolation is None else self.extrapolation.state_dict(solver.backend),
        }

    def load_state_dict(self, state):
        """Continue the run saved in ``state`` (from :meth:`state_dict`).

        The solver must already hold the saved factors, batch size and generator (built from
        ``state``'s "W", "H", "batch_size" and "rng"); the rest is restored here.
        """
        if self.extrapolation is not None and state["extrapolation"] is not None:
            self.extrapolation.load_state_dict(*state["extrapolation"], self.solver.backend)
        self.guard.load_state_dict(state["guard"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = History(state["history"])
        if state["refreshed"]:
            self.solver.mark_refreshed()
        self.start_loss = self.guard.initial_loss
        self.loss = self.history.losses()[-1] if len(self.history) else self.start_loss
        self.stop_reason = state["stop_reason"]


def restore_rng(state):
    """A ``numpy.random.Generator`` in the saved ``bit_generator.state``."""
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
