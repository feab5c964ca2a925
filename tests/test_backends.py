"""Backend conformance: every backend's primitives against NumPy oracles, and whole fits.

Parametrised over every registered backend; the GPU one runs only where CuPy finds a device
(marked ``gpu``; skipped elsewhere with the reason). The assertions are backend-neutral: results
are brought to the host with the backend's own ``to_host``. The raw CUDA sweep is checked here
too, compiled as C++ on the CPU (tests/cuda_emulation.py) and, where nvcc exists, as CUDA.
"""

import shutil
import subprocess

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import low_rank
from cuda_emulation import EmulatedSweep, compiler
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_oracles import cd_oracle, random_cd_problem, statistics_oracle
from threadpoolctl import threadpool_limits

from nmfsched import StochasticNMF
from nmfsched.kernels import get_backend, unavailable_reason
from nmfsched.kernels.gpu import KERNEL_SOURCE
from nmfsched.kernels.namespace import NamespaceBackend, projected_cd_rows
from nmfsched.kernels.protocol import GRADIENT_REFRESH_SWEEPS, Backend
from nmfsched.schedulers import ConstantScheduler
from nmfsched.solver import StochasticSolver

BACKENDS = ["cpu", "numpy", pytest.param("gpu", marks=pytest.mark.gpu)]
DTYPES = [np.float32, np.float64]


def _backend(name):
    reason = unavailable_reason(name)
    if reason is not None:
        pytest.skip(reason)
    return get_backend(name)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return _backend(request.param)


@pytest.fixture(params=BACKENDS[1:])
def other_backend(request):
    """Every backend but the CPU one, the reference of whole fits."""
    return _backend(request.param)


def rtol_for(dtype):
    return 2e-4 if dtype == np.float32 else 1e-10


def host(be, A):
    """A backend array or matrix as a dense NumPy array."""
    if sp.issparse(A):
        return A.toarray()
    if hasattr(A, "tocsr"):  # cupyx sparse
        return A.get().toarray()
    return np.asarray(be.to_host(A))


def make_X(rng, n, m, dtype, sparse):
    X = rng.random((n, m)).astype(dtype)
    if sparse:
        X[rng.random((n, m)) < 0.7] = 0
        return sp.csr_matrix(X)
    return X


