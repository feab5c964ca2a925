"""A stand-in for CuPy on NumPy, so the GPU backend's own Python code runs without a GPU.

``install(monkeypatch, tmp_path)`` puts modules named ``cupy``, ``cupyx``, ``cupyx.scipy`` and
``cupyx.scipy.sparse`` into ``sys.modules``:

- ``cupy.ndarray`` is a NumPy subclass whose type lives in a ``cupy`` module (so nmfsched takes
  it for device data) and has CuPy's ``get()``; every NumPy function, reached through the
  stand-in, returns such arrays;
- ``cupy.RawModule`` compiles the kernel source as C++ (tests/cuda_emulation.py) and launches
  it one row per block;
- ``cupyx.scipy.sparse.csr_matrix`` is a SciPy CSR whose type lives in ``cupyx``.

What this tests: ``GPUBackend`` (argument marshalling to the kernel, shared-memory choice,
placeholders), the registry's "auto", and the estimator's device-input path (validation,
initialisation, output kinds). What it cannot: CuPy's and CUDA's own behaviour and speed.
"""

import sys
import types

import numpy as np
import scipy.sparse
from cuda_emulation import EmulatedSweep


class ndarray(np.ndarray):
    """A "device" array: a NumPy array that says it is CuPy's."""

    def get(self):
        return np.asarray(self).view(np.ndarray).copy()

    def __float__(self):
        return float(np.asarray(self).view(np.ndarray))


ndarray.__module__ = "cupy._core.core"


def _to_device(value):
    if isinstance(value, np.ndarray) and not isinstance(value, ndarray):
        return value.view(ndarray)
    if isinstance(value, tuple):
        return tuple(_to_device(v) for v in value)
    if isinstance(value, list):
        return [_to_device(v) for v in value]
    return value


def _wrap(fn):
    def wrapped(*args, **kwargs):
        return _to_device(fn(*args, **kwargs))

    return wrapped


class _Namespace(types.ModuleType):
    """A module whose missing attributes are NumPy's (functions wrapped to return "device" arrays)."""

    def __init__(self, name, source):
        super().__init__(name)
        self._source = source

    def __getattr__(self, name):
        value = getattr(self._source, name)
        if callable(value) and not isinstance(value, type):
            value = _wrap(value)
        setattr(self, name, value)
        return value


class RawModule:
    """Compiles the CUDA source as C++ and launches it as CuPy would, one row per block."""

    def __init__(self, code, options=(), name_expressions=()):
        defines = dict(option[2:].split("=") for option in options if option.startswith("-D"))
        self.k, self.shared = int(defines["NMF_K"]), bool(int(defines["NMF_SHARED"]))
        self.names = tuple(name_expressions)
        _STATE["compiled"].append((self.k, self.shared))

    def get_function(self, name):
        assert name in self.names, name
        return _Kernel(self, np.float32 if "float>" in name else np.float64)


class _Kernel:
    def __init__(self, module, dtype):
        self.module, self.dtype = module, dtype

    def __call__(self, grid, block, args, shared_mem=0):
        (Y, G, P, steps, rel, absolute, n_rows, sweeps, tol, accumulate, grad, sq_weight, sq, count) = args
        assert all(a.dtype == self.dtype for a in (Y, G, P, steps, rel, absolute, grad))
        assert grid[0] * block[0] >= int(n_rows) and isinstance(n_rows, np.int64) and isinstance(sweeps, np.int32)
        assert shared_mem == ((self.module.k**2 + 3 * self.module.k) * Y.itemsize if self.module.shared else 0)
        stats = (grad, float(sq_weight), sq) if int(accumulate) else None
        count[...] += _STATE["sweep"](Y, G, P, steps, int(sweeps), float(tol), rel, absolute, stats, shared=self.module.shared)
        _STATE["launches"] += 1


class csr_matrix(scipy.sparse.csr_matrix):
    """A "device" CSR matrix."""

    def get(self):
        return scipy.sparse.csr_matrix(self)


csr_matrix.__module__ = "cupyx.scipy.sparse._csr"

_STATE = {}


def install(monkeypatch, directory):
    """Install the stand-in for the rest of a test; returns its counters (launches, compiled)."""
    _STATE.clear()
    _STATE.update(sweep=EmulatedSweep(directory), launches=0, compiled=[])
    cupy = _Namespace("cupy", np)
    cupy.__version__ = "0-fake"
    cupy.ndarray = ndarray
    cupy.RawModule = RawModule
    cupy.linalg = _Namespace("cupy.linalg", np.linalg)
    stream = types.SimpleNamespace(synchronize=lambda: None)
    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {"name": b"fake"}),
        get_current_stream=lambda: stream,
        Device=lambda: types.SimpleNamespace(id=0),
    )
    sparse = types.ModuleType("cupyx.scipy.sparse")
    sparse.csr_matrix = csr_matrix
    sparse.issparse = lambda a: isinstance(a, csr_matrix)
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.sparse = sparse
    for name, module in {"cupy": cupy, "cupyx": cupyx, "cupyx.scipy": cupyx.scipy, "cupyx.scipy.sparse": sparse}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return _STATE
