"""The winograd path against the float64 naive oracle, its scope, its transforms,
and non-finite values (which it hands to the im2col path)."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import assert_close, oracle_conv

import fastconv
from fastconv import backends, conv2d, tuner
from fastconv import functional as F
from fastconv.kernels import winograd
from fastconv.kernels._jit import JIT_OPTIONS
from fastconv.spec import conv_spec

pytestmark = pytest.mark.skipif("winograd" not in fastconv.available_backends(),
                                reason="the winograd path is not in the table")

DTYPES = [np.float32, np.float64]


def _arrays(shape_x, fn, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape_x).astype(dtype)
    W = rng.standard_normal((fn, shape_x[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    return rng, x, W, b


def _run(x, W, b, pad, dout=None, backend="winograd"):
    out, saved = F.conv_forward(x, W, b, 1, pad, backend=backend)
    if dout is None:
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
    return (out, *F.conv_backward(dout, saved)), dout


def _check_against_oracle(x, W, b, pad):
    actual, dout = _run(x, W, b, pad)
    expected = oracle_conv(x, W, b, 1, pad, dout)
    for name, a, e in zip(("out", "dx", "dW", "db"), actual, expected):
        assert_close(a, e, name)


# ------------------------------------------------------------------ the math

@pytest.mark.parametrize("m", sorted(winograd.TRANSFORMS))
def test_1d_transforms_compute_a_3_tap_correlation(m):
    """A^T [(G g) * (B^T d)] is y_i = sum_k d[i+k] g[k], checked on random values."""
    t = winograd.TRANSFORMS[m]
    rng = np.random.default_rng(m)
    for _ in range(5):
        d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
        expected = np.array([d[i:i + 3] @ g for i in range(m)])
        np.testing.assert_allclose(t["AT"] @ ((t["G"] @ g) * (t["BT"] @ d)), expected,
                                   rtol=1e-12, atol=1e-12)


# (N, C, FN, output map) -> the tile of the forward and of dW, by the rules'
# arithmetic: "few" tiles when 2 * F(4x4) tiles * (C + FN) < C * FN
@pytest.mark.parametrize("n, c, fn, out_hw, m, dw_m", [
    (2, 5, 6, (56, 56), 4, 4),          # many tiles, small filters
    (2, 5, 6, (20, 31), 4, 4),
    (8, 512, 512, (7, 7), 4, 2),        # ResNet-18 stage 4: dW's X of F(4x4) is 38 MB
    (1, 512, 512, (7, 7), 2, 2),        # the same at batch 1: 4 tiles against 512 x 512 filters
    (8, 256, 256, (14, 14), 4, 4),      # stage 3
    (1, 64, 64, (14, 14), 4, 4),        # 2 * 16 * 128 = 64 * 64: not few
    (1, 64, 64, (10, 10), 2, 2),        # 2 * 9 * 128 < 64 * 64
    (4, 512, 512, (4, 4), 4, 2),        # a batch of 4 takes F(4x4) forward
    (2, 64, 64, (6, 6), 2, 2),          # a batch of 2 on maps below 7: F(2x2)
    (8, 64, 64, (3, 9), 2, 2),          # below 4x4 maps: always F(2x2)
])
def test_tile_rule_and_plan(n, c, fn, out_hw, m, dw_m):
    spec = fastconv.conv_spec((n, c, out_hw[0] + 2, out_hw[1] + 2), (fn, c, 3, 3), 1, 0)
    p = winograd.plan(spec)
    a = m + 2
    tiles = n * -(-out_hw[0] // m) * -(-out_hw[1] // m)
    assert (p["m"], p["alpha"], p["tiles"], p["dW_tile"]) == (m, a, tiles, dw_m)
    assert p["dx_tile"] == winograd._tile_for(n, fn, c, (out_hw[0] + 2, out_hw[1] + 2))
    assert p["U_shape"] == (a * a, fn, c)
    assert p["V_shape"] == (a * a, c, tiles) and p["M_shape"] == (a * a, fn, tiles)


def _slab_buffer(rows, cols, dtype):
    """NaN-filled (36, rows*cols + SLAB_PAD) buffer, as ``winograd._slabs`` lays out a
    padded one, and its (36, rows, cols) view."""
    buf = np.full((36, rows * cols + winograd.SLAB_PAD), np.nan, dtype)
    return buf, buf[:, :rows * cols].reshape(36, rows, cols)


def _pad_untouched(buf):
    assert np.isnan(buf[:, -winograd.SLAB_PAD:]).all(), "a kernel wrote into the slab padding"


# Shapes: maps of several sizes and paddings; batches that fill several stacks of
# images (``winograd._stack``), the last one partial: 9 images of 28x28 outputs
# go 4 + 4 + 1 to the input kernel and 6 + 3 to the output kernel, 33 images of
# 7x7 go 29 + 4 to the input kernel, 70 go 64 + 6 to the output kernel.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, pad", [((2, 3, 13, 9), (1, 1)), ((1, 2, 8, 8), (0, 0)),
                                        ((1, 2, 22, 17), (2, 0)), ((2, 1, 9, 11), (-1, 3)),
                                        ((1, 1, 3, 4), (1, 2)), ((9, 2, 28, 28), (1, 1)),
                                        ((33, 1, 7, 7), (1, 1))])
def test_f4_input_kernel_is_bt_d_b_of_every_tile(shape, pad, dtype):
    """The F(4x4) input kernel (tiles in vector lanes on stacked row-phase planes)
    against B^T d B computed by NumPy in float64 on every 6x6 tile cut from the
    padded input: every tile and every channel written, each value right, the
    dtype kept, the slab padding left alone."""
    N, C, H, W = shape
    ph, pw = pad
    th, tw = winograd._tiles((H + 2 * ph - 2, W + 2 * pw - 2), 4)
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)
    BT = winograd.TRANSFORMS[4]["BT"]
    buf, V = _slab_buffer(C, N * th * tw, dtype)
    winograd._input_transform_f4(x, BT.astype(dtype), ph, pw, th, tw, buf)
    _pad_untouched(buf)
    # the padded input, zeros around it, as far as the last tiles reach
    xp = np.zeros((N, C, 4 * th + 2 + abs(ph), 4 * tw + 2 + abs(pw)))
    r0, c0 = max(ph, 0), max(pw, 0)
    body = x[:, :, max(-ph, 0):, max(-pw, 0):]
    xp[:, :, r0:r0 + body.shape[2], c0:c0 + body.shape[3]] = body[:, :, :xp.shape[2] - r0,
                                                                   :xp.shape[3] - c0]
    tiles = np.stack([xp[:, :, 4 * ty:4 * ty + 6, 4 * tx:4 * tx + 6]
                      for ty in range(th) for tx in range(tw)], axis=2)
    expected = np.einsum("ai,nctij,bj->abcnt", BT, tiles, BT).reshape(36, C, -1)
    assert_close(V, expected.astype(dtype), "V")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, fn, out_hw", [(2, 3, (28, 28)), (1, 2, (7, 9)), (2, 1, (13, 5)),
                                           (1, 2, (40, 256)), (9, 2, (28, 28)),
                                           (70, 1, (7, 7)), (40, 1, (10, 10))])
def test_f4_output_kernel_is_at_m_a_of_every_tile(n, fn, out_hw, dtype):
    """The F(4x4) output kernel (tiles in vector lanes, the tile rows of a stack of
    images in bands; (40, 256) takes two bands, the second one partial; 40 images
    of 10x10 go 29 + 11, in bands of 85 tile rows that end inside an image)
    against A^T M A computed by NumPy in float64 per tile, cut to the map and
    plus the bias."""
    th, tw = winograd._tiles(out_hw, 4)
    rng = np.random.default_rng(sum(out_hw))
    buf, Mt = _slab_buffer(fn, n * th * tw, dtype)
    Mt[...] = rng.standard_normal(Mt.shape)
    b = rng.standard_normal(fn).astype(dtype)
    AT = winograd.TRANSFORMS[4]["AT"]
    out = np.full((n, fn, *out_hw), np.nan, dtype)
    winograd._output_transform_f4(buf, AT.astype(dtype), th, tw, b, out)
    M = Mt.astype(np.float64).reshape(6, 6, fn, n, th, tw)
    Y = np.einsum("ia,abknyx,jb->knyixj", AT, M, AT).reshape(fn, n, 4 * th, 4 * tw)
    expected = Y.transpose(1, 0, 2, 3)[:, :, :out_hw[0], :out_hw[1]] + b[:, None, None]
    assert_close(out, expected.astype(dtype), "out")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, fn, out_hw", [(2, 3, (13, 9)), (1, 2, (8, 8)), (1, 2, (40, 70)),
                                           (2, 1, (3, 5)), (20, 2, (14, 13)), (70, 1, (7, 7))])
def test_f4_dout_kernel_is_a_e_at_of_every_tile(n, fn, out_hw, dtype):
    """The F(4x4) dout kernel of dW against A e A^T computed by NumPy in float64 on
    every 4x4 tile of dout (zeros where the last tiles hang over the edge); 20
    images of 14x13 go 16 + 4 to a stack, 70 of 7x7 go 64 + 6."""
    th, tw = winograd._tiles(out_hw, 4)
    d = np.random.default_rng(sum(out_hw)).standard_normal((n, fn, *out_hw)).astype(dtype)
    AT = winograd.TRANSFORMS[4]["AT"]
    buf, E = _slab_buffer(fn, n * th * tw, dtype)
    winograd._dout_transform_f4(d, AT.astype(dtype), th, tw, buf)
    _pad_untouched(buf)
    dp = np.zeros((n, fn, 4 * th, 4 * tw))
    dp[:, :, :out_hw[0], :out_hw[1]] = d
    tiles = dp.reshape(n, fn, th, 4, tw, 4).transpose(1, 0, 2, 4, 3, 5)   # (fn, n, th, tw, 4, 4)
    expected = np.einsum("ia,knyxab,jb->ijknyx", AT.T, tiles, AT.T).reshape(36, fn, -1)
    assert_close(E, expected.astype(dtype), "E")


@pytest.mark.parametrize("m", [2, 4])
def test_both_tiles_match_the_oracle_whatever_the_rule_picks(m, monkeypatch):
    monkeypatch.setattr(winograd, "_tile_for", lambda *shape: m)
    monkeypatch.setattr(winograd, "_dw_tile_for", lambda *shape: m)
    for dtype in DTYPES:
        _, x, W, b = _arrays((2, 5, 11, 9), 4, dtype, seed=m)
        for pad in (0, 1, 2, 3):
            _check_against_oracle(x, W, b, pad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("fn, c", [(3, 5), (1, 1), (6, 33)])
def test_filter_kernels_are_g_g_gt_and_its_transpose(fn, c, m, dtype):
    """U = G g G^T per (filter, channel), and dW's back-transform G^T x G, against
    NumPy in float64: every filter and channel written, the dtype kept."""
    rng = np.random.default_rng(fn * c + m)
    G = winograd.TRANSFORMS[m]["G"]
    a = m + 2
    W = rng.standard_normal((fn, c, 3, 3)).astype(dtype)
    U = np.full((a * a, fn, c), np.nan, dtype)
    winograd._filter_transform(W, G.astype(dtype), U)
    expected = np.einsum("xi,kcij,yj->xykc", G, W.astype(np.float64), G).reshape(a * a, fn, c)
    assert_close(U, expected.astype(dtype), "U")
    X = rng.standard_normal((a * a, fn, c)).astype(dtype)
    dW = np.full((fn, c, 3, 3), np.nan, dtype)
    winograd._filter_back_transform(X, G.astype(dtype), dW)
    expected = np.einsum("xi,xykc,yj->kcij", G, X.astype(np.float64).reshape(a, a, fn, c), G)
    assert_close(dW, expected.astype(dtype), "dW")


def test_slabs_are_padded_only_at_multiples_of_4_kib():
    for rows, cols, dtype, padded, S in [(256, 128, np.float32, True, 256 * 128 + 16),
                                         (512, 32, np.float64, True, 512 * 32 + 16),
                                         (100, 3, np.float32, True, 300),
                                         (256, 128, np.float32, False, 256 * 128)]:
        buf, view = winograd._slabs(36, rows, cols, dtype, 9, padded)
        assert buf.shape == (36, S) and view.shape == (36, rows, cols)
        assert np.shares_memory(buf, view) and view.dtype == dtype
    winograd.release_workspace()


@pytest.mark.parametrize("dtype", DTYPES)
def test_padded_slabs_give_the_oracle(dtype):
    # 16 channels and filters of 16x16 maps, 4 images: V, M and E hold 16 x 64 tiles
    # per slab, 4 KiB in float32 and 8 KiB in float64, so all three are padded
    _, x, W, b = _arrays((4, 16, 16, 16), 16, dtype, seed=5)
    _check_against_oracle(x, W, b, 1)


# ------------------------------------------------------------ against the oracle

@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 5), fn=st.integers(1, 5),
       h=st.integers(1, 19), w=st.integers(1, 19), ph=st.integers(0, 2),
       pw=st.integers(0, 2), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_forward_and_gradients_match_the_float64_oracle(n, c, fn, h, w, ph, pw, dtype, seed):
    if h + 2 * ph < 3 or w + 2 * pw < 3:
        return                                  # no output position: not a valid conv
    _, x, W, b = _arrays((n, c, h, w), fn, dtype, seed)
    _check_against_oracle(x, W, b, (ph, pw))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, fn", [((2, 64, 28, 28), 64), ((1, 128, 7, 7), 96),
                                       ((1, 16, 40, 33), 8)])
def test_layer_sized_cases_match_the_oracle(shape, fn, dtype):
    """Long reductions (C = 64, 128): float32 error stays inside the tolerance table."""
    _, x, W, b = _arrays(shape, fn, dtype)
    W /= np.sqrt(9 * shape[1]).astype(dtype)
    _check_against_oracle(x, W, b, 1)


def test_padding_beyond_two_crops_dout_for_dx():
    """pad 3 and 4 (dout is cropped, not padded, for dx)."""
    _, x, W, b = _arrays((2, 3, 6, 5), 2, np.float64)
    for pad in ((3, 3), (4, 1), (0, 4)):
        _check_against_oracle(x, W, b, pad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_worked_example1_with_and_without_padding(dtype):
    x = np.array([[1, 2, 3, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1]], dtype)[None, None]
    w = np.array([[2, 0, 1], [0, 1, 2], [1, 0, 2]], dtype)[None, None]
    padded = conv2d(x, w, pad=1, backend="winograd")
    assert padded.dtype == dtype
    np.testing.assert_array_equal(
        padded[0, 0], [[7, 12, 10, 2], [4, 15, 16, 10], [10, 6, 15, 6], [8, 10, 4, 3]])
    np.testing.assert_array_equal(conv2d(x, w, backend="winograd")[0, 0], [[15, 16], [6, 15]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_worked_example2_vertical_edge_detector(dtype):
    x = np.zeros((1, 1, 5, 6), dtype)
    x[..., 3:] = 100
    w = np.array([[-1, 0, 1]] * 3, dtype)[None, None]
    np.testing.assert_array_equal(conv2d(x, w, backend="winograd")[0, 0], [[0, 300, 300, 0]] * 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_keeps_dtype_leaves_inputs_alone_and_repeats_bit_for_bit(dtype):
    _, x, W, b = _arrays((2, 3, 9, 10), 4, dtype)
    copies = [a.copy() for a in (x, W, b)]
    first, dout = _run(x, W, b, 1)
    dout_copy = dout.copy()
    second, _ = _run(x, W, b, 1, dout)
    for a, c in zip((x, W, b, dout), (*copies, dout_copy)):
        np.testing.assert_array_equal(a, c)
    for a, c in zip(first, second):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, c)


def test_results_never_alias_the_workspace():
    _, x, W, b = _arrays((1, 2, 8, 8), 3, np.float32)
    (out1, dx1, dW1, _), dout = _run(x, W, b, 1)
    keep = [a.copy() for a in (out1, dx1, dW1)]
    _run(x * 2, W * 3, b, 1, dout)                     # reuses the same scratch buffers
    for a, k in zip((out1, dx1, dW1), keep):
        np.testing.assert_array_equal(a, k)


# ------------------------------------------------------------ non-finite values

def _nonfinite_pattern(a):
    return np.isnan(a), np.isposinf(a), np.isneginf(a)


def _assert_same_nonfinite(actual, expected, name):
    for kind, a, e in zip(("nan", "+inf", "-inf"), _nonfinite_pattern(actual),
                          _nonfinite_pattern(expected)):
        np.testing.assert_array_equal(a, e, err_msg=f"{name}: {kind} positions")
    finite = np.isfinite(expected)
    assert_close(actual[finite], expected[finite], name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["x_nan", "x_inf", "W_inf", "dout_nan", "dout_inf"])
def test_non_finite_values_propagate_as_in_the_naive_path(where, dtype):
    """One bad value would spread over its whole Winograd tile; the path must give
    the naive path's nan/inf pattern instead (it hands such calls to im2col)."""
    _, x, W, b = _arrays((2, 3, 12, 12), 4, dtype)
    dout = np.random.default_rng(2).standard_normal((2, 4, 12, 12)).astype(dtype)
    if where == "x_nan":
        x[0, 1, 5, 6] = np.nan
    elif where == "x_inf":
        x[1, 0, 3, 3] = np.inf
    elif where == "W_inf":
        W[2, 1, 0, 2] = -np.inf
    elif where == "dout_nan":
        dout[0, 3, 7, 2] = np.nan
    else:
        dout[1, 1, 0, 9] = np.inf
    actual, _ = _run(x, W, b, 1, dout)
    expected, _ = _run(x, W, b, 1, dout, backend="naive")
    for name, a, e in zip(("out", "dx", "dW", "db"), actual, expected):
        _assert_same_nonfinite(a, e, name)


