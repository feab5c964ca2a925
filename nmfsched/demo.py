"""`nmfsched demo`: a real factorization on data that ships with scikit-learn."""

import time

import numpy as np


def run_demo(n_components=16, random_state=0, compare=True, out=print):
    """Factorize scikit-learn's digits (1797 x 64) and print a short report.

    Returns the fitted :class:`~nmfsched.StochasticNMF`.
    """
    from sklearn.datasets import load_digits

    from . import StochasticNMF
    from .warmup import warm_up

    X = load_digits().data
    out(f"nmfsched demo: scikit-learn digits, X {X.shape[0]} x {X.shape[1]}, rank {n_components}")
    warm_up()
    start = time.perf_counter()
    model = StochasticNMF(n_components, random_state=random_state).fit(X)
    seconds = time.perf_counter() - start
    rel = model.reconstruction_err_ / np.linalg.norm(X)
    h = model.history_
    out(
        f"  StochasticNMF ({model.scheduler_!r}): {model.n_iter_} epochs in {seconds:.2f} s, "
        f"stopped by {model.stop_reason_}; relative error {rel:.4f}"
    )
    marks = sorted({0, len(h["epoch"]) // 4, len(h["epoch"]) // 2, len(h["epoch"]) - 1})
    out("  epoch   rel_error   lr")
    for i in marks:
        out(f"  {h['epoch'][i]:5d}   {h['rel_error'][i]:.4f}      {h['lr'][i]:.3g}")
    if compare:
        import warnings

        from sklearn.decomposition import NMF

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NMF's ConvergenceWarning at its own max_iter
            start = time.perf_counter()
            ref = NMF(n_components, random_state=random_state).fit(X)
            ref_seconds = time.perf_counter() - start
        ref_rel = ref.reconstruction_err_ / np.linalg.norm(X)
        out(
            f"  scikit-learn NMF(cd): {ref.n_iter_} iterations in {ref_seconds:.2f} s; relative error {ref_rel:.4f}"
        )
        out(f"  ratios (nmfsched / sklearn): error {rel / ref_rel:.3f}, time {seconds / ref_seconds:.2f}")
    return model
