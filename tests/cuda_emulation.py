"""The GPU sweep kernel (kernels/projected_cd.cu) compiled as plain C++ and run on the CPU.

The kernel source is compiled unchanged with a preamble that defines CUDA's keywords,
thread indices and atomics for one host thread, and a driver that launches one block of
one thread per row (so a block's cooperative load of the Gram into shared memory is done
by that thread alone, and ``__syncthreads`` has nothing to wait for). What this checks is
the kernel's arithmetic: the sweep, the clipping, the projection, the early stop, the
statistics and the count. What it cannot check is what only hardware shows: concurrent
blocks, real atomics, memory coalescing and speed.
"""

import ctypes
import shutil
import subprocess

import numpy as np

from nmfsched.kernels.gpu import KERNEL_SOURCE, uses_shared_memory
from nmfsched.kernels.protocol import GRADIENT_REFRESH_SWEEPS

PREAMBLE = r"""
#include <cmath>
using std::fabs;
#define __global__
#define __device__
#define __restrict__
#define __shared__
struct EmulatedIndex { unsigned int x; };
static EmulatedIndex threadIdx, blockIdx, blockDim;
static inline void __syncthreads() {}
static inline double atomicAdd(double* a, double v) { double old = *a; *a += v; return old; }
static inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
    unsigned long long old = *a; *a += v; return old;
}
alignas(16) unsigned char nmf_shared[1 << 20];
"""

DRIVER = r"""
template <typename T>
static void launch(T* Y, const T* G, const T* P, const T* steps, const T* clip_rel, const T* clip_abs,
                   long long n_rows, int max_sweeps, double tol, int accumulate, T* grad_acc,
                   double sq_weight, double* sq_acc, unsigned long long* n_clipped) {
    blockDim.x = 1;
    threadIdx.x = 0;
    for (long long b = 0; b < n_rows; ++b) {
        blockIdx.x = (unsigned int)b;
        projected_cd_rows<T>(Y, G, P, steps, clip_rel, clip_abs, n_rows, max_sweeps, tol,
                             accumulate, grad_acc, sq_weight, sq_acc, n_clipped);
    }
}
#define NMF_LAUNCHER(NAME, T) \
extern "C" void NAME(T* Y, const T* G, const T* P, const T* steps, const T* clip_rel, \
    const T* clip_abs, long long n_rows, int max_sweeps, double tol, int accumulate, T* grad_acc, \
    double sq_weight, double* sq_acc, unsigned long long* n_clipped) { \
    launch<T>(Y, G, P, steps, clip_rel, clip_abs, n_rows, max_sweeps, tol, accumulate, grad_acc, \
              sq_weight, sq_acc, n_clipped); }
NMF_LAUNCHER(launch_float, float)
NMF_LAUNCHER(launch_double, double)
"""


def compiler():
    """The C++ compiler, or None."""
    return shutil.which("g++") or shutil.which("c++")


def build(k, shared, directory):
    """Compile the kernel for ``k`` components into a shared library in ``directory``."""
    source = directory / f"projected_cd_k{k}_s{int(shared)}.cpp"
    library = source.with_suffix(".so")
    source.write_text(PREAMBLE + KERNEL_SOURCE.read_text() + DRIVER)
    subprocess.run(
        [compiler(), "-std=c++14", "-O1", "-shared", "-fPIC", f"-DNMF_K={k}", f"-DNMF_SHARED={int(shared)}",
         f"-DNMF_REFRESH={GRADIENT_REFRESH_SWEEPS}",
         str(source), "-o", str(library)],
        check=True,
        capture_output=True,
    )
    return ctypes.CDLL(str(library))


class EmulatedSweep:
    """Runs the compiled kernel on NumPy arrays, as ``GPUBackend.projected_cd`` launches it."""

    def __init__(self, directory):
        self.directory = directory
        self._libraries = {}

    def __call__(self, Y, G, P, steps, max_sweeps, tol, clip_rel, clip_abs, statistics=None, shared=None):
        n_rows, k = Y.shape
        dtype = Y.dtype
        shared = uses_shared_memory(k, dtype.itemsize) if shared is None else shared
        key = (k, shared)
        if key not in self._libraries:
            self._libraries[key] = build(k, shared, self.directory)
        fn = getattr(self._libraries[key], "launch_float" if dtype == np.float32 else "launch_double")
        arrays = [np.ascontiguousarray(a, dtype=dtype) for a in (G, P, steps, clip_rel, clip_abs)]
        if statistics is None:
            grad_acc, sq_weight, sq_acc = np.zeros(1, dtype), 0.0, np.zeros(1)
        else:
            grad_acc, sq_weight, sq_acc = statistics
        count = np.zeros(1, dtype=np.uint64)
        ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
        fn(
            ptr(Y), *map(ptr, arrays), ctypes.c_longlong(n_rows), ctypes.c_int(max_sweeps), ctypes.c_double(tol),
            ctypes.c_int(statistics is not None), ptr(grad_acc), ctypes.c_double(sq_weight), ptr(sq_acc), ptr(count),
        )
        return int(count[0])
