"""The GPU backend's Python code and the estimator's CuPy path, run on a stand-in for CuPy.

tests/fake_cupy.py replaces CuPy by NumPy arrays that call themselves CuPy's and a RawModule
that runs the CUDA kernel's source compiled as C++. So without a GPU these tests run every
line of ``GPUBackend`` and of the device-input path (validation, initialisation on the
device, CuPy arrays back) and compare the fits with the CPU backend's; CuPy's and CUDA's own
behaviour is what the ``gpu``-marked tests check on hardware.
"""

import fake_cupy
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import low_rank
from cuda_emulation import compiler
from threadpoolctl import threadpool_limits

from nmfsched import StochasticNMF
from nmfsched.kernels import available_backends, get_backend, resolve_backend_name, unavailable_reason

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C++ compiler for the emulated kernel")


@pytest.fixture
def cupy(monkeypatch, tmp_path):
    unavailable_reason.cache_clear()
    state = fake_cupy.install(monkeypatch, tmp_path)
    import cupy

    yield cupy, state
    unavailable_reason.cache_clear()


def test_auto_takes_the_gpu_when_cupy_sees_a_device(cupy):
    assert resolve_backend_name("auto") == "gpu"
    assert "gpu" in available_backends()
    assert get_backend().name == "gpu"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_host_input_on_the_gpu_backend_fits_as_the_cpu_backend_does(cupy, dtype, sparse):
    _, state = cupy
    X = low_rank(120, 30, 4, seed=5, noise=0.05, dtype=dtype)
    X = sp.csr_matrix(np.where(X > np.median(X), X, 0)) if sparse else X
    params = dict(random_state=0, max_iter=6, tol=0.0, batch_size=40, grow_batch=False)
    with threadpool_limits(1):
        ref = StochasticNMF(4, backend="cpu", **params).fit(X)
        model = StochasticNMF(4, backend="gpu", **params)
        W = model.fit_transform(X)
    assert type(W) is np.ndarray and W.dtype == dtype
    assert state["launches"] >= 6 * (3 * 2 + 1)  # each epoch: 3 minibatches' W and H steps, the refresh
    assert set(state["compiled"]) == {(4, True)}
    rtol = 1e-3 if dtype == np.float32 else 1e-7
    np.testing.assert_allclose(model.history_["loss"], ref.history_["loss"], rtol=rtol)
    np.testing.assert_allclose(model.history_["n_clipped"], ref.history_["n_clipped"], atol=2 if dtype == np.float32 else 0)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_device_input_stays_on_the_device_and_comes_back_as_device_arrays(cupy, sparse):
    cp, _ = cupy
    X = low_rank(150, 40, 5, seed=6, noise=0.05, dtype=np.float32)
    X = np.where(X > np.median(X), X, 0).astype(np.float32)
    Xd = fake_cupy.csr_matrix(sp.csr_matrix(X)) if sparse else cp.asarray(X)
    model = StochasticNMF(5, random_state=0, max_iter=15)  # backend "auto"
    W = model.fit_transform(Xd)
    assert isinstance(W, cp.ndarray) and W.dtype == np.float32 and W.shape == (150, 5)
    assert type(model.components_) is np.ndarray and model.n_features_in_ == 40
    assert isinstance(model.transform(Xd), cp.ndarray)
    assert isinstance(model.inverse_transform(W), cp.ndarray)
    host = StochasticNMF(5, random_state=0, max_iter=15, backend="cpu").fit(sp.csr_matrix(X) if sparse else X)
    # the device initialisation (its own randomized SVD) starts elsewhere: the same quality, not the same path
    assert model.reconstruction_err_ == pytest.approx(host.reconstruction_err_, rel=0.05)
    direct = np.linalg.norm(X - W.get() @ model.components_)
    assert model.reconstruction_err_ == pytest.approx(direct, rel=1e-4)


def test_device_input_is_checked_on_the_device(cupy):
    cp, _ = cupy
    X = np.ones((6, 4), dtype=np.float32)
    X[4, 1] = -1
    with pytest.raises(ValueError, match=r"1 negative entry \(first at row 4, column 1\)"):
        StochasticNMF(2).fit(cp.asarray(X))
    model = StochasticNMF(2, max_iter=2).fit(cp.asarray(np.ones((6, 4))))
    with pytest.raises(ValueError, match="X has 3 features, but StochasticNMF is expecting 4"):
        model.transform(cp.asarray(np.ones((2, 3))))


def test_large_ranks_read_the_gram_from_global_memory(cupy):
    _, state = cupy
    be = get_backend("gpu")
    k = 90  # (k^2 + 3k) doubles > 48 KiB: no shared-memory copy of the Gram
    rng = np.random.default_rng(0)
    B = rng.random((k, 2 * k))
    G = B @ B.T
    Y = be.asarray(rng.random((7, k)))
    P = be.asarray(rng.random((7, k)))
    be.projected_cd(Y, be.asarray(G), P, be.asarray(1 / np.diag(G)))
    assert state["compiled"] == [(90, False)]
    with pytest.raises(ValueError, match="C-contiguous"):
        be.projected_cd(be.asarray(rng.random((k, 7))).T, G, P, 1 / np.diag(G))


@pytest.mark.parametrize("sparse", [False, True], ids=["dense-nan", "ratings-csr"])
def test_missing_entries_on_the_device_fit_as_on_the_cpu(cupy, sparse):
    """The observed-entry sweeps are array code: on the GPU backend they run on device arrays,
    and take the CPU backend's steps."""
    cp, _ = cupy
    rng = np.random.default_rng(3)
    X = low_rank(90, 25, 3, seed=3, noise=0.05)
    M = rng.random(X.shape) > 0.3
    if sparse:
        rows, cols = np.nonzero(M)
        host = sp.csr_matrix((X[rows, cols], (rows, cols)), shape=X.shape)
        device = fake_cupy.csr_matrix(host)
    else:
        host = np.where(M, X, np.nan)
        device = cp.asarray(host)
    params = dict(random_state=0, max_iter=8, tol=0, init="random", missing="unstored" if sparse else "nan")
    ref = StochasticNMF(3, backend="cpu", **params).fit(host)
    model = StochasticNMF(3, **params)
    W = model.fit_transform(device)
    assert isinstance(W, cp.ndarray)
    assert model.observed_fraction_ == pytest.approx(M.mean())
    np.testing.assert_allclose(model.history_["loss"], ref.history_["loss"], rtol=1e-9)
    assert isinstance(model.transform(device), cp.ndarray)
