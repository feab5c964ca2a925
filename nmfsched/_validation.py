"""Input checks that say what is wrong and where, before anything reaches a kernel."""

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .kernels import cpu as cpu_kernels
from .theory.namespace import array_namespace, is_device_array

# Rows per chunk when scanning a dense array, so a check never allocates an X-sized mask.
_CHUNK_ELEMENTS = 1 << 22


def _first_bad_dense(X, is_bad):
    """(count, (row, col) of the first bad entry) for a dense 2-D array, scanned in chunks."""
    count, first = 0, None
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, X.shape[1]))
    for start in range(0, X.shape[0], rows_per_chunk):
        mask = is_bad(X[start : start + rows_per_chunk])
        c = int(np.count_nonzero(mask))
        if c and first is None:
            r, col = np.argwhere(mask)[0]
            first = (start + int(r), int(col))
        count += c
    return count, first


def _first_bad_sparse(X, is_bad):
    X = X.tocsr()
    mask = is_bad(X.data)
    count = int(np.count_nonzero(mask))
    if not count:
        return 0, None
    p = int(np.flatnonzero(mask)[0])
    row = int(np.searchsorted(X.indptr, p, side="right") - 1)
    return count, (row, int(X.indices[p]))


def find_bad_entries(X, is_bad):
    """How many entries of ``X`` satisfy ``is_bad`` and where the first one is."""
    if sp.issparse(X):
        return _first_bad_sparse(X, is_bad)
    return _first_bad_dense(np.asarray(X), is_bad)


class EntryScan(NamedTuple):
    """What the validation's one pass over ``X``'s entries found (see :func:`check_finite_nonnegative`)."""

    nan: int  #: NaN entries
    infinite: int  #: infinite entries
    negative: int  #: negative entries (-inf included)
    largest: float  #: the largest entry, NaN ignored (0 where none is above 0)


def scan_entries(X):
    """The :class:`EntryScan` of a host ``X`` in one compiled pass: a dense C-contiguous
    float32/float64 ndarray, or a CSR matrix's stored entries; None for any other ``X``
    (the kernel does not take it)."""
    values = X.data if sp.issparse(X) and X.format == "csr" else X
    if not (isinstance(values, np.ndarray) and values.dtype in (np.float32, np.float64) and values.flags.c_contiguous):
        return None
    (nan, inf, negative), largest = cpu_kernels.scan_entries(values.reshape(-1))
    return EntryScan(int(nan), int(inf), int(negative), float(largest))


def is_dask_array(X):
    """Whether ``X`` is a Dask array (checked without importing Dask)."""
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "chunks") and hasattr(X, "dask")


def _plural(n, word):
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def check_finite_nonnegative(X, name="X", who="NMF", missing="error"):
    """Raise ``ValueError`` naming how many entries of ``X`` are non-finite or negative.

    With ``missing`` other than "error" a NaN marks a missing entry and is let through (its
    observed entries are checked for sign when they are gathered); infinity never is.

    Parameters
    ----------
    X : ndarray or sparse matrix
        A numeric 2-D array (already converted to float by ``check_array``).
    name : str
        How the array is called in the message (``"X"``, ``"W"``, ``"H"``).
    who : str
        The estimator or function whose input this is.
    missing : {"error", "nan", "unstored"}, default="error"
        The estimator's ``missing`` parameter.

    Returns
    -------
    scan : EntryScan or None
        The counts and the largest entry where the one-pass scan took ``X``
        (:func:`scan_entries`), so a caller need not read ``X`` again for them.
    """
    scan = scan_entries(X)
    if scan is not None and (scan.nan if missing == "error" else 0) + scan.infinite + scan.negative == 0:
        return scan  # the common case in one pass; a bad entry is located by the scans below
    if missing == "error":
        count, first = find_bad_entries(X, lambda a: ~np.isfinite(a))
        if count:
            raise ValueError(non_finite_message(name, who, count, first, nan_hint=name == "X"))
    else:
        count, first = find_bad_entries(X, np.isinf)
        if count:
            raise ValueError(infinite_message(name, who, count, first))
    count, first = find_bad_entries(X, lambda a: a < 0)  # NaN < 0 is false
    if count:
        raise ValueError(negative_message(name, who, count, first))
    return scan


