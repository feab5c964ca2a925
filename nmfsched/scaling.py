"""Scale-free fits: data far from 1 in magnitude is fitted divided by a power of 4, and the result scaled back.

NMF is scale-equivariant: the fit of ``c X`` is the fit of ``X`` with both factors times
``sqrt(c)``. Floating point is not: at ``1e100 X`` the bound's squared gradient norms overflow,
at ``1e-200 X`` the products underflow to 0. A fit of ``X`` whose largest observed entry lies
outside ``[2^-16, 2^16]`` therefore runs on ``X / s`` with ``s = 4^j`` the largest power of 4 not
above that entry, and its results are scaled back (factors by ``2^j = sqrt(s)``, errors by ``s``, losses by
``s^2``). Dividing by a power of 2 changes no rounding (short of subnormals), so the fit of
``X / s`` is the fit of ``X`` itself wherever both can be computed. Data inside the range (almost
all data) is fitted as it is, with no copy.

The penalties keep their meaning: with ``W = sqrt(s) W'`` and ``H = sqrt(s) H'`` the objective is
``s^2`` times the objective of ``X / s`` whose L1 weights are divided by ``s^1.5`` and L2 weights
by ``s`` (:meth:`DataScale.penalty`).
"""

import math
import warnings
from typing import NamedTuple

import numpy as np

from .objective import Penalty
from .theory.namespace import array_namespace

#: Largest observed entries in this range are fitted as they are.
SAFE_RANGE = (2.0**-16, 2.0**16)


class DataScale(NamedTuple):
    """``X`` is fitted as ``X / s``; ``s = 4^j`` (1 when ``X`` needs no scaling)."""

    s: float = 1.0

    @classmethod
    def of(cls, largest):
        """The scale for data whose largest observed entry (in magnitude) is ``largest``."""
        largest = float(largest)
        if not (largest > 0 and math.isfinite(largest)) or SAFE_RANGE[0] <= largest <= SAFE_RANGE[1]:
            return cls(1.0)
        exponent = math.frexp(largest)[1] - 1  # largest = f 2^exponent, f in [1, 2): never overflows
        return cls(math.ldexp(1.0, 2 * (exponent // 2)))  # the largest scaled entry is in [1, 4)

    @property
    def root(self):
        """``sqrt(s)``, a power of 2: the factors' scale."""
        return math.ldexp(1.0, self._half_exponent)

    @property
    def _half_exponent(self):
        """``j`` with ``s = 4^j``."""
        return (math.frexp(self.s)[1] - 1) // 2

    def times_power(self, x, power):
        """``x * s^power`` for ``power`` a multiple of 1/2, exactly (``ldexp``: no overflow of ``s^power``
        itself, and 0 stays 0 where ``s^power`` alone would overflow)."""
        return np.ldexp(np.asarray(x, dtype=np.float64), int(round(2 * self._half_exponent * power)))

    @property
    def active(self):
        return self.s != 1.0

    def data(self, X):
        """``X / s`` (a new array; ``X`` itself when ``s`` is 1): dense, sparse, CuPy or Dask."""
        if not self.active:
            return X
        inverse = 1.0 / self.s  # a power of 2: exact
        if hasattr(X, "map_blocks"):  # Dask: lazily, chunk by chunk
            return X.map_blocks(_times, inverse, dtype=X.dtype)
        return _times(X, inverse)

    def factors_in(self, A):
        """A factor given in the data's units (a custom ``W`` or ``H``) in the fitted units."""
        return A if A is None or not self.active else _times(A, 1.0 / self.root)

    def factors_out(self, A):
        """A fitted factor back in the data's units."""
        return A if not self.active else _times(A, self.root)

    def penalty(self, penalty):
        """The weights of the fit of ``X / s`` whose objective is ``1 / s^2`` times ``penalty``'s on ``X``."""
        if not self.active:
            return penalty
        l1, l2 = (lambda w: float(self.times_power(w, -1.5))), (lambda w: float(self.times_power(w, -1.0)))
        return Penalty(l1_W=l1(penalty.l1_W), l2_W=l2(penalty.l2_W), l1_H=l1(penalty.l1_H), l2_H=l2(penalty.l2_H))

    def history(self, history, observed=False):
        """A fit's history in the data's units: losses times ``s^2``, steps ``1 / L`` divided by
        ``s``, the squared gradient statistics times ``s^3`` (``s^2`` with missing entries, whose
        statistics are divided by ``sqrt(L)``)."""
        if not self.active:
            return history
        out = dict(history)
        statistics_power = 2 if observed else 3
        for key, power in (("loss", 2), ("h_step_min", -1), ("h_step_max", -1), ("grad_sq", statistics_power),
                           ("noise_sq", statistics_power)):
            if key in out:
                out[key] = self.times_power(out[key], power)
        return out

    def certificate(self, certificate):
        """A stability certificate with its losses in the data's units."""
        if not self.active:
            return certificate
        return {**certificate, **{key: float(self.times_power(certificate[key], 2)) for key in ("initial_loss", "final_loss")
                                  if certificate.get(key) is not None}}


NO_SCALE = DataScale()


def _times(X, factor):
    """``X * factor`` in ``X``'s dtype (``factor`` a power of 2)."""
    if hasattr(X, "tocsr") or hasattr(X, "tocoo"):  # SciPy or cupyx sparse
        X = X.copy()
        X.data *= X.data.dtype.type(factor)
        return X
    xp = array_namespace(X) if not isinstance(X, np.ndarray) else np
    X = xp.asarray(X)
    return X * X.dtype.type(factor) if X.dtype.kind == "f" else X * factor


def largest_entry(X, scan=None):
    """The largest observed entry of a validated ``X`` (entries >= 0; NaN ignored; 0 for none):
    dense, sparse or CuPy. One pass, no copy; none where ``scan``, the validation's
    :class:`~nmfsched._validation.EntryScan` of ``X``, has it."""
    if scan is not None:
        return scan.largest
    values = X.data if hasattr(X, "tocsr") else X
    if values.size == 0:
        return 0.0
    xp = array_namespace(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # every entry missing: NaN, read as 0
        largest = float(xp.nanmax(values))
    return 0.0 if math.isnan(largest) else largest
