"""Bad input gets a clear error that says what is wrong and where."""

import numpy as np
import pytest
import scipy.sparse as sp

from nmfsched import StochasticNMF, factorize
from nmfsched._validation import check_finite_nonnegative


def test_negative_entries_are_counted_and_located():
    X = np.ones((6, 4))
    X[5, 2] = -1
    X[3, 1] = -2
    X[3, 3] = -0.5
    with pytest.raises(ValueError, match=r"3 negative entries \(first at row 3, column 1\); NMF needs X >= 0"):
        StochasticNMF(2).fit(X)


def test_negative_entry_in_sparse_input_is_located():
    X = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 0, 2.0], [0, -3.0, 0]]))
    with pytest.raises(ValueError, match=r"1 negative entry \(first at row 2, column 1\)"):
        StochasticNMF(1).fit(X)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_entries_are_located(bad):
    X = np.ones((5, 5))
    X[4, 0] = bad
    with pytest.raises(ValueError, match=r"contains NaN or infinity: 1 non-finite entry \(first at row 4, column 0\)"
                       r".*missing='nan'"):
        StochasticNMF(2, missing="error").fit(X)


def test_infinity_is_refused_where_nan_marks_missing_entries():
    X = np.ones((5, 5))
    X[1, 1] = np.nan
    X[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"contains infinity: 1 infinite entry \(first at row 3, column 2\); "
                                         r"StochasticNMF needs finite values \(NaN marks a missing entry\)"):
        StochasticNMF(2).fit(X)


def test_large_dense_input_is_scanned_in_chunks_without_missing_entries(monkeypatch):
    import nmfsched._validation as v

    monkeypatch.setattr(v, "_CHUNK_ELEMENTS", 7)
    X = np.ones((10, 3))
    X[7, 2] = -1
    X[9, 0] = -1
    with pytest.raises(ValueError, match=r"2 negative entries \(first at row 7, column 2\)"):
        check_finite_nonnegative(X)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("missing", ["error", "nan"])
def test_the_validation_scan_gives_the_counts_and_scale_once(monkeypatch, sparse, missing):
    """The one-pass scan of host input (dense or CSR) returns its counts and largest entry, and
    the fit takes the data's scale and the NaN check from it instead of reading ``X`` again."""
    import nmfsched.observed
    import nmfsched.scaling

    X = np.random.default_rng(0).random((40, 6)) * 3e5  # outside the scaling's safe range
    X[X < 1e5] = 0
    X = sp.csr_matrix(X) if sparse else X
    scan = check_finite_nonnegative(X, missing=missing)
    values = X.data if sparse else X
    assert scan == (0, 0, 0, float(values.max()))
    monkeypatch.setattr(nmfsched.scaling, "array_namespace", lambda a: pytest.fail("X was read again for its scale"))
    monkeypatch.setattr(nmfsched.observed, "has_nan", lambda X: pytest.fail("X was read again for NaN"))
    model = StochasticNMF(2, random_state=0, max_iter=3, tol=0, missing=missing).fit(X)
    assert np.isfinite(model.components_).all() and model.reconstruction_err_ > 0
    model.transform(X)
    assert check_finite_nonnegative(X.tocsc() if sparse else np.asfortranarray(X)) is None  # not the kernel's layout


def test_a_scan_of_entries_with_missing_ones_counts_them():
    X = np.ones((4, 3))
    X[1, 2] = X[3, 0] = np.nan
    X[2, 1] = 7.0
    assert check_finite_nonnegative(X, missing="nan") == (2, 0, 0, 7.0)
    model = StochasticNMF(1, random_state=0, max_iter=2, tol=0).fit(X)  # missing='nan', the default
    assert model.observed_fraction_ == pytest.approx(10 / 12)


