"""The one place that decides how Numba compiles nmfsched's kernels.

``fastmath`` is a set of LLVM flags rather than ``True``: ``nnan`` and ``ninf`` are left
out on purpose so that a NaN or Inf produced by a bad learning rate propagates to the loss,
where the solver detects it, instead of being optimised into silently wrong numbers.
"""

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

JIT_OPTIONS = dict(nogil=True, cache=True, fastmath=set(FASTMATH))
PARALLEL_JIT_OPTIONS = dict(JIT_OPTIONS, parallel=True)
#: For the few kernels that must round exactly as the NumPy expressions they replace
#: (no fused multiply-adds, no reassociated sums): the initial factors, which fixed-seed
#: histories pin bit for bit.
EXACT_JIT_OPTIONS = dict(nogil=True, cache=True)
