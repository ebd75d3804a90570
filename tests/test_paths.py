"""Every fast path against the naive oracle: property-based random cases,
max-pooling ties, and run-to-run determinism."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastconv
from support import FAST_PATHS, assert_close, oracle_conv, skip_unless_supported
from fastconv import functional as F

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
fast_path = pytest.mark.parametrize("path", FAST_PATHS)


@st.composite
def conv_cases(draw):
    fh, fw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h, w = draw(st.integers(1, 14)), draw(st.integers(1, 14))
    assume(h + 2 * ph >= fh and w + 2 * pw >= fw)
    return dict(n=draw(st.integers(1, 4)), c=draw(st.integers(1, 6)), h=h, w=w,
                fn=draw(st.integers(1, 6)), fh=fh, fw=fw,
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), pad=(ph, pw),
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                seed=draw(st.integers(0, 2**32 - 1)))


@st.composite
def pool_cases(draw):
    ph_, pw_ = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    pad = (draw(st.integers(0, ph_ - 1)), draw(st.integers(0, pw_ - 1)))
    h, w = draw(st.integers(1, 14)), draw(st.integers(1, 14))
    assume(h + 2 * pad[0] >= ph_ and w + 2 * pad[1] >= pw_)
    return dict(n=draw(st.integers(1, 4)), c=draw(st.integers(1, 6)), h=h, w=w,
                pool=(ph_, pw_), stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                pad=pad, mode=draw(st.sampled_from(["max", "avg"])),
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                seed=draw(st.integers(0, 2**32 - 1)))


def _conv_arrays(case):
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(dt)
    W = rng.standard_normal((case["fn"], case["c"], case["fh"], case["fw"])).astype(dt)
    b = rng.standard_normal(case["fn"]).astype(dt)
    return rng, x, W, b


def _conv_all(x, W, b, stride, pad, path, dout=None):
    out, saved = F.conv_forward(x, W, b, stride, pad, backend=path)
    if dout is None:
        dout = np.random.default_rng(0).standard_normal(out.shape).astype(x.dtype)
    return (out, *F.conv_backward(dout, saved)), dout


@fast_path
@SETTINGS
@given(case=conv_cases())
def test_conv_forward_backward_match_naive(path, case):
    _, x, W, b = _conv_arrays(case)
    skip_unless_supported(path, fastconv.conv_spec(x.shape, W.shape, case["stride"], case["pad"]))
    actual, dout = _conv_all(x, W, b, case["stride"], case["pad"], path)
    expected = oracle_conv(x, W, b, case["stride"], case["pad"], dout)
    for name, a, e in zip(("out", "dx", "dW", "db"), actual, expected):
        assert_close(a, e, name)


@fast_path
@SETTINGS
@given(case=pool_cases())
def test_pool_forward_backward_match_naive(path, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(case["dtype"])
    args = (*case["pool"], case["stride"], case["pad"], case["mode"])
    skip_unless_supported(path, fastconv.pool_spec(x.shape, *args))
    out_ref, saved_ref = F.pool_forward(x, *args, backend="naive")
    out, saved = F.pool_forward(x, *args, backend=path)
    assert_close(out, out_ref)
    dout = rng.standard_normal(out.shape).astype(case["dtype"])
    assert_close(F.pool_backward(dout, saved), F.pool_backward(dout, saved_ref))


@fast_path
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_ties_go_to_the_first_maximum(path, dtype):
    # small integers: many equal values in every window; overlapping windows
    x = np.random.default_rng(3).integers(0, 3, size=(2, 3, 9, 8)).astype(dtype)
    skip_unless_supported(path, fastconv.pool_spec(x.shape, 3, 3, 1, 1, "max"))
    for stride in [1, 2]:
        out_ref, saved_ref = F.pool_forward(x, 3, 3, stride, 1, "max", backend="naive")
        out, saved = F.pool_forward(x, 3, 3, stride, 1, "max", backend=path)
        np.testing.assert_array_equal(out, out_ref)
        dout = np.arange(out.size, dtype=dtype).reshape(out.shape)
        np.testing.assert_array_equal(F.pool_backward(dout, saved), F.pool_backward(dout, saved_ref))


@fast_path
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_runs_are_bit_identical(path, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 5, 13, 11)).astype(dtype)
    W = rng.standard_normal((7, 5, 3, 3)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    skip_unless_supported(path, fastconv.conv_spec(x.shape, W.shape, (1, 2), 1))
    first, dout = _conv_all(x, W, b, (1, 2), 1, path)
    second, _ = _conv_all(x, W, b, (1, 2), 1, path, dout)
    for a, c in zip(first, second):
        assert np.array_equal(a, c)
    p1, s1 = F.pool_forward(x, 3, 3, 1, 1, "max", backend=path)
    p2, s2 = F.pool_forward(x, 3, 3, 1, 1, "max", backend=path)
    assert np.array_equal(p1, p2)
    g = rng.standard_normal(p1.shape).astype(dtype)
    assert np.array_equal(F.pool_backward(g, s1), F.pool_backward(g, s2))


@fast_path
def test_larger_layer_matches_naive(path):
    # the book's first layer on a small batch: long rows, many filters
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    W = (0.1 * rng.standard_normal((30, 1, 5, 5))).astype(np.float32)
    b = rng.standard_normal(30).astype(np.float32)
    skip_unless_supported(path, fastconv.conv_spec(x.shape, W.shape, 1, 0))
    actual, dout = _conv_all(x, W, b, 1, 0, path)
    for name, a, e in zip(("out", "dx", "dW", "db"), actual, oracle_conv(x, W, b, 1, 0, dout)):
        assert_close(a, e, name)
