"""nmfsched on dask.distributed against its in-memory CPU backend: epoch time and bytes moved.

Per case, from the same seed and the same initial factors:

- the in-memory fit (CPU backend, all of the machine's threads) and the Dask fit on a
  LocalCluster of worker processes (1 and 2 workers of ``--threads`` threads each, X
  persisted in their memory) run ``--epochs`` epochs with ``tol=0`` and the same batch
  size. The table gives each one's median epoch time (epochs after the first), its ratio
  to the in-memory one, and the final relative errors;
- the bytes one epoch moves, measured: between the driver and the cluster (what
  :class:`nmfsched.distributed.DaskData` sends and gathers) and what the workers send
  (Dask's transfer counters: to each other and to the driver), next to the design's prediction of ``k (2m + k)`` numbers per
  chunk and step (``H`` in, ``X_c^T W_c`` and ``W_c^T W_c`` out) plus ``2 n k`` for the
  end-of-epoch gather and re-seeding of ``W``.

Cases: generated dense 200000 x 500 rank 16 float32 in 20 chunks; tdt2 (../shared/data,
when present) rank 20 in 10 chunks of CSR. ``--quick`` runs a small generated case.

    python benchmarks/dask_scaling.py [--quick] [--epochs 8] [--threads 1] [--batch-size all|auto|N]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from nmfsched import StochasticNMF

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def cases(quick):
    rng = np.random.default_rng(0)
    if quick:
        n, m, k = 6000, 100, 8
        yield "gen dense 6000x100 r8", (rng.random((n, k), dtype=np.float32) @ rng.random((k, m), dtype=np.float32)), k, 6
        return
    n, m, k = 200_000, 500, 16
    X = rng.random((n, k), dtype=np.float32) @ rng.random((k, m), dtype=np.float32)
    X += 0.1 * rng.random((n, m), dtype=np.float32)
    yield "gen dense 200000x500 r16", X, k, 20
    path = SHARED / "tdt2.npz"
    if path.exists():
        yield "tdt2 r20", sp.load_npz(path).tocsr(), 20, 10


def median_epoch(history):
    seconds = np.diff(history["seconds"])
    return statistics.median(seconds[1:]) if seconds.size > 1 else float("nan")


def in_memory(X, k, epochs, batch_size):
    model = StochasticNMF(k, init="random", random_state=0, max_iter=epochs, tol=0, batch_size=batch_size)
    model.fit(X)
    return median_epoch(model.history_), model.reconstruction_err_ / np.sqrt(_sq_norm(X))


def _sq_norm(X):
    data = X.data if sp.issparse(X) else X
    return float(np.dot(data.ravel().astype(np.float64), data.ravel().astype(np.float64)))


def _transferred(dask_worker):
    return dask_worker.transfer_outgoing_bytes_total


def on_dask(X, k, epochs, batch_size, n_chunks, workers, threads):
    import dask.array as da
    from distributed import Client, LocalCluster

    from nmfsched import distributed as nd

    rows = -(-X.shape[0] // n_chunks)
    Xd = da.from_array(X, chunks=(rows, X.shape[1]), asarray=not sp.issparse(X))
    with LocalCluster(
        n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        Xd = client.persist(Xd)
        client.wait_for_workers(workers)
        model = StochasticNMF(k, init="random", random_state=0, max_iter=epochs, tol=0, batch_size=batch_size)
        t = time.perf_counter()
        model.fit(Xd)
        fit_seconds = time.perf_counter() - t
        # one more epoch on the fitted factors, with the traffic counted
        data = nd.DaskData(Xd, client)
        data.persist_if_it_fits(0)
        solver = nd.dask_solver(
            data, model.transform(X).astype(X.dtype), model.components_, sq_norm_X=_sq_norm(X),
            batch_size=model.batch_size_, w_sweeps=2, rng=np.random.default_rng(0), min_group=workers * threads,
        )
        solver.refresh_w(solver.refresh_sweeps)
        before = sum(client.run(_transferred).values())
        data.bytes_sent = data.bytes_received = 0
        solver.sgd_epoch(1.0)
        solver.refresh_w(solver.refresh_sweeps)
        between_workers = sum(client.run(_transferred).values()) - before
        steps = solver.n_batches + 1  # the groups' H steps and the closing refresh
        return {
            "epoch": median_epoch(model.history_),
            "rel_error": model.reconstruction_err_ / np.sqrt(_sq_norm(X)),
            "fit": fit_seconds,
            "driver_bytes": data.bytes_sent + data.bytes_received,
            "worker_bytes": between_workers,
            "steps": steps,
            "chunks": data.n_chunks,
        }


def predicted_bytes(n, m, k, n_chunks, steps, itemsize):
    """The design's traffic for one epoch: ``k (2m + k)`` numbers per chunk and step, and
    ``2 n k`` for gathering and re-seeding ``W``."""
    return itemsize * (steps * n_chunks * k * (2 * m + k) + 2 * n * k)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="threads per Dask worker")
    parser.add_argument("--batch-size", default="all",
                        help="rows per minibatch: 'all' (one batch, the same algorithm in memory and on Dask; "
                        "default), 'auto' (each picks its own) or a number")
    args = parser.parse_args(argv)
    print("| case | run | epoch s | vs in-memory | rel. error | MB/epoch driver | MB/epoch worker transfers | MB/epoch predicted |")
    print("|---|---|---|---|---|---|---|---|")
    for name, X, k, n_chunks in cases(args.quick):
        n, m = X.shape
        batch_size = {"all": n, "auto": "auto"}.get(args.batch_size) or int(args.batch_size)
        base, base_error = in_memory(X, k, args.epochs, batch_size)
        print(f"| {name} | in memory (CPU backend) | {base:.3f} | 1.00 | {base_error:.5f} | - | - | - |", flush=True)
        for workers in (1, 2):
            r = on_dask(X, k, args.epochs, batch_size, n_chunks, workers, args.threads)
            predicted = predicted_bytes(n, m, k, r["chunks"], r["steps"], X.dtype.itemsize)
            print(
                f"| {name} | Dask {workers} worker(s) x {args.threads} thread(s), {r['chunks']} chunks, "
                f"{r['steps']} steps | {r['epoch']:.3f} | {r['epoch'] / base:.2f} | {r['rel_error']:.5f} | "
                f"{r['driver_bytes'] / 1e6:.2f} | {r['worker_bytes'] / 1e6:.2f} | {predicted / 1e6:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
