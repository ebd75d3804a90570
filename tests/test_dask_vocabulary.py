"""fastconv.dask.conv2d and pool2d with PyTorch's arguments, over every chunking.

For each argument the chunked result (chunks along N only, along H and W with
chunks smaller than the halo, and both) is compared with the in-memory
``fastconv.conv2d`` / ``fastconv.pool2d`` on the same path: bit for bit on the
direct and naive paths, within the TOLERANCES of tests/support.py on im2col.
Each argument also meets one value computed another way: the naive path on a
worked rewrite (a dilated filter as a larger one with zeros between its taps,
groups as separate convolutions, padding as np.pad) or NumPy by hand. The
synchronous scheduler computes everything: no cluster is needed.
"""
import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402
from support import assert_close  # noqa: E402

# x: (3, 4, 9, 8). "spatial" has chunks of 1-3 cells, smaller than the halo of
# a dilated 3x3 filter (4 cells); "both" also splits C, which is merged.
CONV_CHUNKS = {
    "batch": (2, 4, 9, 8),
    "spatial": (3, 4, (2, 1, 3, 3), (1, 3, 4)),
    "both": (2, 1, (4, 1, 4), (3, 5)),
}
# x: (2, 3, 11, 10) for pooling
POOL_CHUNKS = {
    "batch": (1, 3, 11, 10),
    "spatial": (2, 3, (2, 1, 3, 5), (1, 3, 6)),
    "both": (1, 1, (4, 7), (3, 1, 6)),
}


