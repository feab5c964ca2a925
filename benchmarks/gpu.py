"""nmfsched's GPU backend against its CPU backend, with the device's own rates measured in the same run.

Per case, in this process and from the same seed: the GPU backend fits the data (moved to the
device first, as a user holding CuPy arrays would) for ``--epochs`` epochs with ``tol=0``,
and so does the CPU backend (stopped early at ``--cpu-budget`` seconds). The table gives

- the median epoch time of each (epochs after the first, which pays for kernel compilation
  and the first allocations) and their ratio;
- the errors at the last epoch both reached and whether the GPU's is within 0.1% of the CPU's
  (the two backends take the same steps up to rounding, so they should agree);
- time to target: the seconds each needs to reach the CPU run's final error (within 1e-4),
  and their ratio (below 1: the GPU gets there sooner);
- the GPU epoch's achieved GFLOP/s and GB/s (from :func:`peers.epoch_work`, the model of
  the solver's passes) as fractions of the device's GEMM rate (square float32 products
  through cuBLAS) and copy bandwidth (read + write), both measured at the start of the run;
  the roof that bounds the case is the one its arithmetic intensity falls under.

The PyTorch peers run on the same device where installed (torchnmf's multiplicative updates
for ``--epochs`` iterations, nmf-torch's online HALS at its defaults): each line gives the
peer's time and error and the seconds nmfsched's GPU run needed to reach that error. A peer
needs ``X`` dense on the device; where that does not fit, the line says so.

The calibration fits a small, narrow matrix in minibatches of 256 rows, where a batch's
arithmetic is negligible, and converts the seconds per minibatch into flops at the dense
case's achieved rate: the value the backend's ``batch_overhead_flops`` should declare.

Cases: generated dense 200000 x 2000 rank 64 float32; tdt2 (``--data``, when present) rank
30; generated sparse counts 500000 x 50000 (about 40 nonzeros a row) rank 64. ``--check``
is the mode of ``make gpu-check``: the three cases at full size, 10 epochs, the CPU capped at
20 s a case, meant to take about five minutes (not yet timed on a GPU). ``--quick`` runs small versions of the
generated cases, and ``--backend numpy`` runs the GPU backend's array code on NumPy instead (a
smoke test on machines without a GPU: its numbers are CPU numbers). ``--json PATH`` also
writes every figure as JSON.

    python benchmarks/gpu.py [--check | --quick] [--backend gpu|numpy] [--epochs 20] [--case NAME ...]
"""

import argparse
import json
import os
import platform
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
#: How far the GPU's error may lie above the CPU's at the same epoch (the issue's acceptance).
AGREEMENT = 1e-3
#: A peer's dense copy of ``X`` may take at most this share of the device's free memory.
PEER_MEMORY_SHARE = 0.4


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


def tdt2(data):
    path = Path(data) / "tdt2.npz"
    if not path.exists():
        return None
    return sp.load_npz(path).astype(np.float32).tocsr()


