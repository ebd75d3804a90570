"""Dilated, grouped and depthwise convolutions on the cuda path, forward (both
kernels) and backward, against oracles that use neither dilation nor groups:
one dense naive convolution per group with the zero-inserted filter (taps at
(fy*dh, fx*dw), zeros between), in float64; dW is the dense dW at the taps.
Shapes are tiny because the simulator runs every CUDA thread as a Python thread."""
import numpy as np
import pytest
from cuda_support import DTYPES, FORWARD_KERNELS, SIMULATOR, skip_without_cuda
from support import assert_close

from fastconv import conv_spec
from fastconv.spec import as_forward_only, without_input_grad
from fastconv.kernels import cuda as kc
from fastconv.kernels import naive

skip_without_cuda()

# (N, C, H, W), (FN, C/groups, FH, FW), stride, pad, dilation, groups
CASES = {
    "dilated": ((2, 2, 7, 6), (3, 2, 2, 3), (1, 2), (2, 1), (2, 2), 1),
    "dilation_over_stride": ((1, 2, 9, 8), (2, 2, 2, 2), (2, 2), (0, 1), (3, 2), 1),
    "grouped": ((1, 4, 5, 6), (6, 2, 3, 2), (1, 1), (1, 1), (1, 2), 2),
    "depthwise": ((2, 3, 6, 5), (6, 1, 3, 3), (2, 2), (1, 1), (1, 1), 3),
    "depthwise_dilated": ((1, 2, 7, 7), (2, 1, 3, 3), (1, 1), (2, 2), (2, 2), 2),
}
# two filter tiles (of 64) in each of two groups, a partial reduction slice
MULTI_TILE = ((1, 4, 5, 5), (132, 2, 3, 3), (1, 1), (1, 1), (2, 1), 2)


def _zero_inserted(W, dilation):
    (dh, dw), (FN, Cg, FH, FW) = dilation, W.shape
    dense = np.zeros((FN, Cg, dh * (FH - 1) + 1, dw * (FW - 1) + 1), dtype=W.dtype)
    dense[:, :, ::dh, ::dw] = W
    return dense


def oracle(x, W, b, stride, pad, dilation, groups, dout):
    """(out, dx, dW, db) from one dense float64 naive convolution per group."""
    FN, Cg = W.shape[:2]
    FNg = FN // groups
    dense = _zero_inserted(W.astype(np.float64), dilation)
    parts = []
    for g in range(groups):
        xg = np.ascontiguousarray(x[:, g * Cg:(g + 1) * Cg], dtype=np.float64)
        Wg = np.ascontiguousarray(dense[g * FNg:(g + 1) * FNg])
        spec = conv_spec(xg.shape, Wg.shape, stride, pad, np.float64)
        out, cache = naive.conv_forward(xg, Wg, b[g * FNg:(g + 1) * FNg].astype(np.float64), spec)
        dg = np.ascontiguousarray(dout[:, g * FNg:(g + 1) * FNg], dtype=np.float64)
        parts.append((out, *naive.conv_backward(dg, cache)))
    dh, dw = dilation
    return (np.concatenate([p[0] for p in parts], axis=1),
            np.concatenate([p[1] for p in parts], axis=1),
            np.concatenate([p[2] for p in parts], axis=0)[:, :, ::dh, ::dw],
            np.concatenate([p[3] for p in parts]))


def arrays(case, dtype, seed=0):
    x_shape, w_shape, stride, pad, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    W = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    spec = conv_spec(x_shape, w_shape, stride, pad, dtype, dilation=dilation, groups=groups)
    dout = rng.standard_normal(spec.out_shape).astype(dtype)
    return x, W, b, spec, dout