def test_every_backend_implements_the_protocol(backend):
    assert isinstance(backend, Backend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_minibatch_products_match_numpy(backend, rng, dtype, sparse):
    n, m, k = 40, 23, 5
    X = make_X(rng, n, m, dtype, sparse)
    Xd = backend.to_device(X)
    Xh = X.toarray() if sparse else X
    np.testing.assert_array_equal(host(backend, Xd), Xh)
    rows = rng.permutation(n)[:17].astype(np.int64)
    Ht, W = rng.random((m, k)).astype(dtype), rng.random((17, k)).astype(dtype)
    Xb = backend.take_rows(Xd, backend.asarray(rows), backend.empty((32, m), dtype))
    P = backend.xb_ht(Xb, backend.asarray(Ht), backend.empty((17, k), dtype))
    C = backend.xbt_wb(Xb, backend.asarray(W), backend.empty((m, k), dtype))
    X64 = Xh[rows].astype(np.float64)
    np.testing.assert_allclose(host(backend, P), X64 @ Ht, rtol=rtol_for(dtype))
    np.testing.assert_allclose(host(backend, C), X64.T @ W, rtol=rtol_for(dtype))
    full = backend.xb_ht(backend.all_rows(Xd), backend.asarray(Ht), backend.empty((n, k), dtype))
    np.testing.assert_allclose(host(backend, full), Xh.astype(np.float64) @ Ht, rtol=rtol_for(dtype))
    assert host(backend, P).dtype == dtype
    assert backend.squared_norm(Xd) == pytest.approx(float(np.sum(Xh.astype(np.float64) ** 2)), rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_algebra_and_reductions_match_numpy(backend, rng, dtype):
    A = rng.random((30, 4)).astype(dtype)
    B = rng.standard_normal((30, 4)).astype(dtype)
    Ad, Bd = backend.asarray(A), backend.asarray(B)
    G = backend.gram(Ad)
    assert host(backend, G).dtype == np.float64
    np.testing.assert_allclose(host(backend, G), A.T.astype(np.float64) @ A, rtol=rtol_for(dtype))
    M = rng.random((4, 4))
    out = backend.small_matmul(Ad, backend.asarray(M), backend.empty((30, 4), dtype))
    np.testing.assert_allclose(host(backend, out), A @ M.astype(dtype), rtol=rtol_for(dtype))
    assert backend.inner(Ad, Bd) == pytest.approx(float(np.sum(A.astype(np.float64) * B)), rel=1e-10)
    np.testing.assert_allclose(host(backend, backend.column_sq_norms(Bd)), np.sum(B.astype(np.float64) ** 2, axis=0), rtol=1e-12)
    # the gradient mapping counts entries that can move: Y > 0, or G < 0 (a push up from 0)
    Y = np.where(rng.random((30, 4)) < 0.5, 0.0, A).astype(dtype)
    expected = np.sum(np.where((Y > 0) | (B < 0), B.astype(np.float64), 0.0) ** 2, axis=0)
    got = backend.projected_column_sq_norms(Bd, backend.asarray(Y))
    np.testing.assert_allclose(host(backend, got), expected, rtol=1e-12)
    assert backend.all_finite(Ad)
    A[3, 2] = np.nan
    assert not backend.all_finite(backend.asarray(A))


SWEEP_CASES = [(1, 0.0, False), (3, 0.0, True), (30, 1e-3, True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sweeps,tol,clip", SWEEP_CASES)
def test_projected_cd_matches_oracle(backend, rng, dtype, sweeps, tol, clip):
    Y, G, P, steps = random_cd_problem(rng, 37, 6, dtype)
    P *= 4  # large steps, so that clipping binds
    steps[2] = 0  # a frozen component
    rel = np.full(6, 0.2 if clip else 0.0)
    absolute = np.full(6, 0.1 if clip else np.inf)
    expected, expected_count = cd_oracle(
        Y, G.astype(np.float64), P.astype(np.float64), steps.astype(np.float64), sweeps, tol, rel.astype(dtype), absolute.astype(dtype)
    )
    g0, sq0 = statistics_oracle(Y, G, P, 3.0)
    Yd = backend.asarray(Y)
    grad_acc, sq_acc = backend.zeros(Y.shape, dtype), backend.zeros(6, np.float64)
    count = backend.projected_cd(
        Yd, backend.asarray(G), backend.asarray(P), backend.asarray(steps), max_sweeps=sweeps, tol=tol,
        clips=(rel, absolute), statistics=(grad_acc, 3.0, sq_acc),
    )
    np.testing.assert_allclose(host(backend, Yd), expected, rtol=rtol_for(dtype), atol=rtol_for(dtype))
    np.testing.assert_array_equal(host(backend, Yd)[:, 2], Y[:, 2])
    assert int(count) == expected_count and (expected_count > 0) == clip
    np.testing.assert_allclose(host(backend, grad_acc), g0, rtol=rtol_for(dtype), atol=rtol_for(dtype))
    np.testing.assert_allclose(host(backend, sq_acc), sq0, rtol=10 * rtol_for(dtype))


def test_projected_cd_propagates_nan(backend, rng):
    Y, G, P, steps = random_cd_problem(rng, 5, 3, np.float64)
    P[1, 0] = np.nan
    Yd = backend.asarray(Y)
    backend.projected_cd(Yd, backend.asarray(G), backend.asarray(P), backend.asarray(steps))
    result = host(backend, Yd)
    assert np.isnan(result[1]).any() and np.isfinite(np.delete(result, 1, axis=0)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_whole_fit_matches_the_cpu_backend(other_backend, dtype, sparse):
    """The same seed gives the same fit: the same minibatch order, init and epochs (BLAS on
    one thread for both, so products round alike and the trajectories stay together)."""
    backend = other_backend
    X = low_rank(150, 40, 4, seed=3, noise=0.05, dtype=dtype)
    X = sp.csr_matrix(np.where(X > np.median(X), X, 0)) if sparse else X
    params = dict(random_state=0, max_iter=8, tol=0.0, batch_size=50)
    with threadpool_limits(1):
        ref = StochasticNMF(4, backend="cpu", **params)
        W_ref = ref.fit_transform(X)
        model = StochasticNMF(4, backend=backend.name, **params)
        W = model.fit_transform(X)
    assert type(W) is np.ndarray and W.dtype == dtype  # host input gets host output
    # float64: the CSR products add in another order (Numba rows against SciPy), and three
    # H sweeps per one-batch epoch carry that rounding a little further (1.4e-7 measured)
    rtol = 1e-3 if dtype == np.float32 else 1e-6
    np.testing.assert_allclose(model.history_["loss"], ref.history_["loss"], rtol=rtol)
    np.testing.assert_array_equal(model.history_["batch_size"], ref.history_["batch_size"])
    np.testing.assert_allclose(model.components_, ref.components_, rtol=10 * rtol, atol=10 * rtol * ref.components_.max())
    np.testing.assert_allclose(W, W_ref, rtol=10 * rtol, atol=10 * rtol * W_ref.max())


class CountingBackend(NamespaceBackend):
    """The NumPy namespace backend, counting what comes back to the host."""

    def __init__(self):
        super().__init__()
        self.host_copies = self.host_numbers = self.scalar_reads = 0

    def to_host(self, a):
        self.host_copies += 1
        self.host_numbers += int(np.size(a))
        return super().to_host(a)

    def inner(self, A, B):
        self.scalar_reads += 1
        return super().inner(A, B)

    def squared_norm(self, X):
        self.scalar_reads += 1
        return super().squared_norm(X)

    def all_finite(self, A):
        self.scalar_reads += 1
        return super().all_finite(A)


def _traffic_of_three_epochs(batch_size):
    from nmfsched.epochs import History, StoppingRules, run_epochs
    from nmfsched.stability import StabilityGuard

    X = low_rank(400, 30, 5, seed=1, noise=0.1)
    rng = np.random.default_rng(0)
    be = CountingBackend()
    solver = StochasticSolver(X, rng.random((400, 5)), rng.random((5, 30)), backend=be, batch_size=batch_size, w_sweeps=1, rng=rng)
    guard = StabilityGuard(True, 0.9, 1.0)
    guard.initial_loss = solver.probe()
    guard.bound = solver.lr_bound()
    scheduler = ConstantScheduler()
    scheduler.reset(0.5)
    be.host_copies = be.host_numbers = be.scalar_reads = 0
    run_epochs(solver, scheduler, guard, History(), start_loss=guard.initial_loss, stopping=StoppingRules(max_epochs=3))
    return be.host_copies, be.host_numbers, be.scalar_reads


def test_host_traffic_per_epoch_does_not_grow_with_minibatches():
    """Per epoch, what comes back from the device is a few k-vectors and scalars, however
    many minibatches the epoch has (2, 4 or 16 here): nothing per minibatch."""
    traffic = {batch_size: _traffic_of_three_epochs(batch_size) for batch_size in (200, 100, 25)}
    assert len(set(traffic.values())) == 1, traffic
    copies, numbers, scalars = traffic[25]
    k = 5
    assert copies == 3 * 3  # per epoch: the bound's sums, and diag(W^T W) for the bound and the steps
    assert numbers == 3 * (3 * k + k + k)
    assert scalars == 3 * 5  # the loss, the finiteness check, the gradient cosine's three


# -- the raw CUDA kernel, compiled as C++ on the CPU ----------------------------------------
needs_compiler = pytest.mark.skipif(compiler() is None, reason="no C++ compiler")


@pytest.fixture(scope="module")
def emulated_sweep(tmp_path_factory):
    return EmulatedSweep(tmp_path_factory.mktemp("cuda_emulation"))


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 5, 12])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "global"])
@pytest.mark.parametrize("sweeps,tol,clip", SWEEP_CASES)
def test_raw_kernel_matches_the_array_namespace_sweep(emulated_sweep, rng, dtype, k, shared, sweeps, tol, clip):
    Y, G, P, steps = random_cd_problem(rng, 29, k, dtype)
    P *= 4
    rel = np.full(k, 0.2 if clip else 0.0, dtype=dtype)
    absolute = np.full(k, 0.1 if clip else np.inf, dtype=dtype)
    Y_ref, grad_ref, sq_ref = Y.copy(), np.zeros_like(Y), np.zeros(k)
    count_ref = projected_cd_rows(np, Y_ref, G, P, steps, sweeps, tol, rel, absolute, (grad_ref, 2.0, sq_ref))
    grad, sq = np.zeros_like(Y), np.zeros(k)
    count = emulated_sweep(Y, G, P, steps, sweeps, tol, rel, absolute, (grad, 2.0, sq), shared=shared)
    np.testing.assert_allclose(Y, Y_ref, rtol=rtol_for(dtype), atol=rtol_for(dtype))
    np.testing.assert_allclose(grad, grad_ref, rtol=rtol_for(dtype), atol=rtol_for(dtype))
    np.testing.assert_allclose(sq, sq_ref, rtol=10 * rtol_for(dtype))
    assert count == int(count_ref)


@needs_compiler
def test_raw_kernel_without_statistics_leaves_them_alone(emulated_sweep, rng):
    Y, G, P, steps = random_cd_problem(rng, 10, 4, np.float64)
    expected, _ = cd_oracle(Y, G, P, steps, 2, 0.0, np.zeros(4), np.full(4, np.inf))
    emulated_sweep(Y, G, P, steps, 2, 0.0, np.zeros(4), np.full(4, np.inf))
    np.testing.assert_allclose(Y, expected, rtol=1e-12)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("k,shared", [(16, 1), (130, 0)])
def test_raw_kernel_compiles_as_cuda(tmp_path, k, shared):
    """nvcc accepts the source for both template instantiations (as NVRTC is asked for them)."""
    args = "{T}*, const {T}*, const {T}*, const {T}*, const {T}*, const {T}*, const long long, const int, const double, const int, {T}*, const double, double*, unsigned long long*"
    unit = tmp_path / "unit.cu"
    unit.write_text(
        f'#include "{KERNEL_SOURCE}"\n'
        + "".join(f"template __global__ void projected_cd_rows<{t}>({args.format(T=t)});\n" for t in ("float", "double"))
    )
    result = subprocess.run(
        ["nvcc", "-std=c++14", "--ptx", "-arch=sm_80", f"-DNMF_K={k}", f"-DNMF_SHARED={shared}",
         f"-DNMF_REFRESH={GRADIENT_REFRESH_SWEEPS}", str(unit), "-o", str(tmp_path / "unit.ptx")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    ptx = (tmp_path / "unit.ptx").read_text()
    assert ptx.count(".entry") == 2


# -- on a GPU only --------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [5, 64, 100])
def test_gpu_raw_kernel_matches_the_array_namespace_sweep_on_the_device(rng, dtype, k):
    if unavailable_reason("gpu"):
        pytest.skip(unavailable_reason("gpu"))
    import cupy

    be = get_backend("gpu")
    Y, G, P, steps = random_cd_problem(rng, 1000, k, dtype)
    rel, absolute = np.full(k, 0.2, dtype=dtype), np.full(k, 0.1, dtype=dtype)
    args = [cupy.asarray(a) for a in (G, P, steps, rel, absolute)]
    Y_ref, grad_ref, sq_ref = cupy.asarray(Y), cupy.zeros(Y.shape, dtype), cupy.zeros(k)
    count_ref = projected_cd_rows(cupy, Y_ref, args[0], args[1], args[2], 3, 0.0, args[3], args[4], (grad_ref, 2.0, sq_ref))
    Yd, grad, sq = cupy.asarray(Y), cupy.zeros(Y.shape, dtype), cupy.zeros(k)
    count = be.projected_cd(Yd, args[0], args[1], args[2], max_sweeps=3, clips=(args[3], args[4]), statistics=(grad, 2.0, sq))
    np.testing.assert_allclose(Yd.get(), Y_ref.get(), rtol=rtol_for(dtype), atol=rtol_for(dtype))
    np.testing.assert_allclose(grad.get(), grad_ref.get(), rtol=rtol_for(dtype), atol=rtol_for(dtype))
    np.testing.assert_allclose(sq.get(), sq_ref.get(), rtol=1e-3 if dtype == np.float32 else 1e-9)
    assert int(count) == int(count_ref)


@pytest.mark.gpu
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_gpu_input_stays_on_the_device(sparse):
    if unavailable_reason("gpu"):
        pytest.skip(unavailable_reason("gpu"))
    import cupy
    import cupyx.scipy.sparse

    X = low_rank(200, 50, 4, seed=2, noise=0.05, dtype=np.float32)
    Xd = cupyx.scipy.sparse.csr_matrix(sp.csr_matrix(np.where(X > 1, X, 0))) if sparse else cupy.asarray(X)
    model = StochasticNMF(4, random_state=0, max_iter=20)
    W = model.fit_transform(Xd)
    assert isinstance(W, cupy.ndarray) and W.dtype == np.float32 and W.shape == (200, 4)
    assert isinstance(model.components_, np.ndarray)
    assert isinstance(model.transform(Xd), cupy.ndarray)
    assert isinstance(model.inverse_transform(W), cupy.ndarray)
    assert np.isfinite(model.reconstruction_err_)
    host_model = StochasticNMF(4, random_state=0, max_iter=20, backend="cpu").fit(X if not sparse else Xd.get())
    assert model.reconstruction_err_ <= 1.05 * host_model.reconstruction_err_


@settings(max_examples=60, deadline=None)
@given(
    n_rows=st.integers(1, 30),
    k=st.integers(1, 7),
    scale=st.sampled_from([1e-6, 1.0, 1e6]),
    clip=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_array_namespace_sweep_never_increases_a_row_objective(n_rows, k, scale, clip, seed):
    """Exact coordinate steps (1/G_jj), clipped or not, cannot raise any row's objective,
    keep every entry >= 0 and finite, at any scale of the data."""
    rng = np.random.default_rng(seed)
    Hm = rng.random((k, 2 * k + 1)) * scale
    X = rng.random((n_rows, 2 * k + 1)) * scale
    G, P = Hm @ Hm.T, X @ Hm.T
    Y = rng.random((n_rows, k)) * rng.random() * 3

    def objective(W):
        return 0.5 * ((X - W @ Hm) ** 2).sum(axis=1)

    before = objective(Y)
    clips = (np.full(k, 0.3), np.full(k, 0.01)) if clip else None
    NamespaceBackend().projected_cd(Y, G, P, 1.0 / np.diag(G), max_sweeps=2, clips=clips)
    assert np.isfinite(Y).all() and (Y >= 0).all()
    assert (objective(Y) <= before + 1e-9 * (before + scale**2)).all()
