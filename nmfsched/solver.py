"""The factorization loop, written once for every backend.

Minibatch projected SGD on ``f(W, H) = 1/2 ||X - W H||_F^2`` (rows of ``X`` are samples).
For each minibatch ``B`` of rows, in a fresh random order every epoch:

1. ``W_B`` takes ``w_sweeps`` projected coordinate sweeps on its exact block problem
   ``min_{W_B >= 0} 1/2 ||X_B - W_B H||^2``, each component with its own ``1/L`` step
   (``L_j = (H H^T)_jj``; this is the HALS step).
2. ``H`` takes one projected stochastic step along the unbiased minibatch gradient
   ``g_B = (n/|B|) (W_B^T W_B H - W_B^T X_B)``, component ``j`` with step ``lr / L_j``
   where ``L_j = (W^T W)_jj`` is the exact component constant of the full problem
   (``W^T W`` is kept up to date as rows of ``W`` change, at ``O(|B| k^2)`` per batch).

At the end of each epoch ``W`` is refreshed against the final ``H`` (one more product
``X H^T``), and the exact loss is computed from Gram identities, without forming ``W H``.
When one batch holds every row, the epoch is deterministic: the refresh already took the
``W`` step against the current ``H``, so the epoch is one ``H`` step and that refresh (two
passes over ``X``, as an alternating HALS iteration), with no gather of ``X``. As in
accelerated HALS (Gillis and Glineur, 2012), each factor then takes several sweeps against
the one product it paid for (:data:`ONE_BATCH_W_SWEEPS`, :data:`ONE_BATCH_H_SWEEPS`): a
sweep costs ``O(k^2)`` per row, the product ``O(k nnz / rows)``.

Along the way the ``H`` kernel gathers :class:`~nmfsched.gradient_statistics.GradientStatistics`
(the epoch-mean minibatch gradient and the spread around it); :mod:`nmfsched.theory` turns
them into the learning-rate bound for the next epoch, which the epoch loop
(:func:`nmfsched.epochs.run_epochs`) and its :class:`~nmfsched.stability.StabilityGuard`
enforce (with a per-entry clip on every ``H`` update).
The solver calls backend primitives only; the ``k x k`` algebra is NumPy on the host.
"""

import math
import weakref
from numbers import Integral
from typing import NamedTuple

import numpy as np

from . import objective, observed
from .contracts import BatchProposal
from .gradient_statistics import GradientStatistics
from .row_stores import InMemoryRows, ObservedRows, even_batch_size, even_batch_size_at_most
from .searched_step import SearchedHStep
from .theory import batch_size_for_noise, lr_upper_bound, noise_at_batch_size, one_batch_pays


class EpochReport(NamedTuple):
    """What one :meth:`StochasticSolver.sgd_epoch` did."""

    n_clipped: int  #: H steps that hit their clipping limit
    lr_mean: float  #: the H learning rate applied, averaged over rows
    lr_max: float  #: the largest H learning rate applied to any minibatch
    n_trials: int  #: trial steps a per-minibatch step search evaluated (0 without one)


#: Sweeps on ``W`` (at least; ``w_sweeps`` if larger) and on ``H`` in a one-batch epoch: more
#: sweeps per pass over ``X`` cost less than more passes (the measurements behind each constant
#: of this block are in docs/user-guide/how-it-works.md, "The constants and their evidence").
ONE_BATCH_W_SWEEPS = 4
ONE_BATCH_H_SWEEPS = 3

