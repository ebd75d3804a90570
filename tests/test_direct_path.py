"""What is particular to the direct path: its phase-plane layout, its tap tables,
its blocking (partial channel blocks, row blocks, empty stride phases), the
wide grid's spare columns, and its thread-count independence.

Expected values come from the naive path, run in float64 so that the oracle's
own float32 rounding does not count against the path under test.
"""
import numba
import numpy as np
import pytest
from support import assert_close, assert_same_cells, conv_kernel, oracle_conv, pool_kernel

from fastconv.geometry import output_hw
from fastconv.kernels import direct, naive

def _conv_both(x, W, b, stride, pad, dout_seed=0):
    """(out, dx, dW, db) from the direct path and from the float64 naive oracle."""
    out_hw = output_hw(x.shape[2:], W.shape[2:], stride, pad, "floor")
    out, cache = conv_kernel(direct, x, W, b, stride, pad, out_hw)
    dout = np.random.default_rng(dout_seed).standard_normal(out.shape).astype(x.dtype)
    got = (out, *direct.conv_backward(dout, cache))
    return got, oracle_conv(x, W, b, stride, pad, dout)


def _assert_conv_matches(x, W, b, stride, pad):
    got, want = _conv_both(x, W, b, stride, pad)
    for name, g, w in zip(("out", "dx", "dW", "db"), got, want):
        assert_close(g, w, name)


def _random_conv(rng, N, C, H, W, FN, FH, FW, dtype):
    return (rng.standard_normal((N, C, H, W)).astype(dtype),
            rng.standard_normal((FN, C, FH, FW)).astype(dtype),
            rng.standard_normal(FN).astype(dtype))


# ------------------------------------------------------------------ layout

@pytest.mark.parametrize("stride, pad", [((1, 1), (0, 0)), ((2, 3), (1, 2)), ((3, 1), (2, 0))])
def test_phase_planes_hold_the_padded_image(stride, pad):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 8))
    (sh, sw), (ph, pw) = stride, pad
    Hq, Wq, fill = 6, -(-(8 + 2 * pw) // sw), -5.0
    # a window as large as the stride reads every phase
    xq = direct._to_planes(x, sh, sw, ph, pw, Hq, Wq, 10**6, 10**6, fill, sh, sw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, Hq * sh), (pw, Wq * sw)), constant_values=fill)
    for c in range(3):
        for a in range(sh):
            for b in range(sw):
                plane = xq[:, c * sh * sw + a * sw + b].reshape(2, Hq, Wq)
                np.testing.assert_array_equal(plane, xp[:, c, a::sh, b::sw][:, :Hq, :Wq])


def test_phase_planes_blank_the_cells_no_window_reads():
    x = np.arange(1.0, 1 + 5 * 6).reshape(1, 1, 5, 6)
    xq = direct._to_planes(x, 1, 1, 0, 0, 6, 6, 3, 4, 0.0, 3, 4).reshape(6, 6)
    np.testing.assert_array_equal(xq[:3, :4], x[0, 0, :3, :4])
    assert not xq[3:].any() and not xq[:, 4:].any()


