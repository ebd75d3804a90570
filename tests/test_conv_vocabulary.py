"""Dilation, groups and the padding forms ("valid", "same", unequal sides) of convolution.

Oracles: worked examples computed by hand here, identities that rebuild the new
arguments from plain convolutions (a dilated filter is a larger filter with
zeros between its taps; groups are separate convolutions side by side; unequal
padding is np.pad then no padding), the naive path, central finite
differences, and (when installed) PyTorch.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import Convolution, backends, conv2d, conv_output_size, conv_spec, explain
from fastconv import functional as F
from fastconv import tuner
from fastconv.geometry import check_padding, resolve_padding, same_padding
from fastconv.kernels import im2col as im2col_path
from gradcheck import check_layer_gradients
from support import FAST_PATHS, PATHS, assert_close, skip_unless_supported

MAX_REL_ERROR = 1e-6
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def oracle(x, W, b, stride, pad, dilation, groups, dout):
    """(out, dx, dW, db) of the naive path in float64, cast back to x's dtype."""
    x64, W64, b64, d64 = (np.asarray(a, dtype=np.float64) for a in (x, W, b, dout))
    out, saved = F.conv_forward(x64, W64, b64, stride, pad, backend="naive",
                                dilation=dilation, groups=groups)
    return [a.astype(x.dtype) for a in (out, *F.conv_backward(d64, saved))]


def run(x, W, b, stride, pad, dilation, groups, path, dout=None):
    """(out, dx, dW, db) on ``path`` through the public entry points, and the dout used."""
    out, saved = F.conv_forward(x, W, b, stride, pad, backend=path, dilation=dilation,
                                groups=groups)
    if dout is None:
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)
    return (out, *F.conv_backward(dout, saved)), dout


def lowered(x_shape, w_shape, stride=1, pad=0, dilation=1, groups=1, dtype="float64"):
    return F.lowered_conv_spec(x_shape, w_shape, stride, pad, dtype, "floor", dilation, groups)[0]


def arrays(x_shape, w_shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype),
            rng.standard_normal(w_shape[0]).astype(dtype))


def spread(W, dilation):
    """W: (FN, C, FH, FW) -> the equivalent undilated filter, zeros between the taps."""
    dh, dw = dilation
    FN, C, FH, FW = W.shape
    big = np.zeros((FN, C, dh * (FH - 1) + 1, dw * (FW - 1) + 1), dtype=W.dtype)
    big[:, :, ::dh, ::dw] = W
    return big


# ------------------------------------------------------------------- geometry

@pytest.mark.parametrize("size, f, s, p, d, expected", [
    (7, 3, 1, 0, 2, 3),          # spans 5 cells: 7 - 5 + 1
    (5, 2, 1, 0, 2, 3),          # the worked example below
    (28, 5, 3, 2, 2, 8),         # floor((28 + 4 - 9) / 3) + 1
    (9, 3, 2, 2, 3, 4),          # (9 + 4 - 7) / 2 + 1 = 3 + 1
    (6, 1, 1, 0, 4, 6),          # a 1-tap filter spans one cell, whatever the dilation
])
def test_output_size_with_dilation(size, f, s, p, d, expected):
    assert conv_output_size(size, f, s, p, dilation=d) == expected
    assert conv_output_size(size, d * (f - 1) + 1, s, p) == expected


def test_output_size_dilation_errors_name_it():
    with pytest.raises(ValueError, match=r"filter_size 3 with dilation 3 spans 3\*\(3-1\)\+1 = 7 "
                                         r"cells, more than the padded input 5 \+ 2\*0 = 5"):
        conv_output_size(5, 3, dilation=3)
    with pytest.raises(ValueError, match=r"dilation must be >= 1, got 0"):
        conv_output_size(5, 3, dilation=0)
    with pytest.raises(TypeError, match=r"dilation must be an int"):
        conv_output_size(5, 3, dilation=1.5)
    with pytest.raises(ValueError, match=r"not an integer"):
        conv_output_size(8, 3, stride=2, dilation=2, rounding="exact")
    assert conv_output_size(9, 3, stride=2, dilation=2, rounding="exact") == 3


@pytest.mark.parametrize("size, f, s, d, expected", [
    (7, 3, 1, 1, (1, 1)),
    (7, 4, 1, 1, (1, 2)),        # even filter: the odd zero goes after (PyTorch's rule)
    (7, 2, 1, 1, (0, 1)),
    (6, 3, 1, 2, (2, 2)),        # spans 5 cells
    (7, 3, 2, 1, (1, 1)),        # out 4: (4-1)*2 + 3 - 7 = 2
    (8, 3, 2, 1, (0, 1)),        # out 4: (4-1)*2 + 3 - 8 = 1
    (5, 1, 2, 1, (0, 0)),        # out 3 needs no padding
    (6, 1, 4, 1, (0, 0)),        # the total never goes negative
])
def test_same_padding_worked_cases(size, f, s, d, expected):
    assert same_padding(size, f, s, d) == expected


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("fh, fw", [(3, 3), (2, 2), (4, 1), (5, 2)])
@pytest.mark.parametrize("dilation", [1, 2])
def test_same_keeps_ceil_size(stride, fh, fw, dilation):
    x, W, b = arrays((1, 2, 9, 8), (3, 2, fh, fw))
    out = conv2d(x, W, b, stride, "same", dilation, backend="naive")
    assert out.shape == (1, 3, math.ceil(9 / stride), math.ceil(8 / stride))


