"""The SVD starts: the Gram route against scikit-learn's randomized SVD, NNDSVD against
its per-component definition."""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import low_rank
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils.extmath import randomized_svd

from nmfsched import _init
from nmfsched._init import (
    gram_is_cheaper,
    initialize_factors,
    nndsvd_from_svd,
    randomized_svd_sampled_rows,
    randomized_svd_via_gram,
)


def rank_k_part(U, S, Vt):
    return (U * S) @ Vt


@pytest.mark.parametrize("shape", [(500, 40), (40, 500)], ids=["tall", "wide"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 2e-4)])
@pytest.mark.parametrize("n_iter", [0, 2, 4])
def test_svd_via_gram_matches_scikit_learns_randomized_svd(shape, dtype, rtol, n_iter):
    X = low_rank(*shape, 12, seed=3, noise=0.3, dtype=dtype)
    k = 8
    U, S, Vt = randomized_svd_via_gram(X, k, n_iter, random_state=5)
    U_ref, S_ref, Vt_ref = randomized_svd(X, k, n_iter=n_iter, power_iteration_normalizer="LU", random_state=5)
    assert U.shape == U_ref.shape and S.shape == S_ref.shape and Vt.shape == Vt_ref.shape
    np.testing.assert_allclose(S, S_ref, rtol=rtol)
    reference = rank_k_part(U_ref, S_ref, Vt_ref)
    np.testing.assert_allclose(rank_k_part(U, S, Vt), reference, atol=rtol * np.abs(reference).max())
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=10 * rtol)


def test_svd_via_gram_of_float32_data_resolves_small_singular_values():
    """The Gram is accumulated in float64: a float32 Gram would lose a singular value
    1e-4 of the largest (its square is below float32's rounding of the largest)."""
    rng = np.random.default_rng(0)
    Q1, _ = np.linalg.qr(rng.standard_normal((3000, 3)))
    Q2, _ = np.linalg.qr(rng.standard_normal((20, 3)))
    X = ((Q1 * [1e4, 3.0, 1.0]) @ Q2.T).astype(np.float32)
    _, S, _ = randomized_svd_via_gram(X, 3, 2, random_state=0, block_rows=512)
    np.testing.assert_allclose(S, np.linalg.svd(X.astype(np.float64), compute_uv=False)[:3], rtol=1e-3)


@pytest.mark.parametrize("X", [low_rank(200, 30, 3), np.zeros((200, 30))], ids=["rank 3", "zeros"])
def test_svd_via_gram_pads_the_triplets_rank_deficient_input_lacks(X):
    U, S, Vt = randomized_svd_via_gram(X, 6, 4, random_state=0)
    assert U.shape == (200, 6) and S.shape == (6,) and Vt.shape == (6, 30)
    assert np.isfinite(U).all() and np.isfinite(S).all() and np.isfinite(Vt).all()
    rank = int((S > 0).sum())
    assert rank == (3 if X.any() else 0)
    np.testing.assert_array_equal(S[rank:], 0)
    np.testing.assert_allclose(rank_k_part(U, S, Vt), X, atol=1e-9 * max(1.0, np.abs(X).max()))
    W, H = nndsvd_from_svd(U, S, Vt, "nndsvda", mean=0.5)
    assert np.isfinite(W).all() and np.isfinite(H).all()
    np.testing.assert_array_equal(W[:, rank + 1:], np.sqrt(0.5 / 6))  # zero triplets give zero columns, filled


def per_component_nndsvd(U, S, Vt):
    """Boutsidis & Gallopoulos's NNDSVD, one triplet at a time (the oracle)."""
    W, H = np.zeros((U.shape[0], S.size)), np.zeros((S.size, Vt.shape[1]))
    W[:, 0], H[0] = np.sqrt(S[0]) * np.abs(U[:, 0]), np.sqrt(S[0]) * np.abs(Vt[0])
    for j in range(1, S.size):
        x, y = U[:, j], Vt[j]
        xp, xn, yp, yn = np.maximum(x, 0), np.maximum(-x, 0), np.maximum(y, 0), np.maximum(-y, 0)
        if np.linalg.norm(xp) * np.linalg.norm(yp) >= np.linalg.norm(xn) * np.linalg.norm(yn):
            u, v = xp, yp
        else:
            u, v = xn, yn
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        lbd = np.sqrt(S[j] * nu * nv)
        W[:, j] = lbd * u / nu if nu else 0.0
        H[j] = lbd * v / nv if nv else 0.0
    return W, H


