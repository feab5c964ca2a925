"""Factorize many matrix files: one output folder per input, written whole or not at all.

Each input ``path`` gets ``OUT/<name>/`` with ``W`` and ``H`` (``.npy``, or one ``.npz``)
and ``report.json``. The folder is assembled under a temporary name and renamed into place,
so an interrupted run never leaves a half-written output. ``report.json`` records the
input's SHA-256 and the parameters, which ``resume`` compares before skipping an input.
"""

import csv
import json
import math
import os
import platform
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .io import InputError, check_rank, matrix_format, open_lazy, read_matrix, replace_dir, sha256, temporary_dir_beside
from .options import FIT_PARAMS


class Task(NamedTuple):
    """One input to factorize: the file, its rank and the estimator parameters."""

    path: Path
    rank: int
    params: dict


def output_names(paths):
    """One output folder name per input: the file name without its ending, made unique
    with the ending (``m_zarr``, ``m_npy``) where two inputs of one folder share a name,
    and with the parent folders' names where two folders hold the same name."""

    def base(p, unique_stem):
        fmt = matrix_format(p) or p.suffix
        if unique_stem or not fmt:
            return p.name[: len(p.name) - len(fmt)] if fmt else p.name
        return p.name.replace(".", "_")

    stems = [(p.resolve().parent, base(p, True)) for p in paths]
    in_folder = Counter(stems)
    bases = [base(p, in_folder[s] == 1) for p, s in zip(paths, stems)]

    def stem(i, depth):
        parents = [q.name for q in paths[i].resolve().parents][:depth][::-1]
        return "__".join([*parents, bases[i]]) if parents else bases[i]

    names, depth = list(bases), 0
    while len(set(names)) < len(names) and depth < 32:
        depth += 1
        counts = {n: names.count(n) for n in names}
        names = [stem(i, depth) if counts[n] > 1 else n for i, n in enumerate(names)]
    return names


def job_record(path, rank, params, dtype, fmt, dataset=None):
    """What identifies a job's result: resuming skips an input only when this matches."""
    return {
        "input_sha256": sha256(path),
        "dataset": dataset,
        "rank": int(rank),
        "dtype": dtype,
        "format": fmt,
        "params": {k: params[k] for k in FIT_PARAMS if k in params},
    }


