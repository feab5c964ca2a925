"""Dask fits on worker processes: a worker killed mid-fit, and a worker memory limit below X."""

import os
import signal
import time

import numpy as np
import pytest
from conftest import low_rank

from nmfsched import StochasticNMF
from nmfsched.schedulers.greedy import GreedyLR

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

KILL = {"at": None, "client": None, "killed": []}


class KillingGreedy(GreedyLR):
    """GreedyLR that SIGKILLs one worker process after epoch ``KILL["at"]`` and waits until
    the scheduler has noticed, so the next epoch's tasks meet a cluster that lost a worker
    and the chunks (of ``X`` and ``W``) it held."""

    def step(self, obs):
        if obs.epoch == KILL["at"] and not KILL["killed"]:
            client = KILL["client"]
            pids = client.run(os.getpid)
            address, pid = sorted(pids.items())[0]
            os.kill(pid, signal.SIGKILL)
            KILL["killed"].append(address)
            deadline = time.monotonic() + 30
            while address in client.scheduler_info()["workers"] and time.monotonic() < deadline:
                time.sleep(0.05)
        return super().step(obs)


@pytest.fixture(scope="module")
def process_client():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="2GB"
    ) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("batch_size", [150, 600])
def test_a_worker_killed_mid_fit_does_not_change_the_result(process_client, batch_size):
    X = da.from_array(low_rank(600, 40, 5, noise=0.05), chunks=(50, 40))
    kw = dict(random_state=0, max_iter=8, tol=0, batch_size=batch_size)
    undisturbed = StochasticNMF(5, scheduler=KillingGreedy(), **kw).fit(X)
    KILL.update(at=3, client=process_client, killed=[])
    try:
        disturbed = StochasticNMF(5, scheduler=KillingGreedy(), **kw).fit(X)
    finally:
        KILL["at"] = None
    assert KILL["killed"], "no worker was killed"
    np.testing.assert_allclose(disturbed.history_["loss"], undisturbed.history_["loss"], rtol=1e-10)
    assert disturbed.reconstruction_err_ == pytest.approx(undisturbed.reconstruction_err_, rel=1e-10)
    # the nanny restarted the worker; the cluster is whole again for the next test
    process_client.wait_for_workers(2, timeout=60)


def _rss():
    import psutil

    return psutil.Process().memory_info().rss


def _start_sampling_rss(dask_worker):
    """Sample the worker's resident memory every 5 ms from now on (the process's own
    high-water mark would include whatever happened before, such as compiling kernels)."""
    import threading

    import psutil

    samples = dask_worker._nmfsched_rss = [psutil.Process().memory_info().rss]
    stop = dask_worker._nmfsched_stop = threading.Event()

    def sample():
        process = psutil.Process()
        while not stop.wait(0.005):
            samples.append(process.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()


def _stop_sampling_rss(dask_worker):
    dask_worker._nmfsched_stop.set()
    return max(dask_worker._nmfsched_rss)


def test_a_zarr_matrix_three_times_the_free_worker_memory_streams(tmp_path):
    """X on disk is 3x the memory the worker's limit leaves above the worker's own footprint:
    the fit is not persisted but reads X chunk by chunk every pass, the worker's peak memory
    grows by less than a third of X, and the result is the in-memory fit's (of one batch,
    which is what "auto" makes of chunks this small).

    Dask's pause/terminate thresholds are fractions of the whole limit, footprint included,
    so at this small scale they are switched off and the peak is measured instead; the
    benchmark benchmarks/dask_out_of_core.py runs the same with Dask enforcing a real limit.
    """
    import dask

    zarr = pytest.importorskip("zarr")
    pytest.importorskip("psutil")
    n, m, rows = 96_000, 500, 1_000
    rng = np.random.default_rng(0)
    store = zarr.open_array(tmp_path / "X.zarr", mode="w", shape=(n, m), chunks=(rows, m), dtype="float32")
    basis = rng.random((8, m), dtype=np.float32)
    for start in range(0, n, rows):
        noise = 0.05 * rng.random((rows, m), dtype=np.float32)
        store[start : start + rows] = rng.random((rows, 8), dtype=np.float32) @ basis + noise
    X_bytes = n * m * 4  # 192 MB
    memory = {"distributed.worker.memory." + key: False for key in ("target", "spill", "pause", "terminate")}
    with dask.config.set(memory), distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None, memory_limit="4GB"
    ) as probe_cluster, distributed.Client(probe_cluster) as probe:
        footprint = max(probe.run(_rss).values())
    with dask.config.set(memory), distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
        memory_limit=footprint + X_bytes // 3,
    ) as cluster, distributed.Client(cluster) as client:
        # the worker imports and compiles (or loads from Numba's cache) the kernels first: the
        # same fit on 4 chunks of the store
        StochasticNMF(8, random_state=0, max_iter=2, init="random").fit(da.from_zarr(store)[: 4 * rows])
        (pid,) = client.run(os.getpid).values()
        (before,) = client.run(_rss).values()
        client.run(_start_sampling_rss)
        model = StochasticNMF(8, random_state=0, max_iter=3, init="random")
        W = model.fit_transform(da.from_zarr(str(tmp_path / "X.zarr")))
        (peak,) = client.run(_stop_sampling_rss).values()
        assert list(client.run(os.getpid).values()) == [pid], "the worker was restarted"
    assert not model.cluster_["persisted"]
    assert peak - before < X_bytes / 3, f"the worker grew by {(peak - before) / 1e6:.0f} MB for a {X_bytes / 1e6:.0f} MB X"
    X = np.asarray(zarr.open_array(tmp_path / "X.zarr", mode="r")[:])
    # chunks this small make every epoch one group of all chunks ("auto"): the in-memory
    # fit of one batch runs the same algorithm
    assert set(model.history_["batch_size"]) == {n}
    ref = StochasticNMF(8, random_state=0, max_iter=3, init="random", batch_size=n).fit(X)
    np.testing.assert_allclose(model.history_["loss"], ref.history_["loss"], rtol=1e-4)
    assert model.reconstruction_err_ == pytest.approx(ref.reconstruction_err_, rel=1e-4)
    assert W.shape == (n, 8)


def _sent(dask_worker):
    return dask_worker.transfer_outgoing_bytes_total


def test_chunks_stay_on_their_workers(process_client):
    """An epoch moves H and the small reductions between workers, never chunks of X."""
    from nmfsched import distributed as nd

    X = process_client.persist(da.from_array(low_rank(4000, 200, 5), chunks=(500, 200)))
    data = nd.DaskData(X, process_client)
    data.persist_if_it_fits(0)
    assert len(set(data.homes)) == 2
    rng = np.random.default_rng(0)
    solver = nd.dask_solver(data, rng.random((4000, 5)), rng.random((5, 200)), sq_norm_X=1.0, batch_size=1000,
                           w_sweeps=1, rng=rng, min_group=2)
    solver.refresh_w(1)
    before = sum(process_client.run(_sent).values())
    solver.sgd_epoch(0.5)
    solver.refresh_w(1)
    moved = sum(process_client.run(_sent).values()) - before
    assert moved < 500 * 200 * 8, f"{moved} bytes moved: a chunk of X travelled"