#: The smallest batch "auto" picks (below it the per-batch overheads dominate on any shape).
MIN_AUTO_BATCH = 256
#: With ``grow_batch``, the batch at least multiplies by this after every epoch, whatever
#: the norm test asks: a geometric floor, as in hybrid deterministic-stochastic methods
#: (Friedlander & Schmidt, 2012), so the deterministic epochs come after a few stochastic ones.
MIN_BATCH_GROWTH = 2
#: With ``grow_batch``, "auto" splits the first epoch into at most this many minibatches, so
#: (with the twofold floor) at most three stochastic epochs come before the one-batch ones:
#: hundreds of small first steps left a slower deterministic tail.
MAX_FIRST_EPOCH_BATCHES = 8
#: ...but the first epoch's batch is at most this many rows beyond the cost-based minimum:
#: on many rows, a batch's gradient is precise at a size that does not grow with the rows,
#: and more ``H`` steps per pass pay.
FIRST_EPOCH_MAX_ROWS = 16384
#: A batch of at least this many rows grows by the norm test alone, without
#: :data:`MIN_BATCH_GROWTH`'s floor, at :data:`PRECISE_NOISE_RATIO`: it stays stochastic
#: while its noise allows, which the floor gave up after a few epochs. Smaller batches, on
#: fewer rows, keep the floor and the plain norm test.
PRECISE_BATCH_ROWS = 8192
#: The noise a batch of :data:`PRECISE_BATCH_ROWS` or more may carry, relative to the gradient,
#: before it grows (``theta^2`` of the norm test; the guard's bound takes the rest).
PRECISE_NOISE_RATIO = 4.0
#: How many minibatch steps at the noise-optimal rate a one-batch epoch is worth (its three
#: ``H`` sweeps, over-relaxed rate and extrapolation): a precise batch goes straight to one
#: batch once :func:`~nmfsched.theory.one_batch_pays` says so, per pass over ``X``. Calibrated
#: on a million dense rows, between never switching and switching after the first epoch.
ONE_BATCH_GAIN = 10.0
#: Passes over ``X`` of a minibatch epoch (its two minibatch products and the refresh) and of
#: a one-batch epoch (the refresh and the ``H`` step's product). The switch to one batch weighs
#: the two epochs' decreases per pass: compared per epoch, it came after 73 epochs at a
#: million dense rows, while a one-batch epoch took 0.64 of a minibatch epoch's time.
MINIBATCH_EPOCH_PASSES = 3
ONE_BATCH_EPOCH_PASSES = 2
#: Per-batch cost of the Python loop and kernel dispatch on the CPU, in flops; a backend may
#: declare its own (``batch_overhead_flops``).
BATCH_OVERHEAD_FLOPS = 1e6


def _policy_batch_size(policy, proposal):
    """``policy.next_batch_size(proposal)``, checked: an int from the batch in force to every row."""
    size = policy.next_batch_size(proposal)
    if isinstance(size, bool) or not isinstance(size, Integral) or not proposal.batch_size <= size <= proposal.n_samples:
        raise ValueError(
            f"{type(policy).__name__}.next_batch_size returned {size!r} after epoch {proposal.epoch}; it must "
            f"be an int from the batch in force ({proposal.batch_size} rows) to the number of rows "
            f"({proposal.n_samples})."
        )
    return int(size)


def resolve_batch_size(batch_size, n_samples, n_features, n_components, nnz, w_sweeps,
                       overhead_flops=BATCH_OVERHEAD_FLOPS, max_batches=None):
    """The starting batch size; "auto" picks it from the shape.

    Every minibatch pays for an ``H`` step and ``H H^T`` on all of ``H`` (about
    ``6 m k^2`` flops, plus a fixed overhead) whatever its size, while its rows cost about
    ``4 (nnz/n) k`` flops each for the two products with ``X_B`` and ``4 (w_sweeps + 1) k^2``
    for their ``W`` sweeps and Grams. "auto" takes the smallest batch whose fixed part
    is at most a quarter of its row part, and at least :data:`MIN_AUTO_BATCH` rows: 256
    on dense images, every row at once on wide sparse counts such as text (where the
    ``m k^2`` of an ``H`` step outweighs a whole pass over ``X``). ``overhead_flops`` is
    the fixed overhead in flops at the backend's rate (a GPU's kernel launches cost far
    more work than a CPU's calls, so its batches start larger). ``max_batches`` (the fit
    passes :data:`MAX_FIRST_EPOCH_BATCHES` when the batch grows) raises "auto" to at least
    ``n_samples / max_batches`` rows, or :data:`FIRST_EPOCH_MAX_ROWS` where that is fewer.
    An explicit size is an upper limit. Either is then
    evened out so the rows split into batches whose sizes differ by at most one row (as the
    solver splits them).
    """
    if batch_size != "auto":
        return even_batch_size_at_most(n_samples, batch_size)
    k = n_components
    fixed = 6.0 * n_features * k * k + overhead_flops
    per_row = 4.0 * (nnz / max(1, n_samples)) * k + 4.0 * (w_sweeps + 1) * k * k
    size = max(MIN_AUTO_BATCH, math.ceil(4.0 * fixed / per_row))
    if max_batches is not None:
        size = max(size, min(math.ceil(n_samples / max_batches), FIRST_EPOCH_MAX_ROWS))
    return even_batch_size_at_most(n_samples, size)


