"""nmfsched against scikit-learn's NMF(cd), NMF(mu) and MiniBatchNMF, and PyTorch peers.

The PyTorch peers run when installed (``pip install 'nmfsched[bench]'``, CPU torch):
nmf-torch's HALS in its batch and online modes (``run_nmf`` at its defaults, in the data's
precision) and torchnmf's multiplicative updates under the Frobenius loss (``beta=2``).
Neither takes a sparse matrix, so they get the dense array, made before their clock starts.

Every solver runs at its defaults, in this process, on the same matrix and seed, with all
cores; every timed call starts after a pause of :data:`QUIET_SECONDS`, so that no thread pool
left spinning by the call before it (a peer's, the error's BLAS) takes a core. Per case and
peer the Markdown table gives the peer's wall time and final relative error
``||X - WH||_F / ||X||_F``, nmfsched's (at its defaults) and:

- ``to peer's error / peer's time``: the time nmfsched needs to come within ``--tolerance``
  (default 0.1%) of that peer's final error, over that peer's time. It is read off a
  second nmfsched run with ``tol=0``, the same seed (so the same path as the default run
  until that one stops) and a time limit of the slowest solver's time; the time of an
  epoch counts from the start of ``fit`` and the error is that of the epoch's ``W`` and
  ``H``. "not reached" when it never gets there within the limit. With ``--repeats R``
  every solver runs R times; times are medians and the ratio shows its spread (min-max).
- ``defaults reach it``: whether the default run (its own ``tol``) stops within the
  tolerance of that error, or above it.

The summary counts the (case, peer) pairs whose median ratio is at most 0.5. The roofline
line of a case sets nmfsched's epochs (those of the ``tol=0`` run after the
first, with the batch size each had) against the machine, measured at the start of the same run: the dense GEMM rate
(square ``n x n`` products, all cores, in the data's dtype), the same-shape GEMM rate
(``X @ H^T`` of the case, all cores) and the copy bandwidth (read + write). The epoch's
flops and bytes come from :func:`epoch_work`, a model of the solver's passes. It also gives
the one-batch epochs alone (the steady state, after the minibatch epochs), and ends
with the ceiling the products set: the share of GEMM a one-batch epoch would reach if it
took only the time of its two products with ``X`` (``X @ H^T`` and ``X^T @ W``, timed as the
solver's CPU backend runs them), with its sweeps and everything else free.

Cases: scikit-learn's digits r16; from ../shared/data when present olivetti/242 r40,
cbcl/255 r49, tdt2 r30, jasper/5000 r4, MovieLens ratings r16; generated dense 5000x1000
r20, tall 60000x300 r40, wide 400x20000 r10 and sparse topic-model counts 8000x6000 r20.

``--json PATH`` also writes every figure (each case's peers, nmfsched's defaults, its ``tol=0``
curve of error against time, the roofline line), the command, date and machine; the docs'
benchmarks page is generated from that file (``docs/benchmarks/*.json``).

    python benchmarks/peers.py [--quick] [--seed 0] [--repeats 1] [--case NAME ...] [--skip-peer NAME ...]
                               [--json PATH]
"""

import argparse
import contextlib
import csv
import io
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.datasets import load_digits
from sklearn.decomposition import NMF, MiniBatchNMF
from threadpoolctl import threadpool_limits

from nmfsched import StochasticNMF
from nmfsched.kernels.cpu import CPUBackend
from nmfsched.metrics import relative_error
from nmfsched.solver import ONE_BATCH_H_SWEEPS, ONE_BATCH_W_SWEEPS, resolve_w_sweeps
from nmfsched.warmup import warm_up

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_report  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# -- the peers ----------------------------------------------------------------------------
class Peer(NamedTuple):
    fit: Callable  #: ``fit(X, k, seed) -> (W, H)``
    dense_only: bool = False  #: takes no sparse matrix (it gets ``X.toarray()``)


