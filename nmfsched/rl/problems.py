"""The distribution of NMF problems a schedule is trained on: shapes, ranks, kinds, noise and scales.

A :class:`ProblemSpec` is a small, JSON-safe description; :func:`make_matrix` builds its
matrix, and :func:`sample_problem` draws one. Matrices are generated, never read from disk,
so training needs no data files; the held-out real matrices of the benchmark are never
drawn here.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

#: The kinds of generated matrix.
KINDS = ("dense", "sparse_counts", "scaled_rows")


@dataclass(frozen=True)
class ProblemSpec:
    """One training problem: a generated matrix and the run settings of its episode.

    Attributes
    ----------
    kind : {"dense", "sparse_counts", "scaled_rows"}
        "dense": a non-negative rank-``true_rank`` product plus uniform noise; "sparse_counts":
        Poisson counts of a sparse topic model (CSR, text-like); "scaled_rows": dense rows
        scaled by factors spanning ``10**±scale_decades``.
    n_samples, n_features, true_rank : int
    noise : float
        Noise level relative to the signal's mean.
    scale_decades : float
        Row scales spread (``scaled_rows`` only).
    n_components : int
        The rank fitted.
    batch_size : int or "auto"
    grow_batch : bool
    epochs : int
        The episode's epoch budget.
    seed : int
        Seeds the matrix, the initialisation and the minibatch order.
    """

    kind: str
    n_samples: int
    n_features: int
    true_rank: int
    noise: float
    scale_decades: float
    n_components: int
    batch_size: object
    grow_batch: bool
    epochs: int
    seed: int

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"ProblemSpec: kind must be one of {', '.join(KINDS)}, got {self.kind!r}.")
        if self.epochs < 2:
            raise ValueError(f"ProblemSpec: epochs must be >= 2 (reset runs the first), got {self.epochs!r}.")

    @property
    def name(self):
        return (f"{self.kind} {self.n_samples}x{self.n_features} r{self.n_components} "
                f"noise {self.noise:.2f} batch {self.batch_size}{'+grow' if self.grow_batch else ''} "
                f"{self.epochs} ep seed {self.seed}")

    def as_dict(self):
        return asdict(self)


def sample_problem(rng):
    """Draw one :class:`ProblemSpec` from the training distribution.

    Shapes are tall, wide or square (200 to 4000 rows, 40 to 1500 columns, at most 1.2
    million entries), fitted ranks 3 to 24, noise 0 to 0.6 of the signal; three episodes in
    four run a fixed batch of 64 to 512 rows (the noise-limited regime where schedules
    differ most), the others the estimator's automatic, growing batch. Budgets are 15 to
    60 epochs.
    """
    kind = KINDS[rng.choice(3, p=(0.5, 0.25, 0.25))]
    orientation = rng.choice(("tall", "wide", "square"))
    if orientation == "tall":
        n, m = _log_uniform_int(rng, 800, 4000), _log_uniform_int(rng, 40, 300)
    elif orientation == "wide":
        n, m = _log_uniform_int(rng, 200, 600), _log_uniform_int(rng, 600, 1500)
    else:
        n = _log_uniform_int(rng, 200, 1000)
        m = int(np.clip(n * rng.uniform(0.7, 1.3), 40, 1200))
    while n * m > 1_200_000:
        n = int(n * 0.8)
    true_rank = int(rng.integers(3, min(24, m // 3, n // 3) + 1))
    n_components = int(np.clip(round(true_rank * rng.uniform(0.6, 1.5)), 2, min(n, m) // 2))
    fixed = rng.random() < 0.75
    return ProblemSpec(
        kind=str(kind),
        n_samples=int(n),
        n_features=int(m),
        true_rank=true_rank,
        noise=float(rng.uniform(0.0, 0.6)),
        scale_decades=float(rng.uniform(0.5, 3.0)) if kind == "scaled_rows" else 0.0,
        n_components=n_components,
        batch_size=int(rng.choice((64, 128, 256, 512))) if fixed else "auto",
        grow_batch=not fixed,
        epochs=int(rng.choice((15, 20, 30, 40, 60))),
        seed=int(rng.integers(2**31 - 1)),
    )


def _log_uniform_int(rng, low, high):
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def make_matrix(spec):
    """The matrix of ``spec`` (float64; CSR for "sparse_counts"), reproducible from its seed."""
    rng = np.random.default_rng(spec.seed)
    n, m, r = spec.n_samples, spec.n_features, spec.true_rank
    if spec.kind == "sparse_counts":
        topics = rng.gamma(0.2, 1.0, (n, r)) @ rng.gamma(0.2, 1.0, (r, m))
        rate = topics * (0.3 / max(topics.mean(), 1e-12)) + spec.noise * 0.05
        X = sp.csr_matrix(rng.poisson(rate).astype(np.float64))
        if X.nnz == 0:
            X[0, 0] = 1.0
        return X
    signal = rng.random((n, r)) @ rng.random((r, m))
    X = signal + spec.noise * signal.mean() * rng.random((n, m))
    if spec.kind == "scaled_rows":
        X *= 10.0 ** rng.uniform(-spec.scale_decades, spec.scale_decades, (n, 1))
    return X