def _versions():
    import numba
    import scipy
    import sklearn

    from . import __version__

    return {
        "nmfsched": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_ready(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None  # JSON has no NaN/inf
    return value


def factorize_file(path, out_dir, *, rank, params, dtype="float64", fmt="npy", skip_header=False,
                   overwrite=False, verbose=0, plot=False, image_shape=None, dataset=None, lazy=False,
                   progress_bar=False):
    """Factorize one file into ``out_dir`` (which must not exist unless ``overwrite``).

    ``progress_bar`` shows the fit's epochs as a bar (:class:`~nmfsched.StochasticNMF`'s
    ``progress_bar``). ``dataset`` names the dataset of an HDF5 input. With ``lazy`` the input is opened as a
    Dask array (zarr, HDF5 and ``.npy`` are read chunk by chunk, never whole) and fitted on
    the ambient ``distributed.Client``; the report then records the cluster.

    With ``plot``, ``history.png`` shows the loss and the learning rate per epoch, and with
    ``image_shape`` (rows, columns of one image) ``components.png`` shows each row of ``H``
    as an image.

    Returns
    -------
    dict
        The report (also written to ``out_dir/report.json``).

    Raises
    ------
    InputError
        The file cannot be read, is not a valid NMF input, or the rank does not fit it.
    """
    from . import StochasticNMF

    path, out_dir = Path(path), Path(out_dir)
    t0 = time.perf_counter()
    X = _read_input(path, rank, dtype, skip_header=skip_header, dataset=dataset, lazy=lazy, image_shape=image_shape)
    t_read = time.perf_counter() - t0
    model = StochasticNMF(rank, verbose=verbose, **{"progress_bar": progress_bar, **params})
    t1 = time.perf_counter()
    try:
        W = model.fit_transform(X)
    except (ValueError, FloatingPointError) as e:
        raise InputError(f"{path}: {e}") from None
    if lazy:
        W = W.compute()  # n x k: small next to X
    t_fit = time.perf_counter() - t1
    report = {
        "input": str(path),
        **_shape_record(X, lazy),
        **job_record(path, rank, params, dtype, fmt, dataset),
        "versions": _versions(),
        "stop_reason": model.stop_reason_,
        "n_epochs": int(model.n_iter_),
        "relative_error": float(model.history_["rel_error"][-1]),
        "observed_fraction": float(model.observed_fraction_),
        "stability_certificate": model.stability_certificate_,
        "history": model.history_,
        "seconds": {"read": t_read, "fit": t_fit},
    }
    if lazy:
        report["cluster"] = model.cluster_
    _write_outputs(out_dir, W, model, report, fmt=fmt, plot=plot, image_shape=image_shape, title=path.name,
                   overwrite=overwrite)
    return report


def _read_input(path, rank, dtype, *, skip_header, dataset, lazy, image_shape):
    """The matrix of ``path`` in ``dtype``, checked against the rank and the image shape."""
    X = open_lazy(path, dataset=dataset) if lazy else read_matrix(path, skip_header=skip_header, dataset=dataset)
    check_rank(path, X, rank)
    m = X.shape[1]
    if image_shape is not None and image_shape[0] * image_shape[1] != m:
        raise InputError(f"{path}: --image-shape {image_shape[0]},{image_shape[1]} has "
                         f"{image_shape[0] * image_shape[1]} pixels but the matrix has {m} columns")
    return X.astype(dtype, copy=False)


def _shape_record(X, lazy):
    """The report's "shape", "density" and "sparse" (density None for lazy input: counting
    the non-zeros would read X once more)."""
    n, m = X.shape
    if lazy:
        density, sparse = None, sp.issparse(getattr(X, "_meta", None))
    else:
        density, sparse = (X.nnz if sp.issparse(X) else int(np.count_nonzero(X))) / (n * m), sp.issparse(X)
    return {"shape": [n, m], "density": density, "sparse": bool(sparse)}


def _write_outputs(out_dir, W, model, report, *, fmt, plot, image_shape, title, overwrite):
    """Write the factors, plots and report into a folder beside ``out_dir``, then move it there
    whole: a failure leaves no half-written ``out_dir``."""
    H = model.components_
    staged = temporary_dir_beside(out_dir)
    try:
        t2 = time.perf_counter()
        if fmt == "npz":
            np.savez(staged / "factors.npz", W=W, H=H)
        else:
            np.save(staged / "W.npy", W)
            np.save(staged / "H.npy", H)
        if plot:
            from .plots import plot_components, plot_history

            plot_history(model.history_, staged / "history.png", title=title)
            if image_shape is not None:
                plot_components(H, image_shape, staged / "components.png", title=title)
        report["seconds"]["write"] = time.perf_counter() - t2
        (staged / "report.json").write_text(json.dumps(_json_ready(report), indent=1))
        replace_dir(staged, out_dir, overwrite=overwrite)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)


def completed(out_dir, record):
    """Whether ``out_dir`` holds a finished result of exactly this job (``record``)."""
    try:
        report = json.loads((Path(out_dir) / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return all(report.get(k) == _json_ready(v) for k, v in record.items())


def _set_threads(n_threads):
    """Limit this process's BLAS and Numba threads (each of ``--jobs`` processes gets a share)."""
    import numba
    from threadpoolctl import threadpool_limits

    threadpool_limits(n_threads)
    numba.set_num_threads(max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS)))


def _job(args):
    path, out_dir, kwargs, n_threads = args
    if n_threads:
        _set_threads(n_threads)
    try:
        report = factorize_file(path, out_dir, **kwargs)
    except (InputError, FileExistsError) as e:
        return {"input": str(path), "status": "failed", "error": str(e)}
    except (MemoryError, OSError) as e:  # this file's trouble; the batch goes on
        return {"input": str(path), "status": "failed", "error": f"{path}: {type(e).__name__}: {e}"}
    return {
        "input": str(path),
        "status": "done",
        "output": str(out_dir),
        "shape": "x".join(map(str, report["shape"])),
        "epochs": report["n_epochs"],
        "relative_error": report["relative_error"],
        "seconds": report["seconds"]["fit"],
    }


def run_batch(tasks, out_root, *, dtype="float64", fmt="npy", skip_header=False, resume=False,
              overwrite=False, jobs=1, verbose=0, plot=False, image_shape=None, progress=True, log=print,
              dataset=None, dask=None):
    """Factorize every :class:`Task` into ``out_root``; returns one summary row per input.

    Inputs already done with the same input hash and parameters are skipped with
    ``resume``; existing outputs are replaced only with ``overwrite``; otherwise that input
    fails with a message. A failing input never stops the others. ``dataset`` names the
    dataset of HDF5 inputs. ``dask`` (a scheduler address, or "local" for a cluster on
    this machine) fits every input as a Dask array on that cluster, one after another.
    ``progress`` shows a bar: of the epochs for one input run here, else of the files.
    """
    options = dict(dtype=dtype, fmt=fmt, skip_header=skip_header, resume=resume, overwrite=overwrite,
                   verbose=verbose, plot=plot, image_shape=image_shape, progress=progress, log=log, dataset=dataset)
    if dask is None:
        return _run_batch(tasks, out_root, jobs=jobs, lazy=False, **options)
    from .distributed import dask_client

    with dask_client(None if dask == "local" else dask):  # one cluster for the batch; it runs the files in turn
        return _run_batch(tasks, out_root, jobs=1, lazy=True, **options)


def _run_batch(tasks, out_root, *, dtype, fmt, skip_header, resume, overwrite, jobs, verbose, plot, image_shape,
               progress, log, dataset, lazy):
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    common = dict(dtype=dtype, fmt=fmt, skip_header=skip_header, overwrite=overwrite, verbose=verbose,
                  plot=plot, image_shape=image_shape, dataset=dataset, lazy=lazy)
    rows, todo = [], []
    for task, name in zip(tasks, output_names([t.path for t in tasks])):
        path, out_dir = task.path, out_root / name
        for stale in out_root.glob(f".{name}.partial-*"):  # left by an interrupted run
            shutil.rmtree(stale, ignore_errors=True)
        if out_dir.exists() and not overwrite:
            try:
                record = job_record(path, task.rank, task.params, dtype, fmt, dataset)
            except OSError as e:
                rows.append({"input": str(path), "status": "failed", "error": f"{path}: cannot be read ({e})"})
                continue
            if resume and completed(out_dir, record):
                rows.append({"input": str(path), "status": "skipped", "output": str(out_dir)})
                continue
            why = "with other inputs or parameters" if resume else "(use --resume to skip finished inputs)"
            rows.append({"input": str(path), "status": "failed",
                         "error": f"{path}: output {out_dir} exists {why}; use --overwrite to replace it"})
            continue
        todo.append((path, out_dir, dict(common, rank=task.rank, params=task.params)))
    for row in rows:
        _report(row, log)
    n_cpu = os.cpu_count() or 1
    jobs = max(1, min(jobs, len(todo) or 1))
    n_threads = max(1, n_cpu // jobs) if jobs > 1 else 0
    # one input: its epochs are the progress to show; more: the files
    bar = _progress(len(todo), progress and len(todo) > 1)
    if progress and len(todo) == 1 and jobs == 1:
        todo[0][2]["progress_bar"] = True
    if jobs == 1:
        for p, o, kw in todo:
            row = _job((p, o, kw, 0))
            _report(row, log)
            rows.append(row)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_job, (p, o, kw, n_threads)): p for p, o, kw in todo}
            for future in as_completed(futures):
                try:
                    row = future.result()
                except BrokenProcessPool as e:  # a worker died (killed, out of memory)
                    row = {"input": str(futures[future]), "status": "failed",
                           "error": f"{futures[future]}: the worker process died ({e})"}
                _report(row, log)
                rows.append(row)
                bar.update(1)
    bar.close()
    order = {str(t.path): i for i, t in enumerate(tasks)}
    rows.sort(key=lambda r: order.get(r["input"], len(order)))
    return rows


def _report(row, log):
    if row["status"] == "failed":
        log(f"nmfsched: error: {row['error']}")


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, enabled):
    if not enabled or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc="factorize", leave=False)


SUMMARY_FIELDS = ("input", "status", "output", "shape", "epochs", "relative_error", "seconds", "error")


def write_summary(rows, path):
    """``summary.csv`` of a batch, written to a temporary file and renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def format_table(rows):
    """The summary as an aligned text table."""
    header = ("input", "status", "shape", "epochs", "rel. error", "fit s")
    lines = [header]
    for r in rows:
        err = r.get("relative_error")
        lines.append((
            r["input"], r["status"], r.get("shape", ""), str(r.get("epochs", "")),
            f"{err:.4f}" if isinstance(err, float) else "", f"{r['seconds']:.2f}" if "seconds" in r else "",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
