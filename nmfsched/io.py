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

#: File name endings the readers know, longest first (".mtx.gz" before ".gz"). A ".zarr"
#: input is a directory (a zarr array store); ".h5"/".hdf5" files hold named datasets.
FORMATS = (".mtx.gz", ".csv.gz", ".tsv.gz", ".hdf5", ".zarr", ".npy", ".npz", ".mtx", ".csv", ".tsv", ".h5")


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
        if path.is_dir() and matrix_format(path) != ".zarr":
            matches = sorted(_matrices_under(path))
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


def _matrices_under(root):
    """Matrix files under ``root``, and zarr stores (directories named ``*.zarr``, not searched)."""
    for p in sorted(root.iterdir()):
        if p.is_dir():
            if matrix_format(p) == ".zarr":
                yield p
            else:
                yield from _matrices_under(p)
        elif p.is_file() and matrix_format(p) not in (None, ".zarr"):
            yield p


def _hdf5_dataset(f, path, dataset):
    """The dataset ``dataset`` of the open h5py file ``f``; None means its only 2-D dataset."""
    import h5py

    if dataset is not None:
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            raise InputError(f"{path}: no dataset {dataset!r} (datasets: {', '.join(_h5_datasets(f)) or 'none'})")
        return f[dataset]
    names = [name for name in _h5_datasets(f) if f[name].ndim == 2]
    if len(names) != 1:
        raise InputError(
            f"{path}: holds {len(names)} 2-D datasets ({', '.join(names) or 'none'}); name one with --dataset"
        )
    return f[names[0]]


def _h5_datasets(f):
    import h5py

    names = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _optional(module, fmt):
    try:
        return __import__(module)
    except ImportError:
        raise InputError(f"reading {fmt} needs {module}: pip install 'nmfsched[dask]'") from None


def _read_zarr(path):
    zarr = _optional("zarr", ".zarr")
    return zarr.open_array(str(path), mode="r")[...]


def _read_hdf5(path, dataset):
    h5py = _optional("h5py", path.suffix)
    with h5py.File(path, "r") as f:
        return _hdf5_dataset(f, path, dataset)[...]


def open_lazy(path, *, dataset=None, chunk_bytes=128 << 20):
    """``path`` as a Dask array chunked by rows, read only when its chunks are computed.

    zarr keeps its own row chunks; HDF5 and ``.npy`` (memory-mapped) are cut into chunks of
    about ``chunk_bytes`` (whole rows). Other formats are read into memory first. The
    entries are checked by the fit (with the global row of the first bad one).

    Raises
    ------
    InputError
        Unknown format, unreadable file, missing dataset, not 2-D or empty.
    """
    try:
        import dask.array as da
    except ImportError:
        raise InputError("--dask needs dask and distributed: pip install 'nmfsched[dask]'") from None
    path = Path(path)
    fmt = matrix_format(path)
    try:
        if fmt == ".zarr":
            _optional("zarr", ".zarr")
            X = da.from_zarr(str(path))
        elif fmt in (".h5", ".hdf5"):
            h5py = _optional("h5py", fmt)
            with h5py.File(path, "r") as f:
                data = _hdf5_dataset(f, path, dataset)
                name, shape, dtype = data.name, data.shape, data.dtype
            X = _from_row_reader(da, _read_hdf5_rows, (str(path), name), shape, dtype, chunk_bytes)
        elif fmt == ".npy":
            data = np.load(path, mmap_mode="r", allow_pickle=False)
            X = _from_row_reader(da, _read_npy_rows, (str(path),), data.shape, data.dtype, chunk_bytes)
        else:
            X = read_matrix(path)
            return da.from_array(X, chunks=(_rows_per_chunk(X.shape, X.dtype, chunk_bytes), -1), asarray=not sp.issparse(X))
    except InputError:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: cannot be read as {fmt} ({type(e).__name__}: {e})") from None
    _check_shape(path, X)
    if X.dtype.kind not in "biuf":
        raise InputError(f"{path}: not numeric (dtype {X.dtype})")
    return X


def _from_row_reader(da, reader, args, shape, dtype, chunk_bytes):
    """A Dask array whose chunk ``i`` is ``reader(*args, start, stop)``: each task opens the
    file itself, so the graph holds a path, never data or an open handle."""
    import dask

    if len(shape) != 2:
        raise InputError(f"{args[0]}: expected a 2-D matrix, got {len(shape)} dimension(s) of shape {shape}")
    rows = _rows_per_chunk(shape, dtype, chunk_bytes)
    blocks = [
        da.from_delayed(dask.delayed(reader)(*args, start, min(start + rows, shape[0])),
                        shape=(min(start + rows, shape[0]) - start, shape[1]), dtype=dtype)
        for start in range(0, shape[0], rows)
    ]
    return da.concatenate(blocks, axis=0) if blocks else da.zeros(shape, dtype=dtype)


def _read_npy_rows(path, start, stop):
    return np.array(np.load(path, mmap_mode="r", allow_pickle=False)[start:stop])


def _read_hdf5_rows(path, name, start, stop):
    import h5py

    with h5py.File(path, "r") as f:
        return f[name][start:stop]


def _rows_per_chunk(shape, dtype, chunk_bytes):
    row_bytes = max(1, shape[1] if len(shape) > 1 else 1) * np.dtype(dtype).itemsize
    return int(max(1, min(shape[0], chunk_bytes // row_bytes)))


def _check_shape(path, X):
    if X.ndim != 2:
        raise InputError(f"{path}: expected a 2-D matrix, got {X.ndim} dimension(s) of shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{path}: empty matrix (shape {X.shape[0]} x {X.shape[1]})")


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


def read_matrix(path, *, skip_header=False, dataset=None):
    """Read one matrix file into a float array or CSR matrix, checked for NMF.

    Raises
    ------
    InputError
        Unknown format, unreadable or corrupt file, not 2-D, empty, non-numeric,
        non-finite or negative values; the message names the file and the problem.
        ``dataset`` names the dataset of an HDF5 file (None: its only 2-D dataset).
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
        elif fmt == ".zarr":
            X = _read_zarr(path)
        elif fmt in (".h5", ".hdf5"):
            X = _read_hdf5(path, dataset)
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
    _check_shape(path, X)
    X = X.astype(np.float64) if X.dtype.kind in "biu" else X
    try:
        check_finite_nonnegative(X, who="nmfsched", missing="nan")  # NaN: missing (the fit's --missing decides)
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
    """Hex SHA-256 of a file's bytes; of a directory (a zarr store), of every file's
    relative path and bytes, in sorted order."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
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
