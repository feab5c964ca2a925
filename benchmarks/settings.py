"""nmfsched under a few settings of its own, side by side on the peers' suite.

Each setting is a set of estimator parameters on top of the defaults; every setting runs on
every case from the same seed (so the same start). Per case the Markdown table gives each
setting's final relative error, epochs and fit time, and both as ratios to the first
setting's (the reference). A summary line per setting counts the cases where it ended
within ``--tie`` of the reference's error, lower, or higher, and its geometric-mean error
and time ratios. Used to choose defaults by measurement on the whole suite, never per case.

    python benchmarks/settings.py --setting NAME=JSON [--setting NAME=JSON ...]
        [--quick] [--seed 0] [--case NAME ...] [--tie 0.005]

e.g. ``--setting default={} --setting capped={"scheduler_params": {"max_lr": 1.0}}``.
"""

import argparse
import importlib.util
import json
import time
import warnings
from pathlib import Path

import numpy as np

from nmfsched import StochasticNMF
from nmfsched.metrics import relative_error
from nmfsched.stability import StabilityWarning
from nmfsched.warmup import warm_up


def _peers():
    spec = importlib.util.spec_from_file_location("peers", Path(__file__).with_name("peers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _setting(text):
    name, sep, params = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expects NAME=JSON, got {text!r}")
    try:
        value = json.loads(params)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{name}: parameters must be a JSON object, got {params!r}")
    return name, value


def run(X, k, seed, params):
    model = StochasticNMF(k, random_state=seed, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StabilityWarning)
        start = time.perf_counter()
        W = model.fit_transform(X)
        seconds = time.perf_counter() - start
    return relative_error(X, W, model.components_), model.n_iter_, seconds


def summarise(results, names, tie):
    """Per setting after the first: (within tie, lower, higher, geo-mean error ratio, geo-mean time ratio)."""
    out = {}
    reference = names[0]
    for name in names[1:]:
        err = np.array([r[name][0] / r[reference][0] for r in results.values()])
        sec = np.array([r[name][2] / r[reference][2] for r in results.values()])
        tied = np.abs(err - 1) <= tie
        out[name] = (int(tied.sum()), int((~tied & (err < 1)).sum()), int((~tied & (err > 1)).sum()),
                     float(np.exp(np.mean(np.log(err)))), float(np.exp(np.mean(np.log(sec)))))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", type=_setting, action="append", required=True, metavar="NAME=JSON")
    parser.add_argument("--quick", action="store_true", help="the peers' three small cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", action="append", default=[], help="run only cases whose name starts so")
    parser.add_argument("--tie", type=float, default=0.005, help="relative error difference counted as a tie")
    args = parser.parse_args(argv)
    settings = dict(args.setting)
    names = list(settings)
    warm_up()
    print("| case | rank | " + " | ".join(f"{n}: error, epochs, s" for n in names) + " | "
          + " | ".join(f"{n}/{names[0]}: error, time" for n in names[1:]) + " |")
    print("|---|---|" + "---|" * (2 * len(names) - 1))
    results = {}
    for case, load, k in _peers().cases(args.quick, args.seed):
        if args.case and not any(case.startswith(c) for c in args.case):
            continue
        X = load()
        row = {name: run(X, k, args.seed, params) for name, params in settings.items()}
        results[case] = row
        ref = row[names[0]]
        cells = [f"{e:.5f}, {n}, {s:.2f}" for e, n, s in row.values()]
        ratios = [f"{row[n][0] / ref[0]:.4f}, {row[n][2] / ref[2]:.2f}" for n in names[1:]]
        print(f"| {case} | {k} | " + " | ".join(cells + ratios) + " |", flush=True)
    for name, (tied, lower, higher, err, sec) in summarise(results, names, args.tie).items():
        print(f"{name} vs {names[0]}: {lower} lower, {tied} within {args.tie:g}, {higher} higher; "
              f"geometric mean error ratio {err:.4f}, time ratio {sec:.2f}")
    return results


if __name__ == "__main__":
    main()