def test_huge_finite_values_do_not_overflow_in_the_transforms():
    """Values whose naive sums are finite but whose transformed tiles would overflow."""
    _, x, W, b = _arrays((1, 2, 8, 8), 2, np.float32)
    x *= np.float32(1e35)                  # the dW transforms alone would reach inf
    W /= np.float32(np.sqrt(18))
    actual, dout = _run(x, W, b, 1)
    expected, _ = _run(x, W, b, 1, dout, backend="naive")
    for name, a, e in zip(("out", "dx", "dW", "db"), actual, expected):
        assert np.isfinite(e).all(), name
        _assert_same_nonfinite(a, e, name)


def test_huge_dout_alone_sends_the_backward_to_im2col():
    """The forward's operands fit, so it runs Winograd; dout alone is large enough
    that the backward's transforms would overflow where the naive sums do not (the
    backward checks dout against the magnitudes of x and W the forward measured)."""
    _, x, W, b = _arrays((1, 2, 8, 8), 2, np.float32)
    x /= np.float32(10)
    W /= np.float32(10)
    out, saved = F.conv_forward(x, W, b, 1, 1, backend="winograd")
    assert isinstance(saved.cache, winograd.ConvCache)
    dout = np.random.default_rng(3).standard_normal(out.shape).astype(np.float32)
    dout *= np.float32(3e36)         # unchecked, the transforms give inf in dx and dW
    actual = F.conv_backward(dout, saved)
    expected = F.conv_backward(dout, F.conv_forward(x, W, b, 1, 1, backend="naive")[1])
    for name, a, e in zip(("dx", "dW", "db"), actual, expected):
        assert np.isfinite(e).all(), name
        _assert_same_nonfinite(a, e, name)