def test_resolve_padding_forms():
    assert resolve_padding(1, (5, 5), (3, 3)) == ((1, 1), (1, 1))
    assert resolve_padding((2, 0), (5, 5), (3, 3)) == ((2, 2), (0, 0))
    assert resolve_padding(((0, 1), (2, 3)), (5, 5), (3, 3)) == ((0, 1), (2, 3))
    assert resolve_padding([[0, 1], [2, 3]], (5, 5), (3, 3)) == ((0, 1), (2, 3))
    assert resolve_padding("valid", (5, 5), (3, 3)) == ((0, 0), (0, 0))
    assert resolve_padding("same", (5, 6), (4, 3), 1, (1, 2)) == ((1, 2), (2, 2))


# ---------------------------------------------------------- worked examples

def test_dilated_worked_example():
    # out[i, j] = x[i, j] + x[i, j+2] + x[i+2, j] + x[i+2, j+2] with x[i, j] = 5i + j
    # = 4*(5i + j) + 2 + 10 + 12 = 20i + 4j + 24
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    expected = np.array([[24, 28, 32], [44, 48, 52], [64, 68, 72]], dtype=np.float64)
    for path in PATHS:
        if backends.get_path(path).supports(lowered(x.shape, (1, 1, 2, 2), dilation=2)):
            out = conv2d(x, np.ones((1, 1, 2, 2)), dilation=2, backend=path)
            np.testing.assert_array_equal(out[0, 0], expected, err_msg=path)


def test_grouped_worked_example():
    # channel 0 holds ones and channel 1 twos; filter 0 (3) sees channel 0 only, filter 1 (5)
    # channel 1 only: 3*1 + 0.5 and 5*2 - 1
    x = np.stack([np.ones((2, 2)), 2 * np.ones((2, 2))])[None]
    W = np.array([3.0, 5.0]).reshape(2, 1, 1, 1)
    for path in PATHS:
        if backends.get_path(path).supports(lowered(x.shape, W.shape, groups=2)):
            out = conv2d(x, W, np.array([0.5, -1.0]), groups=2, backend=path)
            np.testing.assert_array_equal(out[0, 0], np.full((2, 2), 3.5), err_msg=path)
            np.testing.assert_array_equal(out[0, 1], np.full((2, 2), 9.0), err_msg=path)


def test_asymmetric_pad_worked_example():
    # one zero row on top only, a 2x1 filter of ones: out[0] = x[0], out[i] = x[i-1] + x[i]
    x = np.array([[1.0, 2.0], [3.0, 4.0]])[None, None]
    out = conv2d(x, np.ones((1, 1, 2, 1)), pad=((1, 0), (0, 0)), backend="naive")
    np.testing.assert_array_equal(out[0, 0], [[1, 2], [4, 6]])


# ----------------------------------------------------- identities, every path

