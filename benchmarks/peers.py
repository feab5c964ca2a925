"""nmfsched against scikit-learn's NMF(cd), NMF(mu) and MiniBatchNMF, with a roofline per case.

Every solver runs at its defaults, in this process, on the same matrix and seed. Per case
the Markdown table gives each solver's wall time and final relative error
``||X - WH||_F / ||X||_F``, and for nmfsched:

- ``time to best / best peer``: the time nmfsched needs to reach the best peer's final
  error, over that peer's time; ``/ fastest``: the same time over the fastest peer's.
  It is read off a second nmfsched run with ``tol=0``, the same seed (so the same path
  as the default run until that one stops) and a time limit of the slowest peer's time;
  the time of an epoch counts from the start of ``fit`` and the error is that of the
  epoch's ``W`` and ``H``. "not reached" when it never gets there within the limit.
- ``error at fastest's budget``: that run's error at the last epoch that ended within the
  fastest peer's time.

The roofline line of a case sets nmfsched's epochs (those of the ``tol=0`` run after the
first, with the batch size each had) against the machine, measured at the start of the same run: the dense GEMM rate
(square ``n x n`` products, all cores, in the data's dtype), the same-shape GEMM rate
(``X @ H^T`` of the case, all cores) and the copy bandwidth (read + write). The epoch's
flops and bytes come from :func:`epoch_work`, a model of the solver's passes.

Cases: scikit-learn's digits r16; from ../shared/data when present olivetti/242 r40,
cbcl/255 r49, tdt2 r30, jasper/5000 r4, MovieLens ratings r16; generated dense 5000x1000
r20, tall 60000x300 r40, wide 400x20000 r10 and sparse topic-model counts 8000x6000 r20.

    python benchmarks/peers.py [--quick] [--seed 0] [--case NAME ...] [--skip-peer NAME ...]
"""

import argparse
import csv
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.datasets import load_digits
from sklearn.decomposition import NMF, MiniBatchNMF
from threadpoolctl import threadpool_limits

from nmfsched import StochasticNMF
from nmfsched.metrics import relative_error
from nmfsched.solver import ONE_BATCH_H_SWEEPS, ONE_BATCH_W_SWEEPS, resolve_w_sweeps
from nmfsched.warmup import warm_up

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

PEERS = {
    "NMF(cd)": lambda k, seed: NMF(k, solver="cd", random_state=seed),
    "NMF(mu)": lambda k, seed: NMF(k, solver="mu", random_state=seed),
    "MiniBatchNMF": lambda k, seed: MiniBatchNMF(k, random_state=seed),
}


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


def cases(quick, seed):
    """``(name, load, rank)`` triples; ``load()`` builds the matrix when the case runs
    (a generated one from its own generator, so it does not depend on the cases run before)."""

    def rng():
        return np.random.default_rng(seed)

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


