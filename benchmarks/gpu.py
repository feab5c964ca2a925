"""nmfsched's GPU backend against its CPU backend, with the device's own rates measured in the same run.

Per case, in this process and from the same seed: the GPU backend fits the data (moved to the
device first, as a user holding CuPy arrays would) for ``--epochs`` epochs with ``tol=0``,
and so does the CPU backend (stopped early at ``--cpu-budget`` seconds). The table gives

- the median epoch time of each (epochs after the first, which pays for kernel compilation
  and the first allocations) and their ratio;
- time to target: the seconds each needs to reach the CPU run's final error (within 1e-4),
  and their ratio (below 1: the GPU gets there sooner);
- the GPU epoch's achieved GFLOP/s and GB/s (from :func:`peers.epoch_work`, the model of
  the solver's passes) as fractions of the device's GEMM rate (square float32 products
  through cuBLAS) and copy bandwidth (read + write), both measured at the start of the run;
  the roof that bounds the case is the one its arithmetic intensity falls under.

Where a PyTorch NMF (``torchnmf``) is installed with CUDA, it runs on the same device
for the same epochs as a peer; where it is not, the table says so.

Cases: generated dense 200000 x 2000 rank 64 float32; tdt2 (../shared/data, when present)
rank 30; generated sparse counts 500000 x 50000 (about 40 nonzeros a row) rank 64.
``--quick`` runs small versions of the generated cases, and ``--backend numpy`` runs the
GPU backend's array code on NumPy instead (a smoke test on machines without a GPU: its
numbers are CPU numbers).

    python benchmarks/gpu.py [--quick] [--backend gpu|numpy] [--epochs 20] [--case NAME ...]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import epoch_work  # noqa: E402

from nmfsched import StochasticNMF  # noqa: E402
from nmfsched.kernels import BackendUnavailableError, get_backend  # noqa: E402
from nmfsched.solver import resolve_w_sweeps  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Relative margin within which a target error counts as reached.
TOLERANCE = 1e-4


# -- data ---------------------------------------------------------------------------------
def dense_low_rank(n, m, k, seed, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.random((n, k), dtype=np.float32) @ rng.random((k, m), dtype=np.float32)
    X += noise * k / 4 * rng.random((n, m), dtype=np.float32)
    return X


def sparse_low_rank(n, m, k, per_row, seed, chunk=1 << 20):
    """CSR with ``per_row`` entries a row at random columns, each valued ``(W0 H0)_ij``."""
    rng = np.random.default_rng(seed)
    W0 = rng.random((n, k), dtype=np.float32) * (rng.random((n, k)) < 0.3)
    H0 = rng.random((k, m), dtype=np.float32) * (rng.random((k, m)) < 0.3)
    rows = np.repeat(np.arange(n), per_row)
    cols = rng.integers(0, m, size=rows.size)
    values = np.empty(rows.size, dtype=np.float32)
    for start in range(0, rows.size, chunk):
        r, c = rows[start : start + chunk], cols[start : start + chunk]
        values[start : start + chunk] = np.einsum("ij,ji->i", W0[r], H0[:, c]) + 0.01
    X = sp.csr_matrix((values, (rows, cols)), shape=(n, m))
    X.sum_duplicates()
    return X


def tdt2():
    path = SHARED / "tdt2.npz"
    if not path.exists():
        return None
    return sp.load_npz(path).astype(np.float32).tocsr()


def cases(quick, seed):
    if quick:
        return [
            ("dense 3000x300", lambda: dense_low_rank(3000, 300, 8, seed), 8),
            ("sparse 4000x2000", lambda: sparse_low_rank(4000, 2000, 8, 20, seed), 8),
        ]
    return [
        ("dense 200000x2000", lambda: dense_low_rank(200_000, 2000, 64, seed), 64),
        ("tdt2", tdt2, 30),
        ("sparse 500000x50000", lambda: sparse_low_rank(500_000, 50_000, 64, 40, seed), 64),
    ]


# -- the device -----------------------------------------------------------------------------
def _best_time(f, sync, repeats=5):
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        f()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def device_rates(backend, quick):
    """``(GEMM GFLOP/s, copy GB/s)`` of the backend's device, in float32."""
    xp = backend.xp
    sync = _synchronizer(xp)
    size = 512 if quick else 8192
    A = xp.asarray(np.random.default_rng(0).random((size, size), dtype=np.float32))
    B = A.T.copy()
    gemm = 2 * size**3 / _best_time(lambda: A @ B, sync) / 1e9
    src = xp.ones(1 << (22 if quick else 28), dtype=np.float32)  # 16 MB / 1 GiB
    dst = xp.empty_like(src)
    bandwidth = 2 * src.nbytes / _best_time(lambda: dst.__setitem__(Ellipsis, src), sync) / 1e9
    return gemm, bandwidth


def _synchronizer(xp):
    if xp is np:
        return lambda: None
    return xp.cuda.get_current_stream().synchronize


def on_device(backend, X):
    """``X`` as a user with data on the device holds it (CuPy / cupyx for the GPU)."""
    if backend.name != "gpu":
        return X
    if sp.issparse(X):
        import cupyx.scipy.sparse

        return cupyx.scipy.sparse.csr_matrix(X)
    return backend.xp.asarray(X)


# -- runs -----------------------------------------------------------------------------------
def fit(X, k, seed, backend, epochs, max_time=None):
    model = StochasticNMF(k, backend=backend, random_state=seed, tol=0.0, max_epochs=epochs, max_time=max_time)
    start = time.perf_counter()
    model.fit(X)
    return time.perf_counter() - start, model.history_


