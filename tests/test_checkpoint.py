"""Per-epoch checkpoints: a fit stopped mid-run continues from its checkpoint."""

import numpy as np
import pytest
from conftest import low_rank

from nmfsched import StochasticNMF
from nmfsched.schedulers.greedy import GreedyLR

CRASH = {"at": None}


class CrashingGreedy(GreedyLR):
    """GreedyLR that raises at epoch ``CRASH["at"]``, as a killed process would stop."""

    def step(self, obs):
        if obs.epoch == CRASH["at"]:
            raise KeyboardInterrupt("killed")
        return super().step(obs)


@pytest.fixture(autouse=True)
def no_crash():
    CRASH["at"] = None
    yield
    CRASH["at"] = None


def fit(X, path=None, **kw):
    params = dict(scheduler=CrashingGreedy(), random_state=0, max_iter=12, tol=0, batch_size=50, checkpoint=path)
    params.update(kw)
    return StochasticNMF(4, **params).fit(X)


@pytest.mark.parametrize("batch_size", [50, 200])
def test_a_killed_fit_continues_from_its_checkpoint(tmp_path, batch_size):
    X = low_rank(200, 30, 4, noise=0.05)
    path = tmp_path / "run.npz"
    whole = fit(X, batch_size=batch_size)
    CRASH["at"] = 7
    with pytest.raises(KeyboardInterrupt):
        fit(X, path, batch_size=batch_size)
    assert path.exists()
    CRASH["at"] = None
    resumed = fit(X, path, batch_size=batch_size)
    assert resumed.n_iter_ == whole.n_iter_ == 12
    np.testing.assert_array_equal(resumed.history_["epoch"], np.arange(1, 13))
    # the epochs before the kill are the saved ones, and the run went on from there as the
    # uninterrupted run did (same rows, same rates, same W refresh)
    for key in ("loss", "lr", "lr_bound", "grad_sq", "batch_size"):
        np.testing.assert_allclose(resumed.history_[key], whole.history_[key], rtol=1e-10, err_msg=key)
    assert resumed.reconstruction_err_ == pytest.approx(whole.reconstruction_err_, rel=1e-10)
    assert np.all(np.diff(resumed.history_["seconds"]) >= 0)
    assert resumed.stability_certificate_["initial_loss"] == whole.stability_certificate_["initial_loss"]


def test_a_finished_checkpoint_returns_its_result_and_more_epochs_continue_it(tmp_path):
    X = low_rank(150, 20, 4, noise=0.05)
    path = tmp_path / "run.npz"
    first = fit(X, path, max_iter=5)
    again = fit(X, path, max_iter=5)
    assert again.n_iter_ == 5 and again.stop_reason_ == "max_epochs"
    np.testing.assert_array_equal(again.components_, first.components_)
    longer = fit(X, path, max_iter=8)
    assert longer.n_iter_ == 8
    np.testing.assert_array_equal(longer.history_["loss"][:5], first.history_["loss"])
    assert longer.history_["loss"][-1] < first.history_["loss"][-1]


def test_a_run_stopped_by_tol_is_not_run_again(tmp_path):
    X = low_rank(150, 20, 4, noise=0.3)
    path = tmp_path / "run.npz"
    first = fit(X, path, max_iter=200, tol=1e-2, n_iter_no_change=2)
    assert first.stop_reason_ == "tol" and first.n_iter_ < 200
    again = fit(X, path, max_iter=200, tol=1e-2, n_iter_no_change=2)
    assert again.n_iter_ == first.n_iter_ and again.stop_reason_ == "tol"


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(random_state=1), "random_state=0 there, 1 here"),
        (dict(safety_factor=0.5), "safety_factor"),
        (dict(scheduler="greedy"), "scheduler="),
    ],
)
def test_a_checkpoint_of_other_parameters_is_refused(tmp_path, change, message):
    X = low_rank(100, 20, 4)
    path = tmp_path / "run.npz"
    fit(X, path, max_iter=2)
    with pytest.raises(ValueError, match=message):
        fit(X, path, **change)


def test_a_checkpoint_of_other_data_is_refused(tmp_path):
    X = low_rank(100, 20, 4)
    path = tmp_path / "run.npz"
    fit(X, path, max_iter=2)
    with pytest.raises(ValueError, match="other data"):
        fit(X * 2, path)
    with pytest.raises(ValueError, match=r"shape \[100, 20\], this one has \[100, 19\]"):
        fit(X[:, :19], path)
    with pytest.raises(ValueError, match="dtype float64, this one has float32"):
        fit(X.astype(np.float32), path)


def test_a_damaged_checkpoint_is_reported_and_kept(tmp_path):
    path = tmp_path / "run.npz"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        fit(low_rank(50, 10, 2), path)
    assert path.read_bytes() == b"not a checkpoint"


def test_the_checkpoint_is_replaced_atomically(tmp_path, monkeypatch):
    """A write that fails leaves the previous checkpoint whole and no temporary file."""
    X = low_rank(100, 20, 4)
    path = tmp_path / "run.npz"
    fit(X, path, max_iter=3)
    saved = path.read_bytes()

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("nmfsched.checkpoint.np.savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        fit(X, path, max_iter=6)
    assert path.read_bytes() == saved
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]


def test_partial_fit_ignores_the_checkpoint(tmp_path):
    X = low_rank(100, 20, 4)
    StochasticNMF(4, checkpoint=tmp_path / "run.npz", random_state=0).partial_fit(X)
    assert not (tmp_path / "run.npz").exists()


def _drop_params_from_file(path, names):
    """Rewrite a checkpoint as an earlier version wrote it: without ``names`` in its fingerprint."""
    import json

    with np.load(path, allow_pickle=False) as f:
        arrays = {key: f[key] for key in f.files}
    meta = json.loads(str(arrays.pop("meta")))
    for name in names:
        del meta["fingerprint"]["params"][name]
    del meta["fingerprint"]["defaults"]
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def test_a_checkpoint_from_before_the_penalties_continues_at_their_defaults(tmp_path):
    X = low_rank(60, 8, 3, seed=1)
    path = tmp_path / "run.npz"
    StochasticNMF(3, max_iter=4, tol=0, random_state=0, checkpoint=path).fit(X)
    _drop_params_from_file(path, ["alpha_W", "alpha_H", "l1_ratio"])
    resumed = StochasticNMF(3, max_iter=6, tol=0, random_state=0, checkpoint=path).fit(X)
    assert resumed.n_iter_ == 6
    _drop_params_from_file(path, ["alpha_W", "alpha_H", "l1_ratio"])
    with pytest.raises(ValueError, match="alpha_W=0.0 there, 0.1 here"):  # the old file meant no penalty
        StochasticNMF(3, max_iter=8, tol=0, random_state=0, checkpoint=path, alpha_W=0.1).fit(X)
