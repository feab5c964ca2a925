"""Initial factors: NNDSVD, NNDSVDa, NNDSVDar, random, or the user's own."""

import numpy as np
from sklearn.utils.extmath import randomized_svd

from ._validation import check_factor
from .theory._namespace import array_namespace, is_device_array

INIT_METHODS = ("nndsvd", "nndsvda", "nndsvdar", "random", "custom")
#: The SVD-based ones (they need ``n_components <= min(n_samples, n_features)``).
SVD_INITS = ("nndsvd", "nndsvda", "nndsvdar")
#: What ``init=None`` means (where the rank allows an SVD). Measured over seeds 0-2 against
#: "nndsvda" (tol=0, three sweeps on ``H`` per one-batch epoch): epochs to scikit-learn
#: NMF(cd)'s error 87-93 -> 63-76 on olivetti r40, 53-56 -> 35-44 on cbcl r49, 12 -> 3-4 on
#: dense 5000 x 1000 r20, 32-46 -> 26-31 on digits r16, but 47-59 -> 60-67 on wide
#: 400 x 20000 r10; on digits the default run stopped at or below nmf-torch's error on two
#: seeds of three (nndsvda: none). See the README's "The start" for the final errors.
DEFAULT_INIT = "nndsvdar"


def resolve_init(init, n_components, n_samples, n_features):
    """The init actually used: ``None`` means :data:`DEFAULT_INIT`, or "random" when
    ``n_components > min(n_samples, n_features)`` (the SVD then has too few triplets)."""
    if init is None:
        return DEFAULT_INIT if n_components <= min(n_samples, n_features) else "random"
    if init in SVD_INITS and n_components > min(n_samples, n_features):
        raise ValueError(
            f"init={init!r} needs n_components <= min(n_samples, n_features) = "
            f"{min(n_samples, n_features)}, got n_components={n_components}; use init='random'."
        )
    return init


def _mean(X):
    return float(X.sum() / (X.shape[0] * X.shape[1]))


def _random_init(X, k, rng, dtype):
    return random_factors(_mean(X), X.shape, k, rng, dtype)


def random_factors(mean, shape, k, rng, dtype):
    """``init="random"`` for a matrix of ``shape`` whose mean entry is ``mean``."""
    scale = np.sqrt(mean / k)
    H = scale * np.abs(rng.standard_normal((k, shape[1])))
    W = scale * np.abs(rng.standard_normal((shape[0], k)))
    return W.astype(dtype), H.astype(dtype)


def randomized_svd_namespace(X, k, rng, n_oversamples=10, n_iter=None):
    """The top ``k`` singular triplets of ``X`` (NumPy, CuPy, dense or sparse) in ``X``'s namespace.

    scikit-learn's ``randomized_svd`` runs on the host only; this one factorizes a GPU ``X``
    on its device, and only ``U`` (``n x k``), ``S`` and ``Vt`` (``k x m``) come back.
    See :func:`randomized_svd_operator`. Returns host arrays ``(U, S, Vt)``.
    """
    xp = array_namespace(X)
    U, S, Vt = randomized_svd_operator(
        lambda B: xp.asarray(X @ B), lambda Q: xp.asarray(X.T @ Q), X.shape, X.dtype, k, rng,
        xp=xp, n_oversamples=n_oversamples, n_iter=n_iter,
    )
    to_host = (lambda a: a.get()) if xp is not np else np.asarray
    return to_host(U), to_host(S), to_host(Vt)


def init_power_iterations(k, n_samples, n_features):
    """Power iterations of the SVD behind the NNDSVD starts: 2 when ``k`` is below a tenth
    of the smaller dimension, else 4.

    scikit-learn's ``randomized_svd`` takes 7 in the first case. NNDSVD needs only a rough
    leading subspace: measured over 3 seeds, 2 gave the same final errors at defaults on
    jasper r4, dense 5000x1000 r20, wide 400x20000 r10 and topic counts r20 (MovieLens
    r16: within 0.05%), and cut the time to scikit-learn NMF(cd)'s error by up to 45%
    (topic counts 0.50 -> 0.28 s, dense 0.70 -> 0.58 s). Below 4 in the other case
    changed the basin on cbcl r49 (0.20046 against 0.19873), so that case keeps 4.
    """
    return 2 if k < 0.1 * min(n_samples, n_features) else 4


