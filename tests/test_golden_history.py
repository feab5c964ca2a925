"""A fixed-seed fit's ``history_`` does not change by a single bit across refactors."""

import json

import numpy as np
import pytest

from golden_histories import CASES, GOLDEN, fit_history


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixed_seed_history_is_bit_identical_to_the_pinned_one(name):
    expected = json.loads(GOLDEN.read_text())[name]
    got = fit_history(name)
    assert sorted(got) == sorted(expected)
    for key, values in expected.items():
        # exact equality, NaN included: json keeps every double's shortest repr
        np.testing.assert_array_equal(
            np.asarray(got[key]), np.asarray(values),
            err_msg=f"{name}: {key} changed. A refactor must not change it; a deliberate change of the "
            "algorithm (or of the numpy/BLAS build) regenerates the pin: python tests/golden_histories.py",
        )
