"""Rank selection on matrices whose true rank is known: how often it is found, and what it costs.

Two generated families, ``--seeds`` each (true rank ``--true-rank``, candidates 2..7):

- dense: ``W H`` with uniform factors (200 x 60) plus half-normal noise of ``--noise`` times
  the matrix's standard deviation;
- sparse counts: Poisson draws of a rank-k Gamma(0.5) intensity of mean 3 (300 x 80, about
  30% zeros), given as CSR (its zeros are observed entries, hidden and scored too).

For each matrix :func:`nmfsched.select_rank` runs at its defaults (3 splits hiding 10%, the
one-standard-error rule). Its wall time is reported against a plain loop of the same fits (for
each split and rank, hide, fit, score; written out here as a user would, with the same
hidden entries and seeds, so the fits are identical) and, with ``--jobs``, in parallel processes.

    python benchmarks/rank_selection.py [--seeds 10] [--jobs 2] [--json out.json]
"""

import argparse
import json
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp

from nmfsched import StochasticNMF, select_rank

RANKS = range(2, 8)


def dense(seed, k, noise, n=200, m=60):
    rng = np.random.default_rng(seed)
    X = rng.random((n, k)) @ rng.random((k, m))
    return X + noise * X.std() * np.abs(rng.standard_normal(X.shape))


def counts(seed, k, n=300, m=80, mean=3.0):
    rng = np.random.default_rng(seed)
    L = rng.gamma(0.5, 1.0, (n, k)) @ rng.gamma(0.5, 1.0, (k, m))
    return sp.csr_matrix(rng.poisson(L * mean / L.mean()).astype(float))


def plain_loop(X, ranks, seed, test_fraction=0.1, n_repeats=3):
    """The same fits as ``select_rank(X, ranks, random_state=seed)`` (the same hidden entries and
    seeds, drawn the same way) as a hand-written loop: ``(mean error per rank, seconds)``."""
    t = time.perf_counter()
    X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=float)
    rows, cols = np.nonzero(~np.isnan(X))
    rng = np.random.RandomState(seed)
    n_hidden = int(round(test_fraction * len(rows)))
    splits = [rng.choice(len(rows), n_hidden, replace=False) for _ in range(n_repeats)]
    seeds = rng.randint(2**31 - 1, size=n_repeats)
    errors = np.zeros((len(ranks), n_repeats))
    for r, hidden in enumerate(splits):
        train = X.copy()
        train[rows[hidden], cols[hidden]] = np.nan
        truth = X[rows[hidden], cols[hidden]]
        for i, k in enumerate(ranks):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = StochasticNMF(k, random_state=int(seeds[r]))
                W = model.fit_transform(train)
            predicted = (W[rows[hidden]] * model.components_[:, cols[hidden]].T).sum(axis=1)
            errors[i, r] = np.linalg.norm(predicted - truth) / np.linalg.norm(truth)
    return errors.mean(axis=1), time.perf_counter() - t


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--true-rank", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    StochasticNMF(2, max_iter=2).fit(np.where(np.eye(20, 10) > 0, np.nan, 1.0))  # compile before timing
    report = {"script": "benchmarks/rank_selection.py", "date": time.strftime("%Y-%m-%d"), "true_rank": args.true_rank,
              "noise": args.noise, "families": {}}
    print("| family | seed | chosen | held-out error per rank 2..7 | select_rank s | "
          f"--jobs {args.jobs} s | plain loop s |")
    print("|---|---|---|---|---|---|---|")
    for family, make in (("dense", lambda s: dense(s, args.true_rank, args.noise)),
                         ("sparse counts", lambda s: counts(s, args.true_rank))):
        rows = []
        for seed in range(args.seeds):
            X = make(seed)
            result = select_rank(X, RANKS, random_state=seed, progress=False)
            parallel = select_rank(X, RANKS, random_state=seed, progress=False, n_jobs=args.jobs)
            loop_mean, loop_seconds = plain_loop(X, list(RANKS), seed)
            assert np.allclose(loop_mean, result.mean, rtol=1e-6), "the plain loop must make the same fits"
            rows.append({"seed": seed, "rank": result.rank, "mean": result.mean.tolist(), "seconds": result.seconds,
                         "parallel_seconds": parallel.seconds, "plain_loop_seconds": loop_seconds})
            print(f"| {family} | {seed} | {result.rank} | {' '.join(f'{e:.4f}' for e in result.mean)} | "
                  f"{result.seconds:.1f} | {parallel.seconds:.1f} | {loop_seconds:.1f} |")
        hits = sum(r["rank"] == args.true_rank for r in rows)
        total = sum(r["seconds"] for r in rows)
        print(f"{family}: true rank {args.true_rank} chosen in {hits} of {len(rows)} seeds; select_rank "
              f"{total:.1f} s, with --jobs {args.jobs} {sum(r['parallel_seconds'] for r in rows):.1f} s, plain loop "
              f"{sum(r['plain_loop_seconds'] for r in rows):.1f} s")
        report["families"][family] = {"hits": hits, "seeds": len(rows), "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