def _sklearn(make):
    def fit(X, k, seed):
        model = make(k, seed)
        W = model.fit_transform(X)
        return W, model.components_

    return fit


def _minibatch_nmf(X, k, seed):
    """scikit-learn's MiniBatchNMF, scored fairly: when it stops after one epoch its
    ``fit_transform`` can return a ``W`` stale next to its ``components_`` (relative error 8.2
    against 0.054 from ``transform`` of the same fit, on a 200 000-row matrix), so the better of
    the two ``W`` is taken, the ``transform`` and the comparison timed with the fit."""
    model = MiniBatchNMF(k, random_state=seed)
    W_fit = model.fit_transform(X)
    W_transform = model.transform(X)
    H = model.components_
    return min((W_fit, W_transform), key=lambda W: relative_error(X, np.asarray(W, dtype=X.dtype), H)), H


def _nmf_torch(mode):
    def fit(X, k, seed):
        from nmf import run_nmf

        precision = "double" if X.dtype == np.float64 else "float"
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its loss every 10 iterations
            W, H, _ = run_nmf(X, k, mode=mode, random_state=seed, fp_precision=precision)
        return W, H

    return fit


def _torchnmf(X, k, seed):
    import torch
    from torchnmf.nmf import NMF as TorchNMF

    torch.manual_seed(seed)
    V = torch.from_numpy(X)
    model = TorchNMF(V.shape, rank=k).to(V.dtype)  # V ~ H W^T: its H is our W
    model.fit(V, beta=2)  # the Frobenius loss (its default beta is 1, KL)
    return model.H.detach().numpy(), model.W.detach().numpy().T


def available_peers():
    """The peers this environment can run: scikit-learn's always, PyTorch's when installed."""
    peers = {
        "NMF(cd)": Peer(_sklearn(lambda k, seed: NMF(k, solver="cd", random_state=seed))),
        "NMF(mu)": Peer(_sklearn(lambda k, seed: NMF(k, solver="mu", random_state=seed))),
        "MiniBatchNMF": Peer(_minibatch_nmf),
    }
    try:
        import nmf  # noqa: F401  (nmf-torch)

        peers["nmf-torch batch"] = Peer(_nmf_torch("batch"), dense_only=True)
        peers["nmf-torch online"] = Peer(_nmf_torch("online"), dense_only=True)
    except ImportError:
        pass
    try:
        import torchnmf  # noqa: F401

        peers["torchnmf"] = Peer(_torchnmf, dense_only=True)
    except ImportError:
        pass
    return peers


# -- the suite ----------------------------------------------------------------------------
def _low_rank(rng, n, m, k, noise):
    return rng.random((n, k)) @ rng.random((k, m)) + noise * rng.random((n, m))


def _topic_counts(rng, n_docs, n_words, n_topics, words_per_doc):
    """Poisson word counts from a sparse topic model (gamma-distributed weights)."""
    doc_topic = rng.gamma(0.1, 1.0, (n_docs, n_topics))
    topic_word = rng.gamma(0.05, 1.0, (n_topics, n_words))
    rates = doc_topic @ topic_word
    rates *= words_per_doc / np.maximum(rates.sum(axis=1, keepdims=True), 1e-300)
    return sp.csr_matrix(rng.poisson(rates).astype(np.float64))


