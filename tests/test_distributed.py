"""Fits of Dask arrays on a threads-only LocalCluster: the same answers as in memory."""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import low_rank, shared_file

from nmfsched import StochasticNMF

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from nmfsched import distributed as nd  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as c:
        yield c


def chunked(X, rows):
    return da.from_array(X, chunks=(rows, X.shape[1]), asarray=not sp.issparse(X))


@pytest.mark.parametrize("init", ["random", "custom"])
def test_one_chunk_equals_the_in_memory_full_batch_fit(client, init):
    X = low_rank(300, 40, 6, noise=0.05)
    kw = dict(init=init, random_state=0, max_iter=15, batch_size=300)
    fit_kw = {}
    if init == "custom":
        rng = np.random.default_rng(1)
        fit_kw = dict(W=rng.random((300, 6)), H=rng.random((6, 40)))
    ref = StochasticNMF(6, **kw)
    W_ref = ref.fit_transform(X, **fit_kw)
    model = StochasticNMF(6, **kw)
    W = model.fit_transform(chunked(X, 300), **fit_kw)
    assert isinstance(W, da.Array) and W.chunks == ((300,), (6,))
    np.testing.assert_allclose(model.history_["loss"], ref.history_["loss"], rtol=1e-9)
    np.testing.assert_allclose(model.history_["lr"], ref.history_["lr"], rtol=1e-9)
    np.testing.assert_allclose(model.components_, ref.components_, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(W.compute(), W_ref, rtol=1e-6, atol=1e-10)
    assert model.reconstruction_err_ == pytest.approx(ref.reconstruction_err_, rel=1e-9)


@pytest.mark.parametrize("batch_size", ["auto", 200])
def test_many_chunks_reach_the_in_memory_error_on_a_generated_matrix(client, batch_size):
    X = low_rank(1200, 60, 8, noise=0.03, seed=3)
    ref = StochasticNMF(8, random_state=0, max_iter=100).fit(X)
    model = StochasticNMF(8, random_state=0, max_iter=100, batch_size=batch_size).fit(chunked(X, 100))
    assert model.reconstruction_err_ <= 1.01 * ref.reconstruction_err_
    if batch_size != "auto":  # groups of chunks: stochastic epochs first, grown to one group
        assert model.history_["batch_size"][0] == 200 and model.history_["batch_size"][-1] == 1200
    assert model.stability_certificate_["descent"]


def test_many_chunks_reach_the_in_memory_error_on_olivetti(client):
    X = np.load(shared_file("olivetti.npz"))["X"].astype(np.float64) / 242
    ref = StochasticNMF(10, random_state=0, max_iter=60).fit(X)
    model = StochasticNMF(10, random_state=0, max_iter=60, batch_size=100).fit(chunked(X, 50))
    assert model.reconstruction_err_ <= 1.01 * ref.reconstruction_err_


def test_many_chunks_reach_the_in_memory_error_on_tdt2_sparse_chunks(client):
    X = sp.load_npz(shared_file("tdt2.npz")).tocsr()[:3000]
    ref = StochasticNMF(10, random_state=0, max_iter=40).fit(X)
    model = StochasticNMF(10, random_state=0, max_iter=40, batch_size=1000).fit(chunked(X, 250))
    assert model.reconstruction_err_ <= 1.01 * ref.reconstruction_err_


def test_sparse_chunks_equal_dense_chunks(client, rng):
    X = rng.random((200, 50))
    X[X < 0.7] = 0
    kw = dict(init="random", random_state=0, max_iter=8, batch_size=200)
    dense = StochasticNMF(4, **kw).fit(chunked(X, 40))
    sparse = StochasticNMF(4, **kw).fit(chunked(sp.csr_matrix(X), 40))
    np.testing.assert_allclose(sparse.history_["loss"], dense.history_["loss"], rtol=1e-9)


def test_float32_stays_float32(client):
    X = low_rank(200, 30, 4, dtype=np.float32)
    model = StochasticNMF(4, random_state=0, max_iter=5)
    W = model.fit_transform(chunked(X, 50))
    assert W.dtype == np.float32 and W.compute().dtype == np.float32
    assert model.components_.dtype == np.float32
    assert model.transform(chunked(X, 50)).compute().dtype == np.float32


def test_integer_input_becomes_float64(client, rng):
    X = rng.integers(0, 5, (100, 20))
    W = StochasticNMF(3, random_state=0, max_iter=3).fit_transform(chunked(X, 25))
    assert W.dtype == np.float64


def test_column_chunks_are_merged(client):
    X = low_rank(120, 40, 3)
    kw = dict(init="random", random_state=0, max_iter=5, batch_size=120)
    a = StochasticNMF(3, **kw).fit(da.from_array(X, chunks=(30, 10)))
    b = StochasticNMF(3, **kw).fit(X)
    np.testing.assert_allclose(a.history_["loss"], b.history_["loss"], rtol=1e-9)


def test_streamed_chunks_equal_persisted_chunks(client, monkeypatch):
    """Out of core (X read from its source every pass) computes what the persisted fit does."""
    X = low_rank(300, 40, 5, noise=0.05)
    kw = dict(random_state=0, max_iter=10, batch_size=100)
    persisted = StochasticNMF(5, **kw).fit(chunked(X, 50))
    monkeypatch.setattr(nd, "PERSIST_FRACTION", 0.0)
    streamed = StochasticNMF(5, **kw).fit(chunked(X, 50))
    assert persisted.cluster_["persisted"] and not streamed.cluster_["persisted"]
    np.testing.assert_array_equal(streamed.history_["loss"], persisted.history_["loss"])


def test_transform_is_lazy_and_equals_the_in_memory_transform(client):
    X = low_rank(200, 30, 4, noise=0.05)
    model = StochasticNMF(4, random_state=0, max_iter=10).fit(X)
    W = model.transform(chunked(X, 64))
    assert isinstance(W, da.Array) and W.chunks == ((64, 64, 64, 8), (4,))
    np.testing.assert_allclose(W.compute(), model.transform(X), rtol=1e-10, atol=1e-12)
    back = model.inverse_transform(W)
    assert isinstance(back, da.Array)
    np.testing.assert_allclose(back.compute(), model.inverse_transform(model.transform(X)), rtol=1e-10)


def test_transform_of_a_bad_block_names_the_global_row(client):
    X = low_rank(100, 10, 2)
    model = StochasticNMF(2, random_state=0, max_iter=3).fit(X)
    X[57, 3] = -1.0
    W = model.transform(chunked(X, 25))  # lazy: nothing read yet
    with pytest.raises(ValueError, match=r"1 negative entry \(first at row 57, column 3\)"):
        W.compute()


@pytest.mark.parametrize(
    "value, message",
    [(-2.0, r"2 negative entries \(first at row 61, column 4\)"), (np.inf, r"2 infinite entries \(first at row 61, column 4\)"),
     (np.nan, r"2 non-finite entries \(first at row 61, column 4\)")],
)
def test_bad_entries_are_reported_with_their_global_position(client, value, message):
    X = low_rank(100, 10, 2)
    X[61, 4] = X[90, 1] = value
    with pytest.raises(ValueError, match=message):  # NaN is bad only where it may not mark a missing entry
        StochasticNMF(2, random_state=0, missing="error" if np.isnan(value) else "nan").fit(chunked(X, 20))


def test_refuses_what_it_cannot_run(client):
    X = chunked(low_rank(100, 10, 2), 20)
    with pytest.raises(ValueError, match="Dask array but backend='numpy'"):
        StochasticNMF(2, backend="numpy").fit(X)
    with pytest.raises(TypeError, match="partial_fit takes in-memory chunks"):
        StochasticNMF(2).partial_fit(X)
    with pytest.raises(ValueError, match="known chunk sizes"):
        StochasticNMF(2).fit(X[X[:, 0] > 0.5])  # rows of unknown count
    with pytest.raises(ValueError, match="2-D"):
        StochasticNMF(2).fit(da.ones((3, 3, 3), chunks=1))
    with pytest.raises(ValueError, match="per-minibatch step search"):
        StochasticNMF(2, scheduler="line_search", batch_size=20).fit(X)


def test_blas_threads_are_given_back(client):
    from threadpoolctl import threadpool_info

    before = [lib["num_threads"] for lib in threadpool_info()]
    StochasticNMF(3, random_state=0, max_iter=4, batch_size=40).fit(chunked(low_rank(200, 30, 3), 20))
    assert [lib["num_threads"] for lib in threadpool_info()] == before


def test_traffic_per_group_does_not_grow_with_the_rows(client):
    """Per group: H out once, one k x k pair and one m x k sum back, whatever the rows."""
    m, k, sent, received = 40, 5, [], []
    for n in (200, 2000):
        data = nd.DaskData(chunked(low_rank(n, m, k), n // 4), client)
        rng = np.random.default_rng(0)
        solver = nd.dask_solver(
            data, rng.random((n, k)), rng.random((k, m)), sq_norm_X=1.0, batch_size=n // 2, w_sweeps=1, rng=rng
        )
        assert solver.n_batches == 2
        data.bytes_sent = data.bytes_received = 0
        solver.sgd_epoch(0.5)
        sent.append(data.bytes_sent)
        received.append(data.bytes_received)
    # per group H once, and H H^T and the steps in each of its 2 chunks' tasks
    assert sent[0] == sent[1] == 2 * 8 * (m * k + 2 * (k * k + k))
    assert received[0] == received[1] == 2 * 8 * (2 * k * k + m * k + 1)


def test_cluster_is_described(client):
    model = StochasticNMF(2, random_state=0, max_iter=2).fit(chunked(low_rank(60, 10, 2), 20))
    assert model.cluster_["workers"] == 1 and model.cluster_["threads"] == 2
    assert model.cluster_["n_chunks"] == 3


@pytest.mark.parametrize("batch_size", [100, 300])
def test_a_killed_dask_fit_continues_from_its_checkpoint(client, tmp_path, batch_size):
    from test_checkpoint import CRASH, CrashingGreedy

    X = chunked(low_rank(300, 30, 4, noise=0.05), 50)
    kw = dict(random_state=0, max_iter=8, tol=0, batch_size=batch_size)
    whole = StochasticNMF(4, scheduler=CrashingGreedy(), **kw).fit(X)
    path = tmp_path / "run.npz"
    CRASH["at"] = 5
    try:
        with pytest.raises(KeyboardInterrupt):
            StochasticNMF(4, scheduler=CrashingGreedy(), checkpoint=path, **kw).fit(X)
    finally:
        CRASH["at"] = None
    resumed = StochasticNMF(4, scheduler=CrashingGreedy(), checkpoint=path, **kw).fit(X)
    np.testing.assert_allclose(resumed.history_["loss"], whole.history_["loss"], rtol=1e-10)
    assert resumed.reconstruction_err_ == pytest.approx(whole.reconstruction_err_, rel=1e-10)
