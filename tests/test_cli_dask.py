"""`nmfsched factorize` with zarr and HDF5 inputs, `--dataset` and `--dask [ADDRESS]`."""

import json

import numpy as np
import pytest
from test_cli_factorize import low_rank, nmfsched

from nmfsched import cli
from nmfsched.batch import output_names
from nmfsched.io import InputError, find_inputs, open_lazy, read_matrix

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture
def inputs(tmp_path):
    """The same matrix as .npy, zarr (a directory of 100-row chunks) and HDF5 (two datasets)."""
    d = tmp_path / "in"
    d.mkdir()
    X = low_rank(400, 30)
    np.save(d / "m.npy", X)
    store = zarr.open_array(str(d / "m.zarr"), mode="w", shape=X.shape, chunks=(100, 30), dtype="f8")
    store[:] = X
    with h5py.File(d / "m.h5", "w") as f:
        f["data/X"] = X
        f["labels"] = np.arange(400)[:, None] * 1.0
    return d, X


def report(out, name):
    return json.loads((out / name / "report.json").read_text())


def test_zarr_and_hdf5_read_in_memory_give_the_npy_result(inputs, tmp_path):
    d, X = inputs
    out = tmp_path / "out"
    r = nmfsched("factorize", d / "m.npy", d / "m.zarr", d / "m.h5", "--dataset", "data/X", "--rank", 4,
                 "--out", out, "--max-epochs", 5, "--seed", 0)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["m_h5", "m_npy", "m_zarr", "summary.csv"]
    errors = {name: report(out, name)["relative_error"] for name in ("m_npy", "m_zarr", "m_h5")}
    assert errors["m_zarr"] == errors["m_npy"] == errors["m_h5"]
    assert report(out, "m_h5")["dataset"] == "data/X" and "cluster" not in report(out, "m_npy")


def test_dask_fits_chunk_by_chunk_and_records_the_cluster(inputs, tmp_path):
    d, X = inputs
    out = tmp_path / "out"
    r = nmfsched("factorize", d / "m.zarr", d / "m.h5", "--dataset", "data/X", "--rank", 4, "--out", out,
                 "--max-epochs", 5, "--seed", 0, "--batch-size", 400, "--dask")
    assert r.returncode == 0, r.stderr
    ref = nmfsched("factorize", d / "m.npy", "--rank", 4, "--out", tmp_path / "ref", "--max-epochs", 5,
                   "--seed", 0, "--batch-size", 400)
    assert ref.returncode == 0, ref.stderr
    zarr_report = report(out, "m_zarr")
    assert zarr_report["cluster"]["workers"] == 1 and zarr_report["cluster"]["n_chunks"] == 4
    assert zarr_report["density"] is None and zarr_report["shape"] == [400, 30]
    W = np.load(out / "m_zarr" / "W.npy")
    H = np.load(out / "m_zarr" / "H.npy")
    assert W.shape == (400, 4) and H.shape == (4, 30)
    assert np.linalg.norm(X - W @ H) / np.linalg.norm(X) == pytest.approx(zarr_report["relative_error"], rel=0.05)
    # one batch of every row is the same algorithm in memory (the SVD init differs only in
    # its random projections, so the errors agree closely, not bit for bit)
    in_memory = report(tmp_path / "ref", "m")["relative_error"]
    assert zarr_report["relative_error"] == pytest.approx(in_memory, rel=0.05)


def test_dask_address_runs_on_that_scheduler(inputs, tmp_path, capsys):
    d, _ = inputs
    with distributed.LocalCluster(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        code = cli.main(["factorize", str(d / "m.zarr"), "--rank", "3", "--out", str(tmp_path / "out"),
                         "--max-epochs", "3", "--dask", cluster.scheduler_address])
        assert code == 0, capsys.readouterr().err
    cluster_info = report(tmp_path / "out", "m")["cluster"]
    assert cluster_info["scheduler"] == cluster.scheduler_address
    assert cluster_info["workers"] == 2 and cluster_info["threads"] == 2


def test_bad_entries_in_a_zarr_store_fail_that_input_with_their_place(tmp_path):
    X = low_rank(300, 20)
    X[201, 7] = -3.0
    store = zarr.open_array(str(tmp_path / "bad.zarr"), mode="w", shape=X.shape, chunks=(50, 20), dtype="f8")
    store[:] = X
    r = nmfsched("factorize", tmp_path / "bad.zarr", "--rank", 3, "--out", tmp_path / "out", "--dask")
    assert r.returncode == 1
    assert "bad.zarr" in r.stderr and "first at row 201, column 7" in r.stderr
    assert not (tmp_path / "out" / "bad").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nope"], "no dataset 'nope' (datasets: data/X, labels)"),
        ([], "holds 2 2-D datasets (data/X, labels); name one with --dataset"),
    ],
)
def test_hdf5_dataset_errors_name_the_datasets(inputs, tmp_path, args, message):
    d, _ = inputs
    r = nmfsched("factorize", d / "m.h5", "--rank", 3, "--out", tmp_path / "out", *args)
    assert r.returncode == 1 and message in r.stderr


def test_dask_with_jobs_is_a_usage_error(inputs, tmp_path):
    d, _ = inputs
    r = nmfsched("factorize", d / "m.zarr", "--rank", 3, "--out", tmp_path / "out", "--dask", "--jobs", "2")
    assert r.returncode == 2 and "--dask runs the inputs one after another" in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_folder_search_finds_zarr_stores_without_entering_them(inputs):
    d, _ = inputs
    assert [p.name for p in find_inputs([d])] == ["m.h5", "m.npy", "m.zarr"]


def test_lazy_readers_read_rows_on_demand(inputs):
    d, X = inputs
    for name in ("m.npy", "m.h5", "m.zarr"):
        L = open_lazy(d / name, dataset="data/X", chunk_bytes=30 * 8 * 128)
        assert isinstance(L, da.Array)
        assert L.chunks[0][0] in (100, 128)  # zarr keeps its own chunks
        np.testing.assert_array_equal(L.compute(), X)
        np.testing.assert_array_equal(read_matrix(d / name, dataset="data/X"), X)
    with pytest.raises(InputError, match="2-D"):
        np.save(d / "v.npy", np.ones(5))
        open_lazy(d / "v.npy")


def test_inputs_of_one_name_in_one_folder_get_their_ending_in_the_output_name(tmp_path):
    paths = [tmp_path / "a" / "m.npy", tmp_path / "a" / "m.zarr", tmp_path / "b" / "m.npy", tmp_path / "c.csv"]
    assert output_names(paths) == ["m_npy", "m_zarr", "m", "c"]
    # two folders with the same name in them still get their parents' names
    assert output_names([tmp_path / "a" / "m.npy", tmp_path / "b" / "m.npy"]) == ["a__m", "b__m"]
