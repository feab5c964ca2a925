"""Every registered scheduler on a suite of NMF problems, equal epoch budgets, guard on.

For each (problem, seed) every scheduler runs ``--epochs`` epochs (``tol=0``) from the
same initial factors, under the stability bound. The table then gives, per baseline,
the share of (problem, seed) pairs where GreedyLR

- ends at an equal-or-lower loss ("final"),
- reaches the common target in fewer-or-equal epochs ("epochs") and in less-or-equal
  wall time ("time"); the common target of a pair is the largest final loss of all
  schedulers, so every scheduler reaches it.

A comparison of final losses also counts as equal when GreedyLR is within ``--tie`` (relative)
of the baseline: seeds of one scheduler spread by about that much, so a strict ``<=`` decides
near-ties by noise. Both counts are printed. The line search's wall time and trial steps are
reported against GreedyLR's.

Problems: scikit-learn's digits, ../shared/data's olivetti and cbcl when present, and
generated families (tall, wide, sparse text-like counts, noisy low rank, badly scaled rows).

``--json PATH`` also writes the table, every run's final loss, the command, date and machine
(the docs' benchmarks page is generated from it), and the share of (problem, seed) pairs in
which every scheduler ended within ``--tie`` of the best: where the guard's cap binds, the
schedules tie.

    python benchmarks/schedulers.py [--seeds 3] [--epochs 40] [--tie 0.005] [--quick] [--json PATH]
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.datasets import load_digits

from nmfsched import StochasticNMF, schedulers
from nmfsched.stability import StabilityWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_report  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REFERENCE = "greedy"
FIXED = ("constant", "step", "multistep", "exponential", "cosine", "linear", "warmup", "plateau")


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


# Schedulers are compared at one gradient noise level: a fixed batch, no batch growth.
FIXED_BATCH = dict(batch_size=256, grow_batch=False)


def run(name, X, k, seed, epochs):
    model = StochasticNMF(k, scheduler=name, max_iter=epochs, tol=0, random_state=seed, **FIXED_BATCH)
    start = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - start
    h = model.history_
    # wall time at each epoch, and the line search's trial steps
    return h["loss"], seconds * h["seconds"] / h["seconds"][-1], int(h["n_trials"].sum())


def reach(losses, seconds, target):
    hit = int(np.flatnonzero(losses <= target)[0])
    return hit + 1, seconds[hit]


def compare(runs, names, tie):
    """Per baseline: the shares GreedyLR wins and the mean final-loss ratio."""
    rows = {}
    for base in names:
        if base == REFERENCE:
            continue
        final = final_tie = epochs_ = wall = 0
        ratios = []
        for pair in runs.values():
            (g_loss, g_sec, _), (b_loss, b_sec, _) = pair[REFERENCE], pair[base]
            target = max(res[0][-1] for res in pair.values())
            g_ep, g_t = reach(g_loss, g_sec, target)
            b_ep, b_t = reach(b_loss, b_sec, target)
            final += g_loss[-1] <= b_loss[-1]
            final_tie += g_loss[-1] <= b_loss[-1] * (1 + tie)
            epochs_ += g_ep <= b_ep
            wall += g_t <= b_t
            ratios.append(b_loss[-1] / g_loss[-1])
        n = len(runs)
        rows[base] = (final / n, final_tie / n, epochs_ / n, wall / n, float(np.mean(ratios)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--tie", type=float, default=0.005, help="relative final-loss tolerance of an 'equal'")
    parser.add_argument("--quick", action="store_true", help="digits only, 1 seed, 5 epochs")
    parser.add_argument("--json", type=Path, help="also write the table and every final loss here")
    args = parser.parse_args(argv)
    seeds, epochs = (1, 5) if args.quick else (args.seeds, args.epochs)
    names = [n for n in schedulers.available() if not n.startswith("test-")]
    warnings.simplefilter("ignore", StabilityWarning)
    for name in names:  # load the compiled kernels before anything is timed
        run(name, np.random.default_rng(0).random((64, 16)), 2, 0, 2)
    runs = {}  # (problem, seed) -> scheduler -> (losses, seconds, trials)
    batches = {}
    for problem, X, k in problems(args.quick, np.random.default_rng(0)):
        batches[problem] = -(-X.shape[0] // FIXED_BATCH["batch_size"])
        for seed in range(seeds):
            runs[problem, seed] = {name: run(name, X, k, seed, epochs) for name in names}
            print(f"  done {problem} seed {seed}", flush=True)
    rows = compare(runs, names, args.tie)
    print()
    print(f"GreedyLR against each baseline over {len(runs)} (problem, seed) pairs, {epochs} epochs each:\n")
    print(
        f"| baseline | final loss: greedy <= | final loss: greedy <= (1 + {args.tie:g}) x | "
        "epochs to target: greedy <= | time to target: greedy <= | mean final loss / greedy's |"
    )
    print("|---|---|---|---|---|---|")
    for base, (final, final_tie, epochs_, wall, ratio) in rows.items():
        print(f"| {base} | {final:.0%} | {final_tie:.0%} | {epochs_:.0%} | {wall:.0%} | {ratio:.4f} |")
    fixed = [rows[b] for b in FIXED if b in rows]
    print(
        f"\nAgainst the fixed schedules ({', '.join(b for b in FIXED if b in rows)}): final loss "
        f"{np.mean([r[0] for r in fixed]):.0%} strict, {np.mean([r[1] for r in fixed]):.0%} within the tie; "
        f"epochs to target {np.mean([r[2] for r in fixed]):.0%}; time to target {np.mean([r[3] for r in fixed]):.0%}."
    )
    if "line_search" in names:
        wall = [pair["line_search"][1][-1] / pair[REFERENCE][1][-1] for pair in runs.values()]
        trials = [pair["line_search"][2] / (epochs * batches[p]) for (p, _), pair in runs.items()]
        print(
            f"line_search wall time / greedy's per fit: median {np.median(wall):.2f} "
            f"(range {min(wall):.2f}-{max(wall):.2f}); trial H steps per minibatch: mean {np.mean(trials):.2f}."
        )
    finals = {f"{problem} / seed {seed}": {name: float(res[0][-1]) for name, res in pair.items()}
              for (problem, seed), pair in runs.items()}
    tied = sum(max(f.values()) <= min(f.values()) * (1 + args.tie) for f in finals.values())
    print(f"every scheduler within {args.tie:g} of the best final loss: {tied} of {len(finals)} (problem, seed) pairs")
    if args.json:
        write_report(args.json, "benchmarks/schedulers.py", argv, reference=REFERENCE, epochs=epochs,
                     tie=args.tie, batch=FIXED_BATCH, fixed=[b for b in FIXED if b in rows],
                     rows={base: dict(zip(("final", "final_tie", "epochs", "time", "mean_ratio"), r))
                           for base, r in rows.items()},
                     all_tied=tied, pairs=len(finals), final_losses=finals)
    return rows


if __name__ == "__main__":
    main()
