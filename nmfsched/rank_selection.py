"""Choosing the rank by held-out entries: hide some observed entries, fit on the rest, score the hidden.

A rank that is too small misses structure; one that is too large fits the noise of the
entries it sees and predicts the hidden ones worse. :func:`select_rank` fits every candidate
rank on several random splits of the observed entries (the missing-entry fit of
:mod:`nmfsched.observed` does the fitting) and returns the curve of held-out errors with its
spread and the chosen rank. :func:`held_out_scorer` scores a fitted model the same way on rows
it has not seen, so scikit-learn's ``GridSearchCV`` can choose ``n_components`` too.
"""

import math
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state

from ._validation import is_dask_array
from .estimator import StochasticNMF
from .theory.namespace import is_device_array

#: Entries at most that ``select_rank`` densifies a sparse ``X`` whose unstored entries are
#: observed zeros (hiding some of them needs every entry's place; ratings need none).
MAX_DENSIFIED_ENTRIES = 10**8
#: The rules that pick the rank from the curve.
RULES = ("one_se", "min")


@dataclass
class RankSelection:
    """The outcome of :func:`select_rank`.

    Attributes
    ----------
    ranks : ndarray of shape (n_ranks,)
        The candidate ranks, ascending.
    scores : ndarray of shape (n_ranks, n_repeats)
        Held-out relative error ``||X_hidden - (W H)_hidden|| / ||X_hidden||`` of each rank on
        each split (lower is better).
    rank : int
        The chosen rank (see ``rule``).
    rule : str
        "one_se": the smallest rank whose mean error is within one standard error of the
        lowest mean (the one-standard-error rule, Hastie, Tibshirani & Friedman, 2009, 7.10);
        "min": the rank of the lowest mean.
    test_fraction : float
    seconds : float
        Wall time of the whole selection.
    fit_seconds : ndarray of shape (n_ranks, n_repeats)
        Wall time of each fit (their sum is what a plain loop of the same fits would take).
    """

    ranks: np.ndarray
    scores: np.ndarray
    rank: int
    rule: str
    test_fraction: float
    seconds: float
    fit_seconds: np.ndarray = field(repr=False)

    @property
    def mean(self):
        """Mean held-out error per rank."""
        return self.scores.mean(axis=1)

    @property
    def std(self):
        """Standard deviation of the held-out error over the splits, per rank (0 for one split)."""
        return self.scores.std(axis=1, ddof=1) if self.scores.shape[1] > 1 else np.zeros(len(self.ranks))

    def as_dict(self):
        """JSON-safe: ranks, scores, mean, std, the chosen rank and the timings."""
        return {"ranks": self.ranks.tolist(), "scores": self.scores.tolist(), "mean": self.mean.tolist(),
                "std": self.std.tolist(), "rank": int(self.rank), "rule": self.rule,
                "test_fraction": self.test_fraction, "seconds": self.seconds,
                "fit_seconds": self.fit_seconds.tolist()}

    def plot(self, ax=None):
        """The curve (mean and one standard deviation over the splits) with the chosen rank marked;
        returns the matplotlib axes."""
        import matplotlib.pyplot as plt

        ax = plt.gca() if ax is None else ax
        ax.errorbar(self.ranks, self.mean, yerr=self.std, marker="o", capsize=3, label="held-out error")
        ax.axvline(self.rank, color="k", linestyle=":", label=f"chosen rank {self.rank} ({self.rule})")
        ax.set(xlabel="rank", ylabel="held-out relative error")
        ax.legend(fontsize=8)
        return ax


