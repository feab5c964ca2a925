"""Out of core: a zarr matrix several times larger than the workers' memory limit, fitted on Dask.

Writes (once; it is reused when present) a float32 zarr matrix of ``--gigabytes`` on disk
(rank ``--rank`` plus 10% noise, ``--columns`` columns, chunks of about 64 MB), starts a
LocalCluster of worker processes capped at ``--worker-memory`` in all (Dask pauses a worker
at 80% of its limit and kills it at 95%), and fits it with ``max_iter=--epochs``. X is
read from disk in every pass (it does not fit, so it is not persisted).

Reports: seconds per epoch, the peak memory of each worker (its resident set's high-water
mark), whether a worker was restarted, and the final relative error next to the error
that an in-memory fit of a row subsample (``--subsample`` of the rows, same parameters)
predicts for the whole matrix.

``init="random"`` by default: the SVD-based inits read X twice per power iteration (16
passes at this rank), which out of core costs more than the epochs themselves.

    python benchmarks/dask_out_of_core.py [--gigabytes 6] [--worker-memory 2GB] [--dir PATH]
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nmfsched import StochasticNMF


def write_matrix(path, n, m, k, rows, seed=0):
    import zarr

    if path.exists():
        store = zarr.open_array(str(path), mode="r")
        if store.shape == (n, m):
            return
    store = zarr.open_array(str(path), mode="w", shape=(n, m), chunks=(rows, m), dtype="float32")
    rng = np.random.default_rng(seed)
    H0 = rng.random((k, m), dtype=np.float32)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        block = rng.random((stop - start, k), dtype=np.float32) @ H0
        block += 0.1 * k / 4 * rng.random(block.shape, dtype=np.float32)
        store[start:stop] = block


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=6.0)
    parser.add_argument("--columns", type=int, default=1000)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="threads per worker")
    parser.add_argument("--worker-memory", default="2GB", help="memory limit of each worker")
    parser.add_argument("--subsample", type=float, default=0.05, help="fraction of rows fitted in memory")
    parser.add_argument("--init", default="random")
    parser.add_argument("--dir", default=None, help="where the zarr matrix is written (default: a temp folder)")
    args = parser.parse_args(argv)

    import dask.array as da
    import zarr
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    m, k = args.columns, args.rank
    n = int(args.gigabytes * 1e9 / (4 * m))
    rows = min(n, max(1, (64 << 20) // (4 * m)))
    folder = Path(args.dir or tempfile.gettempdir())
    path = folder / f"nmfsched_ooc_{n}x{m}_r{k}.zarr"
    t = time.perf_counter()
    write_matrix(path, n, m, k, rows)
    print(f"X: {n} x {m} float32 = {n * m * 4 / 1e9:.2f} GB at {path} ({time.perf_counter() - t:.0f} s to write or find)")
    limit = parse_bytes(args.worker_memory)
    params = dict(random_state=0, max_iter=args.epochs, init=args.init, tol=0)

    with LocalCluster(
        n_workers=args.workers, threads_per_worker=args.threads, processes=True, memory_limit=limit,
        dashboard_address=None,
    ) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        X = da.from_zarr(str(path))
        t = time.perf_counter()
        model = StochasticNMF(k, **params)
        model.fit(X)
        seconds = time.perf_counter() - t
        peaks = client.run(_peak_rss)
        restarted = client.run(os.getpid) != pids
    epoch = np.median(np.diff(model.history_["seconds"])) if model.n_iter_ > 1 else float("nan")
    total_limit = limit * args.workers
    print(f"cluster: {args.workers} worker(s) x {args.threads} thread(s), {limit / 1e9:.2f} GB each; "
          f"X is {n * m * 4 / total_limit:.1f}x their memory; persisted: {model.cluster_['persisted']}")
    print(f"fit: {seconds:.0f} s, {epoch:.1f} s per epoch, {model.n_iter_} epochs, batch sizes "
          f"{sorted(set(model.history_['batch_size'].tolist()))}")
    print("peak worker memory: " + ", ".join(f"{p / 1e9:.2f} GB ({p / limit:.0%} of its limit)" for p in peaks.values())
          + f"; worker restarted: {restarted}")

    sub = max(k, int(args.subsample * n))
    rng = np.random.default_rng(1)
    n_chunks = -(-n // rows)
    picked = np.sort(rng.choice(n_chunks, size=min(n_chunks, max(1, sub // rows)), replace=False))
    store = zarr.open_array(str(path), mode="r")
    X_sub = np.concatenate([store[c * rows : (c + 1) * rows] for c in picked])
    ref = StochasticNMF(k, **params).fit(X_sub)
    ref_error = ref.reconstruction_err_ / np.linalg.norm(X_sub)
    error = float(model.history_["rel_error"][-1])
    print(f"relative error: {error:.5f} (Dask, all {n} rows) vs {ref_error:.5f} (in memory, "
          f"{X_sub.shape[0]} rows sampled by chunk): ratio {error / ref_error:.4f}")


if __name__ == "__main__":
    sys.exit(main())
