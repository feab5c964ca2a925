"""Choosing the rank by held-out entries: select_rank, held_out_scorer and `nmfsched rank`."""

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.model_selection import GridSearchCV

from nmfsched import RankSelection, StochasticNMF, held_out_scorer, select_rank
from nmfsched.rank_selection import choose_rank


def low_rank_with_noise(seed, n=150, m=50, k=4, noise=0.05):
    rng = np.random.default_rng(seed)
    X = rng.random((n, k)) @ rng.random((k, m))
    return X + noise * X.std() * np.abs(rng.standard_normal(X.shape))


def poisson_counts(seed, n=300, m=80, k=4, mean=3.0):
    """Sparse document-term-like counts of a rank-``k`` Poisson intensity."""
    rng = np.random.default_rng(seed)
    L = rng.gamma(0.5, 1.0, (n, k)) @ rng.gamma(0.5, 1.0, (k, m))
    return sp.csr_matrix(rng.poisson(L * mean / L.mean()).astype(float))


@pytest.mark.parametrize("seed", [0, 1])
def test_finds_the_true_rank_of_a_noisy_low_rank_matrix(seed):
    result = select_rank(low_rank_with_noise(seed), range(2, 7), random_state=seed, progress=False)
    assert isinstance(result, RankSelection) and result.rank == 4
    assert result.scores.shape == (5, 3) and result.fit_seconds.shape == (5, 3)
    assert result.mean[2] < result.mean[0] and result.mean[2] < result.mean[1]  # too few components miss structure


@pytest.mark.parametrize("seed", [0, 1])
def test_finds_the_true_rank_of_sparse_counts_hiding_zeros_too(seed):
    result = select_rank(poisson_counts(seed), range(2, 7), random_state=seed, progress=False)
    assert result.rank == 4


def test_ratings_hide_and_score_only_stored_entries():
    rng = np.random.default_rng(3)
    X = low_rank_with_noise(3, n=120, m=60, k=3)
    rows, cols = np.nonzero(rng.random(X.shape) < 0.5)
    ratings = sp.csr_matrix((X[rows, cols], (rows, cols)), shape=X.shape)
    result = select_rank(ratings, [1, 3, 6], missing="unstored", random_state=0, progress=False, n_repeats=2)
    assert result.rank == 3
    # as zeros the unstored half would be scored too, and the low-rank structure would not show
    as_zeros = select_rank(ratings, [1, 3, 6], random_state=0, progress=False, n_repeats=2)
    assert as_zeros.mean[1] > 10 * result.mean[1]


def test_nan_entries_are_never_hidden_or_scored_and_results_are_reproducible():
    X = low_rank_with_noise(4, n=80, m=30, k=3)
    X[np.random.default_rng(0).random(X.shape) < 0.2] = np.nan
    a = select_rank(X, [2, 3, 4], random_state=7, progress=False, n_repeats=2, max_iter=30)
    b = select_rank(X, [2, 3, 4], random_state=7, progress=False, n_repeats=2, max_iter=30)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert np.isfinite(a.scores).all()
    parallel = select_rank(X, [2, 3, 4], random_state=7, progress=False, n_repeats=2, max_iter=30, n_jobs=2)
    np.testing.assert_allclose(parallel.scores, a.scores, rtol=1e-9)