# ------------------------------------------------------------------ the scope

SUPPORTED = fastconv.conv_spec((1, 2, 6, 6), (3, 2, 3, 3), 1, 1)
UNSUPPORTED = {
    "5x5": fastconv.conv_spec((1, 2, 9, 9), (3, 2, 5, 5), 1, 0),
    "3x2": fastconv.conv_spec((1, 2, 9, 9), (3, 2, 3, 2), 1, 0),
    "stride 2": fastconv.conv_spec((1, 2, 9, 9), (3, 2, 3, 3), 2, 0),
    "stride (1, 2)": fastconv.conv_spec((1, 2, 9, 9), (3, 2, 3, 3), (1, 2), 0),
    "pooling": fastconv.pool_spec((1, 2, 6, 6), 3, 3, 1, 0),
}


def test_supports_exactly_3x3_stride_1_convolutions():
    assert winograd.supports(SUPPORTED)
    for name, spec in UNSUPPORTED.items():
        assert not winograd.supports(spec), name
        assert "not run" in winograd.plan(spec)["method"]


def test_asking_for_it_on_an_unsupported_problem_is_a_clear_value_error():
    x = np.zeros((1, 2, 9, 9))
    with pytest.raises(ValueError, match=r"backend 'winograd' runs 3x3 stride-1 convolutions.*"
                                         r"cannot run conv x=\(1, 2, 9, 9\) W=\(3, 2, 5, 5\)"):
        conv2d(x, np.zeros((3, 2, 5, 5)), backend="winograd")
    with pytest.raises(ValueError, match=r"backend 'winograd' runs .* cannot run conv.*stride=\(2, 2\)"):
        conv2d(x, np.zeros((3, 2, 3, 3)), stride=2, backend="winograd")
    with pytest.raises(ValueError, match=r"backend 'winograd' runs .* cannot run max pool"):
        fastconv.pool2d(x, 2, 2, 2, backend="winograd")
    with pytest.raises(ValueError, match="cannot run"):
        winograd.pool_forward(x, UNSUPPORTED["pooling"])


