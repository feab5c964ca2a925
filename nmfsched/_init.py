"""Initial factors: NNDSVD, NNDSVDa, NNDSVDar, random, or the user's own."""

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import scipy.sparse as sp
from scipy import linalg
from sklearn.utils import check_random_state
from sklearn.utils.extmath import randomized_svd

from ._validation import check_factor
from .kernels import cpu as cpu_kernels
from .theory.namespace import array_namespace, is_device_array

INIT_METHODS = ("nndsvd", "nndsvda", "nndsvdar", "random", "custom")
#: The SVD-based ones (they need ``n_components <= min(n_samples, n_features)``).
SVD_INITS = ("nndsvd", "nndsvda", "nndsvdar")
#: What ``init=None`` means (where the rank allows an SVD): small random fills of NNDSVD's
#: zeros took fewer epochs than "nndsvda" on most of the peers' suite (the measurements:
#: docs/user-guide/how-it-works.md).
DEFAULT_INIT = "nndsvdar"


def resolve_n_components(n_components, init, n_features, W=None, H=None):
    """The rank: ``n_components``, or for "auto" the custom ``H``'s (or ``W``'s) with
    ``init="custom"``, else ``n_features``."""
    if n_components != "auto":
        return n_components
    if init == "custom" and H is not None:
        return np.shape(H)[0]
    if init == "custom" and W is not None:
        return np.shape(W)[1]
    return n_features


