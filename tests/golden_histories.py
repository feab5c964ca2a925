"""Fixed-seed fits whose ``history_`` is pinned bit for bit in ``data/golden_histories.json``.

The pin guards refactors of the loop: they must not change a single number. A deliberate
change of the algorithm regenerates the file (``python tests/golden_histories.py``) and
says why in its commit. Bit identity holds only on the build and processor that made the pin
(BLAS and Numba pick their kernels by CPU), so the file records that environment beside the
histories.
"""

import json
import platform
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

GOLDEN = Path(__file__).resolve().parent / "data" / "golden_histories.json"


def _dense():
    rng = np.random.default_rng(7)
    return rng.random((600, 6)) @ rng.random((6, 40)) + 0.05 * rng.random((600, 40))


def _tiny():
    return np.random.default_rng(0).random((23, 4))


def _at_the_bound():
    """A scheduler that proposes the bound itself every epoch (defined when called: the
    scheduler module is code under test)."""
    from nmfsched.schedulers import Scheduler

    class AtTheBound(Scheduler):
        def _next_lr(self, obs):
            return obs.lr_bound if obs.lr_bound > 0 else 1.0

    return AtTheBound()


def _sparse():
    rng = np.random.default_rng(8)
    X = sp.random(500, 120, density=0.08, random_state=8, format="csr")
    X.data = np.floor(1 + 5 * rng.random(X.nnz))
    return X


#: name -> (matrix, estimator parameters, partial_fit chunks or None)
CASES = {
    # minibatch epochs, batch growth, then one-batch epochs; GreedyLR under the guard
    "dense_greedy": (_dense, dict(n_components=6, batch_size=64, max_iter=40, tol=0), None),
    "sparse_default": (_sparse, dict(n_components=5, max_iter=25), None),
    "dense_float32_step": (
        lambda: _dense().astype(np.float32),
        dict(n_components=4, scheduler="step", batch_size=100, grow_batch=False, max_iter=12, tol=0),
        None,
    ),
    "dense_line_search": (
        _dense,
        dict(n_components=5, scheduler="line_search", batch_size=128, grow_batch=False, max_iter=8, tol=0),
        None,
    ),
    # a rate far above the bound without enforcement: no guard, no clips
    "dense_unguarded": (
        _dense,
        dict(n_components=6, learning_rate=0.3, scheduler="constant", enforce_bound=False, batch_size=50,
             max_iter=10, tol=0),
        None,
    ),
    # rejected epochs (the found case of test_stability): restore and halved caps
    "tiny_rejections": (
        _tiny,
        dict(n_components=2, scheduler=_at_the_bound, learning_rate=1.0, batch_size=11, max_iter=8, tol=0,
             init="nndsvd", grow_batch=False),
        None,
    ),
    "dense_partial_fit": (_dense, dict(n_components=6, batch_size=80), 4),
}


def fit_history(name):
    """The history of case ``name`` as plain lists, without wall time."""
    from nmfsched import StochasticNMF
    from nmfsched.stability import StabilityWarning

    make, params, chunks = CASES[name]
    X = make()
    params = {k: v() if callable(v) else v for k, v in params.items()}
    model = StochasticNMF(random_state=0, **params)
    if chunks is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StabilityWarning)
            model.fit(X)
    else:
        for part in np.array_split(np.arange(X.shape[0]), chunks):
            model.partial_fit(X[part])
    return {k: np.asarray(v).tolist() for k, v in model.history_.items() if k != "seconds"}


def environment():
    """What decides the rounding of a fit: library versions, the BLAS build and the CPU it chose."""
    import llvmlite.binding
    import numba
    import scipy
    import sklearn
    from threadpoolctl import threadpool_info

    blas = sorted(f"{i['internal_api']} {i['version']} {i.get('architecture')}" for i in threadpool_info()
                  if i["user_api"] == "blas")
    return {
        "machine": platform.machine(), "numba_cpu": llvmlite.binding.get_host_cpu_name(),
        "numpy": np.__version__, "scipy": scipy.__version__, "numba": numba.__version__,
        "scikit-learn": sklearn.__version__, "blas": blas,
    }


def main():
    histories = {name: fit_history(name) for name in CASES}
    GOLDEN.write_text(json.dumps({"environment": environment(), "cases": histories}, indent=0) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
