"""Cold start: ``import nmfsched`` and the first fit in a fresh process, with and without
Numba's cache, against scikit-learn's import and first fit in the same kind of process.

Each measurement is a new Python process (the import and the first fit are once-per-process
costs). "compile" runs with an empty ``NUMBA_CACHE_DIR`` (as the first fit after install),
"cached" with the cache the compile run left. The fit is scikit-learn's digits at rank 16.

    python benchmarks/cold_start.py [--repeats 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

PROBE = r"""
import json, time
t0 = time.perf_counter()
import {module}
t1 = time.perf_counter()
from sklearn.datasets import load_digits
X = load_digits().data
t2 = time.perf_counter()
{fit}
t3 = time.perf_counter()
{fit}
t4 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "first_fit": t3 - t2, "second_fit": t4 - t3}}))
"""

SOLVERS = {
    "nmfsched": ("nmfsched", "nmfsched.StochasticNMF(16, random_state=0).fit(X)"),
    "sklearn NMF(cd)": ("sklearn.decomposition", "sklearn.decomposition.NMF(16, random_state=0, max_iter=1000).fit(X)"),
}


def probe(module, fit, cache_dir):
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, fit=fit)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = {}
    for name, (module, fit) in SOLVERS.items():
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                runs = {"compile": probe(module, fit, cache), "cached": probe(module, fit, cache)}
            for state, result in runs.items():
                for key, seconds in result.items():
                    rows.setdefault((name, state, key), []).append(seconds)
    print("| solver | Numba cache | import s | first fit s | second fit s |")
    print("|---|---|---|---|---|")
    for name in SOLVERS:
        for state in ("compile", "cached"):
            cells = [statistics.median(rows[(name, state, key)]) for key in ("import", "first_fit", "second_fit")]
            print(f"| {name} | {state} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return rows


if __name__ == "__main__":
    main()