def check_custom_factors_wanted(W, H, init):
    """Refuse initial ``W``/``H`` given with an ``init`` other than "custom" (they would be ignored)."""
    if (W is not None or H is not None) and init != "custom":
        raise ValueError(f"W or H was passed but init={init!r}; set init='custom' to start from them.")


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
    leading subspace, so 2 leave the final errors as they were and save time; below 4 in
    the other case changed the basin a fit ends in (docs/user-guide/how-it-works.md).
    """
    return 2 if k < 0.1 * min(n_samples, n_features) else 4


def range_finder(matmul, rmatmul, n_columns, width, n_iter, rng, dtype, *, xp=np):
    """An orthonormal basis (``width`` columns, an array of ``xp``) of the leading range of a
    matrix of ``n_columns`` columns known by its products ``X @ B`` and ``X.T @ Q``: ``X``
    times a Gaussian draw from ``rng``, then ``n_iter`` power iterations, each product
    orthonormalised (:func:`orthonormal_columns`)."""
    Q = orthonormal_columns(matmul(xp.asarray(rng.standard_normal((n_columns, width)), dtype=dtype)), xp=xp)
    for _ in range(n_iter):
        Z = orthonormal_columns(rmatmul(Q), xp=xp)
        Q = orthonormal_columns(matmul(Z), xp=xp)
    return Q


#: The largest condition number of its input at which :func:`orthonormal_columns` takes
#: Cholesky QR, per dtype: where the float64 Gram (error ``eps64 cond^2``) and the
#: product ``A R^-1`` in ``A``'s dtype (error ``eps cond``) both leave the first pass's
#: columns within 1e-2 of orthonormal, so that the second pass makes them orthonormal to
#: rounding (Yamamoto et al., 2015, on CholeskyQR2).
CHOLESKY_QR_MAX_COND = {
    np.dtype(np.float64): 1e-2 / np.sqrt(np.finfo(np.float64).eps),
    np.dtype(np.float32): 1e-2 / np.finfo(np.float32).eps,
}


def orthonormal_columns(A, *, xp=np):
    """An orthonormal basis of the columns of a tall ``A`` (``n x w``, full column rank), in
    ``A``'s dtype.

    A host ``A`` whose condition number is at most :data:`CHOLESKY_QR_MAX_COND` gets Cholesky
    QR twice: ``R`` from the float64 Gram ``A^T A``, then ``A R^-1``, all in products, 9-10x
    faster than LAPACK's Householder QR on one thread at 30 000 to a million rows and 40
    columns (the range finder of a 300 000-row counts matrix spent 0.44 s in QR). Any other
    ``A`` (a device array, a nearly dependent or non-finite one) gets Householder QR.
    """
    if xp is np and A.dtype in CHOLESKY_QR_MAX_COND and A.shape[0] >= A.shape[1]:
        Q = _cholesky_qr(A, check_cond=True)
        Q = None if Q is None else _cholesky_qr(Q)
        if Q is not None:
            return Q
    Q, _ = xp.linalg.qr(A)
    return Q


def _cholesky_qr(A, check_cond=False):
    """``A R^-1`` with ``R^T R`` the Cholesky factorisation of ``A``'s float64 Gram, or None
    where that fails (or, with ``check_cond``, where ``R``'s condition number exceeds
    :data:`CHOLESKY_QR_MAX_COND`)."""
    G = _gram_float64(A)
    if not np.isfinite(G).all():
        return None
    try:
        L = linalg.cholesky(G, lower=True, check_finite=False)
    except linalg.LinAlgError:
        return None
    if check_cond and not np.linalg.cond(L) <= CHOLESKY_QR_MAX_COND[A.dtype]:  # NaN fails too
        return None
    R_inv = linalg.solve_triangular(L, np.eye(L.shape[0]), lower=True, check_finite=False).T
    return _tall_product(np.ascontiguousarray(A), R_inv.astype(A.dtype))


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
    Q = range_finder(matmul, rmatmul, m, width, n_iter, rng, dtype, xp=xp)
    B = rmatmul(Q).T  # Q^T X, without transposing a sparse X
    Ub, S, Vt = xp.linalg.svd(B.astype(xp.float64), full_matrices=False)
    return Q.astype(xp.float64) @ Ub[:, :k], S[:k], Vt[:k]


def _nndsvd(X, k, rng, init, dtype=np.float64):
    """Non-negative double SVD (Boutsidis & Gallopoulos, 2008) for ``init`` one of
    :data:`SVD_INITS` (see :func:`nndsvd_from_svd`). A device ``X`` is factorized on its
    device (:func:`randomized_svd_namespace`); a dense host ``X`` through its short side's
    Gram matrix where that is cheaper (:func:`randomized_svd_via_gram`); a sparse one with more
    than :data:`INIT_GRAM_MAX_ROWS` rows from that many sampled rows
    (:func:`randomized_svd_sampled_rows`)."""
    if is_device_array(X):
        U, S, Vt = randomized_svd_namespace(X, k, rng)
    else:
        n_iter = init_power_iterations(k, *X.shape)
        seed = rng.integers(2**31 - 1)
        if not sp.issparse(X) and gram_is_cheaper(X.shape, k, n_iter):
            U, S, Vt = randomized_svd_via_gram(X, k, n_iter, seed, max_gram_rows=INIT_GRAM_MAX_ROWS)
        elif sp.issparse(X) and X.shape[0] > INIT_GRAM_MAX_ROWS:
            U, S, Vt = randomized_svd_sampled_rows(X, k, n_iter, seed, sample_rows=INIT_GRAM_MAX_ROWS)
        else:
            # an explicit normaliser: at 2 iterations scikit-learn's "auto" would take none,
            # and powers of a float32 X with entries near 1e7 overflow
            U, S, Vt = randomized_svd(X, k, n_iter=n_iter, power_iteration_normalizer="LU", random_state=seed)
    return nndsvd_from_svd(U, S, Vt, init, _mean(X), rng, dtype)


#: The most rows of a dense ``X`` whose Gram the NNDSVD starts' SVD forms, and of a sparse
#: one whose row space its range finder estimates; more are sampled down to this many
#: (:func:`randomized_svd_via_gram`, :func:`randomized_svd_sampled_rows`). The start needs
#: only a rough leading subspace, and reading every row for it was most of a large start.
INIT_GRAM_MAX_ROWS = 65536


def gram_is_cheaper(shape, k, n_iter, n_oversamples=10):
    """Whether :func:`randomized_svd_via_gram` is predicted to take less time than the
    range finder.

    The range finder multiplies ``X`` (``n x m``) by ``k + n_oversamples`` vectors
    ``2 n_iter + 2`` times; the Gram route forms the short side's Gram once (symmetric:
    half the products), multiplies ``X`` by ``k`` vectors once and the Gram by
    ``k + n_oversamples`` vectors ``n_iter + 2`` times. Its flops run at about twice the
    rate of the range finder's skinny products and LU steps, so it wins where the short
    side is below about ``8 (n_iter + 1) (k + n_oversamples)``; on the 13 shapes it was
    measured on, the route this picks was the faster one on every shape.
    """
    n, m = shape
    short, long = min(n, m), max(n, m)
    width = k + n_oversamples
    range_finder_flops = (2 * n_iter + 2) * n * m * width
    via_gram = short * short * long / 2 + n * m * k + (n_iter + 2) * short * short * width
    return via_gram < 2 * range_finder_flops


def randomized_svd_via_gram(X, k, n_iter, random_state, n_oversamples=10, block_rows=8192, max_gram_rows=None):
    """scikit-learn's ``randomized_svd`` of a dense ``X``, computed through the Gram matrix
    ``G`` of its short side.

    With ``A`` the tall one of ``X`` and ``X.T``, the range finder's basis spans
    ``A G^q Omega`` (``q = n_iter``, ``Omega`` the same Gaussian draw as scikit-learn's
    for ``random_state``, and ``G = A^T A``). Here the power iterations run on ``G``
    (short x short, QR-normalised), and the projection ``Q^T A`` onto that span comes from
    ``G`` as well (an eigendecomposition of ``Z^T G Z``), so ``X`` is read twice: for
    ``G`` and for ``U``. The triplets equal scikit-learn's in exact arithmetic (measured:
    to 1e-12 relative on the benchmark matrices). Directions whose singular value is
    below the float64 Gram's rounding (``sqrt(short * eps)`` of the largest, 2.6e-7 at
    300 columns) are dropped; their triplets come back as zeros. Returns ``(U, S, Vt)``
    in float64 (``U`` in ``X``'s float dtype's precision). A float32 ``X`` is cast
    ``block_rows`` rows at a time for the Gram.

    ``max_gram_rows``: where the tall side has more rows, ``G`` is estimated from that many
    of them drawn at random (scaled by ``rows / max_gram_rows``), and ``U`` still comes from
    every row. The triplets are then approximate, as a start needs them (see
    :data:`INIT_GRAM_MAX_ROWS`).
    """
    transpose = X.shape[0] < X.shape[1]
    A = X.T if transpose else X
    short = A.shape[1]
    width = k + n_oversamples
    random_state = check_random_state(random_state)
    # the same draw, and the same rounding of it for float32 data, as scikit-learn's
    omega = random_state.normal(size=(short, width))
    omega = omega.astype(X.dtype).astype(np.float64)
    if max_gram_rows is not None and A.shape[0] > max_gram_rows:
        rows = np.sort(random_state.choice(A.shape[0], max_gram_rows, replace=False))
        G = _gram_float64(A[rows], block_rows) * (A.shape[0] / max_gram_rows)
    else:
        G = _gram_float64(A, block_rows)
    Z = omega
    for _ in range(n_iter):
        Z, _ = linalg.qr(G @ Z, mode="economic", check_finite=False)
    GZ = G @ Z
    lam, E = linalg.eigh(Z.T @ GZ, check_finite=False)  # (A Z)^T (A Z), ascending
    keep = lam > lam[-1] * short * np.finfo(np.float64).eps if lam[-1] > 0 else np.zeros(lam.shape, bool)
    C = (Z @ E[:, keep]) / np.sqrt(lam[keep])  # Q = A C is an orthonormal basis of A Z
    Uh, S, Vt = linalg.svd(C.T @ G, full_matrices=False, check_finite=False)  # Q^T A
    r = min(k, S.shape[0])
    U = np.asarray(_tall_product(A, (C @ Uh[:, :r]).astype(X.dtype)), dtype=np.float64)
    U, S, Vt = _pad_triplets(U, S[:r], Vt[:r], k)
    return (Vt.T, S, U.T) if transpose else (U, S, Vt)


def randomized_svd_sampled_rows(X, k, n_iter, random_state, sample_rows, n_oversamples=10):
    """Approximate top-``k`` singular triplets of a CSR ``X`` whose row space is found from
    ``sample_rows`` of its rows drawn at random.

    :func:`range_finder` runs on the sample ``A = X[rows]``'s row space (``m x (k + p)``
    basis ``Q``, ``2 n_iter + 1`` products with ``A``); then one
    pass over every row forms ``Y = X Q``, and the SVD ``Y = U_y S (V_y)^T`` gives the triplets
    of ``X Q Q^T``: ``U = U_y``, ``Vt = (Q V_y)^T``, with ``V_y`` and ``S`` from the
    eigendecomposition of ``Y^T Y`` (directions below its float64 rounding are dropped and come
    back as zero triplets). So only the subspace is estimated. The products run on the
    CPU backend's compiled CSR kernels (all cores, no copy of the sampled rows): the
    range finder over every row of a 300 000-row counts matrix read it six times, one core
    each, and was most of the fit's first epoch. Returns ``(U, S, Vt)`` in float64.
    """
    n, m = X.shape
    width = min(k + n_oversamples, n, m)
    random_state = check_random_state(random_state)
    backend = cpu_kernels.CPUBackend()
    dtype = X.dtype
    rows = np.sort(random_state.choice(n, min(sample_rows, n), replace=False)).astype(np.int64)
    sample = backend.take_rows(X, rows)
    by_rows = np.empty((rows.shape[0], width), dtype=dtype)
    by_columns = np.empty((m, width), dtype=dtype)
    Q = range_finder(  # of A^T: the sample's row space
        lambda B: backend.xbt_wb(sample, np.ascontiguousarray(B, dtype=dtype), by_columns),
        lambda Z: backend.xb_ht(sample, np.ascontiguousarray(Z, dtype=dtype), by_rows),
        rows.shape[0], width, n_iter, random_state, dtype,
    )
    Y = backend.xb_ht(backend.all_rows(X), np.ascontiguousarray(Q, dtype=dtype), np.empty((n, width), dtype=dtype))
    # the SVD of the tall Y from its Gram: a LAPACK SVD of 300 000 x 40 took as long as the pass
    lam, E = linalg.eigh(_gram_float64(Y), check_finite=False)  # ascending
    lam, E = lam[::-1][:k], E[:, ::-1][:, :k]
    keep = lam > lam[0] * width * np.finfo(np.float64).eps if lam[0] > 0 else np.zeros(lam.shape, bool)
    S = np.sqrt(lam[keep])
    U = np.asarray(_tall_product(Y, (E[:, keep] / S).astype(dtype)), dtype=np.float64)
    Vt = (np.asarray(Q, dtype=np.float64) @ E[:, keep]).T
    return _pad_triplets(U, S, Vt, k)


def _tall_product(A, B):
    """``A @ B`` for a tall ``A`` and a skinny ``B``: by the CPU backend's row blocks, one per
    thread, where it takes them (the start runs with BLAS on one thread), else by NumPy.
    On the shapes measured (up to a million rows, float32 and float64) the result was NumPy's
    bit for bit: each block is one BLAS call on whole rows."""
    if isinstance(A, np.ndarray) and A.flags.c_contiguous and A.dtype == B.dtype:
        out = np.empty((A.shape[0], B.shape[1]), dtype=A.dtype)
        return cpu_kernels.CPUBackend().xb_ht(A, np.ascontiguousarray(B), out)
    return A @ B


def _gram_float64(A, block_rows=8192):
    """``A.T @ A`` accumulated in float64 (a float32 ``A`` by blocks of rows, so the Gram
    resolves singular values below float32's ``sqrt(eps)`` of the largest).

    The blocks' Grams are formed on Numba's number of threads (BLAS is single-threaded in a
    fit, and releases the GIL) and summed in order, so the result does not depend on the
    thread count."""
    if A.dtype == np.float64:
        return A.T @ A

    def block_gram(r0):
        B = A[r0:r0 + block_rows].astype(np.float64)
        return B.T @ B

    starts = range(0, A.shape[0], block_rows)
    n_threads = min(len(starts), numba.get_num_threads())
    if n_threads > 1:
        with ThreadPoolExecutor(n_threads) as pool:
            grams = list(pool.map(block_gram, starts))
    else:
        grams = map(block_gram, starts)
    G = np.zeros((A.shape[1], A.shape[1]))
    for block in grams:
        G += block
    return G


def _pad_triplets(U, S, Vt, k):
    """``(U, S, Vt)`` with zero triplets appended up to ``k``."""
    missing = k - S.shape[0]
    if missing <= 0:
        return U, S, Vt
    return (
        np.hstack([U, np.zeros((U.shape[0], missing))]),
        np.concatenate([S, np.zeros(missing)]),
        np.vstack([Vt, np.zeros((missing, Vt.shape[1]))]),
    )


def nndsvd_from_svd(U, S, Vt, init="nndsvd", mean=None, rng=None, dtype=np.float64):
    """NNDSVD factors ``(W, H)`` in ``dtype`` from the top singular triplets.

    Each triplet after the first keeps the positive or the negative parts of its vectors,
    whichever have the larger product of norms (as Boutsidis & Gallopoulos), all triplets
    at once.
    Entries within rounding of 0 (:data:`ZERO_ENTRY_RTOL` of their vector's largest) count
    as 0.
    ``init="nndsvd"`` leaves the zeros; "nndsvda" fills them with ``sqrt(mean / k)``
    (``mean`` the mean entry of ``X``: the size of a random start's entries), so every
    entry can move; "nndsvdar" with ``|sqrt(mean / k) * N(0, 1)| / 100`` drawn from ``rng``
    (small random values). scikit-learn fills with ``mean`` itself; a fill in the factors'
    units keeps the start, and so the fit, of ``c X`` equal to ``sqrt(c)`` times that of ``X``.
    ``W``'s side (``n x k``) is computed by two passes of compiled kernels, which round as
    the NumPy expressions ``H``'s side uses.
    """
    U = np.ascontiguousarray(U)
    u_scale, u_pos_sq, u_neg_sq = cpu_kernels.split_column_norms(U, float(ZERO_ENTRY_RTOL))
    u_pos, u_neg = np.sqrt(u_pos_sq), np.sqrt(u_neg_sq)
    Vt = _rounding_to_zero(Vt, axis=1)
    V_pos, V_neg = np.maximum(Vt, 0), np.maximum(-Vt, 0)
    v_pos, v_neg = np.linalg.norm(V_pos, axis=1), np.linalg.norm(V_neg, axis=1)
    positive = u_pos * v_pos >= u_neg * v_neg
    u_norm, v_norm = np.where(positive, u_pos, u_neg), np.where(positive, v_pos, v_neg)
    lbd = np.sqrt(S * u_norm * v_norm)
    W = np.empty(U.shape, dtype=dtype)
    ratio = np.asarray(_ratio(lbd, u_norm), dtype=np.float64)  # exact: float32 values as float64
    cpu_kernels.signed_part_columns(U, ZERO_ENTRY_RTOL * u_scale, positive, ratio, float(np.sqrt(S[0])), W)
    H = np.where(positive[:, None], V_pos, V_neg) * _ratio(lbd, v_norm)[:, None]
    # the leading pair of a non-negative X has one sign (Perron-Frobenius): take |u|, |v|
    H[0, :] = np.sqrt(S[0]) * np.abs(Vt[0, :])
    H = np.ascontiguousarray(H, dtype=dtype)  # C-ordered for the fill kernel (a wide X gives an F-ordered Vt)
    if init in ("nndsvda", "nndsvdar"):
        fill = np.sqrt(mean / S.shape[0])
    if init == "nndsvda":
        W[W == 0] = fill
        H[H == 0] = fill
    elif init == "nndsvdar":
        for A in (W, H):
            counts = cpu_kernels.zero_counts(A)
            values = rng.standard_normal(int(counts.sum()))
            values *= fill  # in place: a million-row W has millions of zeros
            values /= 100
            cpu_kernels.fill_zeros(A, np.abs(values, out=values), counts)
    return W, H


#: Singular vectors' entries below this fraction of their vector's largest are taken as 0.
ZERO_ENTRY_RTOL = np.sqrt(np.finfo(np.float64).eps)


def _rounding_to_zero(V, axis):
    """``V`` with the entries below :data:`ZERO_ENTRY_RTOL` of their vector's largest set
    to 0, so which entries NNDSVD leaves zero (and the fills replace) does not depend on
    how the SVD was rounded: an all-zero row of ``X`` gives 0 or +-1e-17 in ``U`` by chance."""
    scale = np.max(np.abs(V), axis=axis, keepdims=True)
    return np.where(np.abs(V) <= ZERO_ENTRY_RTOL * scale, 0.0, V)


def _ratio(a, b):
    """``a / b``, and 0 where ``b`` is 0 (a vector part that is all zeros stays zeros)."""
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


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
    W, H = _nndsvd(X, n_components, rng, init, dtype)
    return np.ascontiguousarray(W), np.ascontiguousarray(H)
