"""Shared test settings: which paths run, and the one table of tolerances per dtype."""
import os
import tempfile

import numpy as np
import pytest

import fastconv

# How closely a path must match the naive oracle (or SciPy), per dtype. float32
# sums of up to a few hundred products drift by a few ulps per term.
TOLERANCES = {
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
}


def tol(dtype):
    return TOLERANCES[np.dtype(dtype)]


def assert_close(actual, expected, name=""):
    """Compare against an oracle with its dtype's tolerance; dtypes must agree too."""
    actual = np.asarray(actual)
    dtype = np.dtype(expected.dtype)
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype} != {dtype}"
    np.testing.assert_allclose(actual, expected, err_msg=name, **tol(dtype))


def _test_paths():
    """FASTCONV_TEST_PATHS=cuda (say) limits the run; by default every available path
    but cuda, whose tests run in their own process on the simulator."""
    chosen = os.environ.get("FASTCONV_TEST_PATHS")
    if chosen:
        return [p.strip() for p in chosen.split(",") if p.strip()]
    return [p for p in fastconv.available_backends() if p != "cuda"]


PATHS = _test_paths()
FAST_PATHS = [p for p in PATHS if p != "naive"]


@pytest.fixture(params=PATHS)
def path(request):
    return request.param


def pytest_configure(config):
    # auto-selection remembers choices on disk: keep the tests out of the user's cache
    if "FASTCONV_CACHE_DIR" not in os.environ:
        os.environ["FASTCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastconv-test-cache-")
