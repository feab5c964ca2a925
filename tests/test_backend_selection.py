"""Choosing a backend: the registry, "auto", the errors without CuPy or a device, import safety."""

import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import scipy.sparse as sp

from nmfsched import StochasticNMF
from nmfsched._init import randomized_svd_namespace
from nmfsched._validation import check_device_X, check_finite_nonnegative
from nmfsched.kernels import (
    BackendUnavailableError,
    available_backends,
    backend_names,
    get_backend,
    resolve_backend_name,
    unavailable_reason,
)


@pytest.fixture
def fresh_status():
    """Forget what the registry learnt about this machine, before and after the test."""
    unavailable_reason.cache_clear()
    yield
    unavailable_reason.cache_clear()


def fake_cupy(monkeypatch, get_device_count):
    """Install a stand-in ``cupy`` whose ``cuda.runtime.getDeviceCount`` is ``get_device_count``."""
    runtime = types.SimpleNamespace(getDeviceCount=get_device_count)
    module = types.ModuleType("cupy")
    module.__version__ = "99.0-fake"
    module.cuda = types.SimpleNamespace(runtime=runtime)
    monkeypatch.setitem(sys.modules, "cupy", module)


def test_the_parameter_takes_every_registered_backend():
    assert backend_names() == ["auto", "cpu", "gpu", "numpy"]
    assert {"cpu", "numpy"} <= set(available_backends())


def test_without_cupy_gpu_says_how_to_install_and_auto_takes_the_cpu(monkeypatch, fresh_status):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(BackendUnavailableError, match=r"needs CuPy, which is not installed.*pip install 'nmfsched\[gpu\]'.*'nmfsched\[gpu-cuda13\]' \(CUDA 13\)"):
        get_backend("gpu")
    assert resolve_backend_name("auto") == "cpu"
    assert get_backend().name == "cpu"
    assert "gpu" not in available_backends()


def test_without_a_device_gpu_says_so(monkeypatch, fresh_status):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake_cupy(monkeypatch, no_device)
    with pytest.raises(BackendUnavailableError, match=r"found CuPy 99.0-fake but no usable CUDA device \(cudaErrorNoDevice"):
        get_backend("gpu")
    assert resolve_backend_name("auto") == "cpu"


def test_zero_devices_is_no_device(monkeypatch, fresh_status):
    fake_cupy(monkeypatch, lambda: 0)
    with pytest.raises(BackendUnavailableError, match="but no CUDA device"):
        get_backend("gpu")


def test_auto_prefers_a_usable_gpu(monkeypatch, fresh_status):
    fake_cupy(monkeypatch, lambda: 1)
    assert resolve_backend_name("auto") == "gpu"
    assert available_backends() == ["cpu", "gpu", "numpy"]


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="Unknown backend 'tpu'.*'auto', 'cpu', 'gpu', 'numpy'"):
        get_backend("tpu")


def test_estimator_and_check_params_refuse_an_unavailable_gpu_before_any_work(monkeypatch, fresh_status):
    from nmfsched.estimator import check_params

    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(BackendUnavailableError, match=r"nmfsched\[gpu\]"):
        StochasticNMF(2, backend="gpu").fit(np.ones((4, 3)))
    with pytest.raises(BackendUnavailableError, match="needs CuPy"):
        check_params(2, backend="gpu")
    check_params(2, backend="auto")  # auto always has somewhere to run


