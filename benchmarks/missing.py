"""Missing entries on MovieLens: held-out RMSE and time against scikit-surprise's NMF and TensorLy.

The ratings (``ml-latest-small``, 610 users x 9724 movies, 100 836 ratings) are split at random
into training and test ratings (``--test-fraction``, per seed). Every method sees the training
ratings only; the RMSE is over the test ratings whose user and movie both have a training
rating (a factorization knows nothing of the others: surprise falls back to the global mean
there, nmfsched to 0), with predictions clipped to the rating scale as surprise clips them.

- nmfsched: ``StochasticNMF(missing="unstored")`` (unstored = unrated), rank ``--rank``, the
  L2 penalty ``alpha_W`` chosen on a validation split of the *training* ratings (``--alphas``),
  at its defaults otherwise; its anytime curve comes from fits stopped after 1, 2, 3, ...
  epochs (each a whole fit: start, epochs and the final solve, timed as a user would).
- scikit-surprise ``NMF`` at its defaults (15 factors, 50 epochs, reg 0.06; its anytime curve
  from 5, 10, 20 epochs).
- TensorLy ``non_negative_parafac`` with ``mask`` (the training pattern) on the dense matrix,
  rank ``--rank``, ``--tensorly-iters`` iterations (0 skips it: about 2 s an iteration here).

Reported: each method's RMSE and time, and the time nmfsched takes to reach each peer's RMSE
(the first epoch count whose fit reaches it) as a ratio of the peer's time.

    python benchmarks/missing.py [--data ratings.csv] [--seeds 0 1 2] [--json out.json]

Needs the ``bench`` extra (scikit-surprise, tensorly).
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from nmfsched import StochasticNMF

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens-small" / "ratings.csv"
RATING_SCALE = (0.5, 5.0)


def load_ratings(path):
    """``(user, movie, rating)`` arrays, users and movies numbered from 0."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1, 2))
    users = np.unique(table[:, 0], return_inverse=True)[1]
    movies = np.unique(table[:, 1], return_inverse=True)[1]
    return users, movies, table[:, 2]


def rating_matrix(users, movies, ratings, shape):
    return sp.csr_matrix((ratings, (users, movies)), shape=shape)


def rmse(predicted, truth):
    return float(np.sqrt(np.mean((np.clip(predicted, *RATING_SCALE) - truth) ** 2)))


def fit_nmfsched(train, rank, alpha, **params):
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StochasticNMF(rank, missing="unstored", alpha_W=alpha, random_state=0, **params)
        W = model.fit_transform(train)
    return W, model.components_, time.perf_counter() - t, model


def predict(W, H, users, movies):
    return np.einsum("ij,ji->i", W[users], H[:, movies])


def choose_alpha(train_triples, shape, rank, alphas, seed):
    """The ``alpha_W`` of lowest RMSE on a 10% validation split of the training ratings."""
    u, i, r = train_triples
    valid = np.random.default_rng(seed + 1000).random(len(r)) < 0.1
    fit_part = rating_matrix(u[~valid], i[~valid], r[~valid], shape)
    scores = {}
    for alpha in alphas:
        W, H, _, _ = fit_nmfsched(fit_part, rank, alpha)
        scores[alpha] = rmse(predict(W, H, u[valid], i[valid]), r[valid])
    return min(scores, key=scores.get), scores


def run_surprise(train_triples, test_pairs, epochs):
    import surprise

    u, i, r = train_triples
    data = surprise.Dataset(surprise.Reader(rating_scale=RATING_SCALE))
    trainset = data.construct_trainset([(str(a), str(b), float(c), None) for a, b, c in zip(u, i, r)])
    t = time.perf_counter()
    algo = surprise.NMF(n_epochs=epochs, random_state=0)
    algo.fit(trainset)
    seconds = time.perf_counter() - t
    predicted = np.array([algo.predict(str(a), str(b)).est for a, b in zip(*test_pairs)])
    return predicted, seconds