def resolve_w_sweeps(w_sweeps, n_components, n_features):
    """Sweeps per minibatch visit; "auto" picks 2 when a sweep is cheap, else 1.

    One sweep over a batch row costs about ``2 k^2`` flops against ``2 m k`` for the
    row's share of the two minibatch products, so an extra sweep adds ``k / m`` to
    the epoch. "auto" pays for it when that is at most 10%.
    """
    if w_sweeps != "auto":
        return int(w_sweeps)
    return 2 if n_components <= 0.1 * n_features else 1


class StochasticSolver:
    """One factorization's ``H``, its steps and its statistics, over a row store.

    The rows of ``X`` and ``W`` and the ``W`` half of every minibatch belong to a
    :class:`~nmfsched.row_stores.RowStore` (:class:`~nmfsched.row_stores.InMemoryRows` for an
    ``X`` given here, or the Dask chunks of :func:`StochasticSolver.over`); the solver holds
    ``H`` (transposed: rows are features), takes the ``H`` step of every minibatch, gathers
    the gradient statistics the bound comes from, and grows the batch.

    Parameters
    ----------
    X : ndarray or CSR matrix, validated (finite, non-negative, float32 or float64)
    W : ndarray of shape (n_samples, k)
    H : ndarray of shape (k, n_features)
    backend : backend object (see :mod:`nmfsched.kernels`)
    batch_size : int
        Rows per minibatch at most. The rows are split into the fewest minibatches of at
        most that many rows, whose sizes differ by at most one row; :attr:`batch_size` is
        the largest. :meth:`grow_batch` may raise it between epochs.
    w_sweeps : int
        Coordinate sweeps on each minibatch's ``W`` rows per visit.
    rng : numpy.random.Generator
        Draws the row order of every epoch.
    penalty : Penalty, default=no penalty
        Elastic-net weights on ``W`` and ``H`` (:class:`nmfsched.objective.Penalty`); losses
        are then of the penalised objective.
    observed : bool, default=False
        ``X`` is the CSR matrix of the observed entries of a matrix with missing entries
        (:func:`nmfsched.observed.observed_entries`): the objective runs over them only
        (:class:`~nmfsched.row_stores.ObservedRows`).
    """

    def __init__(self, X, W, H, *, backend, batch_size, w_sweeps, rng, penalty=objective.NO_PENALTY,
                 observed=False):
        rows = (ObservedRows if observed else InMemoryRows)(X, W, backend, W.dtype)
        self._setup(rows, H, batch_size, w_sweeps, rng, penalty)

    @classmethod
    def over(cls, rows, H, *, batch_size, w_sweeps, rng, penalty=objective.NO_PENALTY):
        """A solver over the row store ``rows`` (which holds ``X`` and the initial ``W``)."""
        solver = cls.__new__(cls)
        solver._setup(rows, H, batch_size, w_sweeps, rng, penalty)
        return solver

    def _setup(self, rows, H, batch_size, w_sweeps, rng, penalty):
        self.penalty = penalty
        self.rows = rows
        self.backend = be = rows.backend
        self.n_samples, self.n_features, self.k, self.dtype = rows.n_samples, rows.n_features, rows.k, rows.dtype
        self.batch_size = rows.even_batch_size(batch_size)
        self.w_sweeps = int(w_sweeps)
        self.rng = rng
        self.Ht = be.asarray(np.asarray(H).T, dtype=self.dtype)  # H stored transposed: rows are features
        self.sq_norm_X = rows.sq_norm_X
        rows.resize(self.batch_size)
        self.statistics = GradientStatistics(be, self.n_samples, (self.n_features, self.k), self.dtype)
        self._searched_step = None  # made by the first per-minibatch search
        self._refreshed = False  # W was just swept against the current H (and _hht is H H^T)
        self._hht = None
        self._w_generation = 0  # counts the changes of W (and W^T W): a snapshot of the rows is reused until the next
        # the last copy of the rows (see snapshot): weakly, the snapshot that holds it and the
        # generation it was taken at; strongly, its arrays, to be overwritten once no snapshot holds them
        self._held_rows, self._held_generation, self._last_rows = _no_rows, -1, None

    # -- the rows ---------------------------------------------------------------------------
    @property
    def X(self):
        """The data on the backend's device (an in-memory store's)."""
        return self.rows.X

    @property
    def W(self):
        """``W`` on the backend's device (an in-memory store's; chunk futures on Dask)."""
        return self.rows.W

    @property
    def WtW(self):
        """The running ``W^T W``."""
        return self.rows.WtW

    def W_host(self):
        """``W`` as a host (NumPy) array."""
        return self.rows.W_host()

    @property
    def H(self):
        """``H`` as a host (NumPy) array."""
        return np.ascontiguousarray(self.backend.to_host(self.Ht).T)

    # -- batches ----------------------------------------------------------------------------
    @property
    def full_batch(self):
        """True when one minibatch holds every row (the epoch is deterministic)."""
        return self.rows.full_batch(self.batch_size)

    @property
    def n_batches(self):
        """Minibatches per epoch."""
        return self.rows.n_batches(self.batch_size)

    @property
    def refresh_sweeps(self):
        """Sweeps of the end-of-epoch :meth:`refresh_w`: ``w_sweeps``, or at least
        :data:`ONE_BATCH_W_SWEEPS` when that refresh is also the next epoch's ``W`` step."""
        return max(self.w_sweeps, ONE_BATCH_W_SWEEPS) if self.full_batch else self.w_sweeps

    def minibatches(self):
        """The selections of one epoch's minibatches in a fresh random order (see the row store)."""
        return self.rows.minibatches(self.batch_size, self.rng)

    def grow_batch(self, grad_sq, noise_sq, lipschitz, policy=None, epoch=0):
        """Raise the batch size to where the noise is predicted not to exceed the gradient,
        and at least :data:`MIN_BATCH_GROWTH` times over below :data:`PRECISE_BATCH_ROWS`
        (from there, to every row once :func:`~nmfsched.theory.one_batch_pays`).

        Uses :func:`nmfsched.theory.batch_size_for_noise` on the last pass's statistics.
        A ``policy`` (:class:`~nmfsched.contracts.BatchPolicy`) is shown that proposal for
        ``epoch`` and picks the size instead. Returns the noise predicted at the batch size
        now in force, for the next epoch's bound.
        """
        n, b = self.n_samples, self.batch_size
        if b >= n:
            return noise_at_batch_size(noise_sq, b, b, n)  # none
        if b < PRECISE_BATCH_ROWS:
            wanted = max(batch_size_for_noise(grad_sq, noise_sq, lipschitz, b, n), MIN_BATCH_GROWTH * b)
        elif one_batch_pays(grad_sq, noise_sq, lipschitz, b, n,
                            gain=ONE_BATCH_GAIN * MINIBATCH_EPOCH_PASSES / ONE_BATCH_EPOCH_PASSES):
            wanted = n
        else:
            wanted = max(batch_size_for_noise(grad_sq, noise_sq, lipschitz, b, n, PRECISE_NOISE_RATIO), b)
        wanted = min(n, int(wanted))
        if policy is not None:
            wanted = _policy_batch_size(policy, BatchProposal(
                epoch, b, wanted, n, float(np.sum(grad_sq)), float(np.sum(noise_sq))))
            if wanted == b:  # held: the batches stay as they are (re-splitting could add a row)
                return noise_at_batch_size(noise_sq, b, b, n)
        wanted = even_batch_size(n, max(1, n // wanted))  # at least that many rows
        self.batch_size = wanted
        self.rows.resize(wanted)
        return noise_at_batch_size(noise_sq, b, wanted, n)

    # -- one epoch -------------------------------------------------------------------------
    def sgd_epoch(self, lr, curvature_tolerance=None, search=None):
        """One pass over the rows in random order: per minibatch a ``W`` step, then an ``H`` step.

        With ``curvature_tolerance`` set, every entry of an ``H`` update is clipped to
        :func:`nmfsched.theory.entry_clip_limits` of the ``H`` it starts from.

        ``search``, a :class:`~nmfsched.contracts.MinibatchSearch`, picks each minibatch's
        ``H`` rate in ``[0, lr]`` from exact trial steps (see
        :class:`~nmfsched.searched_step.SearchedHStep`; rows in memory only). Without
        one, a one-batch epoch's ``H`` step is :data:`ONE_BATCH_H_SWEEPS` sweeps at rate
        ``lr`` (the statistics are of the gradient before the first), and so is each trial.

        Returns
        -------
        EpochReport
        """
        if search is not None and not self.rows.supports_search:
            raise ValueError(
                "A per-minibatch step search needs the rows in memory and every entry observed; for Dask input "
                "or missing entries use an epoch scheduler (such as 'greedy')."
            )
        n, n_batches = self.n_samples, self.n_batches
        self.statistics.start_pass()
        n_clipped = n_trials = 0  # n_clipped may become a device scalar: read once, at the end
        lr_sum, lr_max = 0.0, 0.0
        for batch in self.minibatches():
            one_batch = batch is None
            nb, HHt, block = self._w_half(batch)
            applied, clipped, trials = self._h_step(block, HHt, nb, lr, curvature_tolerance, search, n_batches, one_batch)
            n_clipped = n_clipped + clipped
            n_trials += trials
            lr_sum += applied * nb
            lr_max = max(lr_max, applied)
        if search is None:
            return EpochReport(int(n_clipped), lr, lr, 0)
        return EpochReport(int(n_clipped), lr_sum / n, lr_max, n_trials)

    def _w_half(self, selection):
        """The ``W`` half of a minibatch: ``(|B|, H H^T, the H block)`` (see :meth:`RowStore.w_half
        <nmfsched.row_stores.RowStore.w_half>`).

        For one batch of every row, :meth:`refresh_w` (every epoch ends with one) already
        swept ``W`` against the current ``H``, so nothing is left to sweep; otherwise (the
        first epoch, or after :meth:`restore`) that same refresh runs here.
        """
        if selection is None:
            if not self._refreshed:
                self.refresh_w(self.refresh_sweeps)
            nb, HHt = self.n_samples, self._hht
            block = self.rows.all_rows_h_block()
        else:
            nb, HHt, block = self.rows.w_half(selection, self.Ht, self.w_sweeps, self.penalty)
            self._w_generation += 1
        self._refreshed = False  # H moves next
        return nb, HHt, block

    def _h_step(self, block, HHt, nb, lr, curvature_tolerance, search, n_batches, one_batch):
        """The ``H`` half of a minibatch of ``nb`` rows; returns ``(rate, n_clipped, n_trials)``.

        Component ``j`` moves by ``rate (n / nb) / L_j`` times the minibatch gradient
        ``H W_B^T W_B - X_B^T W_B`` (the block's ``G`` and ``P``, with the minibatch's share of
        the penalties), ``L_j`` from the running ``W^T W`` (per entry with missing entries:
        :func:`nmfsched.observed.h_sweeps`); the kernel adds the gradient to :attr:`statistics`.
        """
        penalty = self.penalty
        clips = None
        if curvature_tolerance is not None:
            clips = objective.h_clip_limits(HHt, self.n_features, curvature_tolerance, self.WtW, penalty.l1_H)
        sweeps = ONE_BATCH_H_SWEEPS if one_batch else 1
        statistics = self.statistics.accumulator(nb)
        if observed.is_observed_block(block):
            n_clipped = observed.sweep_h(self.backend, self.Ht, block, self.rows.curvature, lr, self.n_samples, penalty,
                                         self.rows.column_scale, clips, statistics, sweeps)
            return lr, n_clipped, 0
        WbtWb, Ct = objective.minibatch_h_block(block, penalty, nb, self.n_samples)
        unit_steps = objective.stochastic_h_steps(self.WtW, self.n_samples, nb, penalty.l2_H, penalty.l1_H)
        if search is None:
            n_clipped = self.backend.projected_cd(
                self.Ht, WbtWb, Ct, lr * unit_steps, clips=clips, statistics=statistics, max_sweeps=sweeps
            )
            return lr, n_clipped, 0
        if self._searched_step is None:
            self._searched_step = SearchedHStep(self.backend, self.Ht.shape, self.dtype)
        self.Ht, rate, n_clipped, n_trials = self._searched_step(
            self.Ht, search, lr, n_batches, WbtWb, Ct, unit_steps, clips, statistics, sweeps
        )
        return rate, n_clipped, n_trials

    def probe(self):
        """Gradient statistics at the current iterate without moving it; returns the loss.

        One pass of the products ``X_B^T W_B`` gives both the minibatch gradients (for the
        first epoch's bound) and the loss by the identity
        ``<W_B, X_B H^T> = <X_B^T W_B, H^T>``.
        """
        be = self.backend
        self.statistics.start_pass()
        self._w_generation += 1  # a store may recompute its W^T W (and curvature) here
        cross = fit = 0.0
        for nb, block in self.rows.probe_blocks(self.batch_size, self.rng, self.Ht):
            statistics = self.statistics.accumulator(nb)
            if observed.is_observed_block(block):
                fit += observed.block_fit(block)
                observed.sweep_h(be, self.Ht, block, self.rows.curvature, 0.0, self.n_samples, self.penalty,
                                 self.rows.column_scale, statistics=statistics, max_sweeps=0)
                continue
            cross += be.inner(block.P, self.Ht)
            G, P = objective.minibatch_h_block(block, self.penalty, nb, self.n_samples)
            # a zero step: the kernel only measures the gradient
            be.projected_cd(self.Ht, G, P, be.zeros(self.k, np.float64), statistics=statistics)
        if self.rows.observed:
            return max(fit + self.penalty_value(), 0.0)
        return max(self.gram_loss(cross, be.gram(self.Ht)), 0.0)

    def gradient_statistics(self):
        """``(grad_sq, noise_sq, weights)`` per component from the last pass (see
        :meth:`GradientStatistics.per_component <nmfsched.gradient_statistics.GradientStatistics.per_component>`),
        in the form :func:`~nmfsched.theory.lr_upper_bound` takes: ``weights`` are the
        component constants ``L_j``, or ones with missing entries, whose statistics were
        divided by ``sqrt(L_jc)`` entry by entry as they were gathered (see :mod:`nmfsched.observed`)."""
        grad_sq, noise_sq = self.statistics.per_component(self.Ht)
        if self.rows.observed:
            return grad_sq, noise_sq, np.ones(self.k)
        return grad_sq, noise_sq, self.lipschitz()

    def lipschitz(self):
        """The ``H`` constants as a host array: per component ``diag(W^T W)`` (one small copy),
        or per entry (``m x k``) with missing entries."""
        if self.rows.observed:
            curvature = self.rows.curvature
            if self.penalty.l2_H:
                curvature = curvature + self.penalty.l2_H * self.rows.column_scale[:, None]
            return self.backend.to_host(curvature)
        return self.backend.to_host(objective.h_lipschitz(self.WtW, self.penalty.l2_H))

    def gradient_cosine(self):
        """Cosine between the mean gradients of the last two passes (NaN before two, or at 0)."""
        return self.statistics.cosine()

    def lr_bound(self):
        """The learning-rate bound from the statistics of the last pass."""
        return lr_upper_bound(*self.gradient_statistics())

    def refresh_w(self, max_sweeps, tol=0.0):
        """Coordinate sweeps on all of ``W`` against the current ``H``; returns the loss.

        Also resets the running ``W^T W`` to its exact value (no drift across epochs).
        """
        fit, HHt = self.rows.refresh(self.Ht, max_sweeps, tol, self.penalty)
        self._w_generation += 1
        self._hht = HHt
        self._refreshed = True
        # The Gram identity cancels large terms; never report a negative loss from rounding.
        return max(fit + self.penalty_value(HHt), 0.0)

    @property
    def refreshed(self):
        """Whether ``W`` was just swept against the current ``H`` by :meth:`refresh_w`."""
        return self._refreshed

    def refreshed_w_block(self):
        """``(H H^T, X H^T)`` at the current ``H`` when the last :meth:`refresh_w` computed them
        and ``H`` has not moved since (the final solve then needs no pass over ``X``); else None."""
        return self.rows.refreshed_block(self._hht) if self._refreshed else None

    def mark_refreshed(self):
        """Take the current ``W`` as :meth:`refresh_w`'s result for the current ``H`` (it was
        saved right after one): set what the refresh leaves for the next one-batch epoch,
        without sweeping ``W`` again, so a continued run takes the steps the first would."""
        self.rows.regram(self.Ht)
        self._w_generation += 1
        self._hht = self.backend.gram(self.Ht)
        self._refreshed = True

    def gram_loss(self, cross, HHt):
        """The objective at ``cross = <W, X H^T>`` with the running ``W^T W`` and ``HHt = H H^T``
        (:func:`nmfsched.objective.loss_from_grams`, plus the penalties; not clamped)."""
        loss = objective.loss_from_grams(self.sq_norm_X, cross, self.WtW, HHt)
        return loss + self.penalty_value(HHt) if self.penalty.active else loss

    def penalty_value(self, HHt=None):
        """The penalties' part of the objective at the current iterate (0 without penalties)."""
        if not self.penalty.active:
            return 0.0
        if self.rows.observed:
            return self.rows.penalty_value(self.penalty, self.Ht)
        be = self.backend
        HHt = be.gram(self.Ht) if HHt is None else HHt
        sum_W = self.rows.W_sum() if self.penalty.l1_W else 0.0
        sum_H = float(be.to_host(self.Ht.sum())) if self.penalty.l1_H else 0.0
        return self.penalty.value(sum_W, float(be.to_host(trace(self.WtW))), sum_H, float(be.to_host(trace(HHt))))

    def snapshot(self):
        """A copy of the iterate (``W``, the running ``W^T W`` and ``H``).

        Snapshots taken while ``W`` has not changed share one copy of the rows: a one-batch
        epoch's ``H`` step leaves ``W`` as it was, so the guard's snapshot before the epoch and
        the extrapolation's after the step held the same ``W`` twice (at a million rows a copy
        was 8% of the epoch). Snapshots are only read, by :meth:`restore`.

        Once no snapshot holding the last copy of the rows is left (the guard's and the
        extrapolation's of an earlier epoch are gone), the next copy is written over it rather
        than into a new array: a fresh 80 MB array each epoch cost page faults, 35 ms an epoch
        on average and up to 0.2 s at a million rows (2026-12-08, a 2-core AMD EPYC VM).
        """
        held = self._held_rows()
        if held is None or self._held_generation != self._w_generation:
            spare = self._last_rows if held is None else None
            held = _HeldRows(self.rows.snapshot(spare))
            self._held_rows, self._held_generation = weakref.ref(held), self._w_generation
            self._last_rows = held.rows
        return held, self.Ht.copy()

    def drop_snapshot(self):
        """Let go of the rows' copy kept for the next :meth:`snapshot` to share or overwrite
        (the next one copies them into a new array): the final solve then holds no third ``W``."""
        self._held_rows, self._last_rows = _no_rows, None

    def restore(self, snapshot):
        held, Ht = snapshot
        self.rows.restore(held.rows)
        self._w_generation += 1
        self.Ht[...] = Ht
        self._refreshed = False

    def rel_error(self, loss):
        """``||X - W H|| / ||X||`` of the current iterate, whose objective is ``loss``."""
        return objective.relative_error(loss - self.penalty_value(), self.sq_norm_X)



def trace(A):
    """The trace of a square (host or device) array."""
    return A.diagonal().sum()


def solve_w(backend, X, H, *, W=None, max_sweeps=200, tol=1e-6, l1=0.0, l2=0.0, return_block=False, exact=True,
            block=None):
    """``argmin_{W >= 0} 1/2 ||X - W H||^2 + l1 |W|_1 + l2/2 ||W||^2``, row by row.

    With ``exact`` (the default), each row is solved exactly from its support in ``W`` (or
    from zero) where the backend can (:func:`nmfsched.objective.solve`), then swept by
    projected coordinate descent; without it, only swept (``max_sweeps`` sweeps at most).
    Each row stops on its own (relative l1 movement below ``tol``), so the result for a
    row does not depend on which other rows are solved with it. ``H`` is a host array;
    ``X`` and ``W`` may be host or device arrays. Returns ``W`` as a device array of
    ``backend`` (a NumPy array on the CPU); with ``return_block``, ``(W, block)``, the block's
    ``G = H H^T`` and ``P = X H^T`` giving the loss by :func:`nmfsched.objective.loss_from_grams`
    without another pass over ``X``; ``block``, when the caller has it, saves computing it.
    """
    n, k = X.shape[0], H.shape[0]
    if block is None:
        Ht = backend.asarray(np.asarray(H).T, dtype=H.dtype)
        block = objective.w_block(backend, backend.all_rows(backend.to_device(X)), Ht, backend.empty((n, k), H.dtype))
    cold = W is None
    W = backend.zeros((n, k), H.dtype) if cold else backend.asarray(W, dtype=H.dtype).copy()
    if exact:
        objective.solve(backend, W, block, max_sweeps, tol, l1, l2, cold=cold)
    else:
        objective.sweep(backend, W, block, max_sweeps, tol, l1, l2)
    return (W, block) if return_block else W


class _HeldRows:
    """A snapshot's copy of the rows, weakly referenced by its solver, which tells so whether any
    snapshot still holds it (see :meth:`StochasticSolver.snapshot`)."""

    __slots__ = ("rows", "__weakref__")

    def __init__(self, rows):
        self.rows = rows


def _no_rows():
    """A dead weak reference's answer: no snapshot of the rows is held."""
    return None
