"""StochasticNMF: a scikit-learn estimator, thin over the epoch loop (:mod:`nmfsched.epochs`) and the solver."""

import dataclasses
import inspect
import os
import time
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import observed
from ._init import INIT_METHODS, resolve_n_components
from ._validation import is_dask_array, validate_codes, validate_input
from .checkpoint import FitCheckpoint, fingerprint
from .kernels import BackendUnavailableError, backend_names, get_backend, unavailable_reason
from .run import FitRun, RunSettings, in_memory_solver, initial_factors, restore_rng, run_rng
from .scaling import NO_SCALE, DataScale, largest_entry
from .schedulers import SchedulerProtocol
from .schedulers.registry import for_run as scheduler_for_run
from .solver import resolve_w_sweeps, solve_w
from .theory.namespace import array_namespace, is_device_array


def check_params(n_components="auto", **params):
    """Raise the error :meth:`StochasticNMF.fit` would raise for these parameters, without data.

    Checks every parameter against the estimator's declared constraints, builds the
    scheduler (so a bad ``scheduler_params`` fails here too) and checks that the backend
    can run here. Used to refuse a bad command line or manifest before any file is read.

    Raises
    ------
    ValueError or TypeError
        Naming the first bad parameter.
    nmfsched.kernels.BackendUnavailableError
        When the backend asked for cannot run on this machine (saying what is missing).
    """
    model = StochasticNMF(n_components, **params)
    model._validate_params()
    model._make_scheduler()
    reason = unavailable_reason(model.backend) if model.backend != "auto" else None
    if reason is not None:
        raise BackendUnavailableError(reason)


