"""Short fits on the real matrices in ../shared/data (skipped when absent)."""

import warnings

import numpy as np
import scipy.sparse as sp
from conftest import shared_file
from sklearn.decomposition import NMF

from nmfsched import StochasticNMF


def test_olivetti_close_to_sklearn_cd():
    X = np.load(shared_file("olivetti.npz"))["X"].astype(np.float64) / 242
    model = StochasticNMF(10, random_state=0, max_iter=40).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = NMF(10, random_state=0, max_iter=100).fit(X)
    assert model.reconstruction_err_ <= 1.05 * ref.reconstruction_err_


def test_tdt2_sparse_runs_and_improves():
    X = sp.load_npz(shared_file("tdt2.npz"))[:2000]
    model = StochasticNMF(5, random_state=0, max_iter=3, batch_size=1000).fit(X)
    h = model.history_
    assert np.isfinite(h["loss"]).all() and h["loss"][-1] < h["loss"][0]
    assert model.components_.shape == (5, X.shape[1])