DILATION_CASES = [
    ((2, 3, 9, 10), (4, 3, 3, 3), 1, 0, 2),
    ((1, 2, 11, 9), (3, 2, 3, 2), (2, 1), (1, 2), (2, 3)),
    ((2, 2, 7, 7), (2, 2, 2, 2), 1, "same", 3),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, pad, dilation", DILATION_CASES)
def test_dilated_equals_spread_filter(path, x_shape, w_shape, stride, pad, dilation):
    skip_unless_supported(path, lowered(x_shape, w_shape, stride, pad, dilation))
    x, W, b = arrays(x_shape, w_shape)
    d = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    big = spread(W, d)
    (out, dx, dW, db), dout = run(x, W, b, stride, pad, dilation, 1, path)
    if pad == "same":      # the spread filter spans the same cells, so needs the same zeros
        pad = resolve_padding("same", x_shape[2:], W.shape[2:], stride, dilation)
    # the reference runs undilated on naive
    (ref_out, ref_dx, ref_dW, ref_db), _ = run(x, big, b, stride, pad, 1, 1, "naive", dout)
    assert_close(out, ref_out, "out")
    assert_close(dx, ref_dx, "dx")
    assert_close(dW, ref_dW[:, :, ::d[0], ::d[1]], "dW")
    assert_close(db, ref_db, "db")


GROUP_CASES = [
    ((2, 4, 6, 7), (6, 2, 3, 3), 1, 1, 1, 2),
    ((1, 6, 8, 8), (3, 2, 3, 2), (2, 1), 0, 1, 3),
    ((2, 6, 9, 9), (6, 3, 3, 3), 1, "same", 2, 2),
    ((2, 4, 5, 5), (8, 2, 1, 1), 1, 0, 1, 2),            # grouped 1x1
    ((1, 4, 20, 20), (4, 2, 1, 1), 1, 0, 1, 2),          # grouped 1x1, wide maps
]


@pytest.mark.parametrize("x_shape, w_shape, stride, pad, dilation, groups", GROUP_CASES)
def test_groups_equal_separate_convolutions(path, x_shape, w_shape, stride, pad, dilation,
                                            groups):
    skip_unless_supported(path, lowered(x_shape, w_shape, stride, pad, dilation, groups))
    x, W, b = arrays(x_shape, w_shape)
    (out, dx, dW, db), dout = run(x, W, b, stride, pad, dilation, groups, path)
    Cg, FNg = x_shape[1] // groups, w_shape[0] // groups
    parts = []
    for g in range(groups):
        c, f = slice(g * Cg, (g + 1) * Cg), slice(g * FNg, (g + 1) * FNg)
        parts.append(run(np.ascontiguousarray(x[:, c]), np.ascontiguousarray(W[f]), b[f], stride,
                         pad, dilation, 1, "naive", np.ascontiguousarray(dout[:, f]))[0])
    assert_close(out, np.concatenate([p[0] for p in parts], axis=1), "out")
    assert_close(dx, np.concatenate([p[1] for p in parts], axis=1), "dx")
    assert_close(dW, np.concatenate([p[2] for p in parts], axis=0), "dW")
    assert_close(db, np.concatenate([p[3] for p in parts], axis=0), "db")


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_is_one_filter_per_channel(path, multiplier):
    C = 3
    x_shape, w_shape = (2, C, 7, 6), (C * multiplier, 1, 3, 3)
    skip_unless_supported(path, lowered(x_shape, w_shape, 1, 1, 1, C))
    x, W, b = arrays(x_shape, w_shape)
    out = conv2d(x, W, b, 1, 1, groups=C, backend=path)
    for f in range(C * multiplier):
        c = f // multiplier
        alone = conv2d(x[:, c:c + 1], W[f:f + 1], b[f:f + 1], 1, 1, backend="naive")
        assert_close(out[:, f:f + 1], alone, f"filter {f}")


ASYM_PADS = [((0, 1), (2, 0)), ((3, 1), (1, 1)), ((0, 0), (0, 2)), [[1, 2], [2, 1]]]


@pytest.mark.parametrize("pad", ASYM_PADS)
@pytest.mark.parametrize("stride, dilation, groups", [(1, 1, 1), ((2, 1), 2, 2)])
def test_unequal_pad_equals_np_pad(path, pad, stride, dilation, groups):
    x_shape, w_shape = (2, 4, 6, 7), (4, 4 // groups, 3, 2)
    skip_unless_supported(path, lowered(x_shape, w_shape, stride, pad, dilation, groups))
    x, W, b = arrays(x_shape, w_shape)
    (top, bottom), (left, right) = pad
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    (out, dx, dW, db), dout = run(x, W, b, stride, pad, dilation, groups, path)
    (r_out, r_dx, r_dW, r_db), _ = run(xp, W, b, stride, 0, dilation, groups, "naive", dout)
    assert dx.shape == x.shape
    assert_close(out, r_out, "out")
    assert_close(dx, r_dx[:, :, top:top + 6, left:left + 7], "dx")
    assert_close(dW, r_dW, "dW")
    assert_close(db, r_db, "db")


def test_valid_is_no_padding(path):
    x, W, b = arrays((2, 2, 6, 5), (3, 2, 3, 2))
    skip_unless_supported(path, lowered(x.shape, W.shape))
    np.testing.assert_array_equal(conv2d(x, W, b, pad="valid", backend=path),
                                  conv2d(x, W, b, pad=0, backend=path))


@pytest.mark.parametrize("pad", [1, "same", "valid", ((0, 2), (1, 0))])
def test_flip_works_with_every_padding(path, pad):
    x, W, b = arrays((1, 2, 8, 9), (2, 2, 3, 4))
    skip_unless_supported(path, lowered(x.shape, W.shape, 1, pad, 2))
    flipped = np.ascontiguousarray(W[:, :, ::-1, ::-1])
    assert_close(conv2d(x, W, b, 1, pad, 2, flip=True, backend=path),
                 conv2d(x, flipped, b, 1, pad, 2, backend="naive"))


# ------------------------------------------- every path against the naive oracle

PATH_CASES = [
    # x_shape, w_shape, stride, pad, dilation, groups
    ((2, 4, 10, 9), (6, 2, 3, 3), 1, 2, 2, 2),
    ((3, 6, 8, 11), (6, 1, 3, 3), (1, 2), "same", 1, 6),
    ((1, 4, 12, 12), (4, 4, 3, 3), 1, 1, (1, 3), 1),
    ((2, 3, 9, 9), (3, 3, 3, 3), 1, 1, 1, 1),                 # dense 3x3 (winograd's kind)
    ((2, 3, 9, 9), (3, 3, 3, 3), 1, ((1, 0), (0, 1)), 1, 1),  # dense 3x3, unequal pad
    ((2, 4, 7, 7), (4, 4, 3, 3), 1, "same", 1, 1),
    ((2, 4, 7, 8), (2, 2, 4, 2), 2, "same", 2, 2),
    ((1, 2, 5, 5), (2, 2, 2, 2), 3, "valid", 2, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, stride, pad, dilation, groups", PATH_CASES)
def test_path_matches_naive(path, dtype, x_shape, w_shape, stride, pad, dilation, groups):
    skip_unless_supported(path, lowered(x_shape, w_shape, stride, pad, dilation, groups, dtype))
    x, W, b = arrays(x_shape, w_shape, dtype)
    actual, dout = run(x, W, b, stride, pad, dilation, groups, path)
    expected = oracle(x, W, b, stride, pad, dilation, groups, dout)
    for name, a, e in zip(("out", "dx", "dW", "db"), actual, expected):
        assert_close(a, e, name)


@pytest.mark.parametrize("x_shape, w_shape, dilation, groups", [
    ((2, 4, 9, 9), (4, 2, 3, 3), 2, 2),
    ((1, 3, 8, 8), (3, 1, 3, 3), 1, 3),
])
def test_non_finite_values_propagate_as_naive(path, x_shape, w_shape, dilation, groups):
    skip_unless_supported(path, lowered(x_shape, w_shape, 1, 1, dilation, groups))
    x, W, b = arrays(x_shape, w_shape)
    x[0, 1, 3, 4] = np.nan
    x[-1, -1, 0, 0] = np.inf
    actual, dout = run(x, W, b, 1, 1, dilation, groups, path)
    expected = oracle(x, W, b, 1, 1, dilation, groups, dout)
    for name, a, e in zip(("out", "dx", "dW", "db"), actual, expected):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=name)
        assert_close(np.nan_to_num(a), np.nan_to_num(e), name)


@st.composite
def vocabulary_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, fng = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    fh, fw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 12))
    pad = draw(st.one_of(
        st.just("same"), st.just("valid"), st.integers(0, 3),
        st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                  st.tuples(st.integers(0, 3), st.integers(0, 3)))))
    return dict(x_shape=(draw(st.integers(1, 3)), cg * groups, h, w),
                w_shape=(fng * groups, cg, fh, fw), stride=stride, pad=pad, dilation=(dh, dw),
                groups=groups, dtype=draw(st.sampled_from([np.float32, np.float64])),
                seed=draw(st.integers(0, 2**32 - 1)))