def median_epoch(history):
    seconds = np.diff(history["seconds"])
    return float(np.median(seconds)) if seconds.size else float("nan")


def time_to(history, target):
    reached = np.flatnonzero(history["rel_error"] <= target * (1 + TOLERANCE))
    return float(history["seconds"][reached[0]]) if reached.size else float("inf")


def torch_peer(X, k, epochs, seed):
    """``(seconds, rel. error)`` of torchnmf's NMF on the CUDA device, or a reason it did not run."""
    try:
        import torch
        from torchnmf.nmf import NMF as TorchNMF
    except ImportError:
        return "torchnmf not installed"
    if not torch.cuda.is_available():
        return "torch has no CUDA device"
    torch.manual_seed(seed)
    V = torch.tensor(X.toarray() if sp.issparse(X) else X, device="cuda")
    model = TorchNMF(V.shape, rank=k).cuda()
    torch.cuda.synchronize()
    start = time.perf_counter()
    model.fit(V, max_iter=epochs, tol=0.0)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        error = float(torch.linalg.norm(V - model()) / torch.linalg.norm(V))
    return seconds, error


def run_case(name, X, k, seed, backend, rates, epochs, cpu_budget):
    gemm, bandwidth = rates
    Xd = on_device(backend, X)
    fit(Xd[:1000], k, seed, backend.name, 2)  # compile this rank's kernels before timing
    fit(X[:1000], k, seed, "cpu", 2)
    gpu_seconds, gpu = fit(Xd, k, seed, backend.name, epochs)
    cpu_seconds, cpu = fit(X, k, seed, "cpu", epochs, max_time=cpu_budget)
    target = float(cpu["rel_error"][-1])
    gpu_epoch, cpu_epoch = median_epoch(gpu), median_epoch(cpu)
    gpu_to, cpu_to = time_to(gpu, target), time_to(cpu, target)
    flops, nbytes = epoch_work(X, k, int(gpu["batch_size"][-1]), resolve_w_sweeps("auto", k, X.shape[1]))
    gflops, gbytes = flops / gpu_epoch / 1e9, nbytes / gpu_epoch / 1e9
    bound = "GEMM" if flops / nbytes >= gemm / bandwidth else "bandwidth"
    nnz = X.nnz if sp.issparse(X) else X.size
    ratio = f"{gpu_to / cpu_to:.3f}" if np.isfinite(gpu_to) else "not reached"
    row = (
        f"| {name} | {X.shape[0]}x{X.shape[1]} | {nnz:.3g} | {k} | {len(gpu['epoch'])} / {len(cpu['epoch'])} "
        f"| {gpu_epoch * 1e3:.1f} | {cpu_epoch * 1e3:.1f} | {gpu_epoch / cpu_epoch:.3f} "
        f"| {gpu['rel_error'][-1]:.5f} | {target:.5f} | {gpu_to:.2f} / {cpu_to:.2f} | {ratio} "
        f"| {gflops:.0f} ({gflops / gemm:.0%}) | {gbytes:.0f} ({gbytes / bandwidth:.0%}) | {bound} |"
    )
    peer = torch_peer(X, k, epochs, seed) if backend.name == "gpu" else "not run (no GPU)"
    peer_line = (
        f"{name}: torchnmf {peer[0]:.2f} s for {epochs} iterations, rel. error {peer[1]:.5f} "
        f"(nmfsched GPU {gpu_seconds:.2f} s, {gpu['rel_error'][-1]:.5f})"
        if isinstance(peer, tuple) else f"{name}: PyTorch peer: {peer}"
    )
    return row, peer_line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small generated cases (a smoke test)")
    parser.add_argument("--backend", default="gpu", choices=["gpu", "numpy"],
                        help="gpu (default), or numpy: the GPU code path on the CPU, for a smoke test")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--cpu-budget", type=float, default=600.0, help="seconds the CPU run may take")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", action="append", default=[], help="run only cases whose name starts so")
    args = parser.parse_args(argv)
    try:
        backend = get_backend(args.backend)
    except BackendUnavailableError as e:
        parser.exit(2, f"{parser.prog}: {e}\n")
    rates = device_rates(backend, args.quick)
    device = _device_name(backend)
    print(f"device: {device}; float32 GEMM {rates[0]:.0f} GFLOP/s, copy {rates[1]:.0f} GB/s (measured now)")
    print()
    print("| case | shape | nnz | k | epochs GPU / CPU | GPU epoch (ms) | CPU epoch (ms) | GPU / CPU "
          "| GPU rel. error | target (CPU final) | time to target GPU / CPU (s) | ratio "
          "| GPU GFLOP/s (% GEMM) | GPU GB/s (% copy) | bound |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    peers = []
    for name, load, k in cases(args.quick, args.seed):
        if args.case and not any(name.startswith(c) for c in args.case):
            continue
        X = load()
        if X is None:
            peers.append(f"{name}: skipped (not in {SHARED})")
            continue
        row, peer = run_case(name, X, k, args.seed, backend, rates, args.epochs, args.cpu_budget)
        print(row, flush=True)
        peers.append(peer)
    print()
    for line in peers:
        print(f"- {line}")


def _device_name(backend):
    if backend.name != "gpu":
        return "CPU (numpy backend: the GPU code path without a GPU)"
    props = backend.xp.cuda.runtime.getDeviceProperties(backend.xp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


if __name__ == "__main__":
    main()