def test_auto_considers_it_only_where_it_applies():
    assert backends.PATHS["winograd"] is winograd
    assert "winograd" in tuner.candidates(SUPPORTED)
    for name, spec in UNSUPPORTED.items():
        assert "winograd" not in tuner.candidates(spec), name


def test_explain_and_compare_leave_it_out_where_it_does_not_apply(fresh_cache):
    from fastconv.compare import compare

    e = fastconv.explain((1, 2, 9, 9), (3, 2, 5, 5), measure=True, repeat=1)
    assert e.timings and "winograd" not in [t.path for t in e.timings]
    e = fastconv.explain((1, 2, 9, 9), (3, 2, 3, 3), pad=1, measure=True, repeat=1)
    assert "winograd" in [t.path for t in e.timings]
    with pytest.raises(ValueError, match="path 'winograd' runs 3x3 stride-1"):
        fastconv.explain((1, 2, 9, 9), (3, 2, 5, 5), measure=True, paths=["winograd"])
    kw = dict(N=1, C=2, H=9, W=9, K=3, repeat=1)
    assert "winograd" not in [r["path"] for r in compare(FH=5, FW=5, **kw)]
    rows = compare(FH=3, FW=3, pad=1, **kw)
    assert "winograd" in [r["path"] for r in rows]
    assert all(r["max_rel_diff"] < 1e-4 for r in rows)


