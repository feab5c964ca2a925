"""GPU backend on CuPy: cuBLAS and cuSPARSE products, a fused CUDA kernel for the sweep.

:class:`GPUBackend` is :class:`~nmfsched.kernels.namespace.NamespaceBackend` on CuPy (so
every primitive but one is the array code CI runs on NumPy), with:

- dense products through ``cupy.matmul`` (cuBLAS) into preallocated buffers;
- CSR products through cupyx (cuSPARSE SpMM): ``X_B @ H.T`` on the CSR, and ``X_B.T @ W_B``
  on the CSR's ``.T``, a CSC view of the same arrays that cupyx multiplies as a transposed
  product of the CSR (no transposed copy of ``X``); the minibatch rows gathered on the device
  by cupyx's row indexing;
- the projected, clipped coordinate sweep as one fused kernel (``projected_cd.cu``): one
  thread per row, the ``k x k`` Gram in shared memory, the bound's statistics reduced on the
  device. Its oracle is :func:`~nmfsched.kernels.namespace.projected_cd_rows`.

CuPy is imported when a :class:`GPUBackend` is made or :func:`gpu_status` is asked, never
by importing this module or ``nmfsched``.
"""

from pathlib import Path

import numpy as np

from .namespace import NamespaceBackend
from .protocol import GRADIENT_REFRESH_SWEEPS

#: The sweep kernel's CUDA source (also compiled as plain C++ by the tests, see tests/test_backends.py).
KERNEL_SOURCE = Path(__file__).with_name("projected_cd.cu")
#: Threads per block of the sweep kernel.
THREADS_PER_BLOCK = 128
#: Shared memory a block may use without opting in to more (bytes).
_SHARED_LIMIT = 48 * 1024


def uses_shared_memory(k, itemsize):
    """Whether the sweep kernel stages ``G`` (``k x k``) and three ``k``-vectors in shared memory."""
    return (k * k + 3 * k) * itemsize <= _SHARED_LIMIT


class GPUBackend(NamespaceBackend):
    """The solver's primitives on the current CUDA device (CuPy)."""

    name = "gpu"
    #: The fixed cost of a minibatch in flops (see ``nmfsched.solver.resolve_batch_size``):
    #: about 50 kernel launches of ~5 us, at ~20 TFLOP/s. An estimate, not yet measured on
    #: hardware: "auto" batches start in the tens of thousands of rows on large data.
    batch_overhead_flops = 5e9

    def __init__(self):
        import cupy
        import cupyx.scipy.sparse

        super().__init__(cupy, cupyx.scipy.sparse)
        self._modules = {}
        self._dummy = {}

    # -- the fused sweep ------------------------------------------------------------------
    def _kernel(self, k, dtype):
        shared = uses_shared_memory(k, dtype.itemsize)
        key = (k, shared)
        if key not in self._modules:
            cupy = self.xp
            self._modules[key] = cupy.RawModule(
                code=KERNEL_SOURCE.read_text(),
                options=(
                    "-std=c++14", f"-DNMF_K={k}", f"-DNMF_SHARED={int(shared)}",
                    f"-DNMF_REFRESH={GRADIENT_REFRESH_SWEEPS}",
                ),
                name_expressions=("projected_cd_rows<float>", "projected_cd_rows<double>"),
            )
        name = "projected_cd_rows<float>" if dtype == np.float32 else "projected_cd_rows<double>"
        return self._modules[key].get_function(name), shared

    def projected_cd(self, Y, G, P, steps, *, max_sweeps=1, tol=0.0, clips=None, statistics=None):
        cupy = self.xp
        n_rows, k = Y.shape
        if not (Y.flags.c_contiguous and P.flags.c_contiguous and P.shape == Y.shape and P.dtype == Y.dtype):
            raise ValueError("projected_cd needs C-contiguous Y and P of one shape and dtype (the kernel indexes rows by k).")
        if statistics is not None and not (statistics[0].flags.c_contiguous and statistics[0].shape == Y.shape):
            raise ValueError("projected_cd needs a C-contiguous gradient accumulator of Y's shape.")
        G, steps, clip_rel, clip_abs = self._sweep_arguments(Y, G, steps, clips)
        n_clipped = cupy.zeros((), dtype=cupy.uint64)
        if n_rows == 0 or k == 0:
            return n_clipped
        if statistics is None:
            grad_acc, sq_weight, sq_acc = self._placeholder(Y.dtype), 0.0, self._placeholder(np.float64)
        else:
            grad_acc, sq_weight, sq_acc = statistics
        kernel, shared = self._kernel(k, np.dtype(Y.dtype))
        blocks = (n_rows + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
        kernel(
            (blocks,),
            (THREADS_PER_BLOCK,),
            (
                Y, G, P, steps, clip_rel, clip_abs,
                np.int64(n_rows), np.int32(max_sweeps), np.float64(tol),
                np.int32(statistics is not None), grad_acc, np.float64(sq_weight), sq_acc, n_clipped,
            ),
            shared_mem=(k * k + 3 * k) * Y.dtype.itemsize if shared else 0,
        )
        return n_clipped

    def _placeholder(self, dtype):
        """A one-element device array for a pointer argument the kernel will not touch."""
        dtype = np.dtype(dtype)
        if dtype not in self._dummy:
            self._dummy[dtype] = self.xp.zeros(1, dtype=dtype)
        return self._dummy[dtype]


def gpu_status():
    """Why the GPU backend cannot run here, or None when it can.

    Returns
    -------
    str or None
        A message naming what is missing (CuPy, or a CUDA device) and how to get it.
    """
    try:
        import cupy
    except ImportError as exc:
        return (
            f"backend='gpu' needs CuPy, which is not installed ({exc}). Install nmfsched with its "
            "GPU extra: pip install 'nmfsched[gpu]' (CuPy for CUDA 12) or "
            "pip install 'nmfsched[gpu-cuda13]' (CUDA 13)."
        )
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when there is no driver or no device
        return f"backend='gpu' found CuPy {cupy.__version__} but no usable CUDA device ({exc})."
    if n_devices < 1:
        return f"backend='gpu' found CuPy {cupy.__version__} but no CUDA device."
    return None