def test_nndsvd_matches_its_per_component_definition():
    X = low_rank(120, 50, 6, seed=1, noise=0.2)
    U, S, Vt = np.linalg.svd(X, full_matrices=False)
    U, S, Vt = U[:, :7], S[:7], Vt[:7]
    U[:, 6] = np.abs(U[:, 6])  # a triplet whose negative part is empty on one side
    W, H = nndsvd_from_svd(U, S, Vt, "nndsvd")
    W_ref, H_ref = per_component_nndsvd(U, S, Vt)
    np.testing.assert_allclose(W, W_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(H, H_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(W == 0, W_ref == 0)


def test_gram_route_is_taken_only_where_cheaper(monkeypatch):
    assert gram_is_cheaper((60000, 300), 40, 4) and gram_is_cheaper((300, 60000), 40, 4)
    assert not gram_is_cheaper((5000, 1000), 20, 2)
    calls = []
    monkeypatch.setattr(_init, "randomized_svd", lambda *a, **kw: calls.append("sklearn") or randomized_svd(*a, **kw))
    monkeypatch.setattr(
        _init, "randomized_svd_via_gram", lambda *a, **kw: calls.append("gram") or randomized_svd_via_gram(*a, **kw)
    )
    initialize_factors(low_rank(2000, 30, 4), 4, "nndsvda", np.random.default_rng(0), np.float64)
    initialize_factors(low_rank(1000, 1000, 10), 10, "nndsvda", np.random.default_rng(0), np.float64)
    assert calls == ["gram", "sklearn"]


@pytest.mark.parametrize("k", [15, 20])
def test_svd_via_gram_when_the_sketch_is_wider_than_the_short_side(k):
    X = low_rank(300, 20, 20, seed=2, noise=0.3)  # k + 10 oversamples > 20 columns
    U, S, Vt = randomized_svd_via_gram(X, k, 4, random_state=0)
    U_ref, S_ref, Vt_ref = randomized_svd(X, k, n_iter=4, power_iteration_normalizer="LU", random_state=0)
    np.testing.assert_allclose(S, S_ref, rtol=1e-9)
    reference = rank_k_part(U_ref, S_ref, Vt_ref)
    np.testing.assert_allclose(rank_k_part(U, S, Vt), reference, atol=1e-9 * np.abs(reference).max())


def numpy_nndsvd(U, S, Vt, init, mean, rng):
    """NNDSVD written with NumPy expressions alone (what the compiled W side replaced): the
    oracle of rounding, bit for bit."""
    U, Vt = _init._rounding_to_zero(U, axis=0), _init._rounding_to_zero(Vt, axis=1)
    U_pos, U_neg, V_pos, V_neg = np.maximum(U, 0), np.maximum(-U, 0), np.maximum(Vt, 0), np.maximum(-Vt, 0)
    u_pos, u_neg = np.linalg.norm(U_pos, axis=0), np.linalg.norm(U_neg, axis=0)
    v_pos, v_neg = np.linalg.norm(V_pos, axis=1), np.linalg.norm(V_neg, axis=1)
    positive = u_pos * v_pos >= u_neg * v_neg
    u_norm, v_norm = np.where(positive, u_pos, u_neg), np.where(positive, v_pos, v_neg)
    lbd = np.sqrt(S * u_norm * v_norm)
    W = np.where(positive, U_pos, U_neg) * _init._ratio(lbd, u_norm)
    H = np.where(positive[:, None], V_pos, V_neg) * _init._ratio(lbd, v_norm)[:, None]
    W[:, 0], H[0, :] = np.sqrt(S[0]) * np.abs(U[:, 0]), np.sqrt(S[0]) * np.abs(Vt[0, :])
    fill = np.sqrt(mean / S.shape[0]) if mean is not None else None
    for A in (W, H):
        if init == "nndsvda":
            A[A == 0] = fill
        elif init == "nndsvdar":
            zeros = A == 0
            A[zeros] = np.abs(fill * rng.standard_normal(int(zeros.sum())) / 100)
    return W, H


@pytest.mark.parametrize("init", ["nndsvd", "nndsvda", "nndsvdar"])
@pytest.mark.parametrize("svd_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("order", ["C", "F"])  # F: the Gram route's Vt of a wide X is a transpose
def test_nndsvd_rounds_exactly_as_its_numpy_expressions(init, svd_dtype, order):
    rng = np.random.default_rng(4)
    U = rng.standard_normal((3001, 9)).astype(svd_dtype)
    U[5, 2], U[7, 3] = 1e-20, -1e-20  # within rounding of 0: taken as 0
    U[:, 8] = np.abs(U[:, 8])  # no negative part
    S, Vt = np.linspace(9, 1, 9).astype(svd_dtype), rng.standard_normal((9, 40)).astype(svd_dtype, order=order)
    W, H = nndsvd_from_svd(U, S, Vt, init, mean=0.3, rng=np.random.default_rng(1), dtype=svd_dtype)
    W_ref, H_ref = numpy_nndsvd(U, S, Vt, init, 0.3, np.random.default_rng(1))
    assert W.dtype == H.dtype == svd_dtype and W.flags.c_contiguous and H.flags.c_contiguous
    np.testing.assert_array_equal(W, W_ref.astype(svd_dtype))
    np.testing.assert_array_equal(H, H_ref.astype(svd_dtype))


def test_a_sampled_gram_gives_the_leading_subspace_of_a_tall_matrix():
    """Past ``max_gram_rows`` rows the Gram is estimated from a random sample of them: the
    triplets are then those of a start (near the exact ones), and below it nothing changes."""
    X = low_rank(20000, 60, 8, seed=6, noise=0.05)
    k = 8
    U, S, Vt = randomized_svd_via_gram(X, k, 2, random_state=0, max_gram_rows=2000)
    _, S_exact, Vt_exact = np.linalg.svd(X, full_matrices=False)
    np.testing.assert_allclose(S, S_exact[:k], rtol=0.05)
    cosines = np.linalg.svd(Vt @ Vt_exact[:k].T, compute_uv=False)  # principal angles' cosines
    assert cosines.min() > 0.99
    reconstruction = np.linalg.norm(X - rank_k_part(U, S, Vt)) / np.linalg.norm(X)
    assert reconstruction < 1.5 * np.linalg.norm(X - rank_k_part(*randomized_svd(X, k, random_state=0))) / np.linalg.norm(X)
    unsampled = randomized_svd_via_gram(X, k, 2, random_state=0)
    for a, b in zip(unsampled, randomized_svd_via_gram(X, k, 2, random_state=0, max_gram_rows=20000)):
        np.testing.assert_array_equal(a, b)


def sparse_low_rank(n, m, k, seed, density=0.3, dtype=np.float64):
    """A sparse non-negative rank-``k`` product of sparse factors, with noise on its non-zeros."""
    rng = np.random.default_rng(seed)
    X = (sp.random(n, k, density=density, random_state=rng) @ sp.random(k, m, density=density, random_state=rng)).tocsr()
    X.data += 0.05 * X.data.mean() * rng.random(X.nnz)
    return X.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sampled_rows_svd_of_a_sparse_matrix_finds_its_leading_subspace(dtype):
    """The row space from a quarter of the rows, then one pass over all of them: the triplets
    are exact for the projection onto that space (``U`` orthonormal, ``X V`` = ``U S``), and
    the singular values, the subspace and the rank-``k`` error are those of the exact SVD."""
    X = sparse_low_rank(6000, 300, 6, seed=1, dtype=dtype)
    k = 6
    U, S, Vt = randomized_svd_sampled_rows(X, k, 2, random_state=0, sample_rows=1500)
    assert U.shape == (6000, k) and S.shape == (k,) and Vt.shape == (k, 300)
    assert U.dtype == S.dtype == Vt.dtype == np.float64
    Xd = X.toarray().astype(np.float64)
    tol = 1e-9 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=tol)
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(k), atol=tol)
    np.testing.assert_allclose(Xd @ Vt.T, U * S, atol=tol * S[0])
    _, S_exact, Vt_exact = np.linalg.svd(Xd, full_matrices=False)
    np.testing.assert_allclose(S, S_exact[:k], rtol=1e-3)
    assert np.linalg.svd(Vt @ Vt_exact[:k].T, compute_uv=False).min() > 0.999
    error = np.linalg.norm(Xd - rank_k_part(U, S, Vt))
    full = np.linalg.norm(Xd - rank_k_part(*randomized_svd(Xd, k, random_state=0)))
    assert error < 1.01 * full


def test_sampled_rows_svd_pads_a_rank_short_matrix_with_zero_triplets():
    X = sp.csr_matrix(np.outer(np.arange(1.0, 401.0), np.ones(30)))  # rank 1
    U, S, Vt = randomized_svd_sampled_rows(X, 4, 2, random_state=0, sample_rows=100)
    assert S[0] > 0 and np.all(S[1:] == 0) and np.all(U[:, 1:] == 0) and np.all(Vt[1:] == 0)
    np.testing.assert_allclose(rank_k_part(U, S, Vt), X.toarray(), rtol=1e-12)


def test_a_tall_sparse_matrix_starts_from_sampled_rows(monkeypatch):
    """Past :data:`INIT_GRAM_MAX_ROWS` rows a sparse ``X``'s start samples its rows; below it the
    start is scikit-learn's randomized SVD as before."""
    calls = []
    monkeypatch.setattr(_init, "INIT_GRAM_MAX_ROWS", 1000)
    monkeypatch.setattr(_init, "randomized_svd", lambda *a, **kw: calls.append("sklearn") or randomized_svd(*a, **kw))
    monkeypatch.setattr(
        _init, "randomized_svd_sampled_rows",
        lambda *a, **kw: calls.append("sampled") or randomized_svd_sampled_rows(*a, **kw),
    )
    for n in (1000, 3000):
        W, H = initialize_factors(sparse_low_rank(n, 200, 4, seed=2), 4, "nndsvdar", np.random.default_rng(0), np.float64)
        assert W.shape == (n, 4) and H.shape == (4, 200) and (W >= 0).all() and (H >= 0).all()
        assert np.isfinite(W).all() and np.isfinite(H).all() and W.any() and H.any()
    assert calls == ["sklearn", "sampled"]


def _conditioned(n, w, cond, seed, dtype):
    """A random ``n x w`` matrix with singular values spread log-evenly from 1 to ``cond``."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, w)))
    V, _ = np.linalg.qr(rng.standard_normal((w, w)))
    return ((U * np.logspace(0, np.log10(cond), w)) @ V.T).astype(dtype)


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@settings(max_examples=25, deadline=None)
@given(n=st.integers(40, 3000), w=st.integers(1, 40), log_cond=st.floats(0, 4), seed=st.integers(0, 2**16))
def test_orthonormal_columns_span_the_columns_as_householder_qr(dtype, atol, n, w, log_cond, seed):
    A = _conditioned(n, w, 10.0**log_cond, seed, dtype)
    Q = _init.orthonormal_columns(A)
    assert Q.dtype == dtype and Q.shape == (n, w)
    Q64 = Q.astype(np.float64)
    np.testing.assert_allclose(Q64.T @ Q64, np.eye(w), atol=atol)
    Q_ref, _ = np.linalg.qr(A.astype(np.float64))
    # the same subspace: the projectors agree (the columns may differ in sign)
    np.testing.assert_allclose(Q64 @ (Q64.T @ Q_ref), Q_ref, atol=100 * atol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_orthonormal_columns_takes_cholesky_qr_where_well_conditioned_else_householder(monkeypatch, dtype):
    limit = _init.CHOLESKY_QR_MAX_COND[np.dtype(dtype)]
    well, badly = _conditioned(500, 10, 1e3, 0, dtype), _conditioned(500, 10, 10 * limit, 0, dtype)
    calls = []
    householder = np.linalg.qr
    monkeypatch.setattr(np.linalg, "qr", lambda A, *a, **kw: calls.append(A.shape) or householder(A, *a, **kw))
    _init.orthonormal_columns(well)
    assert calls == []  # the fast path: no Householder QR
    for A in (badly, np.ones((500, 10), dtype), np.zeros((500, 10), dtype)):
        calls.clear()
        Q = _init.orthonormal_columns(A)
        assert calls == [A.shape] and np.isfinite(Q).all()


def test_orthonormal_columns_falls_back_when_the_second_cholesky_pass_fails(monkeypatch):
    A = _conditioned(300, 8, 10.0, 1, np.float64)
    first_pass = _init._cholesky_qr
    monkeypatch.setattr(_init, "_cholesky_qr", lambda B, check_cond=False: first_pass(B, check_cond) if check_cond else None)
    Q = _init.orthonormal_columns(A)
    np.testing.assert_allclose(Q.T @ Q, np.eye(8), atol=1e-13)
    np.testing.assert_allclose(Q @ (Q.T @ A), A, atol=1e-12)
