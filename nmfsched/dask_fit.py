"""A fit of a Dask array: the run of :mod:`nmfsched.run` over the chunks of :mod:`nmfsched.distributed`.

The estimator's ``fit`` hands a Dask ``X`` here; the chunks are scanned once (norm, mean,
nonzeros and the input checks), persisted where they fit, the initial factors come from
products over the chunks (never gathering ``X``), and a :class:`~nmfsched.run.FitRun` runs
the epochs as it does in memory, continuing from a checkpoint where one is given.
"""

import dataclasses

import numpy as np
import scipy.sparse as sp

from ._init import check_custom_factors_wanted, nndsvd_from_svd, random_factors, resolve_init
from ._validation import check_factor
from .distributed import (
    DASK_GROUP_OVERHEAD_FLOPS,
    DaskData,
    dask_client,
    dask_solver,
    describe_cluster,
    randomized_svd_chunks,
    scan,
    stored_bytes,
    worker_threads,
)
from .run import FitRun, restore_rng, run_rng
from .scaling import DataScale
from .solver import resolve_batch_size, resolve_w_sweeps


def fit_dask(X, W, H, *, k, settings, scheduler, random_state, open_checkpoint, t_start, who, missing="error",
             warn_unobserved=None):
    """Fit the Dask array ``X`` at rank ``k`` on dask.distributed.

    ``scheduler`` is a fresh scheduler for the run; ``open_checkpoint(shape, dtype, sq_norm,
    k)`` returns ``(checkpoint or None, saved state or None)``. ``missing`` says which entries
    are missing (the estimator's parameter); when some are, the chunks work over their
    observed entries (:class:`~nmfsched.distributed.ObservedDaskRows`), and
    ``warn_unobserved(rows, columns)`` is called with the rows and columns that have none.

    Returns
    -------
    run : FitRun
        Its epochs done (its solver still attached).
    W : ndarray
        The final ``W`` on the host, solved for the final ``H`` chunk by chunk.
    error : float
        ``||X - W H||_F`` (over the observed entries when some are missing).
    cluster : dict
        The cluster it ran on, whether ``X`` was persisted, its number of chunks, and the share
        of its entries observed.
    """
    n, m = X.shape
    with dask_client() as client:
        data = DaskData(X, client)
        scanned = scan(data, who, missing)
        sq_norm, mean, nnz, counts = scanned.sq_norm, scanned.mean, scanned.nnz, scanned.column_counts
        scale = DataScale.of(scanned.largest)  # far from 1 in magnitude: fitted scaled (nmfsched.scaling)
        if scale.active:
            data = DaskData(scale.data(X), client)  # each chunk divided as it is read
            sq_norm, mean = float(scale.times_power(sq_norm, -2)), float(scale.times_power(mean, -1))
            settings = dataclasses.replace(settings, data_scale=scale.s)
            W, H = scale.factors_in(W), scale.factors_in(H)
        data.persist_if_it_fits(stored_bytes(X.shape, X.dtype, nnz, sp.issparse(getattr(X, "_meta", None))))
        checkpoint, state = open_checkpoint(X.shape, X.dtype, sq_norm, k)
        empty_columns = np.flatnonzero(counts == 0) if counts is not None else np.zeros(0, dtype=np.int64)
        if counts is not None and warn_unobserved is not None:
            warn_unobserved(scanned.empty_rows, empty_columns)
        w_sweeps = resolve_w_sweeps(settings.w_sweeps, k, m)

        def make_solver(rng, W0, H0, batch_size):
            batch_size = resolve_batch_size(
                batch_size, n, m, k, nnz, w_sweeps, DASK_GROUP_OVERHEAD_FLOPS, settings.first_epoch_batches
            )
            return dask_solver(data, W0, H0, sq_norm_X=sq_norm, batch_size=batch_size, w_sweeps=w_sweeps, rng=rng,
                               min_group=worker_threads(client), penalty=settings.penalty(n, m), column_counts=counts)

        if state is None:
            rng = run_rng(random_state)
            fill_scale = None if counts is None else n * m / scanned.n_observed
            W0, H0 = _initial_factors(data, X, W, H, k, settings.init, mean, rng, who, fill_scale)
            W0[scanned.empty_rows] = 0
            H0[:, empty_columns] = 0
            run = FitRun(make_solver(rng, W0, H0, settings.batch_size), scheduler, settings, rng).start()
        else:
            rng = restore_rng(state["rng"])
            run = FitRun(make_solver(rng, state["W"], state["H"], state["batch_size"]), scheduler, settings, rng)
            run.load_state_dict(state)
        saver = None if checkpoint is None else (lambda run, reason: checkpoint.save(run.state_dict()))
        run.run_epochs(t_start=t_start, on_epoch=saver)
        W_final, error = run.solver.rows.finish(run.solver.H, settings.transform_max_sweeps, settings.transform_tol,
                                                run.solver.penalty)
        cluster = {**describe_cluster(client), "persisted": data.persisted, "n_chunks": data.n_chunks,
                   "observed_fraction": scanned.n_observed / (n * m), "data_scale": scale.s}
    return run, scale.factors_out(W_final), float(scale.times_power(error, 1)), cluster


def _initial_factors(data, X, W, H, k, init, mean, rng, who, fill_scale=None):
    """Initial factors of a Dask ``X``: SVD-based by products over its chunks, never gathering it
    (with missing entries, of the observed ones scaled by ``fill_scale``, as in memory)."""
    check_custom_factors_wanted(W, H, init)
    init = resolve_init(init, k, *X.shape)
    dtype = X.dtype
    if init == "custom":
        return check_factor(W, (X.shape[0], k), "W", who, dtype), check_factor(H, (k, X.shape[1]), "H", who, dtype)
    if init == "random":
        return random_factors(mean, X.shape, k, rng, dtype)
    U, S, Vt = randomized_svd_chunks(data, k, rng, fill_scale)
    W0, H0 = nndsvd_from_svd(U, S, Vt, init, mean, rng)
    return np.ascontiguousarray(W0, dtype=dtype), np.ascontiguousarray(H0, dtype=dtype)