@pytest.mark.parametrize("stride, window", [((5, 4), (2, 3)), ((1000, 7), (3, 2))])
def test_only_the_phases_a_window_reads_get_a_plane(stride, window):
    # stride > window: phases window..stride-1 are never read and get no plane,
    # so the planes' size does not grow with the stride
    x = np.arange(2 * 3 * 9 * 8, dtype=np.float64).reshape(2, 3, 9, 8)
    (sh, sw), (fh, fw) = stride, window
    Hq, Wq = 3, -(-8 // sw)
    xq = direct._to_planes(x, sh, sw, 0, 0, Hq, Wq, 10**6, 10**6, -1.0, fh, fw)
    Ph, Pw = min(sh, fh), min(sw, fw)
    assert xq.shape == (2, 3 * Ph * Pw, Hq * Wq)
    xp = np.pad(x, ((0, 0), (0, 0), (0, Hq * sh), (0, Wq * sw)), constant_values=-1.0)
    for c in range(3):
        for a in range(Ph):
            for b in range(Pw):
                plane = xq[:, (c * Ph + a) * Pw + b].reshape(2, Hq, Wq)
                np.testing.assert_array_equal(plane, xp[:, c, a::sh, b::sw][:, :Hq, :Wq])


def _taps_of(row):
    """(tap index, shift from the row's offset) for one tap-table row."""
    count = row[2]
    assert 1 <= count <= direct.GROUP
    assert all(t >= 0 for t in row[3:3 + count]) and all(t == -1 for t in row[3 + count:])
    return [(row[3 + g], g) for g in range(count)]


@pytest.mark.parametrize("C, FH, FW, sh, sw", [(2, 3, 5, 1, 1), (3, 4, 7, 2, 3), (1, 2, 2, 3, 3)])
def test_forward_tap_table_covers_every_tap_once(C, FH, FW, sh, sw):
    Wq = 9
    ops = direct._forward_ops(C, FH, FW, sh, sw, Wq)
    Ph, Pw = min(sh, FH), min(sw, FW)          # the phases a tap reads
    seen = []
    for row in ops:
        for t, shift in _taps_of(row):
            c, fy, fx = t // (FH * FW), t // FW % FH, t % FW
            assert row[0] == (c * Ph + fy % sh) * Pw + fx % sw
            assert row[1] + shift == (fy // sh) * Wq + fx // sw
            seen.append(t)
    assert sorted(seen) == list(range(C * FH * FW))


@pytest.mark.parametrize("K, FH, FW, sh, sw", [(2, 3, 5, 1, 1), (3, 4, 7, 2, 3), (2, 2, 1, 3, 3)])
def test_backward_tap_table_covers_every_tap_once_in_its_phase(K, FH, FW, sh, sw):
    Wq = 11
    Ty, Tx = (FH - 1) // sh + 1, (FW - 1) // sw + 1
    ops, starts = direct._backward_ops(K, FH, FW, sh, sw, Wq, Ty, Tx)
    Ph, Pw = min(sh, FH), min(sw, FW)          # the phases a tap reaches
    assert len(starts) == Ph * Pw + 1
    seen = []
    for phase in range(Ph * Pw):
        for row in ops[starts[phase]:starts[phase + 1]]:
            for t, shift in _taps_of(row):
                k, fy, fx = t // (FH * FW), t // FW % FH, t % FW
                assert row[0] == k and phase == (fy % sh) * Pw + fx % sw
                assert row[1] + shift == (Ty - 1 - fy // sh) * Wq + Tx - 1 - fx // sw
                seen.append(t)
    assert sorted(seen) == list(range(K * FH * FW))


# ---------------------------------------------------------------- blocking

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("FN, C", [(1, 1), (3, 2), (4, 4), (5, 7), (9, 3), (12, 9)])
def test_partial_channel_blocks(FN, C, dtype):
    # blocks of filters forward and of channels for dx (register tiles of
    # direct.TILE_ROWS rows, or half as many for up to half of them; the float64
    # passes and dW take KB=4): full, partial and single-row blocks
    rng = np.random.default_rng(FN * 10 + C)
    _assert_conv_matches(*_random_conv(rng, 2, C, 9, 8, FN, 3, 2, dtype), (1, 2), (1, 0))


@pytest.mark.parametrize("stride, filt", [((3, 3), (2, 2)), ((4, 2), (1, 1)), ((2, 3), (1, 5))])
def test_strides_larger_than_the_filter_leave_phases_empty(stride, filt):
    # some dx phases receive no tap at all: those dx cells must be exactly zero
    rng = np.random.default_rng(3)
    x, W, b = _random_conv(rng, 2, 3, 11, 13, 5, *filt, np.float64)
    _assert_conv_matches(x, W, b, stride, (1, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_images_span_row_blocks_and_dw_chunks(dtype):
    # a 70x75 output: several forward/dx row blocks, several dW chunks per image
    rng = np.random.default_rng(4)
    x, W, b = _random_conv(rng, 2, 2, 72, 77, 6, 3, 3, dtype)
    W *= 0.1
    _assert_conv_matches(x, W, b, (1, 1), (0, 0))


@pytest.mark.parametrize("C", [3, 5])      # dx in passes, dx on the register tile
def test_row_block_size_does_not_change_a_bit(C, monkeypatch):
    rng = np.random.default_rng(5)
    x, W, b = _random_conv(rng, 2, C, 30, 21, 6, 3, 4, np.float32)
    out_hw = output_hw(x.shape[2:], W.shape[2:], (2, 1), (1, 2), "floor")
    out, cache = conv_kernel(direct, x, W, b, (2, 1), (1, 2), out_hw)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx = direct.conv_backward(dout, cache)[0]
    # one wide row per block instead of dozens: every cell still sums the same
    # taps in the same order
    monkeypatch.setattr(direct, "ACC_BYTES", 1)
    out1, cache1 = conv_kernel(direct, x, W, b, (2, 1), (1, 2), out_hw)
    np.testing.assert_array_equal(out1, out)
    np.testing.assert_array_equal(direct.conv_backward(dout, cache1)[0], dx)


def test_cells_no_window_reads_never_touch_a_result():
    # floor rounding drops the last rows and columns; nan there must not leak
    # through the wide grid's spare columns
    rng = np.random.default_rng(6)
    x, W, b = _random_conv(rng, 2, 2, 10, 11, 3, 3, 3, np.float64)
    x[:, :, -1, :] = np.nan
    x[:, :, :, -2:] = np.nan
    got, want = _conv_both(x, W, b, (3, 3), (0, 0))
    for name, g, w in zip(("out", "dx", "dW", "db"), got, want):
        assert np.isfinite(g).all(), name
        assert_close(g, w, name)


def test_scratch_buffer_never_reaches_the_caller():
    rng = np.random.default_rng(7)
    first = _random_conv(rng, 2, 2, 9, 9, 3, 3, 3, np.float64)
    out, cache = conv_kernel(direct, *first, (1, 1), (1, 1), (9, 9))
    dx, dW, db = direct.conv_backward(np.ones_like(out), cache)
    kept = dx.copy(), dW.copy(), db.copy()
    second = _random_conv(rng, 3, 2, 12, 12, 3, 3, 3, np.float64)
    out2, cache2 = conv_kernel(direct, *second, (1, 1), (1, 1), (12, 12))
    direct.conv_backward(np.full_like(out2, 7.0), cache2)
    for a, k in zip((dx, dW, db), kept):
        np.testing.assert_array_equal(a, k)


# ------------------------------------------------------- dx on the register tile

def _spy(monkeypatch, name):
    """Count the calls of direct.<name> (still running it)."""
    kernel, calls = getattr(direct, name), []

    def counted(*args):
        calls.append(1)
        return kernel(*args)

    monkeypatch.setattr(direct, name, counted)
    return calls


@pytest.mark.parametrize("x_shape, w_shape, stride, pad, dilation, groups", [
    ((3, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),            # LeNet's second layer
    ((2, 5, 13, 12), (6, 5, 3, 3), 1, 1, 1, 1),             # a partial block of dx channels
    ((2, 4, 13, 11), (8, 4, 5, 5), 2, 2, 1, 1),             # four phases
    ((2, 4, 20, 20), (7, 4, 3, 3), 3, 0, 1, 1),             # stride 3: phases of one tap
    ((2, 6, 30, 33), (10, 6, 3, 3), (2, 1), 1, (2, 3), 1),  # dilated
    ((2, 8, 9, 9), (6, 4, 3, 3), 1, 1, 1, 2),               # grouped
    ((2, 4, 17, 17), (5, 4, 1, 7), 1, (0, 3), 1, 1),        # 1x7
    ((2, 4, 17, 17), (5, 4, 7, 1), 1, (3, 0), 1, 1),        # 7x1
    ((1, 4, 40, 3), (3, 4, 2, 2), 1, 0, 1, 1),              # rows narrower than a strip
    ((1, 4, 5, 5), (4, 4, 3, 3), 4, 0, 1, 1),               # stride beyond the window
])
def test_float32_dx_runs_on_the_register_tile(x_shape, w_shape, stride, pad, dilation, groups,
                                              monkeypatch):
    from fastconv import functional as F

    rng = np.random.default_rng(list(x_shape + w_shape))
    x, W, b = (rng.standard_normal(s).astype(np.float32) for s in (x_shape, w_shape,
                                                                    w_shape[:1]))
    kw = dict(stride=stride, pad=pad, dilation=dilation, groups=groups)
    strips, passes = _spy(monkeypatch, "_conv_dx_strips"), _spy(monkeypatch, "_conv_dx")
    out, saved = F.conv_forward(x, W, b, backend="direct", **kw)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx = F.conv_backward(dout, saved)[0]
    assert (len(strips), len(passes)) == (1, 0)
    _, oracle = F.conv_forward(*(a.astype(np.float64) for a in (x, W, b)), backend="naive", **kw)
    assert_close(dx, F.conv_backward(dout.astype(np.float64), oracle)[0].astype(np.float32),
                 "dx")
    # the strips' overreach (past the rows, into the next plane) never lands in dx
    dout[:, :, -1, -1] = np.nan
    dx_nan = F.conv_backward(dout, saved)[0]
    assert_same_cells(dx_nan, F.conv_backward(dout.astype(np.float64), oracle)[0], "dx")


@pytest.mark.parametrize("dtype, channels, weight", [
    (np.float64, 5, 1.0),        # no register tile in float64
    (np.float32, 3, 1.0),        # fewer channels than a block
    (np.float32, 5, np.inf),     # a weight that is not finite: the terms of the naive path only
])
def test_dx_runs_passes_where_the_tile_does_not_pay_or_is_not_exact(dtype, channels, weight,
                                                                     monkeypatch):
    rng = np.random.default_rng(11)
    x, W, b = _random_conv(rng, 2, channels, 9, 8, 6, 3, 3, dtype)
    W[1, 0, 1, 2] *= weight
    strips, passes = _spy(monkeypatch, "_conv_dx_strips"), _spy(monkeypatch, "_conv_dx")
    got, want = _conv_both(x, W, b, (1, 1), (1, 1))
    assert (len(strips), len(passes)) == (0, 1)
    assert_same_cells(got[1], want[1], "dx")


# ---------------------------------------------------------- the transposed forward

@pytest.mark.parametrize("x_shape, w_shape, stride, pad, dilation, groups", [
    ((2, 5, 17, 17), (6, 5, 1, 7), 1, 0, 1, 1),                 # Inception's 1x7
    ((2, 4, 17, 17), (5, 4, 1, 7), 1, (0, 3), 1, 1),            # the same, padded to 17x17
    ((2, 6, 20, 14), (8, 3, 2, 5), (2, 1), (1, 0), (1, 2), 2),  # stride, dilation, groups
    ((2, 6, 9, 40), (8, 3, 1, 5), (1, 2), (0, 1), (1, 3), 2),   # stride across, pad across
    ((2, 3, 17, 17), (70, 3, 1, 7), 1, 0, 1, 1),                # dW with the filters in lanes
])
def test_a_forward_that_wastes_its_wide_grid_runs_transposed_bit_for_bit(
        x_shape, w_shape, stride, pad, dilation, groups):
    from fastconv import functional as F
    from fastconv.spec import conv_spec

    rng = np.random.default_rng(list(x_shape + w_shape))
    x, W, b = (rng.standard_normal(s).astype(np.float32) for s in (x_shape, w_shape,
                                                                    w_shape[:1]))
    kw = dict(stride=stride, pad=pad, dilation=dilation, groups=groups)
    assert direct.plan(conv_spec(x.shape, W.shape, **kw))["transposed_forward"]
    x_in = x.copy()
    out = F.conv2d(x, W, b, backend="direct", **kw)
    np.testing.assert_array_equal(x, x_in)
    out_saved, saved = F.conv_forward(x, W, b, backend="direct", **kw)
    np.testing.assert_array_equal(out_saved, out)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    want, oracle = F.conv_forward(*(a.astype(np.float64) for a in (x, W, b)), backend="naive",
                                  **kw)
    assert_close(out, want.astype(np.float32), "out")
    # backward: dW on the transposed planes forward kept, dx on the problem as given
    for name, g, w in zip(("dx", "dW", "db"), F.conv_backward(dout, saved),
                          F.conv_backward(dout.astype(np.float64), oracle)):
        assert_close(g, w.astype(np.float32), name)

    # The same cells from a problem that keeps its layout: x widened on the right
    # (its right padding written out as zeros) until the grid wastes too little
    # to transpose. Each cell sums the same taps in the same order: the same bits.
    pw = pad[1] if isinstance(pad, tuple) else pad
    wide = np.concatenate([x, np.zeros(x.shape[:3] + (pw,), np.float32),
                           rng.standard_normal(x.shape[:3] + (80,)).astype(np.float32)], axis=3)
    wide_kw = dict(kw, pad=(pad[0] if isinstance(pad, tuple) else pad, pw))
    assert not direct.plan(conv_spec(wide.shape, W.shape, **wide_kw))["transposed_forward"]
    wide_out = F.conv2d(wide, W, b, backend="direct", **wide_kw)
    np.testing.assert_array_equal(wide_out[..., :out.shape[3]], out)

    # nan and inf land where the naive path puts them
    # without dx, dW and db are those of the full backward, bit for bit
    _, saved_no_dx = F.conv_forward(x, W, b, backend="direct", input_grad=False, **kw)
    no_dx = F.conv_backward(dout, saved_no_dx)
    assert no_dx[0] is None
    for got, full in zip(no_dx[1:], F.conv_backward(dout, saved)[1:]):
        np.testing.assert_array_equal(got, full)

    x[0, 1, 3, 4], x[1, 0, 5, 2], W[2, 1, 0, 1] = np.nan, np.inf, -np.inf
    assert_same_cells(F.conv2d(x, W, b, backend="direct", **kw),
                      F.conv2d(*(a.astype(np.float64) for a in (x, W, b)), backend="naive",
                               **kw), "out")
    # dW from the transposed planes, x with nan and inf: row by row, the same cells
    _, saved = F.conv_forward(x, W, b, backend="direct", **kw)
    _, oracle = F.conv_forward(*(a.astype(np.float64) for a in (x, W, b)), backend="naive",
                               **kw)
    for name, g, w in zip(("dx", "dW", "db"), F.conv_backward(dout, saved),
                          F.conv_backward(dout.astype(np.float64), oracle)):
        assert_same_cells(g, w, name)


# ------------------------------------------------------------------- threads

@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_the_thread_count(dtype):
    rng = np.random.default_rng(8)
    x, W, b = _random_conv(rng, 3, 5, 13, 12, 6, 3, 3, dtype)
    out_hw = output_hw(x.shape[2:], W.shape[2:], (1, 1), (1, 1), "floor")
    dout = rng.standard_normal((3, 6, *out_hw)).astype(dtype)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            out, cache = conv_kernel(direct, x, W, b, (1, 1), (1, 1), out_hw)
            pooled, pcache = pool_kernel(direct, x, (3, 3), (2, 2), (1, 1), (7, 6), "max")  # 13x12 input
            results.append((out, *direct.conv_backward(dout, cache), pooled,
                            direct.pool_backward(pooled, pcache)))
    finally:
        numba.set_num_threads(before)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_float32_compiles_natively():
    # the kernels are compiled for float32 itself: no float64 copy on the way in
    rng = np.random.default_rng(9)
    for C in (2, 4):                 # dx in passes, dx on the register tile
        x, W, b = _random_conv(rng, 1, C, 6, 6, 3, 3, 3, np.float32)
        out, cache = conv_kernel(direct, x, W, b, (1, 1), (0, 0), (4, 4))
        direct.conv_backward(out, cache)
    x, W, b = _random_conv(rng, 1, 2, 6, 6, 64, 3, 3, np.float32)   # dW, filters in lanes
    out, cache = conv_kernel(direct, x, W, b, (1, 1), (0, 0), (4, 4))
    direct.conv_backward(out, cache)
    for kernel in (direct._conv_forward, direct._conv_dx, direct._conv_dx_strips,
                   direct._conv_dw, direct._conv_dw_lanes, direct._dout_lanes):
        float_args = [{a.dtype for a in sig if isinstance(a, numba.types.Array)
                       and a.dtype in (numba.float32, numba.float64)} for sig in kernel.signatures]
        assert {numba.float32} in float_args, kernel
        assert all(len(kinds) == 1 for kinds in float_args), kernel


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_finiteness_scan_agrees_with_numpy(dtype):
    # the scan reads exponent bits: every class of float, each alone in an array of
    # ordinary values, at the start, the middle and the end, against np.isfinite
    info = np.finfo(dtype)
    specials = [np.nan, -np.nan, np.inf, -np.inf, info.max, -info.max, info.tiny,
                info.smallest_subnormal, -0.0, 1.0]
    rng = np.random.default_rng(3)
    for size in (1, 17, 1000):
        for value in specials:
            for at in {0, size // 2, size - 1}:
                a = rng.standard_normal(size).astype(dtype)
                a[at] = value
                assert direct._all_finite(a.reshape(1, -1)) == bool(np.isfinite(a).all()), (
                    size, value, at)


# ------------------------------------------------------------------- pooling

def _pool_both(x, pool_hw, stride, pad, mode, dout_seed=0):
    out_hw = output_hw(x.shape[2:], pool_hw, stride, pad, "floor")
    out, cache = pool_kernel(direct, x, pool_hw, stride, pad, out_hw, mode)
    dout = np.random.default_rng(dout_seed).standard_normal(out.shape).astype(x.dtype)
    ref, ref_cache = pool_kernel(naive, x, pool_hw, stride, pad, out_hw, mode)
    return (out, direct.pool_backward(dout, cache)), (ref, naive.pool_backward(dout, ref_cache))


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("pool_hw, stride, pad", [((3, 3), (1, 1), (1, 1)), ((4, 2), (2, 1), (2, 1)),
                                                  ((2, 5), (3, 2), (0, 4))])
def test_overlapping_windows_match_naive(mode, pool_hw, stride, pad):
    # stride < window: one input cell feeds several outputs (race-free gather)
    x = np.round(np.random.default_rng(10).standard_normal((2, 3, 9, 11)) * 2)  # many ties
    (out, dx), (ref, ref_dx) = _pool_both(x, pool_hw, stride, pad, mode)
    assert_close(out, ref, "out")
    assert_close(dx, ref_dx, "dx")


def test_max_pool_treats_nan_and_minus_inf_as_naive_does():
    x = np.random.default_rng(11).standard_normal((1, 2, 6, 6))
    x[0, 0, 1, 2] = np.nan                      # nan wins its windows, as in np.argmax
    x[0, 1, :3, :3] = -np.inf                   # a window of -inf and -inf padding
    (out, dx), (ref, ref_dx) = _pool_both(x, (3, 3), (2, 2), (1, 1), "max")
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(dx, ref_dx)


def test_python_threads_may_call_at_once():
    # the public functions serialise their launches, so the one scratch store
    # of the process is never used by two threads at once
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(12)
    cases = [_random_conv(rng, 2, 3, 10 + i, 9, 4, 3, 3, np.float64) for i in range(4)]

    def run(case):
        x, W, b = case
        out_hw = output_hw(x.shape[2:], W.shape[2:], (1, 1), (1, 1), "floor")
        out, cache = conv_kernel(direct, x, W, b, (1, 1), (1, 1), out_hw)
        return (out, *direct.conv_backward(out, cache))

    alone = [run(case) for case in cases]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, cases * 3))
    for i, result in enumerate(together):
        for a, e in zip(result, alone[i % len(cases)]):
            np.testing.assert_array_equal(a, e)