def check_device_X(X, who, missing="error"):
    """Validate a CuPy array or cupyx sparse matrix on its device; return it as float CSR or dense.

    The checks :func:`check_finite_nonnegative` makes on the host, made with CuPy (only the
    counts and the first bad position come back), so data already on a GPU stays there.
    Integer data becomes float64, as scikit-learn's ``check_array`` does on the host.
    """
    xp = array_namespace(X)
    if getattr(X, "ndim", 2) != 2:
        raise ValueError(f"Expected a 2-D array, got {X.ndim}-D input of shape {X.shape}; {who} needs (n_samples, n_features).")
    n, m = X.shape
    if n < 1 or m < 1:
        raise ValueError(f"Found array with shape {X.shape}; {who} needs at least one sample and one feature.")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"X must be numeric, got dtype {X.dtype}.")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(xp.float64)
    sparse = hasattr(X, "tocsr")
    if sparse:
        X = X.tocsr()
        values = X.data
    else:
        X = xp.ascontiguousarray(X)
        values = X.ravel()
    non_finite = (
        (lambda a: ~xp.isfinite(a), lambda *args: non_finite_message(*args, nan_hint=True))
        if missing == "error" else (xp.isinf, infinite_message)
    )
    for is_bad, message in (non_finite, (lambda a: a < 0, negative_message)):
        mask = is_bad(values)
        count = int(mask.sum())
        if count:
            p = int(xp.argmax(mask))
            if sparse:
                row, col = int(xp.searchsorted(X.indptr, p, side="right")) - 1, int(X.indices[p])
            else:
                row, col = divmod(p, m)
            raise ValueError(message("X", who, count, (row, col)))
    return X


def non_finite_message(name, who, count, first, nan_hint=False):
    """The error for ``count`` non-finite entries of input ``name`` of ``who``, the first at ``first``
    (``nan_hint``: say that ``missing="nan"`` lets NaN mark missing entries)."""
    hint = " (or pass missing='nan' to treat NaN as a missing entry)" if nan_hint else ""
    return (
        f"Input {name} contains NaN or infinity: {_plural(count, 'non-finite entry')} "
        f"(first at row {first[0]}, column {first[1]}); {who} needs finite values{hint}."
    )


def infinite_message(name, who, count, first):
    """The error for ``count`` infinite entries of input ``name`` of ``who`` (NaN being allowed: missing)."""
    return (
        f"Input {name} contains infinity: {_plural(count, 'infinite entry')} "
        f"(first at row {first[0]}, column {first[1]}); {who} needs finite values (NaN marks a missing entry)."
    )


def negative_message(name, who, count, first):
    """The error for ``count`` negative entries of input ``name`` of ``who``, the first at ``first``."""
    return (
        f"Negative values in data passed to {who} (input {name}): "
        f"{_plural(count, 'negative entry')} (first at row {first[0]}, column {first[1]}); "
        f"NMF needs {name} >= 0."
    )


def check_factor(A, expected_shape, name, who, dtype):
    """Validate a user-supplied factor (``W`` or ``H``): shape, dtype (``X``'s), finiteness, sign; return a copy."""
    if A is None:
        raise ValueError(f"init='custom' needs both W and H; {name} is missing.")
    if is_device_array(A):  # a CuPy array or cupyx matrix: checked on the host (it is n x k at most)
        A = A.get()
    if sp.issparse(A):
        A = A.toarray()
    A = np.asarray(A)
    if A.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {A.dtype}.")
    if A.shape != tuple(expected_shape):
        raise ValueError(
            f"{name} has shape {A.shape} but {who} expects {tuple(expected_shape)} "
            f"({'n_samples x n_components' if name == 'W' else 'n_components x n_features'})."
        )
    if A.dtype != dtype:  # as scikit-learn's NMF: a silent cast would change the user's start
        raise TypeError(
            f"{name} has dtype {A.dtype} but X has dtype {np.dtype(dtype)}; {who} needs custom W and H of X's "
            f"dtype (pass {name}.astype(X.dtype))."
        )
    A = np.array(A, order="C", copy=True)
    check_finite_nonnegative(A, name=name, who=who)
    return A