def arrays(dtype, *shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def compute(a):
    return a.compute(scheduler="sync")


def conv_input(dtype=np.float64, chunking="spatial"):
    x, = arrays(dtype, (3, 4, 9, 8))
    return x, da.from_array(x, chunks=CONV_CHUNKS[chunking])


def pool_input(dtype=np.float64, chunking="spatial"):
    x, = arrays(dtype, (2, 3, 11, 10), seed=1)
    # non-finite values propagate as in the unchunked call; -inf meets the
    # -inf a max-pooling tile is padded with
    x[0, 1, 0, 9] = np.nan
    x[1, 2, 10, 0] = -np.inf
    x[1, 0, 5, 5] = np.inf
    return x, da.from_array(x, chunks=POOL_CHUNKS[chunking])


def assert_same_conv(xd, x, W, b, *args, backend="direct", **kwargs):
    """The chunked conv2d equals the in-memory one bit for bit, shape, dtype and chunks along N."""
    out = fd.conv2d(xd, W, b, *args, backend=backend, **kwargs)
    expected = fastconv.conv2d(x, W, b, *args, backend=backend, **kwargs)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    assert out.chunks[0] == xd.chunks[0]
    result = compute(out)
    assert result.dtype == expected.dtype
    np.testing.assert_array_equal(result, expected)
    return result


def assert_same_pool(xd, x, *args, backend="direct", **kwargs):
    out = fd.pool2d(xd, *args, backend=backend, **kwargs)
    expected = fastconv.pool2d(x, *args, backend=backend, **kwargs)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    result = compute(out)
    np.testing.assert_array_equal(result, expected)
    return result


# --------------------------------------------------------------- tiling arithmetic

@pytest.mark.parametrize("size, window, stride, pad", [
    (9, 5, 1, (1, 2)), (9, 5, 2, (0, 3)), (13, 3, 3, (2, 0)), (8, 3, 2, (5, 4))])
def test_output_pieces_tile_the_grid_with_unequal_padding(size, window, stride, pad):
    before, after = pad
    n_out = (size + before + after - window) // stride + 1
    rng = np.random.default_rng(size + window + stride)
    for _ in range(20):
        cuts = np.sort(rng.choice(np.arange(1, size), size=rng.integers(0, 5), replace=False))
        chunks = np.diff(np.concatenate([[0], cuts, [size]])).tolist()
        pieces = fd._output_pieces(size, chunks, window, stride, pad, n_out)
        assert [i for o0, o1, _, _ in pieces for i in range(o0, o1)] == list(range(n_out))
        for o0, o1, r0, r1 in pieces:
            assert (r0, r1) == (o0 * stride - before, (o1 - 1) * stride + window - before)


# ------------------------------------------------------------------ conv2d: dilation

@pytest.mark.parametrize("chunking", CONV_CHUNKS)
@pytest.mark.parametrize("dilation", [2, (1, 3)])
def test_dilation_matches_the_in_memory_call(chunking, dilation):
    x, xd = conv_input(chunking=chunking)
    W, b = arrays(np.float64, (5, 4, 3, 3), (5,), seed=2)
    for stride, pad in ((1, 0), (2, 1), (3, 2)):
        assert_same_conv(xd, x, W, b, stride, pad, dilation)


def test_a_dilated_filter_is_a_larger_filter_with_zeros_between_its_taps():
    x, xd = conv_input(chunking="both")
    W, b = arrays(np.float64, (5, 4, 3, 3), (5,), seed=3)
    spread = np.zeros((5, 4, 5, 5))
    spread[:, :, ::2, ::2] = W                     # dilation 2: taps two cells apart
    result = compute(fd.conv2d(xd, W, b, 2, 1, dilation=2, backend="direct"))
    assert_close(result, fastconv.conv2d(x, spread, b, 2, 1, backend="naive"))


# -------------------------------------------------------------------- conv2d: groups

@pytest.mark.parametrize("chunking", CONV_CHUNKS)
@pytest.mark.parametrize("groups, FN", [(2, 6), (4, 4), (4, 8)])   # (4, 4): depthwise
def test_groups_match_the_in_memory_call(chunking, groups, FN):
    x, xd = conv_input(np.float32, chunking)
    W, b = arrays(np.float32, (FN, 4 // groups, 3, 3), (FN,), seed=4)
    for stride, pad, dilation in ((1, 1, 1), (2, 0, 2)):
        result = assert_same_conv(xd, x, W, b, stride, pad, dilation, groups)
        assert result.dtype == np.float32


def test_groups_are_separate_convolutions_concatenated():
    x, xd = conv_input(chunking="spatial")
    W, b = arrays(np.float64, (6, 2, 3, 2), (6,), seed=5)
    result = compute(fd.conv2d(xd, W, b, 1, 1, groups=2, backend="direct"))
    # group g: input channels 2g..2g+1, filters 3g..3g+2
    parts = [fastconv.conv2d(x[:, 2 * g:2 * g + 2], W[3 * g:3 * g + 3], b[3 * g:3 * g + 3], 1, 1,
                             backend="naive") for g in range(2)]
    assert_close(result, np.concatenate(parts, axis=1))


# ------------------------------------------------------------------- conv2d: padding

PAD_FORMS = [1, (2, 0), ((1, 2), (0, 3)), ((0, 0), (3, 1)), "valid", "same"]


@pytest.mark.parametrize("chunking", CONV_CHUNKS)
@pytest.mark.parametrize("pad", PAD_FORMS, ids=str)
def test_every_padding_form_matches_the_in_memory_call(chunking, pad):
    x, xd = conv_input(chunking=chunking)
    W, b = arrays(np.float64, (3, 4, 4, 3), (3,), seed=6)      # an even filter height
    for stride in (1, 2):
        assert_same_conv(xd, x, W, b, stride, pad)


@pytest.mark.parametrize("stride, sides, out_hw", [
    # 'same', by hand for x (9, 8) and a 4x3 filter: ceil(size / stride) outputs,
    # the total zeros split with the odd one after
    (1, ((1, 2), (1, 1)), (9, 8)),                  # totals 3 and 2
    (2, ((1, 2), (0, 1)), (5, 4)),                  # (5-1)*2+4-9 = 3, (4-1)*2+3-8 = 1
])
def test_same_padding_is_np_pad_by_hand(stride, sides, out_hw):
    x, xd = conv_input(chunking="both")
    W, b = arrays(np.float64, (3, 4, 4, 3), (3,), seed=7)
    expected = fastconv.conv2d(np.pad(x, ((0, 0), (0, 0), *sides)), W, b, stride, 0,
                               backend="naive")
    assert expected.shape[2:] == out_hw
    for pad in ("same", sides):
        out = fd.conv2d(xd, W, b, stride, pad, backend="direct")
        assert out.shape == expected.shape
        assert_close(compute(out), expected)


def test_padding_wider_than_the_filter():
    # windows that lie wholly in the padding read no input: their tiles are zeros alone
    x, xd = conv_input(chunking="spatial")
    W, b = arrays(np.float64, (2, 4, 2, 2), (2,), seed=8)
    for stride in (1, 3):
        result = assert_same_conv(xd, x, W, b, stride, ((4, 3), (5, 2)))
        np.testing.assert_array_equal(result[:, :, 0, 0], np.broadcast_to(b, (3, 2)))


def test_everything_at_once_on_the_naive_path():
    x, xd = conv_input(chunking="both")
    W, b = arrays(np.float64, (6, 2, 3, 3), (6,), seed=9)
    for stride in (1, 2):
        assert_same_conv(xd, x, W, b, stride, "same", 2, 2, backend="naive")
        assert_same_conv(xd, x, W, b, stride, ((2, 0), (1, 3)), (2, 1), 2, flip=True,
                         backend="naive")


def test_im2col_is_within_the_tolerances():
    # BLAS rounds a product by its shape: tiles are close to, not equal to, one call
    x, xd = conv_input(np.float32, chunking="both")
    W, b = arrays(np.float32, (6, 2, 3, 3), (6,), seed=10)
    for stride, pad in ((1, "same"), (2, ((2, 0), (1, 3)))):
        result = compute(fd.conv2d(xd, W, b, stride, pad, 2, 2, backend="im2col"))
        assert result.dtype == np.float32
        assert_close(result, fastconv.conv2d(x, W, b, stride, pad, 2, 2, backend="im2col"))


# ------------------------------------------------------------------- pool2d: options

@pytest.mark.parametrize("chunking", POOL_CHUNKS)
@pytest.mark.parametrize("dilation, ceil_mode", [(2, False), ((1, 2), True), (1, True)])
def test_max_pooling_options_match_the_in_memory_call(chunking, dilation, ceil_mode):
    x, xd = pool_input(chunking=chunking)
    for window, stride, pad in (((2, 2), None, 0), ((3, 3), 2, 1), ((3, 2), 3, 1)):
        assert_same_pool(xd, x, *window, stride, pad, "max", ceil_mode=ceil_mode,
                         dilation=dilation)


def test_dilated_max_pooling_by_hand():
    x, xd = pool_input(chunking="spatial")
    result = compute(fd.pool2d(xd, 2, 2, stride=1, dilation=2, backend="direct"))
    # taps two cells apart: each output is the maximum of four shifted views
    taps = [x[:, :, i:i + 9, j:j + 8] for i in (0, 2) for j in (0, 2)]
    expected = taps[0]
    for t in taps[1:]:
        expected = np.where(np.isnan(expected) | (expected >= t), expected, t)
    np.testing.assert_array_equal(result, expected)


AVG_OPTIONS = [
    dict(count_include_pad=False),
    dict(ceil_mode=True),
    dict(ceil_mode=True, count_include_pad=False),
    dict(divisor_override=5, ceil_mode=True),
]


@pytest.mark.parametrize("chunking", POOL_CHUNKS)
@pytest.mark.parametrize("options", AVG_OPTIONS, ids=lambda o: "-".join(o))
def test_average_pooling_options_match_the_in_memory_call(chunking, options):
    x, xd = pool_input(chunking=chunking)
    for window, stride, pad in (((3, 3), 2, 1), ((2, 3), 3, (1, 0)), ((2, 2), None, 0),
                                ((3, 2), (1, 2), (0, 1))):
        assert_same_pool(xd, x, *window, stride, pad, "avg", **options)


def test_average_over_the_input_cells_of_clipped_windows_by_hand():
    # count_include_pad=False with ceil_mode: x (11, 10), window 3, stride 2, pad 1 ->
    # 6 x 6 windows (ceil_mode's last column of windows clipped to one input
    # column), each the mean of its input cells only
    x, = arrays(np.float64, (2, 3, 11, 10), seed=11)
    xd = da.from_array(x, chunks=POOL_CHUNKS["spatial"])
    result = compute(fd.pool2d(xd, 3, 3, stride=2, pad=1, mode="avg", ceil_mode=True,
                               count_include_pad=False, backend="direct"))
    assert result.shape == (2, 3, 6, 6)
    expected = np.empty_like(result)
    for i in range(6):
        for j in range(6):
            cells = x[:, :, max(2 * i - 1, 0):2 * i + 2, max(2 * j - 1, 0):2 * j + 2]
            expected[:, :, i, j] = cells.mean(axis=(2, 3))
    assert_close(result, expected)


def test_pooling_options_on_the_naive_path():
    x, xd = pool_input(chunking="both")
    assert_same_pool(xd, x, 3, 3, 2, 1, "avg", ceil_mode=True, count_include_pad=False,
                     backend="naive")
    assert_same_pool(xd, x, 3, 2, 2, 1, "avg", divisor_override=4, backend="naive")
    assert_same_pool(xd, x, 2, 3, 2, 1, "max", ceil_mode=True, dilation=(2, 1),
                     backend="naive")


# --------------------------------------------------------------------------- errors

def _never_computed(shape, chunks, dtype=np.float64):
    """A dask array whose every chunk fails if computed: a check that ran a task would
    raise AssertionError instead of the ValueError or TypeError expected."""
    def fail(block):
        raise AssertionError("a chunk was computed")
    return da.zeros(shape, dtype=dtype, chunks=chunks).map_blocks(fail, dtype=dtype)


CONV_ERRORS = [
    (dict(groups=3), (6, 1, 3, 3), ValueError, "groups=3 must divide the input channels C=4"),
    (dict(groups=2), (6, 4, 3, 3), ValueError, r"groups=2 expects C = W.shape\[1\]\*groups"),
    (dict(groups=2), (5, 2, 3, 3), ValueError, "groups=2 must divide the number of filters FN=5"),
    (dict(groups=0), (6, 4, 3, 3), ValueError, "groups must be >= 1"),
    (dict(groups=1.5), (6, 4, 3, 3), TypeError, "groups must be an int"),
    (dict(dilation=0), (6, 4, 3, 3), ValueError, "dilation must be >= 1"),
    (dict(dilation=(1, 2, 3)), (6, 4, 3, 3), ValueError, r"dilation must be an int or an \(h, w\)"),
    (dict(dilation=5), (6, 4, 3, 3), ValueError, "with dilation 5 spans"),
    (dict(pad="full"), (6, 4, 3, 3), ValueError, "pad must be .*'same'"),
    (dict(pad=((1, 2), 3)), (6, 4, 3, 3), ValueError, r"pad must be \(\(top, bottom\)"),
    (dict(pad=(1, 2, 3)), (6, 4, 3, 3), ValueError, r"pad must be an int or an \(h, w\) pair"),
    (dict(pad=-1), (6, 4, 3, 3), ValueError, "pad must be >= 0"),
    (dict(pad=((1, -1), (0, 0))), (6, 4, 3, 3), ValueError, "pad must be >= 0 on every side"),
    (dict(pad=1.5), (6, 4, 3, 3), TypeError, "pad must be an int"),
    (dict(pad="same", stride=0), (6, 4, 3, 3), ValueError, "stride must be >= 1"),
    (dict(rounding="exact", stride=2), (6, 4, 3, 3), ValueError, "not an integer"),
    (dict(dilation=2, backend="winograd"), (6, 4, 3, 3), ValueError, "backend 'winograd' runs"),
    (dict(backend="fast"), (6, 4, 3, 3), ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("kwargs, w_shape, error, match", CONV_ERRORS,
                         ids=[str(e[0]) for e in CONV_ERRORS])
def test_conv_errors_name_the_argument_before_any_chunk_runs(kwargs, w_shape, error, match):
    x = _never_computed((2, 4, 8, 8), (1, 4, 3, 3))
    W = np.zeros(w_shape)
    with pytest.raises(error, match=match) as chunked:
        fd.conv2d(x, W, **kwargs)
    # the in-memory call's message, word for word
    with pytest.raises(error) as in_memory:
        fastconv.conv2d(np.zeros(x.shape), W, **kwargs)
    assert str(chunked.value) == str(in_memory.value)


def test_a_pad_of_no_known_form_is_named():
    # (the in-memory calls answer "unhashable type" here, from their caches)
    x = _never_computed((2, 4, 8, 8), (1, 4, 3, 3))
    with pytest.raises(TypeError, match="pad must be an int"):
        fd.conv2d(x, np.zeros((6, 4, 3, 3)), pad={})
    with pytest.raises(TypeError, match="pad must be an int"):
        fd.pool2d(x, 2, 2, pad={})


POOL_ERRORS = [
    (dict(mode="avg", dilation=2), ValueError, "dilation .* applies to max pooling only"),
    (dict(count_include_pad=False), ValueError, "count_include_pad and divisor_override"),
    (dict(mode="avg", divisor_override=0), ValueError, "divisor_override must be an int >= 1"),
    (dict(ceil_mode="yes"), TypeError, "ceil_mode must be True or False"),
    (dict(ceil_mode=True, rounding="exact"), ValueError, "rounding='exact' refuses"),
    (dict(dilation=0), ValueError, "dilation must be >= 1"),
    (dict(pad=2), ValueError, "smaller than the pool window"),
    (dict(pad=(1, 2, 3)), ValueError, "pad must be an int or an"),
    (dict(mode="min"), ValueError, "mode must be one of"),
    (dict(dilation=3, pad=1, stride=2), ValueError, "would hold padding only"),
    (dict(backend="winograd"), ValueError, "backend 'winograd' runs"),
]


@pytest.mark.parametrize("kwargs, error, match", POOL_ERRORS,
                         ids=[str(e[0]) for e in POOL_ERRORS])
def test_pool_errors_name_the_argument_before_any_chunk_runs(kwargs, error, match):
    x = _never_computed((2, 3, 2, 8), (1, 3, 1, 3))
    kwargs = {"pad": 0, **kwargs}
    with pytest.raises(error, match=match) as chunked:
        fd.pool2d(x, 2, 2, **kwargs)
    with pytest.raises(error) as in_memory:
        fastconv.pool2d(np.zeros(x.shape), 2, 2, **kwargs)
    assert str(chunked.value) == str(in_memory.value)


def test_pooling_offers_no_indices():
    x = _never_computed((2, 3, 4, 4), (1, 3, 2, 2))
    with pytest.raises(TypeError, match="return_indices"):
        fd.pool2d(x, 2, 2, return_indices=True)
