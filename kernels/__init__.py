"""Compute backends: the few array primitives the solver loop needs.

Every backend implements :class:`~nmfsched.kernels.protocol.Backend`, so the solver is written
once. The registry below is the one list of backends: the estimator's ``backend`` parameter
and the command line's ``--backend`` choices are derived from it.

- ``"cpu"``: Numba kernels and BLAS (:mod:`nmfsched.kernels.cpu`).
- ``"gpu"``: CuPy on an NVIDIA GPU (:mod:`nmfsched.kernels.gpu`; needs ``nmfsched[gpu]``).
- ``"numpy"``: the GPU backend's array code run on NumPy (:mod:`nmfsched.kernels.namespace`):
  slow, for checking the GPU code path on a machine without one.

Nothing here imports CuPy until the GPU backend is asked for (or "auto" looks for it).
"""

import functools
import importlib

#: Backend name -> "module:class" (imported only when the backend is asked for).
_REGISTRY = {
    "cpu": "nmfsched.kernels.cpu:CPUBackend",
    "gpu": "nmfsched.kernels.gpu:GPUBackend",
    "numpy": "nmfsched.kernels.namespace:NamespaceBackend",
}
#: Backend name -> "module:function" returning why it cannot run here (None: it can).
_STATUS = {"gpu": "nmfsched.kernels.gpu:gpu_status"}
#: What "auto" tries, best first.
_AUTO_ORDER = ("gpu", "cpu")


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot run on this machine (the message says why)."""


def _load(spec):
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


@functools.cache
def unavailable_reason(name):
    """Why backend ``name`` cannot run on this machine, or None when it can."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown backend {name!r}; backends: {', '.join(map(repr, backend_names()))}.")
    return _load(_STATUS[name])() if name in _STATUS else None


def backend_names():
    """Every value the ``backend`` parameter takes: ``"auto"`` and each registered backend
    (whether or not it can run here; :func:`available_backends` says which can)."""
    return ["auto", *_REGISTRY]


def available_backends():
    """Names of the backends that can run on this machine (checking the GPU imports CuPy)."""
    return [name for name in _REGISTRY if unavailable_reason(name) is None]


def resolve_backend_name(name="auto"):
    """The backend ``name`` stands for: "auto" is the GPU when CuPy and a device are there, else the CPU."""
    if name != "auto":
        return name
    return next(candidate for candidate in _AUTO_ORDER if unavailable_reason(candidate) is None)


def get_backend(name="auto"):
    """A new backend object for ``name``.

    Raises
    ------
    ValueError
        For a name that is not a backend.
    BackendUnavailableError
        For a backend that cannot run here, saying what is missing and how to install it.
    """
    name = resolve_backend_name(name)
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(reason)
    return _load(_REGISTRY[name])()
