"""Test fixtures: the ``path`` parameter, and a private cache directory for "auto"."""
import importlib
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


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty autotune cache directory, empty memory and zeroed counters, measuring on."""
    at = importlib.import_module("fastconv.tuner")
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTCONV_AUTOTUNE", raising=False)
    monkeypatch.setattr(at, "_memory", {})
    monkeypatch.setattr(at, "_by_spec", {})
    monkeypatch.setattr(at, "_warned", set())
    monkeypatch.setattr(at, "stats", {"measured": 0, "disk": 0, "memory": 0})
    return tmp_path / "cache"


@pytest.fixture
def two_candidates(monkeypatch):
    """Stand-ins (naive under other names) when fewer than two compiled paths exist."""
    from fastconv import backends

    at = importlib.import_module("fastconv.tuner")
    for name in ("twin_a", "twin_b"):
        if len(at.candidates()) >= 2:
            break
        monkeypatch.setitem(backends.PATHS, name, backends.get_path("naive"))
    return at.candidates()


@pytest.fixture
def budget():
    """Set the im2col path's workspace budget for one test: yields the setter; the previous
    budget comes back afterwards and the scratch memory is released."""
    im2col = importlib.import_module("fastconv.kernels.im2col")
    previous = im2col.get_workspace_budget()
    yield im2col.set_workspace_budget
    im2col.set_workspace_budget(previous)
    im2col.release_workspace()