def run_tensorly(train, rank, iterations):
    import tensorly
    from tensorly.decomposition import non_negative_parafac

    dense = train.toarray()
    mask = (train != 0).toarray().astype(float)  # ratings are >= 0.5: every stored entry is nonzero
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cp = non_negative_parafac(tensorly.tensor(dense), rank=rank, mask=mask, n_iter_max=iterations, init="random",
                                  random_state=0, tol=0)
    seconds = time.perf_counter() - t
    return cp.factors[0] * cp.weights, cp.factors[1].T, seconds


def run_seed(seed, users, movies, ratings, args):
    shape = (users.max() + 1, movies.max() + 1)
    test = np.random.default_rng(seed).random(len(ratings)) < args.test_fraction
    triples = (users[~test], movies[~test], ratings[~test])
    train = rating_matrix(*triples, shape)
    known = np.isin(users[test], triples[0]) & np.isin(movies[test], triples[1])
    tu, ti, tr = users[test][known], movies[test][known], ratings[test][known]
    alpha, alpha_scores = choose_alpha(triples, shape, args.rank, args.alphas, seed)
    fit_nmfsched(train, args.rank, alpha, max_iter=1)  # compile the kernels before timing
    curve = []
    for epochs in args.epochs:
        W, H, seconds, model = fit_nmfsched(train, args.rank, alpha, max_iter=epochs, tol=0)
        curve.append({"epochs": epochs, "seconds": seconds, "rmse": rmse(predict(W, H, tu, ti), tr)})
    W, H, seconds, model = fit_nmfsched(train, args.rank, alpha)
    default = {"epochs": int(model.n_iter_), "seconds": seconds, "rmse": rmse(predict(W, H, tu, ti), tr)}
    peers = {}
    for epochs in (5, 10, 20, 50):
        predicted, secs = run_surprise(triples, (tu, ti), epochs)
        peers[f"surprise NMF {epochs} epochs"] = {"seconds": secs, "rmse": rmse(predicted, tr)}
    if args.tensorly_iters:
        A, H_tl, secs = run_tensorly(train, args.rank, args.tensorly_iters)
        peers[f"tensorly masked NN-PARAFAC {args.tensorly_iters} it"] = {
            "seconds": secs, "rmse": rmse(predict(A, H_tl, tu, ti), tr)}
    for peer in peers.values():
        reached = [p for p in curve + [default] if p["rmse"] <= peer["rmse"]]
        first = min(reached, key=lambda p: p["seconds"]) if reached else None
        peer["nmfsched_seconds_to_reach"] = None if first is None else first["seconds"]
        peer["time_ratio"] = None if first is None else first["seconds"] / peer["seconds"]
    return {"seed": seed, "alpha_W": alpha, "alpha_scores": alpha_scores, "n_test_known": int(known.sum()),
            "n_test": int(test.sum()), "nmfsched_curve": curve, "nmfsched_default": default, "peers": peers}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rank", type=int, default=15)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2, 0.3])
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 3, 5, 8, 12, 20])
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--tensorly-iters", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"{args.data} not found: pass --data with MovieLens ml-latest-small's ratings.csv", file=sys.stderr)
        return 2
    users, movies, ratings = load_ratings(args.data)
    results = []
    for seed in args.seeds:
        row = run_seed(seed, users, movies, ratings, args)
        results.append(row)
        d = row["nmfsched_default"]
        print(f"seed {seed}: alpha_W {row['alpha_W']} (validation), {row['n_test_known']} of {row['n_test']} test "
              f"ratings known; nmfsched default: RMSE {d['rmse']:.4f} in {d['seconds']:.2f} s ({d['epochs']} epochs)")
        print("  nmfsched by epochs: " + ", ".join(f"{p['epochs']}: {p['rmse']:.4f} ({p['seconds']:.2f} s)"
                                                    for p in row["nmfsched_curve"]))
        for name, peer in row["peers"].items():
            ratio = "not reached" if peer["time_ratio"] is None else (
                f"reached in {peer['nmfsched_seconds_to_reach']:.2f} s = {peer['time_ratio']:.2f}x its time")
            print(f"  {name:38s} RMSE {peer['rmse']:.4f} in {peer['seconds']:6.2f} s; nmfsched {ratio}")
    if args.json:
        args.json.write_text(json.dumps({"script": "benchmarks/missing.py", "date": time.strftime("%Y-%m-%d"),
                                         "rank": args.rank, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