def _sampled_topic_counts(rng, n_docs, n_words, n_topics, words_per_doc):
    """Word counts of a topic model drawn word by word, as CSR: ``_topic_counts`` without its dense
    ``n_docs x n_words`` rates (9e9 numbers at 300 000 x 30 000)."""
    doc_topic = rng.gamma(0.1, 1.0, (n_docs, n_topics)) + 1e-12
    doc_topic /= doc_topic.sum(axis=1, keepdims=True)
    topic_word = np.cumsum(rng.gamma(0.05, 1.0, (n_topics, n_words)) + 1e-12, axis=1)
    topic_word /= topic_word[:, -1:]
    lengths = rng.poisson(words_per_doc, n_docs)
    docs = np.repeat(np.arange(n_docs), lengths)
    topic_cdf = np.cumsum(doc_topic, axis=1)
    topics = np.empty(docs.size, dtype=np.int64)
    chunk = 1 << 18  # words at a time: the comparison with their documents' topic CDFs is chunk x n_topics
    for s in range(0, docs.size, chunk):
        d = docs[s : s + chunk]
        topics[s : s + chunk] = (rng.random(d.size)[:, None] > topic_cdf[d]).sum(axis=1)
    topics = topics.clip(0, n_topics - 1)
    words = np.empty(docs.size, dtype=np.int64)
    draws = rng.random(docs.size)
    for t in range(n_topics):
        chosen = topics == t
        words[chosen] = np.searchsorted(topic_word[t], draws[chosen])
    return sp.csr_matrix((np.ones(docs.size), (docs, words.clip(0, n_words - 1))), shape=(n_docs, n_words))


def _movielens():
    path = SHARED / "movielens-small" / "ratings.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    users = np.array([int(r["userId"]) for r in rows])
    movies = np.array([int(r["movieId"]) for r in rows])
    ratings = np.array([float(r["rating"]) for r in rows])
    _, user_index = np.unique(users, return_inverse=True)
    _, movie_index = np.unique(movies, return_inverse=True)
    return sp.csr_matrix((ratings, (user_index, movie_index)))


def cases(quick, seed, large=0.0):
    """``(name, load, rank)`` triples; ``load()`` builds the matrix when the case runs
    (a generated one from its own generator, so it does not depend on the cases run before).
    ``large`` (a size factor, 1 for the full size) adds the two large cases only, behind
    ``--large`` so CI stays quick: dense float32 1 000 000 x 300 at rank 20, and sampled topic
    counts 300 000 x 30 000 at rank 30."""

    def rng():
        return np.random.default_rng(seed)

    if large:
        n_dense, n_docs = int(1_000_000 * large), int(300_000 * large)
        yield (f"large dense {n_dense}x300 float32",
               lambda: _low_rank(rng(), n_dense, 300, 20, 0.1).astype(np.float32), 20)
        yield f"large counts {n_docs}x30000", lambda: _sampled_topic_counts(rng(), n_docs, 30_000, 30, 150), 30
        return

    yield "digits", lambda: load_digits().data, 16
    if quick:
        yield "dense 1000x300", lambda: _low_rank(rng(), 1000, 300, 10, 0.1), 10
        yield "topic counts 1000x800", lambda: _topic_counts(rng(), 1000, 800, 8, 100), 8
        return
    real = (
        ("olivetti/242", "olivetti.npz", lambda: np.load(SHARED / "olivetti.npz")["X"] / 242.0, 40),
        ("cbcl/255", "cbcl.npz", lambda: np.load(SHARED / "cbcl.npz")["X"] / 255.0, 49),
        ("tdt2", "tdt2.npz", lambda: sp.load_npz(SHARED / "tdt2.npz").astype(np.float64), 30),
        ("jasper/5000", "jasper.npz", lambda: np.load(SHARED / "jasper.npz")["X"] / 5000.0, 4),
        ("MovieLens", "movielens-small/ratings.csv", _movielens, 16),
    )
    for name, file, load, k in real:
        if (SHARED / file).exists():
            yield name, load, k
    yield "dense 5000x1000", lambda: _low_rank(rng(), 5000, 1000, 20, 0.1), 20
    yield "tall 60000x300", lambda: _low_rank(rng(), 60000, 300, 40, 0.1), 40
    yield "wide 400x20000", lambda: _low_rank(rng(), 400, 20000, 10, 0.1), 10
    yield "topic counts 8000x6000", lambda: _topic_counts(rng(), 8000, 6000, 20, 150), 20


