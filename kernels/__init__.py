"""Compute backends: the few array primitives the solver loop needs.

``get_backend(name)`` returns a backend object; every backend implements the same methods
(see :class:`nmfsched.kernels.cpu.CPUBackend`), so the solver is written once. The
registry below is the one list of backends: the estimator's ``backend`` parameter and the
command line's ``--backend`` choices are derived from it.
"""

import importlib

#: Backend name -> "module:class" (imported only when the backend is asked for).
_REGISTRY = {"cpu": "nmfsched.kernels.cpu:CPUBackend"}


def available_backends():
    """Names of the backends usable on this machine (``"auto"`` picks among them)."""
    return list(_REGISTRY)


def backend_names():
    """Every value the ``backend`` parameter takes: ``"auto"`` and the available backends."""
    return ["auto", *available_backends()]


def get_backend(name="auto"):
    """The backend called ``name`` ("auto" picks the best available one)."""
    if name == "auto":
        name = available_backends()[0]
    if name not in _REGISTRY:
        raise ValueError(f"Unknown backend {name!r}; available backends: {', '.join(map(repr, backend_names()))}.")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()
