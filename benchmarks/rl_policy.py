"""The shipped RL policy against tuned step decay, GreedyLR, constant and cosine, on held-out problems.

Held out: real matrices (scikit-learn's bundled digits, breast-cancer and wine; ../shared/data's
olivetti, cbcl, jasper, tdt2 and MovieLens when present) and generated problems from a seed
stream the trainer never draws (checked against the policy card's training problems).

Step decay is tuned on training problems (problems the trainer's distribution draws, seeded
apart from the held-out ones) over ``nmfsched.rl.evaluate.STEP_GRID``; the other baselines run
at their defaults. Two regimes (``nmfsched.rl.evaluate``):

1. equal epoch budgets: batch 256, no growth, ``--epochs`` epochs; final losses compared;
2. estimator defaults: epochs and seconds to a common target (the largest final loss of the
   schedules, so each reaches it) and final losses.

    python benchmarks/rl_policy.py [--seeds 3] [--epochs 40] [--policy FILE] [--quick] [--json OUT]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_digits, load_wine

from nmfsched.rl import Policy
from nmfsched.rl.evaluate import (
    DEFAULTS,
    EQUAL_EPOCHS,
    STEP_GRID,
    all_tied,
    baselines,
    fit_history,
    summarize,
    target_reach,
    tune_step_decay,
)
from nmfsched.rl.policy import card_path
from nmfsched.rl.problems import make_matrix, sample_problem
from nmfsched.schedulers import RLScheduler

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Seeds of the training problems step decay is tuned on, and of the held-out generated ones.
TUNING_SEED, HELD_OUT_SEED = 2026, 777
#: Training problems step decay is tuned on (--quick: the first 2).
TUNING_PROBLEMS = 8


def movielens():
    ratings = np.loadtxt(SHARED / "movielens-small" / "ratings.csv", delimiter=",", skiprows=1, usecols=(0, 1, 2))
    users = np.unique(ratings[:, 0], return_inverse=True)[1]
    movies = np.unique(ratings[:, 1], return_inverse=True)[1]
    return sp.csr_matrix((ratings[:, 2], (users, movies)))


def held_out_problems(quick, n_generated):
    """(name, X, rank) of every held-out problem."""
    yield "digits r16", load_digits().data, 16
    if quick:
        return
    yield "breast-cancer r5", load_breast_cancer().data, 5
    yield "wine r4", load_wine().data, 4
    dense = {"olivetti": (242, 40), "cbcl": (255, 49), "jasper": (5000, 4)}
    for name, (scale, k) in dense.items():
        if (SHARED / f"{name}.npz").exists():
            yield f"{name} r{k}", np.load(SHARED / f"{name}.npz")["X"].astype(np.float64) / scale, k
    if (SHARED / "movielens-small" / "ratings.csv").exists():
        yield "movielens r10", movielens(), 10
    if (SHARED / "tdt2.npz").exists():
        yield "tdt2 r20", sp.load_npz(SHARED / "tdt2.npz").astype(np.float64).tocsr(), 20
    rng = np.random.default_rng(HELD_OUT_SEED)
    for _ in range(n_generated):
        spec = sample_problem(rng)
        yield f"gen {spec.kind} {spec.n_samples}x{spec.n_features} r{spec.n_components}", make_matrix(spec), spec.n_components


def check_held_out(card_path, n_generated):
    """Fail if a held-out generated problem is among the policy card's training problems."""
    if not Path(card_path).exists():
        return "no card to check against"
    card = json.loads(Path(card_path).read_text())
    trained = {p["seed"] for p in card["training_problems"] + card["validation_problems"]}
    rng = np.random.default_rng(HELD_OUT_SEED)
    held = {sample_problem(rng).seed for _ in range(n_generated)}
    rng = np.random.default_rng(TUNING_SEED)
    held |= {sample_problem(rng).seed for _ in range(TUNING_PROBLEMS)}
    if held & trained:
        raise SystemExit(f"held-out problems {sorted(held & trained)} were used in training")
    return f"none of the {len(held)} generated held-out/tuning problems is in the card's {len(trained)}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40, help="budget of the equal-epochs regime")
    parser.add_argument("--generated", type=int, default=6, help="held-out generated problems")
    parser.add_argument("--policy", default="default", help="weights file (default: the shipped policy)")
    parser.add_argument("--quick", action="store_true", help="digits only, 1 seed, 8 epochs, 2 tuning problems x 2 step settings")
    parser.add_argument("--no-defaults", action="store_true", help="skip the estimator-defaults regime")
    parser.add_argument("--tie", type=float, default=1e-3, help="relative final-loss difference counted as a tie")
    parser.add_argument("--json", help="write every run's final loss here")
    args = parser.parse_args(argv)
    seeds, epochs = (1, 8) if args.quick else (args.seeds, args.epochs)
    policy = Policy.load(args.policy)
    print(f"policy {policy.sha256[:12]}; held-out check: {check_held_out(card_path(args.policy), args.generated)}")

    rng = np.random.default_rng(TUNING_SEED)
    tuning = [sample_problem(rng) for _ in range(2 if args.quick else TUNING_PROBLEMS)]
    (step_size, gamma), scores = tune_step_decay(tuning, STEP_GRID[::8] if args.quick else STEP_GRID)
    print(f"step decay tuned on {len(tuning)} training problems: step_size={step_size}, gamma={gamma} "
          f"(mean log final loss {scores[step_size, gamma]:.4f}; worst of the grid {max(scores.values()):.4f})")
    schedules = {"rl": RLScheduler(args.policy), **baselines(step_size, gamma)}

    equal, defaults, rows = [], [], []
    over_relaxed = []
    for problem, X, k in held_out_problems(args.quick, args.generated):
        for seed in range(seeds):
            runs = {name: fit_history(X, k, s, seed, epochs, EQUAL_EPOCHS) for name, s in schedules.items()}
            finals = {name: float(h["loss"][-1]) for name, h in runs.items()}
            equal.append(finals)
            over_relaxed.append(float(np.mean(runs["rl"]["lr"] > 1.0)))
            row = {"problem": problem, "seed": seed, "equal_epochs": finals}
            if not args.no_defaults:
                fits = {name: fit_history(X, k, s, seed, 200, DEFAULTS) for name, s in schedules.items()}
                target = max(float(h["loss"][-1]) for h in fits.values())
                row["defaults"] = {
                    name: {"final": float(h["loss"][-1]), "epochs": len(h["loss"]),
                           "to_target": target_reach(h, target)}
                    for name, h in fits.items()
                }
                defaults.append(row["defaults"])
            rows.append(row)
            print(f"  done {problem} seed {seed}", flush=True)

    names = list(schedules)
    print(f"\n## Equal epoch budgets ({epochs} epochs, batch 256, no growth): final loss / min over schedules\n")
    print("| problem | seed | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for row in rows:
        finals = row["equal_epochs"]
        best = min(finals.values())
        print(f"| {row['problem']} | {row['seed']} | " + " | ".join(f"{finals[n] / best:.4f}" for n in names) + " |")
    print(f"\n| rl against | rl strictly lower | rl <= (1 + {args.tie:g}) x | median rl/baseline | best | worst |")
    print("|---|---|---|---|---|---|")
    for name, s in summarize(equal, tie=args.tie).items():
        print(f"| {name} | {s['strictly_lower']:.0%} | {s['within_tie']:.0%} | {s['median_ratio']:.4f} | "
              f"{s['best_ratio']:.4f} | {s['worst_ratio']:.4f} |")
    print(f"\nIn {all_tied(equal, args.tie):.0%} of the cases every schedule ended within {args.tie:g} of the best "
          f"(typically: the guard's cap bound every schedule in every epoch, or all converged).")
    print(f"\nrl ran over-relaxed (rate > 1) in {np.mean(over_relaxed):.0%} of its epochs.")

    if defaults:
        print("\n## Estimator defaults (growing batch, tol=1e-3): final loss / min, and seconds to the common target\n")
        print("| problem | seed | " + " | ".join(f"{n} final | {n} s" for n in names) + " |")
        print("|---|---|" + "---|---|" * len(names))
        for row in rows:
            d = row["defaults"]
            best = min(v["final"] for v in d.values())
            print(f"| {row['problem']} | {row['seed']} | " + " | ".join(
                f"{d[n]['final'] / best:.4f} | {d[n]['to_target'][1]:.2f}" for n in names) + " |")
        print("\n| rl against | final: rl strictly lower | median final rl/baseline | time to target: rl <= | median time rl/baseline |")
        print("|---|---|---|---|---|")
        finals = [{n: v["final"] for n, v in d.items()} for d in defaults]
        for name, s in summarize(finals, tie=args.tie).items():
            times = np.array([d["rl"]["to_target"][1] / d[name]["to_target"][1] for d in defaults])
            print(f"| {name} | {s['strictly_lower']:.0%} | {s['median_ratio']:.4f} | {np.mean(times <= 1):.0%} | "
                  f"{np.median(times):.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"policy": policy.sha256, "step": [step_size, gamma], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
