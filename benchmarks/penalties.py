"""nmfsched with penalised factors against scikit-learn's NMF(cd) and MiniBatchNMF given the same penalties.

Per case of ``benchmarks/peers.py`` (``--quick``: its quick cases) and per setting
``alpha_W = c * s`` with ``c`` in ``--alphas`` (default 1e-3 and 1e-1) and the scale
``s = ||X||_F^2 / (n m)`` (the mean squared entry, so that a ``c`` weighs alike on matrices of
any scale), ``alpha_H="same"`` and ``l1_ratio`` in ``--l1-ratios`` (default 0, 0.5 and 1):

- each peer fits at its defaults but for the penalties (as ``benchmarks/peers.py`` runs them);
- nmfsched fits at its defaults (``tol=1e-3``) and, once more, with ``tol=0`` for at most
  ``--budget-factor`` (1) times the slowest peer's time, to time it to each peer's objective;
- every objective is scikit-learn NMF's documented one, evaluated on the whole data in float64
  (MiniBatchNMF minimises its own minibatch-scaled variant, so its figure is what the full
  objective says of its factors).

The table gives each peer's time and objective, nmfsched's default run (its time, objective and
their ratio to the peer's), the time the ``tol=0`` run took to come within 0.1% of the peer's
objective as a ratio of the peer's time ("not reached" when it did not in its budget), and
the share of exact zeros in ``W`` and ``H`` of each (L1 makes them sparse).

    python benchmarks/penalties.py [--quick] [--case NAME ...] [--alphas 1e-3 1e-1] [--l1-ratios 0 0.5 1]
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import NMF, MiniBatchNMF

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import cases  # noqa: E402

from nmfsched import StochasticNMF  # noqa: E402
from nmfsched.metrics import frobenius_error  # noqa: E402
from nmfsched.objective import Penalty  # noqa: E402

#: Relative margin within which an objective counts as reached.
TOLERANCE = 1e-3


def penalised_objective(X, W, H, penalty):
    """``1/2 ||X - W H||^2`` plus the penalties, in float64 on the whole data."""
    W, H = np.asarray(W, dtype=np.float64), np.asarray(H, dtype=np.float64)
    data = 0.5 * frobenius_error(X, W, H) ** 2
    return data + penalty.value(W.sum(), float(np.sum(W * W)), H.sum(), float(np.sum(H * H)))


def scale(X):
    """The mean squared entry of ``X`` (``alpha_W`` is ``c`` times it)."""
    data = X.data if sp.issparse(X) else np.asarray(X)
    return float(np.dot(data.ravel(), data.ravel())) / (X.shape[0] * X.shape[1])


def fit_peer(make, X, penalty):
    """``(seconds, W, H)`` of a peer's fit; for MiniBatchNMF the better (by ``penalty``'s objective)
    of ``fit_transform``'s ``W`` and ``transform``'s, the ``transform`` timed with the fit (its
    ``fit_transform`` can return a ``W`` stale next to its ``components_``: see peers.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
        model = make()
        start = time.perf_counter()
        W = model.fit_transform(X)
        if isinstance(model, MiniBatchNMF):
            H = model.components_
            W = min((W, model.transform(X)), key=lambda A: penalised_objective(X, A, H, penalty))
        return time.perf_counter() - start, W, model.components_


def zeros(A):
    return float(np.mean(np.asarray(A) == 0))


def run_setting(name, X, k, alpha, l1_ratio, seed, budget_factor=1.0):
    penalty = Penalty.from_params(alpha, "same", l1_ratio, *X.shape)
    common = dict(alpha_W=alpha, alpha_H="same", l1_ratio=l1_ratio, random_state=seed)
    peers = {
        "NMF(cd)": lambda: NMF(k, solver="cd", **common),
        "MiniBatchNMF": lambda: MiniBatchNMF(k, **common),
    }
    results = {peer: fit_peer(make, X, penalty) for peer, make in peers.items()}
    model = StochasticNMF(k, **common)
    start = time.perf_counter()
    W = model.fit_transform(X)
    ours_seconds = time.perf_counter() - start
    ours = penalised_objective(X, W, model.components_, penalty)
    budget = budget_factor * max(seconds for seconds, _, _ in results.values())
    long_run = StochasticNMF(k, tol=0, max_time=budget, max_iter=100_000, **common).fit(X)
    rows = []
    for peer, (seconds, W_peer, H_peer) in results.items():
        theirs = penalised_objective(X, W_peer, H_peer, penalty)
        reached = np.flatnonzero(long_run.history_["loss"] <= theirs * (1 + TOLERANCE))
        to_peer = f"{long_run.history_['seconds'][reached[0]] / seconds:.2f}" if reached.size else "not reached"
        rows.append(
            f"| {name} | {k} | {alpha:.3g} | {l1_ratio:g} | {peer} | {seconds:.2f} | {theirs:.6g} "
            f"| {ours_seconds:.2f} | {ours:.6g} | {ours / theirs:.4f} | {to_peer} "
            f"| {zeros(W_peer):.2f} / {zeros(H_peer):.2f} | {zeros(W):.2f} / {zeros(model.components_):.2f} |"
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick cases of peers.py")
    parser.add_argument("--case", action="append", default=[], help="run only cases whose name starts so")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e-3, 1e-1],
                        help="alpha_W as multiples of the mean squared entry of X")
    parser.add_argument("--l1-ratios", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-factor", type=float, default=1.0,
                        help="the tol=0 run's time limit, in multiples of the slowest peer's time (1: ratios up to 1 are seen)")
    args = parser.parse_args(argv)
    print(f"# benchmarks/penalties.py {' '.join(argv if argv is not None else sys.argv[1:])}, "
          f"{time.strftime('%Y-%m-%d')}; alpha_W = c x mean(X^2), alpha_H='same'")
    print("| data | k | alpha_W | l1_ratio | peer | peer s | peer objective | nmfsched s | nmfsched objective "
          "| objective ratio | time to peer's (ratio) | zeros W / H peer | zeros W / H nmfsched |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name, load, k in cases(args.quick, args.seed):
        if args.case and not any(name.startswith(c) for c in args.case):
            continue
        X = load()
        s = scale(X)
        for c in args.alphas:
            for l1_ratio in args.l1_ratios:
                for row in run_setting(name, X, k, c * s, l1_ratio, args.seed, args.budget_factor):
                    print(row, flush=True)
                    rows.append(row)
    return rows


if __name__ == "__main__":
    main()
