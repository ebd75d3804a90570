"""Test fixtures: the ``path`` parameter, and a private cache directory for "auto"."""
import os
import tempfile

import pytest

from support import PATHS


@pytest.fixture(params=PATHS)
def path(request):
    return request.param


def pytest_configure(config):
    # auto-selection remembers choices on disk: keep the tests out of the user's cache,
    # and use its static rule so that no test depends on how busy the machine is
    # (tests/test_autotune.py switches measuring on for itself)
    if "FASTCONV_CACHE_DIR" not in os.environ:
        os.environ["FASTCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastconv-test-cache-")
    os.environ.setdefault("FASTCONV_AUTOTUNE", "0")