@pytest.mark.parametrize("path", FAST_PATHS)
@SETTINGS
@given(case=vocabulary_cases())
def test_random_vocabulary_matches_naive(path, case):
    args = (case["stride"], case["pad"], case["dilation"], case["groups"])
    try:
        spec = lowered(case["x_shape"], case["w_shape"], *args, case["dtype"])
    except ValueError as err:
        # the drawn filter does not fit: every path must refuse it alike, before running
        assert "does not fit" in str(err)
        return
    if not backends.get_path(path).supports(spec):
        return      # a path of narrower scope; its own tests cover what it runs
    x, W, b = arrays(case["x_shape"], case["w_shape"], case["dtype"], case["seed"])
    actual, dout = run(x, W, b, *args, path)
    expected = oracle(x, W, b, *args, dout)
    for name, a, e in zip(("out", "dx", "dW", "db"), actual, expected):
        assert_close(a, e, name)


# ------------------------------------------------------------ gradient checks

@pytest.mark.parametrize("x_shape, w_shape, stride, pad, dilation, groups", [
    ((2, 2, 7, 6), (2, 2, 3, 2), 1, 1, 2, 1),
    ((1, 4, 6, 6), (4, 2, 3, 3), (2, 1), 0, 1, 2),
    ((1, 3, 6, 7), (3, 1, 3, 3), 1, "same", (2, 1), 3),
    ((2, 2, 5, 6), (3, 2, 2, 3), 2, "same", 1, 1),
    ((1, 2, 5, 5), (2, 2, 3, 2), 1, ((2, 0), (1, 3)), 1, 1),
    ((1, 4, 6, 5), (2, 2, 2, 2), (1, 2), ((0, 1), (2, 1)), 2, 2),
])
def test_gradients_by_finite_differences(path, x_shape, w_shape, stride, pad, dilation, groups):
    skip_unless_supported(path, lowered(x_shape, w_shape, stride, pad, dilation, groups))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    layer = Convolution(rng.standard_normal(w_shape), rng.standard_normal(w_shape[0]),
                        stride=stride, pad=pad, dilation=dilation, groups=groups, backend=path)
    assert max(check_layer_gradients(layer, x)) < MAX_REL_ERROR


