"""StochasticNMF at its defaults against scikit-learn's NMF(cd) and MiniBatchNMF, side by side.

Every solver runs in this process on the same matrices and seeds; the table reports
each one's relative error ||X - WH||_F / ||X||_F and wall time (per seed the fastest of
``--repeats`` runs, then the median over seeds),
and nmfsched's ratios to NMF(cd). Data: scikit-learn's digits (rank 16) and, when
../shared/data is present, olivetti / 242 (rank 40) and cbcl / 255 (rank 49).

    python benchmarks/core_vs_sklearn.py [--seeds 3] [--quick] [--param KEY=VALUE ...]
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import NMF, MiniBatchNMF

from nmfsched import StochasticNMF
from nmfsched.warmup import warm_up

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def cases(quick):
    yield "digits", load_digits().data, 16
    if quick:
        return
    if (SHARED / "olivetti.npz").exists():
        yield "olivetti/242", np.load(SHARED / "olivetti.npz")["X"].astype(np.float64) / 242, 40
    if (SHARED / "cbcl.npz").exists():
        yield "cbcl/255", np.load(SHARED / "cbcl.npz")["X"].astype(np.float64) / 255, 49


def solvers(nmfsched_params):
    return {
        "nmfsched": lambda k, seed: StochasticNMF(k, random_state=seed, **nmfsched_params),
        "sklearn NMF(cd)": lambda k, seed: NMF(k, random_state=seed),
        "sklearn MiniBatchNMF": lambda k, seed: MiniBatchNMF(k, random_state=seed),
    }


def parse_param(text):
    """``key=value`` with the value read as a Python literal when it is one."""
    import ast

    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def measure(make, X, k, seeds, repeats):
    """Mean error over seeds, and the median over seeds of each seed's fastest repeat
    (the minimum filters out other processes' interference on a shared machine)."""
    errors, seconds = [], []
    for seed in seeds:
        times = []
        for _ in range(repeats):
            model = make(k, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning at a peer's own max_iter
                start = time.perf_counter()
                W = model.fit_transform(X)
                times.append(time.perf_counter() - start)
        seconds.append(min(times))
        errors.append(np.linalg.norm(X - W @ model.components_) / np.linalg.norm(X))
    return float(np.mean(errors)), float(np.median(seconds)), errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per seed (the fastest counts)")
    parser.add_argument("--quick", action="store_true", help="digits only, one seed, one repeat")
    parser.add_argument(
        "--param", type=parse_param, action="append", default=[], metavar="KEY=VALUE",
        help="override a StochasticNMF parameter (repeatable), e.g. --param tol=1e-4",
    )
    args = parser.parse_args(argv)
    seeds = range(1 if args.quick else args.seeds)
    repeats = 1 if args.quick else args.repeats

    warm_up()  # the first fit in a process pays for loading kernels and starting threads
    print("| data | rank | solver | rel. error | time (s) | error / cd | time / cd | per-seed errors |")
    print("|---|---|---|---|---|---|---|---|")
    for name, X, k in cases(args.quick):
        results = {s: measure(make, X, k, seeds, repeats) for s, make in solvers(dict(args.param)).items()}
        cd_err, cd_time, _ = results["sklearn NMF(cd)"]
        for solver, (err, sec, per_seed) in results.items():
            print(
                f"| {name} | {k} | {solver} | {err:.4f} | {sec:.3f} | {err / cd_err:.3f} | "
                f"{sec / cd_time:.2f} | {' '.join(f'{e:.4f}' for e in per_seed)} |"
            )


if __name__ == "__main__":
    main()