@pytest.mark.parametrize(
    "X,match",
    [
        (np.ones(5), "Expected 2D array"),
        (np.ones((0, 4)), "0 sample"),
        (np.ones((4, 0)), "0 feature"),
        (np.array([["a", "b"], ["c", "d"]], dtype=object), "could not convert|argument must be"),
    ],
)
def test_malformed_arrays(X, match):
    with pytest.raises(ValueError, match=match):
        StochasticNMF(1).fit(X)


@pytest.mark.parametrize("k", [0, -3])
def test_n_components_must_be_positive(k):
    with pytest.raises(ValueError, match="n_components"):
        StochasticNMF(k).fit(np.ones((4, 4)))


def test_unknown_scheduler_lists_known_ones():
    with pytest.raises(ValueError, match=r"Unknown scheduler 'greedyy'; known schedulers: .*step"):
        StochasticNMF(2, scheduler="greedyy").fit(np.ones((5, 5)))


def test_scheduler_params_for_an_instance_are_rejected():
    from nmfsched.schedulers import StepScheduler

    with pytest.raises(ValueError, match="scheduler_params apply only"):
        StochasticNMF(2, scheduler=StepScheduler(), scheduler_params={"gamma": 0.5}).fit(np.ones((5, 5)))


def test_custom_factors_are_validated():
    X = np.ones((6, 5))
    good_W, good_H = np.ones((6, 2)), np.ones((2, 5))
    with pytest.raises(ValueError, match=r"W has shape \(5, 2\) but StochasticNMF expects \(6, 2\)"):
        StochasticNMF(2, init="custom").fit(X, W=np.ones((5, 2)), H=good_H)
    with pytest.raises(ValueError, match=r"H has shape \(2, 4\) but StochasticNMF expects \(2, 5\)"):
        StochasticNMF(2, init="custom").fit(X, W=good_W, H=np.ones((2, 4)))
    bad_H = good_H.copy()
    bad_H[1, 3] = -1
    with pytest.raises(ValueError, match=r"input H\): 1 negative entry \(first at row 1, column 3\)"):
        StochasticNMF(2, init="custom").fit(X, W=good_W, H=bad_H)
    with pytest.raises(ValueError, match="needs both W and H; H is missing"):
        StochasticNMF(2, init="custom").fit(X, W=good_W)
    with pytest.raises(ValueError, match="set init='custom'"):
        StochasticNMF(2).fit(X, W=good_W, H=good_H)
    with pytest.raises(TypeError, match="W has dtype float32 but X has dtype float64"):
        StochasticNMF(2, init="custom").fit(X, W=good_W.astype(np.float32), H=good_H)
    with pytest.raises(TypeError, match="H has dtype float64 but X has dtype float32"):
        StochasticNMF(2, init="custom").fit(X.astype(np.float32), W=good_W.astype(np.float32), H=good_H)


def test_nndsvd_needs_rank_within_shape():
    with pytest.raises(ValueError, match=r"init='nndsvd' needs n_components <= min\(n_samples, n_features\) = 3"):
        StochasticNMF(4, init="nndsvd").fit(np.ones((3, 10)))


def test_transform_checks_feature_count_and_sign():
    model = StochasticNMF(2, max_iter=3, random_state=0).fit(np.random.default_rng(0).random((10, 6)))
    with pytest.raises(ValueError, match="X has 5 features, but StochasticNMF is expecting 6"):
        model.transform(np.ones((3, 5)))
    X = np.ones((3, 6))
    X[0, 0] = -1
    with pytest.raises(ValueError, match="Negative values in data passed to StochasticNMF"):
        model.transform(X)


def test_bad_parameters_name_the_parameter():
    X = np.ones((5, 5))
    for params, name in [
        (dict(batch_size=0), "batch_size"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(max_iter=0), "max_iter"),
        (dict(backend="tpu"), "backend"),
        (dict(init="svd"), "init"),
    ]:
        with pytest.raises(ValueError, match=name):
            StochasticNMF(2, **params).fit(X)


def test_factorize_validates_too():
    with pytest.raises(ValueError, match="Negative values"):
        factorize(-np.ones((3, 3)), 1)