# ------------------------------------------------------- dtypes and layouts

NEW_ARGS = dict(stride=1, pad=((1, 0), (0, 2)), dilation=2, groups=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(path, dtype):
    x, W, b = arrays((2, 4, 7, 7), (4, 2, 3, 3), dtype)
    skip_unless_supported(path, lowered(x.shape, W.shape, **NEW_ARGS, dtype=dtype))
    out, saved = F.conv_forward(x, W, b, backend=path, **NEW_ARGS)
    dx, dW, db = F.conv_backward(np.ones_like(out), saved)
    assert {a.dtype for a in (out, dx, dW, db)} == {np.dtype(dtype)}


def test_unbatched_and_float16_with_new_arguments(path):
    x, W, b = arrays((4, 7, 7), (4, 2, 3, 3), np.float32)
    skip_unless_supported(path, lowered((1, *x.shape), W.shape, **NEW_ARGS, dtype="float32"))
    batched = conv2d(x[None], W, b, backend="naive", **NEW_ARGS)
    one = conv2d(x, W, b, backend=path, **NEW_ARGS)
    assert one.shape == batched.shape[1:]
    assert_close(one, batched[0])
    x16, W16, b16 = (a.astype(np.float16) for a in (x, W, b))
    out, saved = F.conv_forward(x16, W16, b16, backend=path, **NEW_ARGS)
    dx, dW, db = F.conv_backward(np.ones_like(out), saved)
    assert out.dtype == dx.dtype == dW.dtype == db.dtype == np.float16
    assert out.shape == batched.shape[1:] and dx.shape == x.shape
    ref = conv2d(x16.astype(np.float32), W16.astype(np.float32), b16.astype(np.float32),
                 backend="naive", **NEW_ARGS)
    np.testing.assert_allclose(out.astype(np.float32), ref, rtol=1e-2, atol=1e-2)


def test_mixed_dtypes_promote_with_new_arguments():
    x, W, b = arrays((1, 4, 7, 7), (4, 2, 3, 3), np.float32)
    out = conv2d(x, W.astype(np.float64), b.astype(np.float64), backend="im2col", **NEW_ARGS)
    assert out.dtype == np.float64
    assert_close(out, conv2d(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64),
                             backend="naive", **NEW_ARGS))


def test_inputs_are_not_modified():
    x, W, b = arrays((2, 4, 6, 6), (4, 2, 3, 3))
    copies = [a.copy() for a in (x, W, b)]
    for path in PATHS:
        if backends.get_path(path).supports(lowered(x.shape, W.shape, **NEW_ARGS)):
            out, saved = F.conv_forward(x, W, b, backend=path, **NEW_ARGS)
            dout = np.ones_like(out)
            F.conv_backward(dout, saved)
            np.testing.assert_array_equal(dout, 1.0)
    for a, c in zip((x, W, b), copies):
        np.testing.assert_array_equal(a, c)


def test_equal_padding_runs_x_as_is_and_unequal_pads_once():
    x, W, b = arrays((1, 2, 6, 6), (2, 2, 3, 3))
    for pad in (1, (1, 2), ((1, 1), (2, 2)), "same", "valid"):
        _, saved = F.conv_forward(x, W, b, 1, pad, backend="naive")
        assert saved.excess is None and saved.spec.x_shape == x.shape, pad
    _, saved = F.conv_forward(x, W, b, 1, ((0, 2), (3, 1)), backend="naive")
    assert saved.excess == ((0, 2), (2, 0))
    assert saved.spec.pad == (0, 1) and saved.spec.x_shape == (1, 2, 8, 8)
    # an even filter under "same" pads unequally: PyTorch's one extra zero at the end
    _, saved = F.conv_forward(x, np.ones((2, 2, 2, 4)), b, 1, "same", backend="naive")
    assert saved.excess == ((0, 1), (0, 1)) and saved.spec.pad == (0, 1)


# ----------------------------------------------------------- layers and tools

def test_layer_with_new_arguments_matches_functional(path):
    x, W, b = arrays((2, 4, 7, 7), (4, 2, 3, 3))
    skip_unless_supported(path, lowered(x.shape, W.shape, 2, "same", 2, 2))
    layer = Convolution(W, b, stride=2, pad="same", dilation=2, groups=2, backend=path)
    out = layer.forward(x)
    assert out.shape == (2, 4, 4, 4)
    assert_close(out, conv2d(x, W, b, 2, "same", 2, 2, backend="naive"))
    dx = layer.backward(np.ones_like(out))
    assert dx.shape == x.shape and layer.dW.shape == W.shape