class StochasticNMF(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Non-negative matrix factorization by minibatch projected SGD with a scheduled learning rate.

    Finds ``W >= 0`` and ``H >= 0`` minimising ``1/2 ||X - W H||_F^2`` (rows of ``X`` are
    samples). Each minibatch solves its rows of ``W`` by projected coordinate sweeps and
    then moves ``H`` one projected step along the unbiased minibatch gradient; component
    ``j`` of ``H`` moves by ``learning_rate / L_j`` times its gradient, where
    ``L_j = (W^T W)_jj`` is that component's Lipschitz constant, so the learning rate is
    dimensionless (1.0 is the exact coordinate step of the deterministic problem). A
    scheduler proposes the learning rate after every epoch; with ``enforce_bound`` the
    solver applies at most ``safety_factor`` times the stability bound of
    ``nmfsched.theory``, clips every update, and undoes an epoch that would end above
    the starting loss.

    Parameters
    ----------
    n_components : int or "auto", default="auto"
        Rank ``k``. "auto" takes it from ``W``/``H`` when ``init="custom"``, else uses
        ``n_features``.
    scheduler : str or Scheduler, default="greedy"
        A registered name (see ``nmfsched.schedulers.available()``) or an instance: a
        :class:`~nmfsched.schedulers.Scheduler`, or any object with the members of
        :class:`~nmfsched.schedulers.SchedulerProtocol` (copied, never modified). An
        instance's parameters are ``scheduler__<name>`` in ``set_params`` and grids.
    scheduler_params : dict, default=None
        Keyword arguments for the scheduler when it is given by name.
    learning_rate : float or "auto", default="auto"
        Initial (dimensionless) learning rate. "auto" starts at half the stability bound
        computed at the initial factors, the rate of largest expected decrease.
    batch_size : int or "auto", default="auto"
        Rows per minibatch at the start, at most: the rows are split into the fewest
        minibatches of at most that many rows, whose sizes differ by at most one (no small
        remainder batch, whose step would be weighted ``n / |B|``). "auto" picks it from the
        shape: at least 256, and large enough that the per-batch ``H`` step (which touches
        all of ``H``) costs at most a quarter of the batch's products with ``X``; on wide
        sparse data such as text that is every row. With ``grow_batch``, "auto" also
        splits the first epoch into at most 8 minibatches (``nmfsched.solver.MAX_FIRST_EPOCH_BATCHES``),
        of at most 16 384 rows (``FIRST_EPOCH_MAX_ROWS``) beyond that minimum: on many rows
        a batch's gradient is precise at a size that does not grow with the rows.
    grow_batch : bool, default=True
        After each epoch, grow the batch to where the gradient noise is predicted to be no
        larger than the gradient itself (the norm test, ``nmfsched.theory.batch_size_for_noise``),
        and at least twofold (``nmfsched.solver.MIN_BATCH_GROWTH``). A batch of 8 192 rows or
        more (``PRECISE_BATCH_ROWS``) grows by the norm test alone, allowing noise up to 4
        times the gradient (``PRECISE_NOISE_RATIO``; the stability bound takes the rest), and
        goes to one batch once that is predicted to pay (``nmfsched.theory.one_batch_pays``),
        so large data stays stochastic while that pays. Near a solution the noise dominates and
        a fixed batch stalls at its noise floor; growing it ends in deterministic
        (one-batch) epochs that converge like HALS.
    extrapolate : bool, default=True
        In one-batch epochs, move ``H`` on along its last displacement before ``W`` is
        refreshed, with restarts (Ang and Gillis, 2019; see :mod:`nmfsched.extrapolation`).
        An epoch that ends above the previous loss is replaced by the plain one, so one-batch
        epochs stay monotone. ``partial_fit`` (one epoch per call) does not extrapolate.
    max_iter : int, default=1000
        Maximum passes over the data (epochs; scikit-learn's ``MiniBatchNMF`` name): a safety
        net, the ``tol`` test decides. A fit that reaches it with ``tol > 0`` unmet warns
        (scikit-learn's ``ConvergenceWarning``); ``stop_reason_`` is then "max_epochs".
    tol : float, default=1e-3
        Stop when the best loss of the last ``n_iter_no_change`` epochs is less than
        ``tol`` (relative) below the best loss before them, the loss taken at no less than
        1e-3 of ``1/2 ||X||^2`` (a nearly exact fit stops once its squared relative error
        falls by less than ``tol * 1e-3`` a window). 0 disables this test
        (1e-3, as scikit-learn's SGD estimators).
    n_iter_no_change : int, default=10
        Window of the ``tol`` test, in epochs.
    max_time : float, default=None
        Stop after the epoch during which this many seconds have passed.
    init : {"nndsvdar", "nndsvda", "nndsvd", "random", "custom"} or None, default=None
        Initialisation. None means "nndsvdar" (NNDSVD with its zeros filled with small
        random values, as nmf-torch's default), or "random" when ``n_components`` exceeds
        ``min(n_samples, n_features)``. "nndsvda" fills the zeros with ``sqrt(mean(X) / k)``
        (scikit-learn NMF's default fills with ``mean(X)``; a fill in the factors' units keeps
        the fit of ``c X`` equal to ``c`` times the fit of ``X``). "custom" uses the ``W`` and
        ``H`` passed to fit.
    w_sweeps : int or "auto", default="auto"
        Projected coordinate sweeps on each minibatch's rows of ``W`` per visit. "auto"
        takes 2 when a sweep is cheap next to the minibatch products
        (``n_components <= 0.1 * n_features``), else 1.
    transform_max_sweeps : int, default=500
        Sweep limit when solving ``W`` for fixed ``H`` (in ``transform`` and at the end of fit).
        On the CPU each row is first solved exactly (non-negative least squares by block
        principal pivoting); the sweeps then confirm it, or solve the rows it left.
    transform_tol : float, default=1e-6
        Per-row relative tolerance of the sweeps.
    enforce_bound : bool, default=True
        Never apply more than ``safety_factor`` times the stability bound, clip every
        entry of every ``H`` update (see ``nmfsched.theory``), and undo any epoch that
        ends above the loss the fit started from (halving the cap until one succeeds).
        ``False`` is for experiments only: the bound is still computed and recorded.
    safety_factor : float in (0, 1], default=0.9
        Margin under the bound; the bound of an epoch is estimated from the previous one.
    curvature_tolerance : float, default=1.0
        How much (relative) one ``H`` update may change a component's curvature; sets the
        clipping limit ``(sqrt(1 + curvature_tolerance) - 1) ||h_j|| / sqrt(n_features)``.
    alpha_W : float, default=0.0
        Weight of the penalty on ``W`` (0: none), as in scikit-learn's ``NMF``: the objective
        adds ``alpha_W * n_features * (l1_ratio * |W|_1 + (1 - l1_ratio) / 2 * ||W||_F^2)``.
        ``transform`` solves with it too.
    alpha_H : float or "same", default="same"
        Weight of the penalty on ``H``, scaled by ``n_samples`` (by a chunk's rows in
        ``partial_fit``); "same" takes ``alpha_W``.
    l1_ratio : float in [0, 1], default=0.0
        The share of L1 in the penalties (0: L2 only, "ridge"; 1: L1 only, "lasso"). L1 makes
        the factors sparse. The stability bound and the clip account for both (theory/README.md).
    missing : {"nan", "unstored", "error"}, default="nan"
        Which entries of ``X`` are missing: the objective, its steps and the stability bound
        then run over the observed entries only (see :mod:`nmfsched.observed`). "nan": a NaN
        is missing (as in scikit-learn's estimators that accept missing values; a sparse
        ``X``'s unstored entries are zeros). "unstored": a sparse ``X``'s stored entries are
        its observed ones, NaN among them excluded (ratings: an unrated item is unknown, not
        0); a dense ``X`` as "nan". "error": a NaN is an error. ``observed_fraction_`` says how
        much was observed. ``transform`` solves each row over its observed entries, and
        ``inverse_transform(transform(X))`` fills the missing ones (imputation). A row or
        column with no observed entry gets 0 in ``W`` or ``components_``, with a warning.
        Dask input too: its chunks then send per-column Grams (``m k (k + 2)`` numbers a
        chunk and group, see :class:`~nmfsched.distributed.ObservedDaskRows`).
    backend : {"auto", "cpu", "gpu", "numpy"}, default="auto"
        Where the arithmetic runs: "cpu" (Numba and BLAS), "gpu" (CuPy on an NVIDIA GPU;
        needs ``pip install 'nmfsched[gpu]'`` and a CUDA device), "numpy" (the GPU
        backend's array code on NumPy; slow, for checking), or "auto": the GPU when CuPy
        and a device are present, else the CPU. ``nmfsched.kernels.available_backends()``
        lists those that can run here. Input that is already on a GPU (a CuPy array or
        cupyx sparse matrix) runs there and gets CuPy arrays back (``fit_transform``,
        ``transform``, ``inverse_transform``); ``components_`` is always a NumPy array.
    checkpoint : str or path-like, default=None
        A ``.npz`` file that ``fit`` replaces (atomically) after every epoch with the whole
        state of the run: factors, history, scheduler, guard and random generator. When
        it exists at the start of ``fit``, the run continues from it instead of starting
        over (a run that had stopped on its own returns its result; a larger
        ``max_iter`` runs the rest). It must be of the same data and parameters, except
        ``max_iter``, ``max_time``, ``tol``, ``n_iter_no_change``, ``backend``, ``verbose``
        and ``progress_bar``; anything else is refused with the difference named. Not used by
        ``partial_fit``.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and the minibatch order.
    verbose : int, default=0
        When > 0, print one line per epoch and, at the end of ``fit``, where its time went
        (``timings_``).
    progress_bar : bool, default=False
        Show a progress bar over the epochs on stderr (tqdm): the relative error, learning
        rate and batch size of the last epoch, and why the fit stopped.
    max_epochs : int
        Deprecated: the former name of ``max_iter`` (removed in 0.4). Given, it is used, with
        a ``FutureWarning``.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The factor ``H``.
    n_components_ : int
    reconstruction_err_ : float
        ``||X - W H||_F`` on the training data with ``W = transform(X)``, over the observed
        entries when some are missing (after ``partial_fit``: on the last chunk, with its
        ``W`` refreshed for the final ``H``).
    timings_ : dict of float
        Seconds of each phase of the last ``fit``: "validate" (parameters and input), "backend"
        (getting it ready: the first fit in a process loads the compiled kernels), "prepare" (scaling, missing entries, the data on the device), "init" (the initial
        factors), "setup" (the solver), "probe" (the first bound), "epochs", "finish" (the
        final solve of ``W`` and the error); "resume" instead of the start's phases for a fit
        continued from a checkpoint, and "validate" and "fit" for Dask input.
    observed_fraction_ : float
        The share of the training data's entries that were observed (1.0 without missing
        entries; see ``missing``).
    batch_size_ : int
        The batch size in force at the end (see ``grow_batch``); "batch_size" in
        ``history_`` has it per epoch.
    n_iter_ : int
        Epochs run (accumulates over ``partial_fit`` calls).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Defined only when ``X`` has string feature names.
    history_ : dict of ndarray
        One entry per epoch: "epoch"; "seconds" (since fit started); "loss"
        (``1/2 ||X - W H||_F^2`` at the end of the epoch, plus the penalties when
        ``alpha_W`` or ``alpha_H`` is set); "rel_error"
        (``||X - W H||_F / ||X||_F``); "lr" (the learning rate applied); "lr_proposed"
        (the scheduler's proposal); "lr_bound" (the stability bound in force during the
        epoch); "grad_sq" and "noise_sq" (the epoch's projected-gradient and minibatch-
        noise statistics, from which the next bound comes); "h_step_min"/"h_step_max"
        (absolute steps ``lr / L_j`` over components); "n_clipped" (clipped coordinate
        steps of ``H``); "n_trials" (trial ``H`` steps of a per-minibatch line search, 0
        for other schedulers); "batch_size" (rows per minibatch in the epoch); "rejected"
        (the epoch ended above the loss the fit started from and was undone; its "loss" is
        the restored one).
    stability_certificate_ : dict
        "enforced", "safety_factor", "curvature_tolerance", "max_lr_to_bound" (largest
        applied-rate / bound ratio), "n_capped_epochs", "n_clipped_steps",
        "n_rejected_epochs", "initial_loss", "final_loss", "all_losses_finite" and
        "descent" (final loss <= initial loss, all finite).
    scheduler_ : Scheduler
        The scheduler used, in its final state.
    stop_reason_ : str
        Why fitting stopped: "max_epochs" (the ``max_iter`` limit), "tol", "max_time" or "exact".

    Examples
    --------
    >>> import numpy as np
    >>> from nmfsched import StochasticNMF
    >>> X = np.random.default_rng(0).random((100, 20))
    >>> model = StochasticNMF(n_components=5, random_state=0)
    >>> W = model.fit_transform(X)
    >>> W.shape, model.components_.shape
    ((100, 5), (5, 20))
    """

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "scheduler": [str, SchedulerProtocol],
        "scheduler_params": [dict, None],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "grow_batch": ["boolean"],
        "extrapolate": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), Hidden(StrOptions({"deprecated"}))],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "max_time": [Interval(Real, 0, None, closed="neither"), None],
        "init": [StrOptions(set(INIT_METHODS)), None],
        "w_sweeps": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "transform_max_sweeps": [Interval(Integral, 1, None, closed="left")],
        "transform_tol": [Interval(Real, 0, None, closed="left")],
        "enforce_bound": ["boolean"],
        "safety_factor": [Interval(Real, 0, 1, closed="right")],
        "curvature_tolerance": [Interval(Real, 0, None, closed="neither")],
        "alpha_W": [Interval(Real, 0, None, closed="left")],
        "alpha_H": [Interval(Real, 0, None, closed="left"), StrOptions({"same"})],
        "l1_ratio": [Interval(Real, 0, 1, closed="both")],
        "missing": [StrOptions(set(observed.MISSING_MODES))],
        "backend": [StrOptions(set(backend_names()))],
        "checkpoint": [str, os.PathLike, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "progress_bar": ["boolean"],
    }

    def __init__(
        self,
        n_components="auto",
        *,
        scheduler="greedy",
        scheduler_params=None,
        learning_rate="auto",
        batch_size="auto",
        grow_batch=True,
        extrapolate=True,
        max_iter=1000,
        tol=1e-3,
        n_iter_no_change=10,
        max_time=None,
        init=None,
        w_sweeps="auto",
        transform_max_sweeps=500,
        transform_tol=1e-6,
        enforce_bound=True,
        safety_factor=0.9,
        curvature_tolerance=1.0,
        alpha_W=0.0,
        alpha_H="same",
        l1_ratio=0.0,
        missing="nan",
        backend="auto",
        checkpoint=None,
        random_state=None,
        verbose=0,
        progress_bar=False,
        max_epochs="deprecated",
    ):
        self.n_components = n_components
        self.scheduler = scheduler
        self.scheduler_params = scheduler_params
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.grow_batch = grow_batch
        self.extrapolate = extrapolate
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.max_time = max_time
        self.init = init
        self.w_sweeps = w_sweeps
        self.transform_max_sweeps = transform_max_sweeps
        self.transform_tol = transform_tol
        self.enforce_bound = enforce_bound
        self.safety_factor = safety_factor
        self.curvature_tolerance = curvature_tolerance
        self.alpha_W = alpha_W
        self.alpha_H = alpha_H
        self.l1_ratio = l1_ratio
        self.missing = missing
        self.backend = backend
        self.checkpoint = checkpoint
        self.random_state = random_state
        self.verbose = verbose
        self.progress_bar = progress_bar
        self.max_epochs = max_epochs

    # ------------------------------------------------------------------ helpers
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        tags.input_tags.allow_nan = self.missing != "error"  # NaN marks a missing entry
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _check_X(self, X, *, reset):
        """``X`` validated, and its :class:`~nmfsched._validation.EntryScan` (None for device or Dask input)."""
        return validate_input(self, X, reset=reset, backend=self.backend, missing=self.missing, return_scan=True)

    def _observed(self, X, backend, scan=None):
        """The observed entries of a validated ``X`` (CSR, on ``X``'s side), or None when none is
        missing; ``scan`` is ``X``'s from the validation."""
        if self.missing == "error" or is_dask_array(X):
            return None
        return observed.observed_entries(X, self.missing, type(self).__name__, observed.sparse_module(backend),
                                         n_nan=None if scan is None else scan.nan)

    def _warn_unobserved(self, X_observed, W=None, H=None):
        """Warn about rows (and columns) without an observed entry and set their ``W`` rows (``H``
        columns) to 0, the value the model then imputes there."""
        rows, columns = observed.empty_lines(array_namespace(X_observed.data), X_observed)
        if W is not None:
            W[rows] = 0
        if H is not None:
            H[:, columns] = 0
        self._warn_lines(rows, columns if H is not None else ())

    def _warn_lines(self, rows, columns):
        who = type(self).__name__
        if len(rows):
            warnings.warn(f"X has {observed.describe_lines(rows, 'row')} with no observed entry; {who} sets their "
                          f"rows of W to 0 (nothing is known of them).", UserWarning, stacklevel=5)
        if len(columns):
            warnings.warn(f"X has {observed.describe_lines(columns, 'column')} with no observed entry; {who} sets "
                          f"their columns of components_ to 0, so they are imputed as 0.", UserWarning, stacklevel=5)

    def _get_backend(self, X):
        """The backend for ``X``: device input always runs on its device."""
        return get_backend("gpu" if is_device_array(X) else self.backend)

    @staticmethod
    def _like_input(A, X, backend):
        """``A`` (a backend array) as the kind of array ``X`` is: device input gets device output."""
        return A if is_device_array(X) else backend.to_host(A)

    def _resolve_n_components(self, X, W, H):
        return resolve_n_components(self.n_components, self.init, X.shape[1], W, H)

    def _make_scheduler(self):
        return scheduler_for_run(self.scheduler, self.scheduler_params)

    def _run_settings(self, **overrides):
        """The run's view of this estimator's parameters (``overrides`` replace some)."""
        fields = [field.name for field in dataclasses.fields(RunSettings) if field.name not in ("max_epochs", "data_scale")]
        params = {name: getattr(self, name) for name in fields}
        return RunSettings(**{**params, "max_epochs": self._max_iter(), **overrides})

    def _max_iter(self):
        """``max_iter``, or the deprecated ``max_epochs`` where one was given."""
        return self.max_iter if self.max_epochs == "deprecated" else self.max_epochs

    def _warn_if_deprecated(self):
        if self.max_epochs != "deprecated":
            warnings.warn(
                "max_epochs was renamed max_iter (scikit-learn's name for full passes) in 0.2 and will be "
                "removed in 0.4; use max_iter.",
                FutureWarning,
                stacklevel=3,
            )

    def _new_run(self, X, W, H, backend, settings, Xd=None, X_observed=None, clock=None):
        """A run of ``X`` from its initial factors, started (probed, scheduler reset).

        ``X`` as validated (initialised from); ``Xd`` the data the run uses on the backend's
        device when the caller has it there already; ``X_observed`` the observed entries when
        some are missing (the run then uses them). ``clock`` (a :class:`_PhaseClock`) records the
        seconds of the start's phases.
        """
        clock = _PhaseClock({}) if clock is None else clock
        rng = run_rng(self.random_state)
        k = self._resolve_n_components(X, W, H)
        data = X if X_observed is None else X_observed
        X_init = data if X_observed is None else observed.init_matrix(X_observed, X.shape)
        W0, H0 = initial_factors(X_init, k, settings, rng, W=W, H=H, who=type(self).__name__)
        if X_observed is not None:
            self._warn_unobserved(X_observed, W0, H0)
        clock.lap("init")
        solver = in_memory_solver(data if Xd is None else Xd, W0, H0, rng, backend, settings,
                                  observed=X_observed is not None)
        clock.lap("setup")
        run = FitRun(solver, self._make_scheduler(), settings, rng).start(warn_stacklevel=3)
        clock.lap("probe")
        return run

    def _resumed_run(self, state, make_solver, settings):
        """A run continued from a checkpoint's ``state``; ``make_solver(rng)`` builds its rows."""
        rng = restore_rng(state["rng"])
        run = FitRun(make_solver(rng), self._make_scheduler(), settings, rng)
        run.load_state_dict(state)
        return run

    def _checkpoint(self, shape, dtype, sq_norm_X, n_components):
        """The fit's :class:`~nmfsched.checkpoint.FitCheckpoint` and its saved state (None, None without one)."""
        if self.checkpoint is None:
            return None, None
        params = self.get_params(deep=False)
        defaults = {name: p.default for name, p in inspect.signature(type(self)).parameters.items()}
        checkpoint = FitCheckpoint(self.checkpoint, fingerprint(shape, dtype, sq_norm_X, n_components, params, defaults))
        return checkpoint, checkpoint.load()

    @staticmethod
    def _saver(checkpoint):
        """The run's per-epoch callback that writes ``checkpoint`` (None without one)."""
        return None if checkpoint is None else (lambda run, reason: checkpoint.save(run.state_dict()))

    def _set_fitted(self, run, scale=NO_SCALE):
        """The fitted attributes from a run whose epochs are done (of ``X / scale.s``: the attributes
        are scaled back to ``X``'s units); the run keeps no data after."""
        solver = run.solver
        self.components_ = scale.factors_out(solver.H)
        self.n_components_ = self.components_.shape[0]
        self.scheduler_ = run.scheduler
        self.batch_size_ = solver.batch_size
        self.history_ = scale.history(run.history.as_arrays(), observed=solver.rows.observed)
        self.n_iter_ = len(run.history)
        self.stability_certificate_ = scale.certificate(run.certificate())
        run.release()
        self._run, self._scale = run, scale  # partial_fit carries them on

    # ------------------------------------------------------------------ public API
    def fit_transform(self, X, y=None, W=None, H=None):
        """Learn the factorization of ``X`` and return ``W``.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask.array.Array} of shape (n_samples, n_features)
            Non-negative, finite data. CSR/CSC input is never densified. A Dask array
            chunked by rows (dense or SciPy CSR chunks; zarr, HDF5, ``.npy`` memmap or
            in memory) is fitted on dask.distributed without being gathered: its chunks
            are the minibatches' parts (see :mod:`nmfsched.distributed`), on the ambient
            ``Client`` or a ``LocalCluster`` started for the fit. Missing entries are
            NaN (or unstored, see ``missing``).
        y : Ignored
        W : array-like of shape (n_samples, n_components), default=None
            Initial ``W`` when ``init="custom"``.
        H : array-like of shape (n_components, n_features), default=None
            Initial ``H`` when ``init="custom"``.

        Returns
        -------
        W : ndarray of shape (n_samples, n_components)
            A Dask array with ``X``'s row chunks for Dask input (``cluster_`` then
            describes the cluster it ran on).
        """
        t_start = time.perf_counter()
        self._validate_params()
        self._warn_if_deprecated()
        X, scan = self._check_X(X, reset=True)
        if is_dask_array(X):
            return self._fit_transform_dask(X, W, H, t_start)
        timings = {"validate": time.perf_counter() - t_start}
        clock = _PhaseClock(timings)
        backend = self._get_backend(X)
        clock.lap("backend")
        scale = DataScale.of(largest_entry(X, scan))  # data far from 1 in magnitude is fitted scaled: exactly
        settings = self._run_settings(data_scale=scale.s)
        X, W, H = scale.data(X), scale.factors_in(W), scale.factors_in(H)
        X_observed = self._observed(X, backend, scan)
        masked = X_observed is not None
        with backend.compute_context():
            Xd = backend.to_device(X if X_observed is None else X_observed)
            k = self._resolve_n_components(X, W, H)
            sq_norm = backend.squared_norm(Xd) if self.checkpoint is not None else None
            checkpoint, state = self._checkpoint(X.shape, X.dtype, sq_norm, k)
            clock.lap("prepare")
            if state is None:
                run = self._new_run(X, W, H, backend, settings, Xd, X_observed, clock)
            else:
                run = self._resumed_run(state, lambda rng: in_memory_solver(
                    Xd, state["W"], state["H"], rng, backend, settings, batch_size=state["batch_size"],
                    observed=masked), settings)
                clock.lap("resume")
            self.stop_reason_ = run.run_epochs(t_start=t_start, on_epoch=self._saver(checkpoint))
            clock.lap("epochs")
            W, error = run.finish(X)
            clock.lap("finish")
        self.timings_ = timings
        if self.verbose:
            print(_describe_timings(self.timings_, len(run.history)), flush=True)
        self.reconstruction_err_ = float(scale.times_power(error, 1))
        self.observed_fraction_ = observed.observed_fraction(X_observed, X.shape)
        self._set_fitted(run, scale)
        self._warn_if_unconverged()
        return scale.factors_out(W)

    def _warn_if_unconverged(self):
        """scikit-learn's ConvergenceWarning when the epoch limit stopped a fit that ``tol`` had not."""
        if self.stop_reason_ == "max_epochs" and self.tol > 0:
            warnings.warn(
                f"{type(self).__name__} stopped at max_iter={self._max_iter()} before the tol={self.tol:g} test "
                "was met; increase max_iter (or set tol=0 to run a fixed number of epochs).",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _fit_transform_dask(self, X, W, H, t_start):
        """:meth:`fit_transform` of a Dask array on dask.distributed (see :mod:`nmfsched.dask_fit`)."""
        import dask.array as da

        from .dask_fit import fit_dask

        k = self._resolve_n_components(X, W, H)
        t_fit = time.perf_counter()
        run, W, self.reconstruction_err_, self.cluster_ = fit_dask(
            X, W, H, k=k, settings=self._run_settings(), scheduler=self._make_scheduler(),
            random_state=self.random_state, open_checkpoint=self._checkpoint, t_start=t_start, who=type(self).__name__,
            missing=self.missing, warn_unobserved=self._warn_lines,
        )
        self.stop_reason_ = run.stop_reason
        self.observed_fraction_ = self.cluster_.pop("observed_fraction")
        self.timings_ = {"validate": t_fit - t_start, "fit": time.perf_counter() - t_fit}
        self._set_fitted(run, DataScale(self.cluster_.pop("data_scale")))
        self._warn_if_unconverged()
        return da.from_array(W, chunks=(X.chunks[0], (k,)))

    def fit(self, X, y=None, W=None, H=None):
        """Learn the factorization of ``X``; see :meth:`fit_transform`.

        Returns
        -------
        self : StochasticNMF
        """
        self.fit_transform(X, y=y, W=W, H=H)
        return self

    def partial_fit(self, X, y=None, W=None, H=None):
        """Run one epoch over ``X``, continuing from the current ``H`` and scheduler.

        The first call initialises the model from ``X`` (as :meth:`fit` does); later calls
        solve ``W`` for the new rows, then make one pass of minibatch steps on ``H`` and one
        scheduler step. Use it to stream data in chunks, or to drive epochs by hand.

        Returns
        -------
        self : StochasticNMF
        """
        t_start = time.perf_counter()
        first = not hasattr(self, "components_")
        if first:
            self._validate_params()
            self._warn_if_deprecated()
        if is_dask_array(X):
            raise TypeError(
                "partial_fit takes in-memory chunks; fit a Dask array with fit or fit_transform, which "
                "run its chunks as minibatches on dask.distributed (or pass X.blocks[i].compute() here)."
            )
        X, scan = self._check_X(X, reset=first)
        backend = self._get_backend(X)
        # the first chunk sets the scale (see nmfsched.scaling); later chunks are fitted at it
        scale = DataScale.of(largest_entry(X, scan)) if first else getattr(self, "_scale", NO_SCALE)
        X = scale.data(X)
        X_observed = self._observed(X, backend, scan)
        # one epoch a call: no stopping rule but an exact fit, no extrapolation across chunks
        settings = self._run_settings(extrapolate=False, tol=0.0, max_time=None, data_scale=scale.s)
        with backend.compute_context():
            if first:
                run = self._new_run(X, scale.factors_in(W), scale.factors_in(H), backend, settings,
                                    X_observed=X_observed)
            else:
                if W is not None or H is not None:
                    raise ValueError("W and H can only be passed to the first partial_fit call.")
                H0 = scale.factors_in(self.components_)
                w_sweeps = resolve_w_sweeps(self.w_sweeps, *H0.shape)
                if X_observed is None:
                    W0 = solve_w(backend, X, H0, max_sweeps=w_sweeps, tol=0.0, exact=False)
                else:
                    W0 = self._solve_observed(X_observed, H0, backend, w_sweeps, 0.0, settings.penalty(*X.shape))
                # the batch size carries over from the previous call (as the scheduler does)
                solver = in_memory_solver(X if X_observed is None else X_observed, W0, H0, self._run.rng, backend,
                                          settings, batch_size=self.batch_size_, observed=X_observed is not None)
                run = self._run.carry_on(solver, settings)
            self.stop_reason_ = run.run_epochs(1, t_start=t_start)
        self.observed_fraction_ = observed.observed_fraction(X_observed, X.shape)
        # The epoch already refreshed W for the final H and computed the exact loss; a
        # full transform-grade solve per streamed chunk would double the cost of a call.
        self.reconstruction_err_ = float(scale.times_power(np.sqrt(2.0 * run.loss), 1))
        self._set_fitted(run, scale)
        return self

    def transform(self, X):
        """Solve ``W`` for the fitted ``H``: ``argmin_{W >= 0} ||X - W H||_F``.

        With missing entries (see ``missing``) each row is solved over its observed entries;
        a row with none gets 0 (with a warning).

        Returns
        -------
        W : ndarray of shape (n_samples, n_components)
        """
        check_is_fitted(self)
        X, scan = self._check_X(X, reset=False)
        H = self.components_.astype(X.dtype, copy=False)
        if is_dask_array(X):  # lazy: each block scales itself (its rows are solved on their own)
            from .distributed import transform

            penalty = self._run_settings().penalty(*X.shape)
            return transform(X, H, self.transform_max_sweeps, self.transform_tol, type(self).__name__, penalty,
                             self.missing)
        backend = self._get_backend(X)
        scale = DataScale.of(largest_entry(X, scan))  # the rows' own scale (see nmfsched.scaling)
        X, H = scale.data(X), scale.factors_in(H)
        penalty = self._run_settings(data_scale=scale.s).penalty(*X.shape)  # W's weights scale with n_features only
        X_observed = self._observed(X, backend, scan)
        with backend.compute_context():
            if X_observed is not None:
                self._warn_unobserved(X_observed)
                W = self._solve_observed(X_observed, H, backend, self.transform_max_sweeps, self.transform_tol, penalty)
            else:
                W = solve_w(backend, X, H, max_sweeps=self.transform_max_sweeps, tol=self.transform_tol,
                            l1=penalty.l1_W, l2=penalty.l2_W)
            return scale.factors_out(self._like_input(W, X, backend))

    @staticmethod
    def _solve_observed(X_observed, H, backend, max_sweeps, tol, penalty):
        """``W`` (a backend array) solved over the observed entries ``X_observed`` for fixed ``H``, from 0."""
        W = backend.zeros((X_observed.shape[0], H.shape[0]), H.dtype)
        Ht = backend.asarray(np.asarray(H).T, dtype=H.dtype)
        observed.solve_w(backend, backend.to_device(X_observed), Ht, W, max_sweeps, tol, penalty.l1_W, penalty.l2_W)
        return W

    def inverse_transform(self, X):
        """Map ``W`` back to data space: ``X @ components_``.

        For data with missing entries, ``inverse_transform(transform(X))`` is the model's
        completion of ``X``: every entry, the missing ones filled in.

        Parameters
        ----------
        X : {ndarray, sparse matrix} of shape (n_samples, n_components)

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X = validate_codes(X, self.components_.shape[0])
        H = self.components_.astype(X.dtype, copy=False)
        return X @ (array_namespace(X).asarray(H) if is_device_array(X) else H)  # Dask: lazy, chunk by chunk

    @property
    def _n_features_out(self):
        return self.components_.shape[0]


class _PhaseClock:
    """Seconds of a fit's phases, added to ``timings`` as each ends (:meth:`lap`)."""

    def __init__(self, timings):
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, phase):
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + now - self.last
        self.last = now


def _describe_timings(timings, n_epochs):
    """One line: where a fit's time went."""
    total = sum(timings.values())
    parts = ", ".join(f"{phase} {seconds:.3g} s" for phase, seconds in timings.items())
    per_epoch = f" ({timings['epochs'] / n_epochs:.3g} s an epoch)" if n_epochs and "epochs" in timings else ""
    return f"fit: {total:.3g} s in all: {parts}{per_epoch}"