# -- the machine --------------------------------------------------------------------------
def _best_time(f, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def machine_rates(dtype, size=2000):
    """``(GEMM GFLOP/s, copy GB/s)`` of this machine with all its BLAS threads."""
    rng = np.random.default_rng(0)
    A, B = rng.random((size, size)).astype(dtype), rng.random((size, size)).astype(dtype)
    gemm = 2 * size**3 / _best_time(lambda: A @ B) / 1e9
    src = rng.random(1 << 25)  # 256 MB: far beyond any cache
    dst = np.empty_like(src)
    bandwidth = 2 * src.nbytes / _best_time(lambda: np.copyto(dst, src)) / 1e9
    return gemm, bandwidth


def shape_gemm_rate(X, k):
    """GFLOP/s of ``X @ H^T`` for this case's ``X`` (dense BLAS or SciPy's CSR product)."""
    Ht = np.random.default_rng(0).random((X.shape[1], k)).astype(X.dtype)
    work = 2 * (X.nnz if sp.issparse(X) else X.size) * k
    return work / _best_time(lambda: X @ Ht, repeats=3) / 1e9


def solver_product_seconds(X, k):
    """Best seconds of an epoch's two products with all of ``X`` at rank ``k``,
    ``X @ H^T`` and ``X^T @ W``, run as the solver runs them (the CPU backend's calls)."""
    backend = CPUBackend()
    rows = backend.all_rows(backend.to_device(X))
    rng = np.random.default_rng(0)
    Ht = rng.random((X.shape[1], k)).astype(X.dtype)
    W = rng.random((X.shape[0], k)).astype(X.dtype)
    P, C = np.empty_like(W), np.empty_like(Ht)
    _quiet()
    with backend.compute_context():
        return (
            _best_time(lambda: backend.xb_ht(rows, Ht, P), repeats=10),
            _best_time(lambda: backend.xbt_wb(rows, W, C), repeats=10),
        )


def epoch_work(X, k, batch_size, w_sweeps):
    """Modelled ``(flops, bytes)`` of one nmfsched epoch on ``X`` at rank ``k``.

    Per minibatch of ``b`` rows: the products ``X_B H^T`` and ``X_B^T W_B``
    (``2 b m k`` each dense, ``2 nnz_B k`` sparse), ``H H^T`` (``2 m k^2``), the ``W_B``
    sweeps (``4 b k^2`` each) and the ``H`` step (``4 m k^2``); per epoch the refresh of
    ``W`` (one more ``X H^T`` and its sweeps) and ``W^T W``. Bytes: dense ``X`` is read
    four times and the gathered minibatch written once; sparse ``X`` (values and indices)
    is read three times and every nonzero reads or updates a row of ``H^T`` (``k`` values)
    four times; ``H^T`` and the ``m x k`` buffers are streamed about eight times per batch.
    A one-batch epoch skips the gather and the batch's ``W`` step and ``X H^T`` (the
    refresh already made them): two products with ``X`` in all, and the sweeps of
    :data:`~nmfsched.solver.ONE_BATCH_W_SWEEPS` and :data:`~nmfsched.solver.ONE_BATCH_H_SWEEPS`.
    """
    n, m = X.shape
    item = X.dtype.itemsize
    n_batches = -(-n // batch_size)
    passes = 2 if n_batches == 1 else 3  # products with X
    if n_batches == 1:
        w_total, h_sweeps = max(w_sweeps, ONE_BATCH_W_SWEEPS), ONE_BATCH_H_SWEEPS  # refresh only
    else:
        w_total, h_sweeps = 2 * w_sweeps, 1  # each batch's sweeps, then the refresh's
    sweep_flops = 4 * n * k * k * w_total + 4 * n * k * k  # W sweeps, W^T W and the batch Grams
    h_flops = n_batches * (4 * h_sweeps + 2) * m * k * k  # the H sweeps and H H^T
    h_bytes = n_batches * 8 * m * k * item
    if sp.issparse(X):
        nnz = X.nnz
        flops = 2 * passes * nnz * k
        data_bytes = passes * nnz * (item + X.indices.dtype.itemsize) + (passes + 1) * nnz * k * item
    else:
        flops = 2 * passes * n * m * k
        data_bytes = (passes + (2 if n_batches > 1 else 0)) * n * m * item
    return flops + sweep_flops + h_flops, data_bytes + h_bytes


def run_work(X, k, history, w_sweeps):
    """Modelled ``(flops, bytes, seconds)`` of the epochs after the first (which also pays
    for compilation caches and the first allocations), from a run's history."""
    flops = nbytes = 0.0
    for batch_size in history["batch_size"][1:]:
        f, b = epoch_work(X, k, int(batch_size), w_sweeps)
        flops, nbytes = flops + f, nbytes + b
    seconds = float(history["seconds"][-1] - history["seconds"][0])
    return flops, nbytes, seconds


def one_batch_work(X, k, history, w_sweeps):
    """Modelled ``(flops, seconds, count)`` of the one-batch epochs after the first: the
    steady state, apart from the minibatch epochs before it."""
    seconds = np.diff(np.asarray(history["seconds"], dtype=float))
    one_batch = np.asarray(history["batch_size"][1:]) >= X.shape[0]
    count = int(one_batch.sum())
    flops = count * epoch_work(X, k, X.shape[0], w_sweeps)[0]
    return flops, float(seconds[one_batch].sum()), count


# -- runs ---------------------------------------------------------------------------------
#: Pause before every timed call. The worker threads of a BLAS or OpenMP pool keep spinning
#: for a while after their last call (OpenBLAS's after the error's ``X - W H``, torch's after
#: a peer) and take a core from whatever runs next: a digits fit right after a 1500 x 1500
#: GEMM took 0.11-0.14 s against 0.06 s after a pause of 0.3 s or 1 s (measured).
QUIET_SECONDS = 0.3


def _quiet():
    time.sleep(QUIET_SECONDS)


def run_peer(peer, X, k, seed):
    """``(seconds, relative error)`` of one fit by ``peer``, started after :func:`_quiet`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at a peer's own max_iter
        _quiet()
        start = time.perf_counter()
        W, H = peer.fit(X, k, seed)
        seconds = time.perf_counter() - start
    return seconds, relative_error(X, np.asarray(W, dtype=X.dtype), np.asarray(H, dtype=X.dtype))


def run_nmfsched(X, k, seed, **params):
    """``(seconds, relative error, fitted model)``, started after :func:`_quiet`."""
    model = StochasticNMF(k, random_state=seed, **params)
    _quiet()
    start = time.perf_counter()
    W = model.fit_transform(X)
    seconds = time.perf_counter() - start
    return seconds, relative_error(X, W, model.components_), model


def time_to(history, target, tolerance):
    """Seconds (from the start of fit) of the first epoch within ``tolerance`` (relative) of
    ``target`` or below it; inf if none."""
    reached = np.flatnonzero(history["rel_error"] <= target * (1 + tolerance))
    return float(history["seconds"][reached[0]]) if reached.size else float("inf")


def spread(ratios):
    """``median [min-max]`` of time ratios, "not reached" where the median is infinite."""
    median = statistics.median(ratios)
    if not np.isfinite(median):
        return "not reached"
    if len(ratios) == 1:
        return f"{median:.2f}"
    low, high = min(ratios), max(ratios)
    return f"{median:.2f} [{low:.2f}-{'not reached' if not np.isfinite(high) else f'{high:.2f}'}]"


class PeerResult(NamedTuple):
    peer: str
    seconds: float  #: median over repeats
    error: float  #: median over repeats
    ratios: list  #: per repeat: nmfsched's time to the peer's error / the peer's time
    defaults_reach: bool  #: the default run stops within the tolerance of the peer's error


#: Dense-only peers (PyTorch's) take a sparse case as a dense copy only up to this size.
DENSE_PEER_MAX_BYTES = 4 * 2**30


def run_case(X, k, seed, peers, tolerance, repeats=1, min_seconds=0.0):
    """Every peer and nmfsched, ``repeats`` times each; returns ``(peer results, nmfsched's
    (median seconds, median error, batch size), the first tol=0 run's history)``. The tol=0 run
    lasts as long as the slowest fit, and at least ``min_seconds`` (the anytime curve's reach)."""
    if sp.issparse(X) and X.shape[0] * X.shape[1] * X.dtype.itemsize > DENSE_PEER_MAX_BYTES:
        skipped = [name for name, peer in peers.items() if peer.dense_only]
        if skipped:
            print(f"({', '.join(skipped)} skipped: a dense copy would take "
                  f"{X.shape[0] * X.shape[1] * X.dtype.itemsize / 2**30:.0f} GiB)", flush=True)
        peers = {name: peer for name, peer in peers.items() if not peer.dense_only}
    dense = X.toarray() if sp.issparse(X) and any(p.dense_only for p in peers.values()) else X
    peer_runs = {
        name: [run_peer(peer, dense if peer.dense_only else X, k, seed) for _ in range(repeats)]
        for name, peer in peers.items()
    }
    del dense
    default_runs = [run_nmfsched(X, k, seed) for _ in range(repeats)]
    slowest = max(min_seconds, max(t for runs in [*peer_runs.values(), default_runs] for t, *_ in runs))
    # the same seed without the tol test, to find when each target is reached
    histories = [
        run_nmfsched(X, k, seed, tol=0, max_iter=100_000, max_time=slowest)[2].history_ for _ in range(repeats)
    ]
    default_error = statistics.median(e for _, e, _ in default_runs)
    results = []
    for name, runs in peer_runs.items():
        error = statistics.median(e for _, e in runs)
        ratios = [time_to(h, error, tolerance) / t for h, (t, _) in zip(histories, runs)]
        reach = default_error <= error * (1 + tolerance)
        results.append(PeerResult(name, statistics.median(t for t, _ in runs), error, ratios, reach))
    ours = (statistics.median(t for t, *_ in default_runs), default_error, default_runs[0][2].batch_size_)
    return results, ours, histories[0]


ANYTIME_SECONDS = (10, 30, 60, 120)


def anytime(history, seconds=None):
    """The lowest relative error a tol=0 run had reached by each of ``seconds`` (from the start of fit;
    default :data:`ANYTIME_SECONDS`)."""
    parts = []
    for limit in ANYTIME_SECONDS if seconds is None else seconds:
        reached = history["rel_error"][history["seconds"] <= limit]
        parts.append(f"{limit} s: {reached.min():.5f}" if reached.size else f"{limit} s: (no epoch yet)")
    return ", ".join(parts)


BUDGET_SCHEDULES = ("rl", "greedy", "step", "constant", "cosine")


def schedules_under_budget(X, k, seed, epochs, schedules=BUDGET_SCHEDULES):
    """Each schedule's final relative error after ``epochs`` epochs (tol=0), against the best."""
    errors = {}
    for schedule in schedules:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = StochasticNMF(k, random_state=seed, scheduler=schedule, max_iter=epochs, tol=0).fit(X)
        errors[schedule] = float(model.history_["rel_error"][-1])
    best = min(errors.values())
    ranked = sorted(errors.items(), key=lambda item: item[1])
    return f"under {epochs} epochs: " + ", ".join(f"{s} {e:.5f} ({(e / best - 1) * 100:+.1f}%)" for s, e in ranked)


BUDGET_BATCHES = (4096, 16384, 65536)


def batches_under_budget(X, k, seed, epochs, fixed=BUDGET_BATCHES):
    """The defaults' final relative error and fit time after ``epochs`` epochs (tol=0) against
    fixed batch sizes (``grow_batch=False``) under the same budget."""
    runs = {"defaults": {}, **{f"fixed {b}": dict(batch_size=b, grow_batch=False) for b in fixed}}
    results = {}
    for name, params in runs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            model = StochasticNMF(k, random_state=seed, max_iter=epochs, tol=0, **params).fit(X)
            results[name] = (float(model.history_["rel_error"][-1]), time.perf_counter() - start)
    best = min(e for name, (e, _) in results.items() if name != "defaults")
    return f"batches under {epochs} epochs (error, fit s, against the best fixed): " + ", ".join(
        f"{name} {e:.5f} {t:.1f} s ({(e / best - 1) * 100:+.1f}%)" for name, (e, t) in results.items())


def roofline(name, X, k, history, batch_size, machine):
    """One line setting the tol=0 run's epochs against the machine's rates, and the ceiling
    the products put on a one-batch epoch: its modelled flops over the time of its two
    products with ``X`` alone, run as the solver runs them."""
    gemm, bandwidth = machine[X.dtype]
    w_sweeps = resolve_w_sweeps("auto", k, X.shape[1])
    flops, nbytes, epochs_seconds = run_work(X, k, history, w_sweeps)
    n_epochs = len(history["epoch"]) - 1
    gflops, gbytes = flops / epochs_seconds / 1e9, nbytes / epochs_seconds / 1e9
    shape_rate = shape_gemm_rate(X, k)
    products = sum(solver_product_seconds(X, k))
    ceiling = epoch_work(X, k, X.shape[0], w_sweeps)[0] / products / 1e9
    one_batch = float(np.mean(history["batch_size"] >= X.shape[0]))
    ob_flops, ob_seconds, ob_count = one_batch_work(X, k, history, w_sweeps)
    steady = (
        f"its one-batch epochs {ob_seconds / ob_count * 1e3:.1f} ms = {ob_seconds / ob_count / products:.2f}x their "
        f"two products ({products * 1e3:.1f} ms), {ob_flops / ob_seconds / 1e9:.1f} GFLOP/s = "
        f"{ob_flops / ob_seconds / 1e9 / gemm:.0%} of GEMM; " if ob_count and ob_seconds > 0 else ""
    )
    return (
        f"{name}: {n_epochs} epochs of {epochs_seconds / max(1, n_epochs) * 1e3:.1f} ms "
        f"({one_batch:.0%} one-batch; default run: batch {batch_size}), {gflops:.1f} GFLOP/s = "
        f"{gflops / gemm:.0%} of GEMM ({gemm:.0f}) and {gflops / shape_rate:.0%} of same-shape X @ H^T "
        f"({shape_rate:.1f}); {gbytes:.1f} GB/s = {gbytes / bandwidth:.0%} of copy bandwidth ({bandwidth:.0f}); "
        f"{steady}a one-batch epoch of nothing but its two products would reach {ceiling / gemm:.0%} of GEMM"
    )


def table_rows(name, k, results, ours):
    seconds, error, _ = ours
    return [
        f"| {name} | {k} | {r.peer} | {r.seconds:.2f} | {r.error:.5f} | {seconds:.2f} | {error:.5f} "
        f"| {spread(r.ratios)} | {'yes' if r.defaults_reach else 'no'} |"
        for r in results
    ]


#: Epochs of a ``tol=0`` curve kept in ``--json`` (see :func:`thinned_curve`).
CURVE_POINTS = 200


def thinned_curve(seconds, rel_error, max_points=CURVE_POINTS):
    """At most about ``max_points`` epochs of a curve, spaced evenly in log(epoch), the first
    and last kept: enough to plot it on log axes, a few KB instead of every epoch."""
    n = len(seconds)
    keep = np.unique(np.concatenate([[0, n - 1], np.geomspace(1, n, max_points).astype(int) - 1])) if n else []
    return {"seconds": [float(seconds[i]) for i in keep], "rel_error": [float(rel_error[i]) for i in keep]}


def case_record(name, X, k, results, ours, history, roofline_line):
    """One case of ``--json``: the peers' figures, nmfsched's and its ``tol=0`` curve."""
    seconds, error, batch_size = ours
    return {
        "name": name, "rank": k, "shape": list(X.shape), "dtype": str(X.dtype), "sparse": bool(sp.issparse(X)),
        "peers": [{"peer": r.peer, "seconds": r.seconds, "error": r.error,
                   "ratios": [q if np.isfinite(q) else None for q in r.ratios],
                   "defaults_reach": bool(r.defaults_reach)} for r in results],
        "nmfsched": {"seconds": seconds, "error": error, "batch_size": int(batch_size)},
        "curve": thinned_curve(history["seconds"], history["rel_error"]),
        "roofline": roofline_line,
    }


def main(argv=None):
    peers_here = available_peers()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three small cases (a smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs of every solver per case (default 1)")
    parser.add_argument("--case", action="append", default=[], help="run only cases whose name starts so")
    parser.add_argument(
        "--tolerance", type=float, default=1e-3,
        help="a peer's error counts as reached within this relative margin (default 1e-3: 0.1%%)",
    )
    parser.add_argument("--skip-peer", action="append", default=[], choices=sorted(peers_here))
    parser.add_argument("--large", type=float, nargs="?", const=1.0, default=0.0, metavar="FACTOR",
                        help="only the two large cases (FACTOR scales their rows; 1: a million dense rows), with "
                        "nmfsched's anytime curve and the schedules under a fixed epoch budget")
    parser.add_argument("--budget-epochs", type=int, default=8, help="with --large: the schedules' epoch budget")
    parser.add_argument("--json", type=Path, help="also write every figure, the command and the machine here")
    args = parser.parse_args(argv)
    peers = {name: peer for name, peer in peers_here.items() if name not in args.skip_peer}
    if not peers:
        parser.error("at least one peer must run")

    warm_up()  # the first fit in a process pays for loading kernels and starting threads
    with threadpool_limits(None):
        machine = {np.dtype(dt): machine_rates(dt) for dt in (np.float64, np.float32)}
    print("| data | rank | peer | peer s | peer error | nmfsched s | nmfsched error "
          "| to peer's error / peer's time | defaults reach it |")
    print("|---|---|---|---|---|---|---|---|---|")
    rooflines, all_results, records = [], [], []
    for name, load, k in cases(args.quick, args.seed, args.large):
        if args.case and not any(name.startswith(c) for c in args.case):
            continue
        X = load()
        results, ours, history = run_case(X, k, args.seed, peers, args.tolerance, args.repeats,
                                          min_seconds=max(ANYTIME_SECONDS) if args.large else 0.0)
        print("\n".join(table_rows(name, k, results, ours)), flush=True)
        rooflines.append(roofline(name, X, k, history, ours[2], machine))
        all_results.extend(results)
        records.append(case_record(name, X, k, results, ours, history, rooflines[-1]))
        if args.large:  # printed as they come: a large case takes minutes, and the next may fail
            for line in (f"{name}: nmfsched's error reached by " + anytime(history),
                         f"{name}: {schedules_under_budget(X, k, args.seed, args.budget_epochs)}",
                         f"{name}: {batches_under_budget(X, k, args.seed, args.budget_epochs)}"):
                print(f"- {line}", flush=True)
    print()
    for line in rooflines:
        print(f"- {line}")
    within = sum(statistics.median(r.ratios) <= 0.5 for r in all_results)
    reach = sum(r.defaults_reach for r in all_results)
    print(f"\nto each peer's error in <= 0.5x its time: {within} of {len(all_results)} (case, peer) pairs; "
          f"defaults stop at or below the peer's error: {reach} of {len(all_results)}")
    if args.json:
        write_report(args.json, "benchmarks/peers.py", argv, tolerance=args.tolerance, repeats=args.repeats,
                     cases=records)
    return all_results


if __name__ == "__main__":
    main()