def test_from_shape_with_groups():
    layer = Convolution.from_shape(6, 4, 3, pad="same", dilation=2, groups=2, seed=3,
                                   dtype=np.float64)
    assert layer.W.shape == (4, 3, 3, 3) and layer.groups == 2 and layer.dilation == (2, 2)
    std = np.sqrt(2 / (6 // 2 * 3 * 3))          # he, fan-in C // groups * KH * KW = 27
    expected = std * np.random.default_rng(3).standard_normal((4, 3, 3, 3))
    np.testing.assert_array_equal(layer.W, expected)
    assert layer.forward(np.ones((1, 6, 5, 5))).shape == (1, 4, 5, 5)


def test_tuner_keys_keep_dilation_and_groups_apart():
    plain = tuner.spec_key(conv_spec((1, 4, 8, 8), (4, 4, 3, 3)))
    dilated = tuner.spec_key(conv_spec((1, 4, 8, 8), (4, 4, 3, 3), dilation=2))
    grouped = tuner.spec_key(conv_spec((1, 4, 8, 8), (4, 2, 3, 3), groups=2))
    grouped4 = tuner.spec_key(conv_spec((1, 4, 8, 8), (4, 1, 3, 3), groups=4))
    assert "dilation" not in plain and "groups" not in plain
    assert dilated["dilation"] == [2, 2] and grouped["groups"] == 2
    keys = [plain, dilated, grouped, grouped4]
    assert len({tuner._key_file(k) for k in keys}) == 4
    # groups 2 with W (4, 2, 3, 3) on 4 channels, and groups 1 with W (4, 2, ...) on 2
    # channels, must not share a key either
    other = tuner.spec_key(conv_spec((1, 2, 8, 8), (4, 2, 3, 3)))
    assert tuner._key_file(other) != tuner._key_file(grouped)


def test_auto_runs_dilated_and_grouped(fresh_cache):
    x, W, b = arrays((2, 4, 8, 8), (4, 2, 3, 3))
    out, saved = F.conv_forward(x, W, b, 1, "same", dilation=2, groups=2)
    assert backends.get_path(saved.path).supports(saved.spec)
    assert_close(out, conv2d(x, W, b, 1, "same", 2, 2, backend="naive"))


def test_explain_shows_dilation_and_groups():
    e = explain((2, 8, 16, 16), (8, 2, 3, 3), 1, "same", dilation=2, groups=4)
    text = str(e)
    assert "dilation=(2, 2)" in text and "groups=4" in text
    assert e.out_shape == (2, 8, 16, 16) and e.pad == (2, 2)
    assert e.im2col_shape == (2 * 16 * 16, 8 * 3 * 3)      # every channel's taps
    assert e.flops_forward == 2 * 2 * 8 * (2 * 3 * 3) * 16 * 16


def test_im2col_plan_counts_grouped_products():
    spec = conv_spec((2, 6, 9, 9), (6, 2, 3, 3), dilation=2, groups=3)
    plan = im2col_path.plan(spec)
    assert plan["matrix_shape"] == (6 * 9 + 1, 2 * 5 * 5)
    assert plan["products_per_piece"] == 3 and "per group" in plan["method"]


def test_winograd_declines_dilation_and_groups_and_the_cpu_paths_run_them():
    dilated = conv_spec((1, 2, 8, 8), (2, 2, 3, 3), 1, 1, dilation=2)
    grouped = conv_spec((1, 2, 8, 8), (2, 1, 3, 3), 1, 1, groups=2)
    module = backends.get_path("winograd")
    assert not module.supports(dilated) and not module.supports(grouped)
    for name in ("naive", "im2col", "direct"):
        assert backends.get_path(name).supports(dilated)
        assert backends.get_path(name).supports(grouped)
    x = np.ones((1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"backend 'winograd' runs .* cannot run .*dilation=\(2, 2\)"):
        conv2d(x, np.ones((2, 2, 3, 3)), pad=1, dilation=2, backend="winograd")


def test_public_im2col_with_dilation():
    x, _, _ = arrays((2, 3, 7, 6), (1, 1, 1, 1))
    col = fastconv.im2col(x, 3, 2, stride=(2, 1), pad=1, dilation=(2, 3))
    spec = conv_spec(x.shape, (1, 3, 3, 2), (2, 1), 1, dilation=(2, 3))
    OH, OW = spec.out_hw
    assert col.shape == (2 * OH * OW, 3 * 3 * 2)
    # row (n, i, j) holds padded x at (i*2 + fy*2, j + fx*3) for every channel
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, i, j = 1, 2, 3
    row = col[(n * OH + i) * OW + j].reshape(3, 3, 2)
    np.testing.assert_array_equal(row, xp[n, :, i * 2:i * 2 + 5:2, j:j + 4:3])
    # col2im is im2col's adjoint: <im2col(x), c> == <x, col2im(c)>
    c = np.random.default_rng(2).standard_normal(col.shape)
    back = fastconv.col2im(c, x.shape, 3, 2, stride=(2, 1), pad=1, dilation=(2, 3))
    assert np.isclose(np.sum(col * c), np.sum(x * back), rtol=1e-12)


# ------------------------------------------------------------------ validation

x4, W_dense = np.ones((2, 4, 6, 6)), np.ones((6, 4, 3, 3))


@pytest.mark.parametrize("kwargs, W, error, pattern", [
    (dict(dilation=0), W_dense, ValueError, r"dilation must be >= 1, got \(0, 0\)"),
    (dict(dilation=(1, -2)), W_dense, ValueError, r"dilation must be >= 1, got \(1, -2\)"),
    (dict(dilation=1.5), W_dense, TypeError, r"dilation must be an int"),
    (dict(dilation=(1, 2, 3)), W_dense, ValueError, r"dilation must be an int or an \(h, w\) pair"),
    (dict(groups=0), W_dense, ValueError, r"groups must be >= 1, got 0"),
    (dict(groups=2.0), W_dense, TypeError, r"groups must be an int"),
    (dict(groups=3), np.ones((6, 1, 3, 3)), ValueError,
     r"groups=3 must divide the input channels C=4 \(x.shape=\(2, 4, 6, 6\), W.shape=\(6, 1, 3, 3\)\)"),
    (dict(groups=2), np.ones((5, 2, 3, 3)), ValueError,
     r"groups=2 must divide the number of filters FN=5 \(W.shape=\(5, 2, 3, 3\)"),
    (dict(groups=2), W_dense, ValueError,
     r"x has C=4 channels \(x.shape=\(2, 4, 6, 6\)\) but W.shape=\(6, 4, 3, 3\) with groups=2 "
     r"expects C = W.shape\[1\]\*groups = 8"),
    (dict(dilation=3), W_dense, ValueError,
     r"W's filter \(3, 3\) does not fit input \(H, W\)=\(6, 6\) with stride=\(1, 1\), "
     r"pad=\(0, 0\), dilation=\(3, 3\) along the height: .*spans 3\*\(3-1\)\+1 = 7 cells"),
    (dict(pad="full"), W_dense, ValueError, r"pad must be .*'valid' or 'same'; got the string 'full'"),
    (dict(pad="SAME"), W_dense, ValueError, r"got the string 'SAME'"),
    (dict(pad=((1, 2), 3)), W_dense, ValueError, r"pad must be \(\(top, bottom\), \(left, right\)\)"),
    (dict(pad=((1, 2), (0, 1, 2))), W_dense, ValueError, r"pad must be \(\(top, bottom\), \(left, right\)\)"),
    (dict(pad=((1, -1), (0, 0))), W_dense, ValueError,
     r"pad must be >= 0 on every side, got \(\(1, -1\), \(0, 0\)\)"),
    (dict(pad=((1, 0.5), (0, 0))), W_dense, TypeError, r"pad must be an int"),
    (dict(pad=-1), W_dense, ValueError, r"pad must be >= 0, got \(-1, -1\)"),
    (dict(pad=(1, 0, 1, 0)), W_dense, ValueError,
     r"pad must be an int or an \(h, w\) pair, .*'valid' or 'same'; got \(1, 0, 1, 0\)"),
    (dict(pad=1.0), W_dense, TypeError, r"pad must be an int"),
    (dict(pad="same", stride=0), W_dense, ValueError, r"stride must be >= 1"),
    (dict(pad="same", dilation=0), W_dense, ValueError, r"dilation must be >= 1"),
    (dict(pad=((0, 0), (0, 1)), dilation=4), W_dense, ValueError,
     r"does not fit .*x.shape=\(2, 4, 6, 6\) with pad \(\(top, bottom\), \(left, right\)\)="
     r"\(\(0, 0\), \(0, 1\)\) runs as an input padded to \(H, W\)=\(6, 7\)"),
])
def test_bad_arguments_are_refused_before_any_kernel(monkeypatch, kwargs, W, error, pattern):
    def no_kernel(*args, **kw):
        raise AssertionError("a kernel ran on bad input")

    for name in backends.PATHS:
        if name != "cuda":
            monkeypatch.setattr(backends.get_path(name), "conv_forward", no_kernel)
    with pytest.raises(error, match=pattern):
        conv2d(x4, W, **kwargs)
    for name in ("naive", "im2col"):
        with pytest.raises(error, match=pattern):
            conv2d(x4, W, backend=name, **kwargs)


@pytest.mark.parametrize("make, error, pattern", [
    (lambda: Convolution(W_dense, dilation=0), ValueError, r"dilation must be >= 1"),
    (lambda: Convolution(W_dense, dilation="2"), TypeError, r"dilation must be an int"),
    (lambda: Convolution(W_dense, groups=0), ValueError, r"groups must be >= 1, got 0"),
    (lambda: Convolution(W_dense, groups=4), ValueError,
     r"groups=4 must divide the number of filters FN=6 \(W.shape=\(6, 4, 3, 3\)\)"),
    (lambda: Convolution(W_dense, pad="full"), ValueError, r"got the string 'full'"),
    (lambda: Convolution(W_dense, pad=((1,), (1, 1))), ValueError, r"pad must be \(\(top, bottom\)"),
    (lambda: Convolution.from_shape(6, 4, 3, groups=4), ValueError,
     r"groups must be an int >= 1 that divides in_channels=6 and out_channels=4, got 4"),
    (lambda: Convolution.from_shape(6, 4, 3, groups=0), ValueError, r"groups must be an int >= 1"),
])
def test_layer_refuses_bad_arguments_when_made(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_layer_group_mismatch_named_at_forward():
    layer = Convolution(np.ones((4, 2, 3, 3)), groups=2, backend="naive")
    with pytest.raises(ValueError, match=r"x has C=6 channels .* groups=2 expects C = .* = 4"):
        layer.forward(np.ones((1, 6, 5, 5)))


def test_check_padding_normal_forms():
    assert check_padding(2) == (2, 2)
    assert check_padding([1, 0]) == (1, 0)
    assert check_padding([[1, 0], [0, 2]]) == ((1, 0), (0, 2))
    assert check_padding("same") == "same"


# ------------------------------------------------------------------ PyTorch

@pytest.mark.parametrize("x_shape, w_shape, stride, pad, dilation, groups", [
    ((2, 4, 9, 8), (6, 2, 3, 3), (1, 2), 1, (2, 1), 2),
    ((1, 3, 7, 7), (3, 1, 4, 4), 1, "same", 2, 3),
    ((2, 2, 8, 8), (2, 2, 3, 2), 1, "valid", 3, 1),
])
def test_against_torch(path, x_shape, w_shape, stride, pad, dilation, groups):
    torch = pytest.importorskip("torch")
    skip_unless_supported(path, lowered(x_shape, w_shape, stride, pad, dilation, groups))
    x, W, b = arrays(x_shape, w_shape)
    ours = conv2d(x, W, b, stride, pad, dilation, groups, backend=path)
    theirs = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(W),
                                        torch.from_numpy(b), stride=stride, padding=pad,
                                        dilation=dilation, groups=groups).numpy()
    assert_close(ours, theirs)


def test_warmup_runs_a_network_with_the_new_arguments():
    class Net:
        dtype = np.float32

        def __init__(self):
            W = np.ones((4, 2, 3, 3), np.float32)
            self.layers = {
                "Conv1": Convolution(W, pad=((0, 1), (1, 0)), dilation=2, groups=2,
                                     backend="im2col"),
                "Affine1": fastconv.Affine(np.ones((4 * 3 * 3, 2), np.float32),
                                           np.zeros(2, np.float32)),
            }

    report = fastconv.warmup(Net(), input_shape=(4, 6, 6))
    assert report.runs == [("Conv1", "conv", "im2col")]


@pytest.mark.skipif(not backends.cuda_present(), reason="needs a GPU or NUMBA_ENABLE_CUDASIM=1")
def test_device_arrays_refuse_unequal_padding_by_name():
    from fastconv.kernels._cuda_shim import cuda

    x, W, b = arrays((1, 2, 6, 6), (2, 2, 2, 2), np.float32)
    xd, Wd, bd = (cuda.to_device(a) for a in (x, W, b))
    with pytest.raises(ValueError, match=r"pad='same' needs unequal zeros .* CUDA device arrays "
                                         r"do not take \(x.shape=\(1, 2, 6, 6\)\)"):
        conv2d(xd, Wd, bd, pad="same")
    # equal padding in any form runs on the device as before
    out = conv2d(xd, Wd, bd, pad=((1, 1), (0, 0)))
    assert_close(out.copy_to_host(), conv2d(x, W, b, pad=(1, 0), backend="naive"))


# The im2col path's pieces, in array entries of the unrolled matrix (25 rows:
# C*FH*FW + 1 = 4*3*2 + 1; 8x5 output positions per image): one chunk, one image,
# bands of two output rows, pieces of four positions (inside rows), one position.
PIECES = {"one_chunk": 2**30, "one_image": 25 * 40, "two_rows": 2 * 25 * 5,
          "four_positions": 4 * 25, "one_position": 1}


@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("per_image", [True, False])
def test_im2col_pieces_and_layouts_with_groups_and_dilation(budget, monkeypatch, pieces, per_image):
    monkeypatch.setattr(im2col_path, "_MIN_COLUMNS_PER_IMAGE", 1 if per_image else 10**9)
    budget(PIECES[pieces] * 8)
    args = ((1, 2), 1, (2, 1), 2)                   # stride, pad, dilation, groups
    x, W, b = arrays((3, 4, 10, 9), (4, 2, 3, 2))
    spec = lowered(x.shape, W.shape, *args)
    assert spec.out_hw == (8, 5) and im2col_path.plan(spec)["matrix_shape"] == (25, 3 * 40)
    actual, dout = run(x, W, b, *args, "im2col")
    expected = oracle(x, W, b, *args, dout)
    for name, a, e in zip(("out", "dx", "dW", "db"), actual, expected):
        assert_close(a, e, f"{name}, {pieces}")
