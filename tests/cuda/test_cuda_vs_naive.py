"""The cuda path against the naive oracle on tiny random shapes: both forward
kernels, backward, max and average pooling, both dtypes, stride and padding set
per axis, non-square everything. Shapes are tiny because the simulator runs
every CUDA thread as a Python thread."""
import numpy as np
import pytest
from support import assert_close
from cuda_support import DTYPES, FORWARD_KERNELS, cuda_conv_forward, skip_without_cuda

from fastconv import conv_spec
from fastconv import functional as F
from fastconv.kernels import cuda as kc
from fastconv.kernels import naive

skip_without_cuda()

# (N, C, H, W), (FN, FH, FW), stride (h, w), pad (h, w)
CONV_CASES = {
    "strided_nonsquare": ((2, 3, 6, 5), (4, 3, 2), (2, 1), (1, 0)),
    "pointwise": ((1, 2, 7, 8), (3, 1, 1), (1, 2), (0, 1)),
    "wide_pad": ((2, 2, 5, 7), (5, 3, 3), (1, 1), (2, 1)),
    "stride_over_filter": ((1, 2, 9, 8), (2, 2, 2), (3, 3), (0, 1)),   # some inputs feed no output
}
# several blocks of the tiled forward kernel in both directions and a partial
# reduction slice (forward only: the backward kernels have no tiles):
# 98 positions (2 tiles of 64), 66 filters (2 tiles of 64), C*FH*FW = 27 (slices of 16)
MULTI_TILE = ((2, 3, 7, 7), (66, 3, 3), (1, 1), (1, 1))

# (N, C, H, W), (PH, PW), stride, pad
POOL_CASES = {
    "strided_padded": ((2, 3, 5, 6), (2, 3), (2, 1), (1, 1)),
    "3x3_s2": ((1, 2, 7, 5), (3, 3), (2, 2), (1, 0)),
    "2x2_s2": ((2, 1, 4, 4), (2, 2), (2, 2), (0, 0)),
    "overlapping": ((1, 2, 5, 5), (3, 2), (1, 1), (0, 1)),
}


def conv_arrays(case, dtype, seed=0):
    (N, C, H, W), (FN, FH, FW), stride, pad = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    Wt = rng.standard_normal((FN, C, FH, FW)).astype(dtype)
    b = rng.standard_normal(FN).astype(dtype)
    return x, Wt, b, stride, pad


def naive_reference(x, W, b, stride, pad):
    return naive.conv_forward(x, W, b, conv_spec(x.shape, W.shape, stride, pad, x.dtype))


@pytest.mark.parametrize("kernel", FORWARD_KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_forward_matches_naive(case, dtype, kernel):
    x, W, b, stride, pad = conv_arrays(case, dtype)
    originals = [a.copy() for a in (x, W, b)]
    out, _ = cuda_conv_forward(x, W, b, stride, pad, kernel)
    assert_close(out, naive_reference(x, W, b, stride, pad)[0], f"out ({kernel})")
    for before, after in zip(originals, (x, W, b)):
        np.testing.assert_array_equal(before, after)     # inputs untouched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_backward_matches_naive(case, dtype):
    # backward does not depend on which forward kernel ran: the cache is the same
    x, W, b, stride, pad = conv_arrays(case, dtype)
    _, cache = cuda_conv_forward(x, W, b, stride, pad, "tiled")
    ref, ref_cache = naive_reference(x, W, b, stride, pad)
    dout = np.random.default_rng(1).standard_normal(ref.shape).astype(dtype)
    dout_before = dout.copy()
    grads = kc.conv_backward(dout, cache)
    for name, got, expected in zip(("dx", "dW", "db"), grads, naive.conv_backward(dout, ref_cache)):
        assert got.shape == expected.shape
        assert_close(got, expected, name)
    np.testing.assert_array_equal(dout, dout_before)


def test_tiled_forward_over_several_tiles_matches_naive():
    x, W, b, stride, pad = conv_arrays(MULTI_TILE, np.float32)
    out, _ = cuda_conv_forward(x, W, b, stride, pad, "tiled")
    spec = conv_spec(x.shape, W.shape, stride, pad, x.dtype)
    assert_close(out, naive.conv_forward(x, W, b, spec)[0], "out")


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_is_deterministic(dtype):
    x, W, b, stride, pad = conv_arrays(CONV_CASES["strided_nonsquare"], dtype, seed=7)
    runs = []
    for _ in range(2):
        out, cache = cuda_conv_forward(x, W, b, stride, pad, "tiled")
        runs.append((out, *kc.conv_backward(np.cos(out), cache)))
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)     # bit-identical, not merely close


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_pool_forward_and_backward_match_naive(case, dtype, mode):
    shape, pool_hw, stride, pad = case
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    x_before = x.copy()
    out, saved = F.pool_forward(x, *pool_hw, stride, pad, mode, backend="cuda")
    assert saved.path == "cuda"
    ref, ref_cache = F.pool_forward(x, *pool_hw, stride, pad, mode, backend="naive")
    assert_close(out, ref, "out")
    dout = rng.standard_normal(ref.shape).astype(dtype)
    assert_close(F.pool_backward(dout, saved), F.pool_backward(dout, ref_cache), "dx")
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_ties_infinities_and_nan_follow_naive(dtype):
    # Few distinct values, so most windows hold tied maxima: the first one in
    # row-major order must win, and get the whole gradient. -inf cells tie with
    # the -inf padding, and a NaN wins its windows (np.argmax's rules).
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (2, 2, 6, 5)).astype(dtype)
    x[0, 0, 0, :2] = -np.inf
    x[1, 1, 3, 2] = np.nan
    args = (3, 2, (1, 2), (1, 1), "max")
    out, saved = F.pool_forward(x, *args, backend="cuda")
    ref, ref_saved = F.pool_forward(x, *args, backend="naive")
    np.testing.assert_array_equal(out, ref)
    dout = rng.standard_normal(ref.shape).astype(dtype)
    np.testing.assert_array_equal(F.pool_backward(dout, saved), F.pool_backward(dout, ref_saved))