def cases(quick, seed, data=SHARED):
    if quick:
        return [
            ("dense 3000x300", lambda: dense_low_rank(3000, 300, 8, seed), 8),
            ("sparse 4000x2000", lambda: sparse_low_rank(4000, 2000, 8, 20, seed), 8),
        ]
    return [
        ("dense 200000x2000", lambda: dense_low_rank(200_000, 2000, 64, seed), 64),
        ("tdt2", lambda: tdt2(data), 30),
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
def fit(X, k, seed, backend, epochs, max_time=None, **params):
    model = StochasticNMF(k, backend=backend, random_state=seed, tol=0.0, max_iter=epochs,
                          max_time=max_time, **params)
    start = time.perf_counter()
    model.fit(X)
    return time.perf_counter() - start, model.history_


def median_epoch(history):
    seconds = np.diff(history["seconds"])
    return float(np.median(seconds)) if seconds.size else float("nan")


def time_to(history, target):
    reached = np.flatnonzero(history["rel_error"] <= target * (1 + TOLERANCE))
    return float(history["seconds"][reached[0]]) if reached.size else float("inf")


def agreement(gpu, cpu):
    """``(epoch, GPU error, CPU error, GPU within AGREEMENT of the CPU)`` at the last epoch both ran."""
    last = min(len(gpu["epoch"]), len(cpu["epoch"])) - 1
    g, c = float(gpu["rel_error"][last]), float(cpu["rel_error"][last])
    return int(gpu["epoch"][last]), g, c, bool(g <= c * (1 + AGREEMENT))


def _dense_fits_the_device(X, dtype_size=4):
    import cupy

    free, _ = cupy.cuda.runtime.memGetInfo()
    need = X.shape[0] * X.shape[1] * dtype_size
    if need > PEER_MEMORY_SHARE * free:
        return f"a dense copy of X needs {need / 1e9:.0f} GB, over {PEER_MEMORY_SHARE:.0%} of the device's free {free / 1e9:.0f} GB"
    return None


def _torch_dense(X):
    import torch

    return torch.tensor(X.toarray() if sp.issparse(X) else X, device="cuda", dtype=torch.float32)


def _torch_error(V, W, H):
    import torch

    with torch.no_grad():
        return float(torch.linalg.norm(V - W @ H) / torch.linalg.norm(V))


def _torchnmf(X, k, epochs, seed):
    import torch
    from torchnmf.nmf import NMF as TorchNMF

    torch.manual_seed(seed)
    V = _torch_dense(X)
    model = TorchNMF(V.shape, rank=k).cuda()  # V ~ H W^T: its H is our W
    torch.cuda.synchronize()
    start = time.perf_counter()
    model.fit(V, beta=2, max_iter=epochs, tol=0.0)  # beta=2: the Frobenius loss (its default is KL)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, _torch_error(V, model.H.detach(), model.W.detach().T)


def _nmf_torch_online(X, k, epochs, seed):
    import torch
    from nmf import run_nmf

    V = _torch_dense(X)
    torch.cuda.synchronize()
    start = time.perf_counter()
    W, H, _ = run_nmf(V, k, mode="online", random_state=seed, use_gpu=True, fp_precision="float")
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, _torch_error(V, torch.as_tensor(W, device="cuda"), torch.as_tensor(H, device="cuda"))


#: name -> (module that must import, runner(X, k, epochs, seed) -> (seconds, rel. error))
TORCH_PEERS = {"torchnmf": ("torchnmf", _torchnmf), "nmf-torch online": ("nmf", _nmf_torch_online)}


def torch_peers(X, k, epochs, seed):
    """``{peer: (seconds, rel. error) or the reason it did not run}`` on the CUDA device."""
    try:
        import torch
    except ImportError:
        return {name: "torch not installed" for name in TORCH_PEERS}
    if not torch.cuda.is_available():
        return {name: "torch has no CUDA device" for name in TORCH_PEERS}
    results = {}
    too_large = _dense_fits_the_device(X)
    for name, (module, runner) in TORCH_PEERS.items():
        try:
            __import__(module)
        except ImportError:
            results[name] = f"{module} not installed (make gpu-wheels, then carry .whl)"
            continue
        if too_large:
            results[name] = f"not run: {too_large}"
            continue
        try:
            results[name] = runner(X, k, epochs, seed)
        except Exception as exc:  # a peer's failure is reported, not fatal to the benchmark
            results[name] = f"failed: {type(exc).__name__}: {exc}"
        finally:
            torch.cuda.empty_cache()
    return results


def run_case(name, X, k, seed, backend, rates, epochs, cpu_budget):
    """One case's table row, its peer lines, and every figure as a dict."""
    gemm, bandwidth = rates
    Xd = on_device(backend, X)
    fit(Xd[:1000], k, seed, backend.name, 2)  # compile this rank's kernels before timing
    fit(X[:1000], k, seed, "cpu", 2)
    gpu_seconds, gpu = fit(Xd, k, seed, backend.name, epochs)
    del Xd
    cpu_seconds, cpu = fit(X, k, seed, "cpu", epochs, max_time=cpu_budget)
    target = float(cpu["rel_error"][-1])
    gpu_epoch, cpu_epoch = median_epoch(gpu), median_epoch(cpu)
    gpu_to, cpu_to = time_to(gpu, target), time_to(cpu, target)
    at_epoch, gpu_at, cpu_at, agrees = agreement(gpu, cpu)
    flops, nbytes = epoch_work(X, k, int(gpu["batch_size"][-1]), resolve_w_sweeps("auto", k, X.shape[1]))
    gflops, gbytes = flops / gpu_epoch / 1e9, nbytes / gpu_epoch / 1e9
    bound = "GEMM" if flops / nbytes >= gemm / bandwidth else "bandwidth"
    nnz = X.nnz if sp.issparse(X) else X.size
    ratio = f"{gpu_to / cpu_to:.3f}" if np.isfinite(gpu_to) else "not reached"
    row = (
        f"| {name} | {X.shape[0]}x{X.shape[1]} | {nnz:.3g} | {k} | {len(gpu['epoch'])} / {len(cpu['epoch'])} "
        f"| {gpu_epoch * 1e3:.1f} | {cpu_epoch * 1e3:.1f} | {gpu_epoch / cpu_epoch:.3f} "
        f"| {gpu_at:.5f} / {cpu_at:.5f} (epoch {at_epoch}) | {'yes' if agrees else 'NO'} "
        f"| {gpu_to:.2f} / {cpu_to:.2f} | {ratio} "
        f"| {gflops:.0f} ({gflops / gemm:.0%}) | {gbytes:.0f} ({gbytes / bandwidth:.0%}) | {bound} |"
    )
    peers = torch_peers(X, k, epochs, seed) if backend.name == "gpu" else {"PyTorch peers": "not run (no GPU)"}
    lines = []
    for peer, result in peers.items():
        if isinstance(result, tuple):
            seconds, error = result
            ours = time_to(gpu, error)
            reached = f"{ours:.2f} s ({ours / seconds:.3f}x)" if np.isfinite(ours) else "not reached"
            lines.append(f"{name}: {peer} {seconds:.2f} s, rel. error {error:.5f}; nmfsched GPU to that error: {reached}")
        else:
            lines.append(f"{name}: {peer}: {result}")
    record = {
        "case": name, "shape": list(X.shape), "nnz": int(nnz), "k": k, "sparse": bool(sp.issparse(X)),
        "epochs_gpu": len(gpu["epoch"]), "epochs_cpu": len(cpu["epoch"]),
        "fit_seconds_gpu": gpu_seconds, "fit_seconds_cpu": cpu_seconds,
        "epoch_seconds_gpu": gpu_epoch, "epoch_seconds_cpu": cpu_epoch,
        "final_rel_error_gpu": float(gpu["rel_error"][-1]), "final_rel_error_cpu": target,
        "agreement_epoch": at_epoch, "rel_error_gpu_at": gpu_at, "rel_error_cpu_at": cpu_at, "agrees": agrees,
        "time_to_target_gpu": gpu_to, "time_to_target_cpu": cpu_to,
        "gflops": gflops, "gbytes_per_s": gbytes, "share_of_gemm": gflops / gemm,
        "share_of_copy": gbytes / bandwidth, "bound": bound,
        "peers": {p: (list(r) if isinstance(r, tuple) else r) for p, r in peers.items()},
    }
    return row, lines, record


def calibrate_batch_overhead(backend, seed, rate_gflops, quick=False, m=32, k=8, batch=256, epochs=4):
    """Measured seconds per minibatch where its arithmetic is negligible, and those seconds in flops.

    Returns ``(seconds per minibatch, flops at rate_gflops)``: the second is what the backend's
    ``batch_overhead_flops`` should declare.
    """
    n = 8192 if quick else 65536
    X = dense_low_rank(n, m, k, seed)
    Xd = on_device(backend, X)
    params = dict(batch_size=batch, grow_batch=False, scheduler="constant")
    fit(Xd[:4096], k, seed, backend.name, 2, **params)  # compile and allocate first
    _, history = fit(Xd, k, seed, backend.name, epochs, **params)
    per_batch = median_epoch(history) / -(-n // batch)
    return per_batch, per_batch * rate_gflops * 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small generated cases (a smoke test)")
    mode.add_argument("--check", action="store_true",
                      help="make gpu-check's mode: full cases, 10 epochs, CPU capped at 20 s a case")
    parser.add_argument("--backend", default="gpu", choices=["gpu", "numpy"],
                        help="gpu (default), or numpy: the GPU code path on the CPU, for a smoke test")
    parser.add_argument("--epochs", type=int, default=None, help="epochs a fit (default 20; 10 with --check)")
    parser.add_argument("--cpu-budget", type=float, default=None,
                        help="seconds the CPU run may take (default 600; 20 with --check)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", action="append", default=[], help="run only cases whose name starts so")
    parser.add_argument("--data", default=os.environ.get("GPU_CHECK_DATA", str(SHARED)),
                        help="folder holding tdt2.npz (default $GPU_CHECK_DATA, else ../shared/data)")
    parser.add_argument("--no-calibration", action="store_true", help="skip the per-minibatch overhead calibration")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    epochs = args.epochs or (10 if args.check else 20)
    cpu_budget = args.cpu_budget or (20.0 if args.check else 600.0)
    try:
        backend = get_backend(args.backend)
    except BackendUnavailableError as e:
        parser.exit(2, f"{parser.prog}: {e}\n")
    rates = device_rates(backend, args.quick)
    device = _device_name(backend)
    print(f"device: {device}; float32 GEMM {rates[0]:.0f} GFLOP/s, copy {rates[1]:.0f} GB/s (measured now)")
    print(f"run: {epochs} epochs a fit, CPU budget {cpu_budget:g} s a case, seed {args.seed}, "
          f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPU cores")
    print()
    print("| case | shape | nnz | k | epochs GPU / CPU | GPU epoch (ms) | CPU epoch (ms) | GPU / CPU "
          "| rel. error GPU / CPU | GPU within 0.1% | time to CPU final GPU / CPU (s) | ratio "
          "| GPU GFLOP/s (% GEMM) | GPU GB/s (% copy) | bound |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines, records = [], []
    for name, load, k in cases(args.quick, args.seed, args.data):
        if args.case and not any(name.startswith(c) for c in args.case):
            continue
        X = load()
        if X is None:
            lines.append(f"{name}: skipped (not in {args.data})")
            continue
        row, peer_lines, record = run_case(name, X, k, args.seed, backend, rates, epochs, cpu_budget)
        print(row, flush=True)
        lines.extend(peer_lines)
        records.append(record)
    calibration = None
    if not args.no_calibration:
        dense = [r for r in records if not r["sparse"]]
        rate = dense[0]["gflops"] if dense else rates[0]
        per_batch, flops = calibrate_batch_overhead(backend, args.seed, rate, args.quick)
        calibration = {"seconds_per_batch": per_batch, "rate_gflops": rate, "flops": flops,
                       "declared": float(backend.batch_overhead_flops)}
        lines.append(f"batch_overhead_flops: {per_batch * 1e6:.0f} us a minibatch x {rate:.0f} GFLOP/s "
                     f"({'the dense case' if dense else 'GEMM'}) = {flops:.2g} flops "
                     f"(declared now: {backend.batch_overhead_flops:.2g})")
    print()
    for line in lines:
        print(f"- {line}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": device, "gemm_gflops": rates[0], "copy_gbytes_per_s": rates[1],
            "epochs": epochs, "cpu_budget": cpu_budget, "seed": args.seed, "date": time.strftime("%Y-%m-%d"),
            "cases": records, "calibration": calibration, "notes": lines,
        }, indent=2, default=float))
    return records


def _device_name(backend):
    if backend.name != "gpu":
        return "CPU (numpy backend: the GPU code path without a GPU)"
    props = backend.xp.cuda.runtime.getDeviceProperties(backend.xp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


if __name__ == "__main__":
    main()