@pytest.mark.parametrize("kernel", FORWARD_KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_forward_matches_the_dense_per_group_oracle(case, dtype, kernel):
    x, W, b, spec, dout = arrays(case, dtype)
    assert kc.supports(spec)
    originals = [a.copy() for a in (x, W, b)]
    out, _ = kc._conv_forward(x, W, b, spec, kernel)
    want = oracle(x, W, b, *case[2:], dout)[0]
    assert out.shape == want.shape
    assert_close(out, want.astype(dtype), f"out ({kernel})")
    for before, after in zip(originals, (x, W, b)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_backward_matches_the_dense_per_group_oracle(case, dtype):
    x, W, b, spec, dout = arrays(case, dtype, seed=1)
    _, cache = kc._conv_forward(x, W, b, spec, "tiled")
    dout_before = dout.copy()
    grads = kc.conv_backward(dout, cache)
    want = oracle(x, W, b, *case[2:], dout)[1:]
    for name, got, expected in zip(("dx", "dW", "db"), grads, want):
        assert got.shape == expected.shape, name
        assert_close(got, expected.astype(dtype), name)
    np.testing.assert_array_equal(dout, dout_before)


@pytest.mark.parametrize("case", [CASES["grouped"], CASES["depthwise"]], ids=["grouped", "depthwise"])
def test_backward_without_dx_launches_no_dx_kernel(case, monkeypatch):
    x, W, b, spec, dout = arrays(case, np.float64, seed=4)
    _, cache = kc._conv_forward(x, W, b, spec, "tiled")
    full = kc.conv_backward(dout, cache)
    _, cache = kc._conv_forward(x, W, b, without_input_grad(spec), "tiled")
    kernels = dict(kc._kernels(np.dtype(np.float64)))
    kernels["conv_dx"] = None           # launching it would raise a TypeError
    monkeypatch.setattr(kc, "_kernels", lambda dtype: kernels)
    dx, dW, db = kc.conv_backward(dout, cache)
    assert dx is None
    np.testing.assert_array_equal(dW, full[1])
    np.testing.assert_array_equal(db, full[2])
    assert_close(dW, oracle(x, W, b, *case[2:], dout)[2], "dW")


@pytest.mark.parametrize("kernel", FORWARD_KERNELS)
def test_forward_only_keeps_no_cache(kernel):
    # fastconv.conv2d's spec: nothing is kept (or copied on the device) for a backward
    x, W, b, spec, _ = arrays(CASES["grouped"], np.float32, seed=6)
    out, cache = kc._conv_forward(x, W, b, as_forward_only(spec), kernel)
    assert cache is None
    out_kept, cache_kept = kc._conv_forward(x, W, b, spec, kernel)
    assert cache_kept is not None
    np.testing.assert_array_equal(out, out_kept)


def test_tiled_forward_keeps_filter_tiles_within_a_group():
    x, W, b, spec, dout = arrays(MULTI_TILE, np.float32, seed=2)
    assert kc.plan(spec)["blocks"] == (1, 4)          # 2 groups x 2 tiles of 64 filters
    out, _ = kc._conv_forward(x, W, b, spec, "tiled")
    assert_close(out, oracle(x, W, b, *MULTI_TILE[2:], dout)[0].astype(np.float32), "out")


def test_grouped_results_are_deterministic():
    x, W, b, spec, _ = arrays(CASES["grouped"], np.float32, seed=3)
    runs = []
    for _ in range(2):
        out, cache = kc._conv_forward(x, W, b, spec, "tiled")
        runs.append((out, *kc.conv_backward(np.cos(out), cache)))
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)


@pytest.mark.skipif(SIMULATOR, reason="the simulator compiles nothing")
def test_dilated_grouped_float32_kernels_have_no_float64_instructions():
    x, W, b, spec, dout = arrays(CASES["grouped"], np.float32)
    for kernel in FORWARD_KERNELS:
        out, cache = kc._conv_forward(x, W, b, spec, kernel)
    kc.conv_backward(dout, cache)
    for name in ("conv_forward_tiled", "conv_forward_simple", "conv_dx", "conv_dw"):
        for signature, code in kc._kernels(np.float32)[name].inspect_asm().items():
            assert ".f64" not in code, f"{name}{signature} computes in float64"