def validate_input(estimator, X, *, reset, backend, missing="error", return_scan=False):
    """``X`` checked for ``estimator`` (``fit`` when ``reset``, else ``transform``), ready for a run.

    Host input goes through scikit-learn's ``validate_data`` (float64 or float32, CSR for
    sparse, ``n_features_in_`` and ``feature_names_in_``) and is checked finite and
    non-negative. A CuPy array or cupyx matrix is checked on its device (it stays there); a
    Dask array is checked for shape and dtype only (its entries by the fit's first pass, so it
    is never read twice or gathered). ``backend`` is the estimator's parameter: device input
    needs "gpu" or "auto", Dask input "cpu" or "auto". ``missing`` other than "error" lets NaN
    through (a missing entry; see :func:`nmfsched.observed.observed_entries`). With
    ``return_scan``, returns ``(X, scan)``: the :class:`EntryScan` of host input (its counts
    and largest entry, so the fit need not read ``X`` again for them), None for other input.
    """
    from sklearn.utils.validation import validate_data

    who = type(estimator).__name__
    if is_device_array(X):
        X = _device_input(X, backend, who, missing)
    elif is_dask_array(X):
        X = _dask_input(X, backend, who)
    else:
        X = validate_data(estimator, X, reset=reset, accept_sparse=("csr", "csc"), dtype=[np.float64, np.float32],
                          ensure_all_finite=False)
        if sp.issparse(X):
            X = X.tocsr()  # one conversion; the kernels and the checks read CSR
        scan = check_finite_nonnegative(X, name="X", who=who, missing=missing)
        return (X, scan) if return_scan else X
    if reset:
        estimator.n_features_in_ = int(X.shape[1])
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    elif X.shape[1] != estimator.n_features_in_:
        raise ValueError(
            f"X has {X.shape[1]} features, but {who} is expecting {estimator.n_features_in_} features as input."
        )
    return (X, None) if return_scan else X


def _device_input(X, backend, who, missing):
    if backend not in ("auto", "gpu"):
        raise ValueError(
            f"X is a {type(X).__module__.split('.')[0]} array on the GPU but backend={backend!r}; "
            f"use backend='gpu' (or 'auto'), or pass cupy.asnumpy(X) to run on the CPU."
        )
    return check_device_X(X, who=who, missing=missing)


def _dask_input(X, backend, who):
    if backend not in ("auto", "cpu"):
        raise ValueError(
            f"X is a Dask array but backend={backend!r}; its chunks run on the CPU backend's kernels, "
            f"so use backend='cpu' (or 'auto')."
        )
    if X.ndim != 2:
        raise ValueError(f"Expected a 2-D array, got {X.ndim}-D input of shape {X.shape}; {who} needs (n_samples, n_features).")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"X must be numeric, got dtype {X.dtype}.")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    n, m = X.shape
    if not (n >= 1 and m >= 1):  # NaN (unknown chunk sizes) fails here too
        raise ValueError(
            f"Found a Dask array of shape {X.shape}; {who} needs known chunk sizes (call "
            f"X.compute_chunk_sizes()) and at least one sample and one feature."
        )
    return X


def validate_codes(X, n_components):
    """``W``-shaped input of ``inverse_transform``: float (float64 unless float32), ``n_components`` columns.

    Host input goes through scikit-learn's ``check_array`` (CSR/CSC kept sparse); device and
    Dask input keep their kind (Dask stays lazy).
    """
    from sklearn.utils import check_array

    if is_dask_array(X):
        if X.ndim != 2 or X.shape[1] != n_components:
            raise ValueError(f"X has shape {X.shape} but the model has {n_components} components.")
        return X if X.dtype.kind == "f" else X.astype(np.float64)
    if not is_device_array(X):
        X = check_array(X, accept_sparse=("csr", "csc"), dtype=[np.float64, np.float32])
    elif X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.shape[1] != n_components:
        raise ValueError(f"X has {X.shape[1]} columns but the model has {n_components} components.")
    return X
