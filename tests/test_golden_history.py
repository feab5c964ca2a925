"""A fixed-seed fit's ``history_`` does not change by a single bit across refactors.

Bit for bit where the environment is the one that made the pin; elsewhere (another CPU or BLAS
build rounds differently) the counts must still match exactly and every float to within
rounding: a change of the algorithm moves them by far more.
"""

import json

import numpy as np
import pytest
from golden_histories import CASES, GOLDEN, environment, fit_history

#: Relative agreement of float entries across environments, by the case's precision.
ACROSS_ENVIRONMENTS_RTOL = {"float32": 1e-3, "float64": 1e-8}
#: History entries that count things: equal in every environment.
COUNTS = ("epoch", "n_clipped", "n_trials", "batch_size", "rejected")


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixed_seed_history_is_bit_identical_to_the_pinned_one(name, golden):
    expected = golden["cases"][name]
    got = fit_history(name)
    assert sorted(got) == sorted(expected)
    same_environment = golden["environment"] == environment()
    rtol = ACROSS_ENVIRONMENTS_RTOL["float32" if "float32" in name else "float64"]
    for key, values in expected.items():
        message = (f"{name}: {key} changed. A refactor must not change it; a deliberate change of the "
                   "algorithm (or of the numpy/BLAS build) regenerates the pin: python tests/golden_histories.py")
        if same_environment or key in COUNTS:
            # exact equality, NaN included: json keeps every double's shortest repr
            np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(values), err_msg=message)
        else:
            np.testing.assert_allclose(np.asarray(got[key], dtype=float), np.asarray(values, dtype=float),
                                       rtol=rtol, atol=0, equal_nan=True,
                                       err_msg=f"{message} (compared to rounding: pinned elsewhere)")


def test_the_pin_records_the_environment_that_made_it(golden):
    assert set(golden["environment"]) == set(environment())
    assert set(golden["cases"]) == set(CASES)