def test_cli_refuses_an_unavailable_gpu_with_one_line(tmp_path, monkeypatch, fresh_status, capsys):
    from nmfsched.cli import main

    monkeypatch.setitem(sys.modules, "cupy", None)
    np.save(tmp_path / "x.npy", np.ones((4, 3)))
    assert main(["factorize", str(tmp_path / "x.npy"), "--rank", "2", "--out", str(tmp_path / "out"), "--backend", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "needs CuPy" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


BLOCK_CUPY = textwrap.dedent(
    """
    import sys

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("cupy", "cupyx"):
                raise AssertionError(f"imported {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    """
)


def test_importing_and_fitting_on_the_cpu_never_imports_cupy():
    code = BLOCK_CUPY + textwrap.dedent(
        """
        import numpy as np
        import nmfsched
        from nmfsched import StochasticNMF
        from nmfsched.kernels import backend_names
        import nmfsched.cli
        assert "gpu" in backend_names()
        StochasticNMF(2, backend="cpu", max_iter=3, random_state=0).fit(np.random.default_rng(0).random((20, 5)))
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


class FakeDeviceArray:
    """Looks like a CuPy array from the outside (its type lives in a ``cupy`` module)."""

    __module__ = "cupy._core.core"
    shape, ndim, dtype = (3, 2), 2, np.dtype(np.float32)


def test_device_input_with_a_cpu_backend_is_refused_clearly():
    for method in ("fit", "fit_transform"):
        with pytest.raises(ValueError, match=r"X is a cupy array on the GPU but backend='cpu'; use backend='gpu'"):
            getattr(StochasticNMF(2, backend="cpu"), method)(FakeDeviceArray())


@pytest.mark.parametrize("sparse", [False, True])
def test_device_checks_report_what_the_host_checks_report(sparse):
    """check_device_X is written in the array's namespace; on NumPy it must say what the
    host check says, with the same first position."""
    X = np.ones((5, 4))
    X[3, 1] = -2.0
    X[4, 2] = -1.0
    X = sp.csr_matrix(X) if sparse else X
    with pytest.raises(ValueError) as host:
        check_finite_nonnegative(X, who="StochasticNMF")
    with pytest.raises(ValueError) as device:
        check_device_X(X, who="StochasticNMF")
    assert str(device.value) == str(host.value)
    assert "2 negative entries (first at row 3, column 1)" in str(device.value)
    Y = np.ones((5, 4))
    Y[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 non-finite entry \(first at row 2, column 3\)"):
        check_device_X(sp.csr_matrix(Y) if sparse else Y, who="StochasticNMF")
    ints = check_device_X(np.ones((2, 2), dtype=np.int64), who="StochasticNMF")
    assert ints.dtype == np.float64
    with pytest.raises(ValueError, match="at least one sample"):
        check_device_X(np.ones((0, 3)), who="StochasticNMF")


@pytest.mark.parametrize("sparse", [False, True])
def test_device_initialisation_svd_agrees_with_scikit_learn(sparse):
    from sklearn.utils.extmath import randomized_svd

    rng = np.random.default_rng(0)
    X = rng.random((120, 6)) @ rng.random((6, 80)) + 0.01 * rng.random((120, 80))
    X = sp.csr_matrix(X) if sparse else X
    U, S, Vt = randomized_svd_namespace(X, 6, np.random.default_rng(1))
    _, S_ref, _ = randomized_svd(X, 6, random_state=0)
    np.testing.assert_allclose(S, S_ref, rtol=1e-8)
    np.testing.assert_allclose(U.T @ U, np.eye(6), atol=1e-10)
    dense = X.toarray() if sparse else X
    np.testing.assert_allclose((U * S) @ Vt, U @ (U.T @ dense), atol=1e-8)  # the projection onto the range


def test_auto_batches_start_larger_where_a_minibatch_costs_more_to_launch():
    from nmfsched.kernels.cpu import CPUBackend
    from nmfsched.kernels.gpu import GPUBackend
    from nmfsched.solver import resolve_batch_size

    shape = (200_000, 2000, 64, 200_000 * 2000, 2)
    cpu = resolve_batch_size("auto", *shape, CPUBackend.batch_overhead_flops)
    gpu = resolve_batch_size("auto", *shape, GPUBackend.batch_overhead_flops)
    assert 256 <= cpu < 1000 and 20 * cpu < gpu < 200_000
