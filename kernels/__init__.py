"""Compute backends: the few array primitives the solver loop needs.

``get_backend("auto" | "cpu")`` returns a backend object; every backend implements the
same methods (see :class:`nmfsched.kernels.cpu.CPUBackend`), so the solver is written once.
"""

BACKENDS = ("cpu",)


def available_backends():
    """Names of the backends usable on this machine."""
    return list(BACKENDS)


def get_backend(name="auto"):
    """The backend called ``name`` ("auto" picks the best available one)."""
    if name in ("auto", "cpu"):
        from .cpu import CPUBackend

        return CPUBackend()
    raise ValueError(
        f"Unknown backend {name!r}; available backends: 'auto', "
        + ", ".join(repr(b) for b in available_backends())
        + "."
    )