def test_auto_may_choose_it_and_then_matches_the_oracle(fresh_cache):
    """With measuring on, "auto" times winograd among the candidates of a 3x3 s1 layer."""
    spec = fastconv.conv_spec((2, 16, 16, 16), (16, 16, 3, 3), 1, 1)
    decision = tuner.decide_spec(spec)
    assert "winograd" in decision.times_ms
    _, x, W, b = _arrays(spec.x_shape, 16, np.float32)
    actual, dout = _run(x, W, b, 1, backend="auto")
    for name, a, e in zip(("out", "dx", "dW", "db"), actual, oracle_conv(x, W, b, 1, 1, dout)):
        assert_close(a, e, name)


def test_tile_stores_stay_loops_not_memmove_calls():
    # the F(4x4) input kernel stores a block's tiles in runs of one tile row (2 to
    # 16 cells); LLVM would turn each run's copy loop into a call to memmove, which
    # costs more than the copy (``_jit.no_library_calls``). A fresh compile: Numba
    # cannot show the machine code it loaded from its cache
    plane = numba.njit(**dict(JIT_OPTIONS, cache=False))(winograd._bt4_plane.py_func)
    Y = np.zeros(4096, np.float32)
    ds = np.zeros(36 * 64, np.float32)
    rows = tuple(np.uint64(v) for v in (0, 100, 200, 300, 20, 120))
    two, four, five = (np.float32(v) for v in (2, 4, 5))
    plane(Y, rows, 3, 3, 4, two, four, five, ds, 0, 64)
    asm = plane.inspect_asm(plane.signatures[0])
    calls = [line for line in asm.splitlines() if "memmove" in line or "memcpy" in line]
    assert not calls, calls