def choose_rank(ranks, scores, rule="one_se"):
    """The rank ``rule`` picks from held-out ``scores`` (``n_ranks x n_repeats``; see :class:`RankSelection`)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(map(repr, RULES))}, got {rule!r}")
    mean = scores.mean(axis=1)
    best = int(np.argmin(mean))
    if rule == "min" or scores.shape[1] < 2:
        return int(ranks[best])
    se = scores[best].std(ddof=1) / math.sqrt(scores.shape[1])
    return int(ranks[np.flatnonzero(mean <= mean[best] + se)[0]])


def _entries(X, missing):
    """``(dense or CSR X, its observed entries (rows, cols, values))`` of a host ``X``, for hiding."""
    if sp.issparse(X):
        X = X.tocsr()
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        if missing == "unstored":
            coo = X.tocoo()
            keep = ~np.isnan(coo.data)
            return X, (coo.row[keep], coo.col[keep], coo.data[keep])
        if X.shape[0] * X.shape[1] > MAX_DENSIFIED_ENTRIES:
            raise ValueError(
                f"X is sparse and its unstored entries are observed zeros (missing='nan'), so hiding entries needs "
                f"every entry's place: {X.shape[0]} x {X.shape[1]} is more than {MAX_DENSIFIED_ENTRIES:.0e} entries. "
                f"Pass missing='unstored' if only its stored entries are observed (ratings), or a row sample."
            )
        X = X.toarray()
    X = np.asarray(X)
    X = X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)
    rows, cols = np.nonzero(~np.isnan(X))
    return X, (rows, cols, X[rows, cols])


def _split(X, entries, hidden):
    """The training matrix (the ``hidden`` entries missing) in the form the fit reads."""
    rows, cols, values = entries
    if sp.issparse(X):  # only stored entries are observed: drop the hidden ones
        keep = np.ones(len(rows), dtype=bool)
        keep[hidden] = False
        return sp.csr_matrix((values[keep], (rows[keep], cols[keep])), shape=X.shape, dtype=X.dtype)
    train = X.copy()
    train[rows[hidden], cols[hidden]] = np.nan
    return train


def _fit_and_score(X, entries, hidden, rank, seed, params):
    """Fit ``rank`` on ``X`` without its ``hidden`` entries; ``(held-out relative error, seconds)``."""
    t = time.perf_counter()
    train = _split(X, entries, hidden)
    missing = "unstored" if sp.issparse(X) else "nan"
    model = StochasticNMF(rank, **{**params, "missing": missing, "random_state": seed})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a hidden split may leave a row or column unobserved: it gets 0
        W = model.fit_transform(train)
    return held_out_error(W, model.components_, entries, hidden), time.perf_counter() - t


def held_out_error(W, H, entries, hidden):
    """``||X_hidden - (W H)_hidden|| / ||X_hidden||`` (the absolute error when the hidden entries are all 0)."""
    rows, cols, values = (a[hidden] for a in entries)
    truth = values.astype(np.float64)
    predicted = np.einsum("ij,ji->i", W[rows].astype(np.float64), H[:, cols].astype(np.float64))
    norm = np.linalg.norm(truth)
    return float(np.linalg.norm(predicted - truth) / norm if norm > 0 else np.linalg.norm(predicted))


def select_rank(X, ranks, *, test_fraction=0.1, n_repeats=3, rule="one_se", missing="nan", n_jobs=None,
                random_state=None, progress=None, **params):
    """Choose the rank of ``X`` by held-out entries.

    For each of ``n_repeats`` splits, a random ``test_fraction`` of the observed entries is
    hidden; every rank in ``ranks`` is fitted on the rest (a :class:`~nmfsched.StochasticNMF`
    fit over observed entries, ``params`` passed on) and scored on the hidden entries. The
    splits are the same for every rank, so the ranks are compared on equal terms.

    Parameters
    ----------
    X : {array-like, sparse matrix, dask.array.Array} of shape (n_samples, n_features)
        Non-negative; NaN marks a missing entry (never hidden, never scored). A sparse ``X``
        whose unstored entries are zeros (``missing="nan"``) is densified to hide some of
        them (up to :data:`MAX_DENSIFIED_ENTRIES` entries); with ``missing="unstored"`` only
        its stored entries are observed, hidden and scored (ratings). A Dask array of dense
        chunks is never gathered: each chunk hides each of its observed entries with
        probability ``test_fraction`` (its own generator, on its worker), the fits run on the
        cluster one after another (``n_jobs`` is not used) and the scores are summed chunk by
        chunk.
    ranks : iterable of int
        Candidate ranks (each ``>= 1``).
    test_fraction : float in (0, 1), default=0.1
        Share of the observed entries hidden in each split.
    n_repeats : int, default=3
        Random splits; the spread over them is the curve's error bar.
    rule : {"one_se", "min"}, default="one_se"
        How the rank is chosen from the curve (see :class:`RankSelection`).
    missing : {"nan", "unstored"}, default="nan"
        Which entries of ``X`` are missing (as :class:`~nmfsched.StochasticNMF`'s ``missing``).
    n_jobs : int, default=None
        Fits run side by side in this many processes (joblib; -1: one per CPU, None: 1).
        Each process's kernels then use ``cpu_count / n_jobs`` threads.
    random_state : int, RandomState instance or None, default=None
        Draws the splits and seeds the fits.
    progress : bool, default=None
        Show a progress bar of the fits (tqdm); None shows it on a terminal.
    **params
        Other :class:`~nmfsched.StochasticNMF` parameters for every fit (``tol``,
        ``max_iter``, ``alpha_W``, ``scheduler``...).

    Returns
    -------
    RankSelection
        ``rank`` is the chosen rank, ``scores`` the held-out errors per rank and split;
        ``plot()`` draws the curve.

    Examples
    --------
    >>> import numpy as np
    >>> from nmfsched import select_rank
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((200, 4)) @ rng.random((4, 60)) + 0.01 * rng.random((200, 60))
    >>> select_rank(X, range(2, 7), random_state=0, progress=False).rank
    4
    """
    from joblib import Parallel, delayed
    from tqdm import tqdm

    t_start = time.perf_counter()
    if is_device_array(X):
        raise TypeError("select_rank takes a NumPy, SciPy or Dask array (hidden entries are drawn on the host); "
                        "pass cupy.asnumpy(X), and backend='gpu' to fit on the GPU.")
    ranks = np.array(sorted({int(r) for r in ranks}))
    if not len(ranks) or ranks[0] < 1:
        raise ValueError(f"ranks must be integers >= 1, got {ranks.tolist()}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if int(n_repeats) < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats!r}")
    if missing not in ("nan", "unstored"):
        raise ValueError(f"missing must be 'nan' or 'unstored', got {missing!r}")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(map(repr, RULES))}, got {rule!r}")
    StochasticNMF(int(ranks[0]), **params)._validate_params()  # a bad parameter fails before any fit
    if is_dask_array(X):
        return _select_rank_dask(X, ranks, test_fraction, int(n_repeats), rule, random_state, progress, params,
                                 t_start)
    X, entries = _entries(X, missing)
    n_observed = len(entries[0])
    n_hidden = int(round(test_fraction * n_observed))
    if n_hidden < 1 or n_hidden >= n_observed:
        raise ValueError(f"test_fraction={test_fraction} hides {n_hidden} of the {n_observed} observed entries; "
                         f"it must hide at least one and leave at least one.")
    rng = check_random_state(random_state)
    splits = [rng.choice(n_observed, n_hidden, replace=False) for _ in range(int(n_repeats))]
    seeds = rng.randint(2**31 - 1, size=int(n_repeats))
    tasks = [(i, r) for r in range(int(n_repeats)) for i in range(len(ranks))]
    n_jobs = 1 if n_jobs is None else int(n_jobs)
    workers = (os.cpu_count() or 1) if n_jobs < 0 else min(n_jobs, len(tasks))
    bar = tqdm(total=len(tasks), desc="select_rank", unit="fit", disable=(not progress) if progress is not None else None)
    results = {}
    if workers <= 1:
        for i, r in tasks:
            results[i, r] = _fit_and_score(X, entries, splits[r], int(ranks[i]), int(seeds[r]), params)
            bar.update()
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        run = Parallel(n_jobs=workers, return_as="generator", inner_max_num_threads=threads)
        jobs = (delayed(_fit_and_score)(X, entries, splits[r], int(ranks[i]), int(seeds[r]), params) for i, r in tasks)
        for (i, r), result in zip(tasks, run(jobs)):
            results[i, r] = result
            bar.update()
    bar.close()
    scores = np.array([[results[i, r][0] for r in range(int(n_repeats))] for i in range(len(ranks))])
    fit_seconds = np.array([[results[i, r][1] for r in range(int(n_repeats))] for i in range(len(ranks))])
    return RankSelection(ranks=ranks, scores=scores, rank=choose_rank(ranks, scores, rule), rule=rule,
                         test_fraction=float(test_fraction), seconds=time.perf_counter() - t_start,
                         fit_seconds=fit_seconds)


# -- Dask input: each chunk hides its own entries, on its worker ------------------------------------
def _hidden_in_block(block, seed, fraction, block_index):
    """The entries of one dense block that a split hides: each observed entry with probability
    ``fraction``, drawn from the block's own generator (so every task draws the same ones)."""
    rng = np.random.default_rng([seed, block_index])
    return (rng.random(block.shape) < fraction) & ~np.isnan(block)


def _train_block(block, seed, fraction, block_info=None):
    block = np.array(block, copy=True)
    block[_hidden_in_block(block, seed, fraction, block_info[0]["chunk-location"][0])] = np.nan
    return block


def _score_block(block, W_block, H, seed, fraction, block_info=None):
    """``[[sum of squared errors, sum of squares]]`` over one block's hidden entries."""
    block = np.asarray(block)
    hidden = _hidden_in_block(block, seed, fraction, block_info[0]["chunk-location"][0])
    truth = block[hidden].astype(np.float64)
    predicted = (np.asarray(W_block, dtype=np.float64) @ H.astype(np.float64))[hidden]
    return np.array([[np.sum((predicted - truth) ** 2), np.sum(truth**2)]])


def _select_rank_dask(X, ranks, test_fraction, n_repeats, rule, random_state, progress, params, t_start):
    """:func:`select_rank` of a dense Dask array: the fits run on the cluster (the estimator's Dask
    path over observed entries), one after another; the splits and scores never gather ``X``."""
    import dask.array as da
    from tqdm import tqdm

    if type(getattr(X, "_meta", None)).__module__.startswith("scipy"):
        raise TypeError("select_rank takes Dask arrays of dense chunks (a sparse chunk's unstored entries would "
                        "have to be hidden too); pass X.map_blocks(lambda b: b.toarray()) or a SciPy matrix.")
    X = X.rechunk({1: -1}) if len(X.chunks[1]) > 1 else X
    seeds = check_random_state(random_state).randint(2**31 - 1, size=2 * n_repeats)
    scores, fit_seconds = np.zeros((len(ranks), n_repeats)), np.zeros((len(ranks), n_repeats))
    bar = tqdm(total=len(ranks) * n_repeats, desc="select_rank", unit="fit",
               disable=(not progress) if progress is not None else None)
    for r in range(n_repeats):
        split_seed, fit_seed = int(seeds[2 * r]), int(seeds[2 * r + 1])
        train = X.map_blocks(_train_block, split_seed, test_fraction, dtype=X.dtype)
        for i, rank in enumerate(ranks):
            t = time.perf_counter()
            model = StochasticNMF(int(rank), **{**params, "missing": "nan", "random_state": fit_seed})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                W = model.fit_transform(train)
            parts = da.map_blocks(_score_block, X, W, model.components_, split_seed, test_fraction,
                                  chunks=((1,) * len(X.chunks[0]), (2,)), dtype=np.float64).compute()
            sq_error, sq_truth = parts.sum(axis=0)
            scores[i, r] = math.sqrt(sq_error / sq_truth) if sq_truth > 0 else math.sqrt(sq_error)
            fit_seconds[i, r] = time.perf_counter() - t
            bar.update()
    bar.close()
    return RankSelection(ranks=ranks, scores=scores, rank=choose_rank(ranks, scores, rule), rule=rule,
                         test_fraction=float(test_fraction), seconds=time.perf_counter() - t_start,
                         fit_seconds=fit_seconds)


def held_out_scorer(test_fraction=0.1, random_state=0):
    """A scikit-learn scorer that scores a fitted model on entries of rows it has not seen.

    Called as ``scorer(estimator, X)`` on a CV split's test rows, it hides ``test_fraction``
    of their observed entries, solves their ``W`` over the rest (``transform``) and returns
    minus the relative error on the hidden ones (higher is better, as scikit-learn's scorers).
    With it, ``GridSearchCV(StochasticNMF(), {"n_components": ranks}, scoring=held_out_scorer())``
    chooses the rank by held-out entries.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")

    def score(estimator, X, y=None):
        X, entries = _entries(X, getattr(estimator, "missing", "nan"))
        n_observed = len(entries[0])
        rng = check_random_state(random_state)
        hidden = rng.choice(n_observed, max(1, int(round(test_fraction * n_observed))), replace=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            W = estimator.transform(_split(X, entries, hidden))
        return -held_out_error(W, estimator.components_, entries, hidden)

    return score
