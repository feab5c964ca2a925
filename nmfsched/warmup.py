"""Pay the one-time costs of a process before anything is timed."""


def warm_up():
    """Fit scikit-learn's digits for one epoch, untimed.

    The first fit in a process loads the compiled kernels and starts Numba's thread pool;
    timings taken after this measure the solver alone. A small slice is not enough: a
    64-row warm-up never reached the parallel kernels (+0.2 s in the next timing).
    """
    from sklearn.datasets import load_digits

    from .estimator import StochasticNMF

    StochasticNMF(16, max_iter=1).fit(load_digits().data)