# ------------------------------------------------------- the fused F(4x4) forward

# 9x8 and 9x9 output tiles per image: float32 F(4x4) runs fused (``_fuses``); 11
# and 9 filters leave a partial block of the register tile, and a budget of
# one strip's worth splits each image into bands, the last one shorter.
FUSED_CASES = [((2, 5, 33, 35), 11, 1), ((1, 3, 36, 32), 8, 0), ((2, 4, 34, 31), 9, (2, 3))]


def _fused_columns(C, tw, th, budget=None):
    """Columns the fused bands of one image compute, for the height ``_fused_rows`` picks
    (each band's tiles rounded up to whole strips, counted here band by band)."""
    strip = winograd._strip_cells(winograd.TILE_ROWS, 4)
    rows = winograd._fused_rows(C, tw, th, 4, budget)
    return sum(-(-min(rows, th - t) * tw // strip) * strip for t in range(0, th, rows))


@pytest.mark.parametrize("shape, fn, pad", FUSED_CASES)
@pytest.mark.parametrize("budget", [None, 36 * 5 * 48 * 4])
def test_fused_forward_and_dx_match_the_oracle(shape, fn, pad, budget, monkeypatch):
    if budget is not None:
        monkeypatch.setattr(winograd, "FUSED_BYTES", budget)
    _, x, W, b = _arrays(shape, fn, np.float32, seed=fn)
    N, C, H, Wd = shape
    ph, pw = (pad, pad) if isinstance(pad, int) else pad
    out_hw = (H + 2 * ph - 2, Wd + 2 * pw - 2)
    assert winograd._tile_for(N, C, fn, out_hw) == 4 and winograd._fuses(4, np.float32, C, out_hw)
    th, tw = winograd._tiles(out_hw, 4)
    if budget is None:
        # dx: dout padded by 2 - pad (a crop when pad is 3), fn channels
        assert winograd._fuses(4, np.float32, fn, (H, Wd))
    else:
        assert winograd._fused_rows(C, tw, th, 4) < th, "the budget should split the image"
    _check_against_oracle(x, W, b, (ph, pw))


def test_fused_results_do_not_depend_on_the_bands_and_match_the_three_stages(monkeypatch):
    """Each product sums its channels in order whatever the band: bit-identical
    for any band height; equal to the unfused stages within the tolerance."""
    _, x, W, b = _arrays((2, 6, 37, 30), 10, np.float32, seed=3)
    monkeypatch.setattr(winograd, "_fuses", lambda *args: True)
    runs = []
    for rows in (1, 3, 5, 10):                    # 10 tile rows: 3 leaves a last band of 1
        monkeypatch.setattr(winograd, "_fused_rows", lambda *args, rows=rows: rows)
        runs.append(winograd._correlate(x, W, b, (1, 2), (37, 32), 4))
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])
    monkeypatch.setattr(winograd, "_fuses", lambda *args: False)
    assert_close(runs[0], winograd._correlate(x, W, b, (1, 2), (37, 32), 4), "three stages")