def test_the_one_standard_error_rule_prefers_the_smaller_rank():
    ranks = np.array([2, 3, 4, 5])
    scores = np.array([[0.5, 0.52, 0.48], [0.21, 0.2, 0.22], [0.2, 0.22, 0.18], [0.3, 0.31, 0.29]])
    assert choose_rank(ranks, scores, "min") == 4
    assert choose_rank(ranks, scores, "one_se") == 3  # 0.21 is within one standard error (0.0115) of 0.2
    assert choose_rank(ranks, scores[:, :1], "one_se") == 4  # one split: no spread, the minimum
    with pytest.raises(ValueError, match="rule must be one of"):
        choose_rank(ranks, scores, "best")


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(ranks=[0, 2]), "ranks must be integers >= 1"),
    (dict(ranks=[2], test_fraction=1.5), r"test_fraction must be in \(0, 1\)"),
    (dict(ranks=[2], n_repeats=0), "n_repeats must be >= 1"),
    (dict(ranks=[2], missing="error"), "missing must be 'nan' or 'unstored'"),
    (dict(ranks=[2], tol=-1), "tol"),
    (dict(ranks=[2], test_fraction=0.001), "hides 0 of the"),
])
def test_bad_arguments_are_refused_before_any_fit(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_rank(np.ones((10, 8)), progress=False, **kwargs)


def test_the_plot_marks_the_chosen_rank():
    plt = pytest.importorskip("matplotlib.pyplot")
    result = RankSelection(ranks=np.array([2, 3, 4]), scores=np.array([[0.3, 0.32], [0.1, 0.11], [0.12, 0.12]]),
                           rank=3, rule="one_se", test_fraction=0.1, seconds=1.0, fit_seconds=np.ones((3, 2)))
    ax = result.plot()
    assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"] == [3]
    record = result.as_dict()
    assert record["rank"] == 3 and record["mean"] == pytest.approx([0.31, 0.105, 0.12])
    json.dumps(record)
    plt.close("all")


def test_grid_search_chooses_the_rank_with_the_held_out_scorer():
    X = low_rank_with_noise(5, n=200, m=40, k=3)
    search = GridSearchCV(StochasticNMF(random_state=0, max_iter=200), {"n_components": [1, 3, 8]},
                          scoring=held_out_scorer(random_state=0), cv=3)
    search.fit(X)
    assert search.best_params_ == {"n_components": 3}
    assert (search.cv_results_["mean_test_score"] <= 0).all()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nmfsched.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_the_rank_command_prints_the_curve_and_writes_json_and_a_plot(tmp_path):
    X = low_rank_with_noise(0, n=120, m=40, k=3)
    X[np.random.default_rng(1).random(X.shape) < 0.1] = np.nan
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "out"
    r = run_cli("rank", tmp_path / "x.npy", "--ranks", "2-4,6", "--out", out, "--seed", 0, "--repeats", 2, "-q")
    assert r.returncode == 0, r.stderr
    assert "chosen rank: 3" in r.stdout and "<- chosen" in r.stdout
    record = json.loads((out / "rank_selection.json").read_text())
    assert record["ranks"] == [2, 3, 4, 6] and record["rank"] == 3 and len(record["scores"][0]) == 2
    assert (out / "rank_selection.png").read_bytes()[:4] == b"\x89PNG"
    again = run_cli("rank", tmp_path / "x.npy", "--ranks", "2-3", "--out", out, "-q")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    bad = run_cli("rank", tmp_path / "x.npy", "--ranks", "5-2", "--out", tmp_path / "o2")
    assert bad.returncode == 2 and "low <= high" in bad.stderr
    too_big = run_cli("rank", tmp_path / "x.npy", "--ranks", "2,80", "--out", tmp_path / "o3", "-q")
    assert too_big.returncode == 1 and "rank 80 is larger than" in too_big.stderr and "Traceback" not in too_big.stderr


def test_dask_input_is_split_and_scored_chunk_by_chunk_on_the_cluster():
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    X = low_rank_with_noise(6, n=160, m=30, k=3)
    X[np.random.default_rng(2).random(X.shape) < 0.1] = np.nan
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None):
        chunked = da.from_array(X, chunks=(40, 30))
        result = select_rank(chunked, [1, 3, 6], random_state=0, n_repeats=2, progress=False, max_iter=200)
        again = select_rank(chunked, [1, 3, 6], random_state=0, n_repeats=2, progress=False, max_iter=200)
    assert result.rank == 3 and np.isfinite(result.scores).all()
    np.testing.assert_allclose(again.scores, result.scores, rtol=1e-9)  # each chunk draws the same hidden entries
    with pytest.raises(TypeError, match="dense chunks"):
        select_rank(da.from_array(sp.csr_matrix(np.ones((10, 4))), chunks=(5, 4), asarray=False), [1], progress=False)
