"""The array namespace of the arrays a theory function is given (NumPy, or CuPy on a GPU).

The per-minibatch quantities (steps ``1/L_j``, clipping limits) are computed where the
Gram they come from lives, so a GPU fit never copies a ``k x k`` matrix to the host per
minibatch. NumPy >= 2 and CuPy name every function used here alike. A CuPy array can only
exist once CuPy is imported, so CuPy is looked up in ``sys.modules``, never imported here.
"""

import sys

import numpy as np


def array_namespace(*arrays):
    """``cupy`` when any of ``arrays`` is a CuPy array or cupyx sparse matrix, else ``numpy``."""
    for a in arrays:
        if is_device_array(a):
            return sys.modules["cupy"]
    return np


def is_device_array(a):
    """Whether ``a`` is a CuPy array or a cupyx sparse matrix (checked without importing CuPy)."""
    return type(a).__module__.split(".")[0] in ("cupy", "cupyx")