@pytest.mark.parametrize("C, tw, th, budget", [(64, 14, 14, 1536 * 1024), (64, 56, 56, 1536 * 1024),
                                               (5, 9, 9, 36 * 5 * 48 * 4), (512, 20, 20, 1024)])
def test_fused_bands_fit_the_budget_and_compute_the_fewest_columns(C, tw, th, budget):
    strip = winograd._strip_cells(winograd.TILE_ROWS, 4)
    rows = winograd._fused_rows(C, tw, th, 4, budget)
    assert rows == 1 or 36 * C * -(-rows * tw // strip) * strip * 4 <= budget
    fewest = _fused_columns(C, tw, th, budget)
    for other in range(1, th + 1):
        fits = 36 * C * -(-other * tw // strip) * strip * 4 <= budget
        cols = sum(-(-min(other, th - t) * tw // strip) * strip for t in range(0, th, other))
        assert not fits or cols >= fewest


def test_only_float32_f4_with_little_waste_runs_fused():
    assert winograd._fuses(4, np.float32, 64, (56, 56))      # 3 tile rows: 42 of 48 columns
    assert _fused_columns(64, 14, 14) <= winograd.FUSED_WASTE * 14 * 14
    assert not winograd._fuses(4, np.float32, 64, (28, 28))  # 7x7 tiles in 96 columns
    assert not winograd._fuses(4, np.float32, 256, (56, 56))  # one tile row of 14 per 48 columns
    assert not winograd._fuses(4, np.float64, 64, (56, 56))
    assert not winograd._fuses(2, np.float32, 64, (56, 56))
    assert winograd.plan(conv_spec((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, np.float32))["fused"]
    assert not winograd.plan(conv_spec((8, 64, 28, 28), (64, 64, 3, 3), 1, 1, np.float32))["fused"]


# ----------------------------------------------------------- the fused F(4x4) dW

# 33 filters: half a block of 64 lanes and one more; 7 channels: a block of
# DW_ROWS and a partial one. 70 columns of outputs: 18 tiles per row, so a band
# holds 3 tile rows (DW_BAND_LANES) and the 8 tile rows of an image make 3
# bands, the last one shorter.
FUSED_DW_CASES = [((2, 7, 30, 70), 33, 1), ((1, 9, 31, 40), 40, (2, 0)), ((3, 6, 17, 22), 32, 0)]


@pytest.mark.parametrize("shape, fn, pad", FUSED_DW_CASES)
@pytest.mark.parametrize("band_lanes", [None, 1])
def test_fused_dw_matches_the_oracle(shape, fn, pad, band_lanes, monkeypatch):
    if band_lanes is not None:                    # bands of one tile row
        monkeypatch.setattr(winograd, "DW_BAND_LANES", band_lanes)
    N, C, H, Wd = shape
    ph, pw = (pad, pad) if isinstance(pad, int) else pad
    out_hw = (H + 2 * ph - 2, Wd + 2 * pw - 2)
    if winograd._lanes_per_block(np.float32) == 64:                 # AVX-512: 64 lanes
        assert winograd._dw_tile_for(N, C, fn, out_hw) == 4 and winograd._fuses_dw(4, np.float32, C, fn)
    monkeypatch.setattr(winograd, "_dw_tile_for", lambda *args: 4)
    monkeypatch.setattr(winograd, "_fuses_dw", lambda *args: True)
    _, x, W, b = _arrays(shape, fn, np.float32, seed=fn)
    _check_against_oracle(x, W, b, (ph, pw))


def test_fused_dw_matches_the_three_stages_and_repeats_exactly(monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 8, 26, 45)).astype(np.float32)
    d = rng.standard_normal((3, 40, 26, 45)).astype(np.float32)
    monkeypatch.setattr(winograd, "_fuses_dw", lambda *args: True)
    fused = winograd._conv_dw(d, x, (1, 1), 4)
    np.testing.assert_array_equal(winograd._conv_dw(d, x, (1, 1), 4), fused)
    monkeypatch.setattr(winograd, "_fuses_dw", lambda *args: False)
    assert_close(fused, winograd._conv_dw(d, x, (1, 1), 4), "three stages")


def test_only_float32_f4_dw_with_its_sums_in_l2_and_enough_filters_runs_fused():
    lanes = winograd._lanes_per_block(np.float32)
    assert winograd._fuses_dw(4, np.float32, 64, lanes)
    assert winograd._fuses_dw(4, np.float32, 64, lanes // 2)
    assert not winograd._fuses_dw(4, np.float32, 64, lanes // 2 - 1)       # most lanes idle
    assert not winograd._fuses_dw(4, np.float32, winograd.DW_ROWS - 1, lanes)
    assert not winograd._fuses_dw(4, np.float32, 256, 256)                  # X: 9.4 MB
    assert not winograd._fuses_dw(4, np.float64, 64, 64)
    assert not winograd._fuses_dw(2, np.float32, 64, 64)
    p = winograd.plan(conv_spec((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, np.float32))
    assert p["dW_tile"] == 4 and p["dW_fused"] is True
