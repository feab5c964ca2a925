"""Where the default ``tol`` test stops, against where the peers end.

Each case of ``benchmarks/peers.py`` is fitted once per seed with ``tol=0`` for ``--max-iter``
epochs; the library's own :class:`~nmfsched.epochs.StoppingRules` is then asked after every
epoch of that history when it would have stopped, with the loss floor
(:data:`~nmfsched.epochs.LOSS_FLOOR`, the default) and without it. The table gives, per case
and seed, each rule's stopping epoch and time, the error there against the lowest final
error of the peers run here (scikit-learn's always; nmf-torch's where installed), and the
epoch and time at which the run first came within 0.1% of that peer error.

    python benchmarks/stopping.py [--quick] [--case NAME ...] [--seeds 0 1] [--max-iter 1000]
        [--json FILE]
"""

import argparse
import importlib.util
import json
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from nmfsched import StochasticNMF
from nmfsched.epochs import LOSS_FLOOR, StoppingRules

DEFAULT = StochasticNMF()
RULES = {"floor": LOSS_FLOOR, "no floor": 0.0}


def _peers():
    spec = importlib.util.spec_from_file_location("peers", Path(__file__).with_name("peers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stop_epoch(losses, seconds, zero_fit_loss, floor_fraction, tol=DEFAULT.tol, window=DEFAULT.n_iter_no_change):
    """The epoch (from 1) after which the default ``tol`` test stops the run whose losses are ``losses``."""
    rules = StoppingRules(len(losses), tol, window, floor=floor_fraction * zero_fit_loss)
    for t in range(1, len(losses) + 1):
        if rules.reason(SimpleNamespace(loss=losses[t - 1], seconds=seconds[t - 1]), losses[:t]) is not None:
            return t
    return len(losses)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small cases, 60 epochs, seed 0")
    parser.add_argument("--case", action="append", help="only cases whose name contains this (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    peers = _peers()
    available = peers.available_peers()
    max_iter, seeds = (60, [0]) if args.quick else (args.max_iter, args.seeds)
    print(f"peers: {', '.join(available)}; tol={DEFAULT.tol}, n_iter_no_change={DEFAULT.n_iter_no_change}, "
          f"floor {LOSS_FLOOR} x 1/2 ||X||^2; tol=0 histories of {max_iter} epochs\n")
    print("| case | seed | peer error (who) | reached within 0.1%: epoch, s | "
          + " | ".join(f"{name}: epoch, s, error / peer" for name in RULES) + " |")
    print("|---|---|---|---|" + "---|" * len(RULES))
    rows = []
    for name, load, k in peers.cases(args.quick, 0):
        if args.case and not any(c in name for c in args.case):
            continue
        X = load()
        sparse = hasattr(X, "tocsr")
        finals = {who: peers.run_peer(p, X, k, 0)[1] for who, p in available.items() if not (sparse and p.dense_only)}
        who, peer_error = min(finals.items(), key=lambda item: item[1])
        for seed in seeds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = StochasticNMF(k, random_state=seed, max_iter=max_iter, tol=0)
                start = time.perf_counter()
                model.fit(X)
                total = time.perf_counter() - start
            h = model.history_
            losses, seconds, errors = h["loss"].tolist(), h["seconds"].tolist(), h["rel_error"]
            zero_fit_loss = losses[-1] / errors[-1] ** 2 if errors[-1] > 0 else losses[0] / errors[0] ** 2
            reached = np.flatnonzero(errors <= 1.001 * peer_error)
            row = dict(case=name, seed=seed, peer=who, peer_error=peer_error, fit_seconds=total,
                       reached=None if reached.size == 0 else (int(reached[0]) + 1, float(seconds[reached[0]])))
            cells = []
            for rule, fraction in RULES.items():
                t = stop_epoch(losses, seconds, zero_fit_loss, fraction)
                error = float(np.min(errors[:t]))
                row[rule] = dict(epoch=t, seconds=seconds[t - 1], error=error, ratio=error / peer_error)
                flag = " (above)" if error > 1.001 * peer_error else ""
                cells.append(f"{t}, {seconds[t - 1]:.2f}, {error / peer_error:.4f}{flag}")
            reach = "not reached" if row["reached"] is None else f"{row['reached'][0]}, {row['reached'][1]:.2f}"
            print(f"| {name} | {seed} | {peer_error:.5f} ({who}) | {reach} | " + " | ".join(cells) + " |", flush=True)
            rows.append(row)
    for rule in RULES:
        above = sum(r[rule]["ratio"] > 1.001 for r in rows)
        print(f"\n{rule}: {sum(r[rule]['seconds'] for r in rows):.1f} s to stop in all; "
              f"stopped above the peer error (by > 0.1%) in {above} of {len(rows)} runs")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
