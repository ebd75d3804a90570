"""The way from a layer to its kernel stays short: Python-level calls counted with sys.setprofile.

A warmed ``Convolution.forward`` checks its arrays, finds its spec in the
spec cache and dispatches through the table; with "auto" it also asks the
tuner's memory. Each extra Python call on that way is paid on every forward.
"""
import sys

import numpy as np
import pytest

import fastconv


def calls_before_kernel(fn):
    """Python-level calls made by ``fn()`` until the first kernel function is entered."""
    seen = []
    done = []

    def profile(frame, event, arg):
        if event != "call" or done:
            return
        if frame.f_globals.get("__name__", "").startswith("fastconv.kernels.") \
                and frame.f_code.co_name in ("conv_forward", "pool_forward"):
            done.append(frame.f_code.co_name)
            return
        seen.append(f"{frame.f_globals.get('__name__')}.{frame.f_code.co_name}")

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    assert done, "no kernel was reached"
    return seen


@pytest.mark.parametrize("backend, limit", [("direct", 15), ("auto", 25)])
def test_warmed_forward_reaches_the_kernel_in_few_calls(backend, limit):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    conv = fastconv.Convolution(rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                                stride=1, pad=1, backend=backend)
    conv.forward(x)                                     # warm: compile, tune, fill caches
    seen = calls_before_kernel(lambda: conv.forward(x))
    assert len(seen) <= limit, "\n".join(seen)
    pool = fastconv.Pooling(2, 2, stride=2, backend=backend)
    pool.forward(x)
    seen = calls_before_kernel(lambda: pool.forward(x))
    assert len(seen) <= limit, "\n".join(seen)
