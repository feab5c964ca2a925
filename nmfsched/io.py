"""Reading matrix files for the command line: formats, discovery, checks and safe writes."""

import glob
import gzip
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse as sp

from ._validation import check_finite_nonnegative

#: File name endings the readers know, longest first (".mtx.gz" before ".gz").
FORMATS = (".mtx.gz", ".csv.gz", ".tsv.gz", ".npy", ".npz", ".mtx", ".csv", ".tsv")


class InputError(Exception):
    """A matrix file that cannot be factorized; the message names the file and the problem."""


def matrix_format(path):
    """The known ending of ``path`` (e.g. ".mtx.gz"), or None."""
    name = str(path).lower()
    return next((ext for ext in FORMATS if name.endswith(ext)), None)


def find_inputs(items):
    """Matrix files named by ``items``: files, directories (searched recursively for known
    endings) and glob patterns, in a stable order without duplicates.

    A file named directly is kept whatever its ending (reading it reports an unknown
    format); a pattern or directory that matches nothing raises ``InputError``.
    """
    found = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and matrix_format(p))
            if not matches:
                raise InputError(f"{item}: no matrix files ({', '.join(FORMATS)}) in this directory")
            found.extend(matches)
        elif path.exists():
            found.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                raise InputError(f"{item}: the pattern matches no files")
            found.extend(matches)
        else:
            raise InputError(f"{item}: no such file or directory")
    unique, seen = [], set()
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _read_npz(path):
    with np.load(path, allow_pickle=False) as archive:
        keys = set(archive.files)
        if {"format", "shape", "data"} <= keys:  # written by scipy.sparse.save_npz
            return sp.load_npz(path)
        arrays = [k for k in archive.files if archive[k].ndim == 2]
        if "X" in keys:
            return archive["X"]
        if len(arrays) == 1:
            return archive[arrays[0]]
        raise InputError(
            f"{path}: .npz holds {sorted(keys)}; expected a scipy.sparse matrix (save_npz), "
            "an array named 'X', or exactly one 2-D array"
        )


def _read_text(path, delimiter, skip_header):
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    with opener(path, "rt") as f:
        try:
            X = np.loadtxt(f, delimiter=delimiter, skiprows=1 if skip_header else 0, ndmin=2, dtype=np.float64)
        except ValueError as e:
            hint = "" if skip_header else " (a header line? use --skip-header)"
            raise InputError(f"{path}: not a numeric table{hint}: {e}") from None
    return X


def read_matrix(path, *, skip_header=False):
    """Read one matrix file into a float array or CSR matrix, checked for NMF.

    Raises
    ------
    InputError
        Unknown format, unreadable or corrupt file, not 2-D, empty, non-numeric,
        non-finite or negative values; the message names the file and the problem.
    """
    path = Path(path)
    fmt = matrix_format(path)
    if fmt is None:
        raise InputError(f"{path}: unknown format (known endings: {', '.join(FORMATS)})")
    try:
        if fmt == ".npy":
            X = np.load(path, allow_pickle=False)
        elif fmt == ".npz":
            X = _read_npz(path)
        elif fmt in (".mtx", ".mtx.gz"):
            X = scipy.io.mmread(path)
        else:
            X = _read_text(path, "\t" if fmt.startswith(".tsv") else ",", skip_header)
    except InputError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, gzip.BadGzipFile, io.UnsupportedOperation) as e:
        raise InputError(f"{path}: cannot be read as {fmt} ({type(e).__name__}: {e})") from None
    if sp.issparse(X):
        X = X.tocsr()
    else:
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise InputError(f"{path}: not numeric (dtype {X.dtype})")
    if X.ndim != 2:
        raise InputError(f"{path}: expected a 2-D matrix, got {X.ndim} dimension(s) of shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{path}: empty matrix (shape {X.shape[0]} x {X.shape[1]})")
    X = X.astype(np.float64) if X.dtype.kind in "biu" else X
    try:
        check_finite_nonnegative(X, who="nmfsched")
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    return X


def check_rank(path, X, rank):
    """Raise ``InputError`` when ``rank`` exceeds ``min(n_rows, n_columns)`` of ``X``."""
    n, m = X.shape
    if rank > min(n, m):
        raise InputError(
            f"{path}: rank {rank} is larger than min(n_rows, n_columns) = {min(n, m)} of this {n} x {m} matrix"
        )


def sha256(path, chunk=1 << 20):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def temporary_dir_beside(target):
    """A new empty directory next to ``target`` (same file system, so a rename is atomic)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))


def replace_dir(staged, target, *, overwrite):
    """Move the complete directory ``staged`` to ``target`` in one rename.

    An existing ``target`` is replaced only with ``overwrite`` (it is renamed aside first and
    removed after the new one is in place, so one of the two is always whole).
    """
    staged, target = Path(staged), Path(target)
    if not target.exists():
        os.replace(staged, target)
        return
    if not overwrite:
        raise FileExistsError(f"{target} exists (use --overwrite to replace it)")
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside / "old")
    os.replace(staged, target)
    shutil.rmtree(aside, ignore_errors=True)