def randomized_svd_operator(matmul, rmatmul, shape, dtype, k, rng, *, xp=np, n_oversamples=10, n_iter=None):
    """Top-``k`` singular triplets of a matrix known by its products ``X @ B`` and ``X.T @ Q``.

    Halko, Martinsson and Tropp's range finder with QR-normalised power iterations, as
    scikit-learn's ``randomized_svd`` (``n_iter`` None: :func:`init_power_iterations`). The
    products may run anywhere (a GPU, Dask chunks); the ``n x (k + p)`` basis and the small
    factors are arrays of ``xp``.
    """
    n, m = shape
    width = min(k + n_oversamples, n, m)
    if n_iter is None:
        n_iter = init_power_iterations(k, n, m)
    Q, _ = xp.linalg.qr(matmul(xp.asarray(rng.standard_normal((m, width)), dtype=dtype)))
    for _ in range(n_iter):
        Z, _ = xp.linalg.qr(rmatmul(Q))
        Q, _ = xp.linalg.qr(matmul(Z))
    B = rmatmul(Q).T  # Q^T X, without transposing a sparse X
    Ub, S, Vt = xp.linalg.svd(B.astype(xp.float64), full_matrices=False)
    return Q.astype(xp.float64) @ Ub[:, :k], S[:k], Vt[:k]


def _nndsvd(X, k, rng, init):
    """Non-negative double SVD (Boutsidis & Gallopoulos, 2008) for ``init`` one of
    :data:`SVD_INITS` (see :func:`nndsvd_from_svd`). A device ``X`` is factorized on its
    device (:func:`randomized_svd_namespace`)."""
    if is_device_array(X):
        U, S, Vt = randomized_svd_namespace(X, k, rng)
    else:
        # an explicit normaliser: at 2 iterations scikit-learn's "auto" would take none, and
        # powers of a float32 X with entries near 1e7 overflow
        U, S, Vt = randomized_svd(
            X, k, n_iter=init_power_iterations(k, *X.shape), power_iteration_normalizer="LU",
            random_state=rng.integers(2**31 - 1),
        )
    return nndsvd_from_svd(U, S, Vt, init, _mean(X), rng)


def nndsvd_from_svd(U, S, Vt, init="nndsvd", mean=None, rng=None):
    """NNDSVD factors from the top singular triplets.

    ``init="nndsvd"`` leaves the zeros; "nndsvda" fills them with ``mean`` (the mean entry
    of ``X``), so every entry can move; "nndsvdar" with ``|mean * N(0, 1)| / 100`` drawn
    from ``rng`` (small random values, as scikit-learn's).
    """
    k = S.shape[0]
    W = np.zeros((U.shape[0], k))
    H = np.zeros((k, Vt.shape[1]))
    W[:, 0] = np.sqrt(S[0]) * np.abs(U[:, 0])
    H[0, :] = np.sqrt(S[0]) * np.abs(Vt[0, :])
    for j in range(1, k):
        x, y = U[:, j], Vt[j, :]
        xp, xn = np.maximum(x, 0), np.maximum(-x, 0)
        yp, yn = np.maximum(y, 0), np.maximum(-y, 0)
        xpn, ypn = np.linalg.norm(xp), np.linalg.norm(yp)
        xnn, ynn = np.linalg.norm(xn), np.linalg.norm(yn)
        mp, mn = xpn * ypn, xnn * ynn
        if mp >= mn:
            u, v, sigma = (xp / xpn if xpn else xp), (yp / ypn if ypn else yp), mp
        else:
            u, v, sigma = (xn / xnn if xnn else xn), (yn / ynn if ynn else yn), mn
        lbd = np.sqrt(S[j] * sigma)
        W[:, j] = lbd * u
        H[j, :] = lbd * v
    if init == "nndsvda":
        W[W == 0] = mean
        H[H == 0] = mean
    elif init == "nndsvdar":
        for A in (W, H):
            zeros = A == 0
            A[zeros] = np.abs(mean * rng.standard_normal(int(zeros.sum())) / 100)
    return W, H


def initialize_factors(X, n_components, init, rng, dtype, W=None, H=None, who="NMF"):
    """Initial ``W`` (n_samples x k) and ``H`` (k x n_features) as C-ordered ``dtype`` arrays.

    Parameters
    ----------
    X : ndarray or sparse matrix, non-negative
    n_components : int
    init : {"nndsvd", "nndsvda", "nndsvdar", "random", "custom"}
        Already resolved with :func:`resolve_init`.
    rng : numpy.random.Generator
    dtype : numpy dtype
    W, H : ndarray, optional
        The user's factors, required for ``init="custom"``.
    """
    n, m = X.shape
    if init == "custom":
        W = check_factor(W, (n, n_components), "W", who, dtype)
        H = check_factor(H, (n_components, m), "H", who, dtype)
        return W, H
    if init == "random":
        return _random_init(X, n_components, rng, dtype)
    W, H = _nndsvd(X, n_components, rng, init)
    return np.ascontiguousarray(W, dtype=dtype), np.ascontiguousarray(H, dtype=dtype)