# -- runs ---------------------------------------------------------------------------------
def run_peer(make, X, k, seed):
    model = make(k, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at a peer's own max_iter
        start = time.perf_counter()
        W = model.fit_transform(X)
        seconds = time.perf_counter() - start
    return seconds, relative_error(X, W, model.components_)


def run_nmfsched(X, k, seed, **params):
    model = StochasticNMF(k, random_state=seed, **params)
    start = time.perf_counter()
    W = model.fit_transform(X)
    seconds = time.perf_counter() - start
    return seconds, relative_error(X, W, model.components_), model


def time_to(history, target, tolerance):
    """Seconds (from the start of fit) of the first epoch within ``tolerance`` (relative) of
    ``target`` or below it; inf if none."""
    reached = np.flatnonzero(history["rel_error"] <= target * (1 + tolerance))
    return float(history["seconds"][reached[0]]) if reached.size else float("inf")


def error_at(history, budget):
    """Relative error of the last epoch that ended within ``budget`` seconds (NaN if none)."""
    within = np.flatnonzero(history["seconds"] <= budget)
    return float(history["rel_error"][within[-1]]) if within.size else float("nan")


def _error(value):
    return f"{value:.5f}" if np.isfinite(value) else "no epoch yet"


def _ratio(value, reference):
    return "not reached" if not np.isfinite(value) else f"{value / reference:.2f}"


def run_case(name, X, k, seed, peers, machine, tolerance):
    results = {peer: run_peer(PEERS[peer], X, k, seed) for peer in peers}
    seconds, error, model = run_nmfsched(X, k, seed)
    best_peer = min(results, key=lambda p: results[p][1])
    fastest_peer = min(results, key=lambda p: results[p][0])
    slowest = max(t for t, _ in results.values())
    # the same seed without the tol test, to find when each target is reached
    _, _, long_run = run_nmfsched(X, k, seed, tol=0, max_epochs=100_000, max_time=max(slowest, seconds))
    history = long_run.history_
    to_best = time_to(history, results[best_peer][1], tolerance)
    at_budget = error_at(history, results[fastest_peer][0])

    lines = []
    for peer, (t, err) in results.items():
        lines.append(f"| {name} | {k} | {peer} | {t:.2f} | {err:.5f} | | | |")
    lines.append(
        f"| {name} | {k} | **nmfsched** | {seconds:.2f} | {error:.5f} | "
        f"{_ratio(to_best, results[best_peer][0])} ({best_peer}) | "
        f"{_ratio(to_best, results[fastest_peer][0])} ({fastest_peer}) | {_error(at_budget)} |"
    )
    gemm, bandwidth = machine[X.dtype]
    flops, nbytes, epochs_seconds = run_work(X, k, history, resolve_w_sweeps("auto", k, X.shape[1]))
    n_epochs = len(history["epoch"]) - 1
    gflops, gbytes = flops / epochs_seconds / 1e9, nbytes / epochs_seconds / 1e9
    shape_rate = shape_gemm_rate(X, k)
    one_batch = float(np.mean(history["batch_size"] >= X.shape[0]))
    roofline = (
        f"{name}: {n_epochs} epochs of {epochs_seconds / max(1, n_epochs) * 1e3:.1f} ms "
        f"({one_batch:.0%} one-batch; default run: batch {model.batch_size_}), {gflops:.1f} GFLOP/s = "
        f"{gflops / gemm:.0%} of GEMM ({gemm:.0f}) and {gflops / shape_rate:.0%} of same-shape X @ H^T "
        f"({shape_rate:.1f}); {gbytes:.1f} GB/s = {gbytes / bandwidth:.0%} of copy bandwidth ({bandwidth:.0f})"
    )
    return lines, roofline


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three small cases (a smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", action="append", default=[], help="run only cases whose name starts so")
    parser.add_argument(
        "--tolerance", type=float, default=1e-4,
        help="a target error counts as reached within this relative margin (default 1e-4: ties at 4 digits)",
    )
    parser.add_argument("--skip-peer", action="append", default=[], choices=sorted(PEERS))
    args = parser.parse_args(argv)
    peers = [p for p in PEERS if p not in args.skip_peer]
    if not peers:
        parser.error("at least one peer must run")

    warm_up()  # the first fit in a process pays for loading kernels and starting threads
    with threadpool_limits(None):
        machine = {np.dtype(dt): machine_rates(dt) for dt in (np.float64, np.float32)}
    print("| data | rank | solver | time (s) | rel. error | time to best / best peer | / fastest peer "
          "| error at fastest's budget |")
    print("|---|---|---|---|---|---|---|---|")
    rooflines = []
    for name, load, k in cases(args.quick, args.seed):
        if args.case and not any(name.startswith(c) for c in args.case):
            continue
        X = load()
        lines, roofline = run_case(name, X, k, args.seed, peers, machine, args.tolerance)
        print("\n".join(lines), flush=True)
        rooflines.append(roofline)
    print()
    for line in rooflines:
        print(f"- {line}")


if __name__ == "__main__":
    main()
