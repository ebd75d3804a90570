"""What only the im2col path has: its memory budget, chunking, layouts and workspace.

The cross-path tests (test_paths.py) already hold every path to the naive
oracle on random cases; these tests drive the im2col path through the code
that those small cases do not reach: batches split into chunks, single images
split into bands of output positions, the per-image layout used for large maps, and
the no-unroll 1x1 case; and they check that the budget bounds the memory.
"""
import subprocess
import textwrap
import tracemalloc

import numpy as np
import pytest

from support import PYTHON, assert_close, conv_kernel, pool_kernel
from fastconv import backends
from fastconv.geometry import output_hw
from fastconv.kernels import im2col, naive

if "im2col" not in backends.available_backends():
    pytest.skip("the im2col path is not registered", allow_module_level=True)

DTYPES = [np.float32, np.float64]
MiB = 2**20




@pytest.fixture(params=["side_by_side", "per_image"])
def layout(request, monkeypatch):
    """Run a test under each forward layout, whatever the size of its maps."""
    threshold = 1 if request.param == "per_image" else 10**9
    monkeypatch.setattr(im2col, "_MIN_COLUMNS_PER_IMAGE", threshold)
    return request.param


def _conv_case(dtype, N=3, C=2, H=9, W=8, FN=4, FH=3, FW=2, stride=(2, 1), pad=(1, 2), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    Wt = rng.standard_normal((FN, C, FH, FW)).astype(dtype)
    b = rng.standard_normal(FN).astype(dtype)
    out_hw = output_hw((H, W), (FH, FW), stride, pad, "floor")
    dout = rng.standard_normal((N, FN) + out_hw).astype(dtype)
    return x, Wt, b, stride, pad, out_hw, dout


def _conv_all(module, x, Wt, b, stride, pad, out_hw, dout):
    out, cache = conv_kernel(module, x, Wt, b, stride, pad, out_hw)
    return (out, *module.conv_backward(dout, cache))


# Budgets, in array entries, that split _conv_case's unrolled matrix (13 rows:
# C*FH*FW + 1; 5x11 output positions per image) into: one chunk; two images per
# chunk; one image per chunk; bands of two output rows; bands of one row;
# pieces of 4 positions (bands that start and end inside rows); one position
# (a budget below one receptive field still gets one: the smallest piece).
CHUNKINGS = {"one_chunk": 2**30, "two_images": 2 * 13 * 55, "one_image": 13 * 55,
             "two_rows": 2 * 13 * 11, "one_row": 13 * 11, "four_positions": 4 * 13,
             "one_position": 1}


def _set_chunking(budget, chunking, dtype):
    budget(CHUNKINGS[chunking] * np.dtype(dtype).itemsize)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_chunked_matches_naive_and_one_chunk(dtype, chunking, budget, layout):
    case = _conv_case(dtype)
    assert case[5] == (5, 11)
    _set_chunking(budget, "one_chunk", dtype)
    whole = _conv_all(im2col, *case)
    _set_chunking(budget, chunking, dtype)
    chunked = _conv_all(im2col, *case)
    expected = _conv_all(naive, *case)
    for name, c, w, e in zip(("out", "dx", "dW", "db"), chunked, whole, expected):
        assert_close(c, e, f"{name}, {chunking}")
        assert_close(c, w, f"{name}, {chunking} vs one chunk")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows_per_chunk", [None, 9, 3])
def test_bias_outside_the_products_on_deep_small_maps(dtype, rows_per_chunk, budget, layout,
                                                     monkeypatch):
    # K = 16*3*3 = 144 unrolled rows against N*P = 2*9 positions: the bias is added
    # after the products and db summed from dout; the same layer with the bias
    # forced into the products agrees too. Chunks: whole, one image, one output row.
    case = _conv_case(dtype, N=2, C=16, H=3, W=3, FN=5, FH=3, FW=3, stride=(1, 1), pad=(1, 1))
    assert not im2col._bias_in_product(1, 144, 2, 9)
    assert im2col._bias_in_product(1, 144, 16, 9)
    if rows_per_chunk is not None:
        budget(145 * rows_per_chunk * np.dtype(dtype).itemsize)
    expected = _conv_all(naive, *case)
    apart = _conv_all(im2col, *case)
    monkeypatch.setattr(im2col, "_bias_in_product", lambda *args: True)
    folded = _conv_all(im2col, *case)
    for name, a, f, e in zip(("out", "dx", "dW", "db"), apart, folded, expected):
        assert_close(a, e, f"{name}, bias apart")
        assert_close(f, e, f"{name}, bias in the products")


def test_chunk_plan_covers_every_image_and_position_once(budget):
    # N=5 images of 7x4 output positions; the unrolled matrix has 10 rows
    sizes = {"whole": 10**9, "two_images": 2 * 10 * 28 * 4, "three_rows": 3 * 10 * 4 * 4,
             "row": 10 * 4 * 4, "three_positions": 3 * 10 * 4, "position": 1}
    for setting in sizes.values():
        budget(setting)
        covered = np.zeros((5, 28), dtype=int)
        for n0, n_imgs, p0, p1 in im2col._chunks(5, 10, 7, 4, 4):
            covered[n0:n0 + n_imgs, p0:p1] += 1
            assert n_imgs * 10 * (p1 - p0) * 4 <= max(setting, 10 * 4)
        assert (covered == 1).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_alexnet_first_layer_at_batch_64_stays_in_the_default_budget(dtype, budget):
    # (64, 3, 224, 224) * 96 filters 11x11, stride 4, pad 2: the whole unrolled
    # matrix would be 64 * 364 * 55*55 entries, 0.28 GB (float32) or 0.56 GB
    budget(im2col.DEFAULT_WORKSPACE_BUDGET)
    itemsize = np.dtype(dtype).itemsize
    K1, OH, OW = 3 * 11 * 11 + 1, 55, 55
    chunks = list(im2col._chunks(64, K1, OH, OW, itemsize))
    assert sum(n for _, n, _, _ in chunks) == 64
    assert len(chunks) >= 2
    for _, n_imgs, p0, p1 in chunks:
        assert n_imgs * K1 * (p1 - p0) * itemsize <= 256 * MiB


@pytest.mark.parametrize("per_image", [False, True])
def test_budget_bounds_the_memory_actually_allocated(per_image, budget, monkeypatch):
    # 32 images whose unrolled matrix is 4.6 MB in all; with a 0.25 MiB budget
    # the peak of everything allocated must stay near inputs + outputs + budget
    monkeypatch.setattr(im2col, "_MIN_COLUMNS_PER_IMAGE", 1 if per_image else 10**9)
    case = _conv_case(np.float32, N=32, C=3, H=20, W=20, FN=4, FH=5, FW=5,
                      stride=(1, 1), pad=(2, 2))
    x, Wt, b, stride, pad, out_hw, dout = case
    unrolled = 32 * (3 * 25 + 1) * 400 * 4
    budget(MiB // 4)
    im2col.release_workspace()
    arrays = sum(a.nbytes for a in (x, Wt, b, dout))
    tracemalloc.start()
    try:
        _conv_all(im2col, *case)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # outputs: out, dx, dW, db are about the size of the inputs; the product
    # buffer of the side-by-side layout is FN/(K+1) of the unrolled matrix
    assert peak <= 2 * arrays + 2 * (MiB // 4) + 64 * 1024
    assert peak < unrolled / 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_pointwise_needs_no_unroll_and_matches_naive(dtype, budget, monkeypatch):
    # 1x1, stride 1, pad 0 with maps of >= _MIN_COLUMNS_PER_IMAGE positions
    monkeypatch.setattr(im2col, "_MIN_COLUMNS_PER_IMAGE", 16)
    case = _conv_case(dtype, N=3, C=5, H=4, W=6, FN=7, FH=1, FW=1, stride=(1, 1), pad=(0, 0))
    calls = []
    monkeypatch.setattr(im2col, "_unroll", lambda *a: calls.append(a))
    actual = _conv_all(im2col, *case)
    assert calls == []
    for name, a, e in zip(("out", "dx", "dW", "db"), actual, _conv_all(naive, *case)):
        assert_close(a, e, name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_maps_take_the_per_image_layout(dtype):
    # 34x34 output maps (>= _MIN_COLUMNS_PER_IMAGE positions): one product per image
    case = _conv_case(dtype, N=2, C=2, H=34, W=34, FN=3, FH=3, FW=3, stride=(1, 1), pad=(1, 1))
    assert case[5][0] * case[5][1] >= im2col._MIN_COLUMNS_PER_IMAGE
    actual, expected = _conv_all(im2col, *case), _conv_all(naive, *case)
    for name, a, e in zip(("out", "dx", "dW", "db"), actual, expected):
        assert_close(a, e, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunking", ["one_chunk", "one_image", "two_rows", "four_positions"])
def test_chunked_runs_are_bit_identical(dtype, chunking, budget, layout):
    _set_chunking(budget, chunking, dtype)
    case = _conv_case(dtype, seed=3)
    first = _conv_all(im2col, *case)
    for _ in range(2):
        again = _conv_all(im2col, *case)
        for a, b in zip(first, again):
            assert np.array_equal(a, b)


def test_results_never_alias_the_reused_workspace(budget, layout):
    # a second call reuses the workspace: results of the first must not change
    _set_chunking(budget, "one_image", np.float64)
    case1 = _conv_case(np.float64, seed=1)
    case2 = _conv_case(np.float64, seed=2)
    first = _conv_all(im2col, *case1)
    kept = [a.copy() for a in first]
    inputs = [a.copy() for a in (case2[0], case2[1], case2[2], case2[6])]
    _conv_all(im2col, *case2)
    for a, k in zip(first, kept):
        assert np.array_equal(a, k)
    for a, k in zip((case2[0], case2[1], case2[2], case2[6]), inputs):
        assert np.array_equal(a, k), "an input was modified"
    workspace = im2col._workspace.buffers()
    assert workspace
    for a in first:
        assert not any(np.shares_memory(a, w) for w in workspace)


def test_workspace_is_reused_between_calls(budget):
    _set_chunking(budget, "one_chunk", np.float32)
    im2col.release_workspace()
    case = _conv_case(np.float32)
    _conv_all(im2col, *case)
    def addresses():
        return [v.__array_interface__["data"][0] for v in im2col._workspace.buffers()]
    buffers = addresses()
    _conv_all(im2col, *case)
    assert buffers == addresses()


def test_set_workspace_budget_checks_and_returns_the_previous_value(budget):
    previous = im2col.get_workspace_budget()
    assert im2col.set_workspace_budget(12345) == previous
    assert im2col.get_workspace_budget() == 12345
    with pytest.raises(ValueError, match="nbytes"):
        im2col.set_workspace_budget(0)
    with pytest.raises(TypeError, match="nbytes"):
        im2col.set_workspace_budget(1.5)


def test_budget_environment_variable(monkeypatch):
    monkeypatch.setenv("FASTCONV_IM2COL_BUDGET", "1048576")
    assert im2col._budget_from_env() == MiB
    monkeypatch.setenv("FASTCONV_IM2COL_BUDGET", "")
    assert im2col._budget_from_env() == im2col.DEFAULT_WORKSPACE_BUDGET
    for bad in ("256MiB", "0"):
        monkeypatch.setenv("FASTCONV_IM2COL_BUDGET", bad)
        with pytest.raises(ValueError, match="FASTCONV_IM2COL_BUDGET"):
            im2col._budget_from_env()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling_with_padding_and_uneven_strides_matches_naive(dtype, mode):
    # -inf / zero padding, overlapping windows, a trailing row the floor rule drops
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 10, 9)).astype(dtype)
    x[0, 0] = -np.inf                       # a plane of -inf: padded cells tie with it
    pool_hw, stride, pad = (3, 2), (2, 1), (1, 1)
    out_hw = output_hw((10, 9), pool_hw, stride, pad, "floor")
    out, cache = pool_kernel(im2col, x, pool_hw, stride, pad, out_hw, mode)
    out_ref, cache_ref = pool_kernel(naive, x, pool_hw, stride, pad, out_hw, mode)
    np.testing.assert_allclose(out, out_ref, **({"rtol": 1e-6} if dtype == np.float32 else {}))
    assert out.dtype == dtype
    dout = rng.standard_normal(out.shape).astype(dtype)
    assert_close(im2col.pool_backward(dout, cache), naive.pool_backward(dout, cache_ref), "dx")


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pooling_propagates_nan_like_argmax(dtype):
    # np.argmax (the oracle) picks the first NaN of a window; so must the kernel
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 2, 7, 6)).astype(dtype)
    x[0, 0, 1, 1] = x[1, 1, 4, 2] = x[1, 1, 4, 3] = np.nan
    pool_hw, stride, pad = (3, 3), (2, 2), (1, 1)
    out_hw = output_hw((7, 6), pool_hw, stride, pad, "floor")
    out, cache = pool_kernel(im2col, x, pool_hw, stride, pad, out_hw, "max")
    out_ref, cache_ref = pool_kernel(naive, x, pool_hw, stride, pad, out_hw, "max")
    np.testing.assert_array_equal(out, out_ref)
    dout = rng.standard_normal(out.shape).astype(dtype)
    np.testing.assert_array_equal(im2col.pool_backward(dout, cache),
                                  naive.pool_backward(dout, cache_ref))


def test_threads_calling_at_once_get_correct_results():
    # The workqueue threading layer aborts the process on concurrent parallel
    # launches; the path serializes its own. Run in a child process, so that an
    # abort fails this test instead of ending the test run.
    code = textwrap.dedent("""
        import threading
        import numpy as np
        from fastconv import conv_spec
        from fastconv.kernels import im2col, naive
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 3, 12, 12))
        W = rng.standard_normal((5, 3, 3, 3))
        b = rng.standard_normal(5)
        spec = conv_spec(x.shape, W.shape, 1, 1, x.dtype)
        expected, _ = naive.conv_forward(x, W, b, spec)
        results, errors = [], []
        def work():
            try:
                for _ in range(30):
                    out, cache = im2col.conv_forward(x, W, b, spec)
                    im2col.conv_backward(out, cache)
                    results.append(np.allclose(out, expected, rtol=1e-10, atol=1e-10))
            except Exception as err:
                errors.append(repr(err))
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(results) == 120 and all(results)
        print("ok")
    """)
    done = subprocess.run([*PYTHON, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


# Bands of a dilated, horizontally strided convolution: the unroll and col2im
# copy a band's rows into a local zero-bordered plane, whose first row, width
# and strided runs depend on the band's first and last output rows.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [(2, 3), (1, 1)])
@pytest.mark.parametrize("filter_hw", [(3, 2), (1, 4)])
@pytest.mark.parametrize("piece", ["two_images", "one_image", "two_rows", "one_row",
                                   "three_positions", "one_position"])
def test_bands_of_a_dilated_convolution_match_naive(dtype, piece, filter_hw, stride, budget):
    # stride 1 unrolls a tap's row as one run of a plane shifted by its filter
    # column (``_shifted_planes``); bands may start and end inside output rows.
    # A one-row filter over whole output rows builds those planes in the unrolled
    # matrix itself, and col2im folds them from there.
    from fastconv.spec import conv_spec

    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 11, 16)).astype(dtype)
    Wt = rng.standard_normal((3, 2, *filter_hw)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    spec = conv_spec(x.shape, Wt.shape, stride, (2, 1), dtype, dilation=(2, 3))
    OH, OW = spec.out_hw
    assert OH > 2 and OW > 2, spec.out_hw
    rows = 2 * filter_hw[0] * filter_hw[1] + 1
    entries = {"two_images": 2 * rows * OH * OW, "one_image": rows * OH * OW,
               "two_rows": 2 * rows * OW, "one_row": rows * OW,
               "three_positions": 3 * rows, "one_position": 1}[piece]
    budget(entries * np.dtype(dtype).itemsize)
    dout = rng.standard_normal(spec.out_shape).astype(dtype)
    got_out, cache = im2col.conv_forward(x, Wt, b, spec)
    got = (got_out, *im2col.conv_backward(dout, cache))
    want_out, ncache = naive.conv_forward(x, Wt, b, spec)
    want = (want_out, *naive.conv_backward(dout, ncache))
    for name, g, w in zip(("out", "dx", "dW", "db"), got, want):
        assert_close(g, w, f"{name}, {piece}")


# With stride 1, col2im adds a tap's row into planes shifted by filter column while
# they fit _SHIFTED_PLANES_BYTES, else into the bordered plane of strided layers:
# both sides of that limit, with padding, dilation and an uneven filter.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [20, 240])
def test_stride_one_col2im_both_sides_of_the_planes_limit(dtype, width):
    from fastconv.spec import conv_spec

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 120, width)).astype(dtype)
    Wt = rng.standard_normal((2, 2, 3, 4)).astype(dtype)
    spec = conv_spec(x.shape, Wt.shape, 1, (1, 2), dtype, dilation=(1, 2))
    OH, OW = spec.out_hw
    planes = 4 * (OH + 2) * OW * np.dtype(dtype).itemsize    # FW * rows * OW: one band, 2 rows of halo
    assert (planes <= im2col._SHIFTED_PLANES_BYTES) == (width == 20), planes
    dout = rng.standard_normal(spec.out_shape).astype(dtype)
    _, cache = im2col.conv_forward(x, Wt, np.zeros(2, dtype), spec)
    _, ncache = naive.conv_forward(x, Wt, np.zeros(2, dtype), spec)
    assert_close(im2col.conv_backward(dout, cache)[0], naive.conv_backward(dout, ncache)[0], "dx")
