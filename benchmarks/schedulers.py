"""Every registered scheduler on a suite of NMF problems, equal epoch budgets, guard on.

For each (problem, seed) every scheduler runs ``--epochs`` epochs (``tol=0``) from the
same initial factors, under the stability bound. The table then gives, per baseline,
the share of (problem, seed) pairs where GreedyLR

- ends at an equal-or-lower loss ("final"),
- reaches the common target in fewer-or-equal epochs ("epochs") and in less-or-equal
  wall time ("time"); the common target of a pair is the largest final loss of all
  schedulers, so every scheduler reaches it.

Problems: scikit-learn's digits, ../shared/data's olivetti and cbcl when present, and
generated families (tall, wide, sparse text-like counts, noisy low rank, badly scaled rows).

    python benchmarks/schedulers.py [--seeds 3] [--epochs 40] [--quick]
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.datasets import load_digits

from nmfsched import StochasticNMF, schedulers
from nmfsched.stability import StabilityWarning

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REFERENCE = "greedy"


def problems(quick, rng):
    yield "digits r16", load_digits().data, 16
    if quick:
        return
    for name, scale, k in (("olivetti", 242, 40), ("cbcl", 255, 49)):
        if (SHARED / f"{name}.npz").exists():
            yield f"{name} r{k}", np.load(SHARED / f"{name}.npz")["X"].astype(np.float64) / scale, k
    yield "tall 20000x60 r10", rng.random((20000, 10)) @ rng.random((10, 60)) + 0.1 * rng.random((20000, 60)), 10
    yield "wide 300x4000 r10", rng.random((300, 10)) @ rng.random((10, 4000)) + 0.1 * rng.random((300, 4000)), 10
    topics = rng.gamma(0.2, 1, (3000, 12)) @ rng.gamma(0.2, 1, (12, 2000))
    yield "sparse counts 3000x2000 r12", sp.csr_matrix(rng.poisson(0.2 * topics).astype(np.float64)), 12
    yield "noisy 2000x300 r10", rng.random((2000, 10)) @ rng.random((10, 300)) + 0.5 * rng.random((2000, 300)), 10
    scaled = (rng.random((2000, 8)) @ rng.random((8, 200))) * 10.0 ** rng.uniform(-3, 3, (2000, 1))
    yield "badly scaled rows 2000x200 r8", scaled, 8


def run(name, X, k, seed, epochs):
    model = StochasticNMF(k, scheduler=name, max_epochs=epochs, tol=0, random_state=seed)
    start = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - start
    h = model.history_
    return h["loss"], seconds * h["seconds"] / h["seconds"][-1]  # wall time at each epoch


def reach(losses, seconds, target):
    hit = int(np.flatnonzero(losses <= target)[0])
    return hit + 1, seconds[hit]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="digits only, 1 seed, 5 epochs")
    args = parser.parse_args(argv)
    seeds, epochs = (1, 5) if args.quick else (args.seeds, args.epochs)
    names = [n for n in schedulers.available() if not n.startswith("test-")]
    warnings.simplefilter("ignore", StabilityWarning)
    runs = {}  # (problem, seed) -> scheduler -> (losses, seconds)
    for problem, X, k in problems(args.quick, np.random.default_rng(0)):
        for seed in range(seeds):
            runs[problem, seed] = {name: run(name, X, k, seed, epochs) for name in names}
            print(f"  done {problem} seed {seed}", flush=True)
    print()
    print(f"GreedyLR against each baseline over {len(runs)} (problem, seed) pairs, {epochs} epochs each:\n")
    print("| baseline | final loss: greedy <= | epochs to target: greedy <= | time to target: greedy <= | mean final loss / greedy's |")
    print("|---|---|---|---|---|")
    for base in names:
        if base == REFERENCE:
            continue
        final = epochs_ = wall = 0
        ratios = []
        for pair in runs.values():
            (g_loss, g_sec), (b_loss, b_sec) = pair[REFERENCE], pair[base]
            target = max(res[0][-1] for res in pair.values())
            g_ep, g_t = reach(g_loss, g_sec, target)
            b_ep, b_t = reach(b_loss, b_sec, target)
            final += g_loss[-1] <= b_loss[-1]
            epochs_ += g_ep <= b_ep
            wall += g_t <= b_t
            ratios.append(b_loss[-1] / g_loss[-1])
        n = len(runs)
        print(f"| {base} | {final / n:.0%} | {epochs_ / n:.0%} | {wall / n:.0%} | {np.mean(ratios):.4f} |")


if __name__ == "__main__":
    main()
