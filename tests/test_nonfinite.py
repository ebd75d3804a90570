"""nan and +-inf propagate on every path exactly as on the naive path.

"Exactly" means cell by cell: the same cells are nan, the same are +inf, the
same are -inf, and the finite cells agree within the dtype's tolerance. The
naive path is the definition: forward pads x with zeros, so a non-finite
weight meets the padding (0 * inf = nan) in forward too; backward has a term
only where a window really read a cell. A kernel that pads, borders or widens
its loops with zeros must therefore never multiply such a zero by a
non-finite factor where the naive path has no term.

Three kinds of test: worked examples whose counts are known by hand, a
property test over random geometry (hypothesis), and an adversarial fuzz run
of more than ten thousand small cases, batched so that it takes seconds.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from support import GENERAL_PATHS, tol

DTYPES = [np.float32, np.float64]
SPECIALS = np.array([np.nan, np.inf, -np.inf])
fast_path = pytest.mark.parametrize("path", GENERAL_PATHS)


# ------------------------------------------------------------------ helpers

def _sprinkle(rng, a, rate):
    """A copy of a with each cell, with probability rate, set to nan, +inf or -inf."""
    a = a.copy()
    hit = rng.random(a.shape) < rate
    a[hit] = rng.choice(SPECIALS, size=int(hit.sum()))
    return a


def mismatch(actual, expected):
    """None when actual matches expected cell by cell, else what differs.

    expected comes from the naive path in float64 (cast to actual's dtype), so
    the float32 oracle's own rounding does not count against the path.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected).astype(actual.dtype)
    if actual.shape != expected.shape:
        return f"shape {actual.shape} != {expected.shape}"
    for kind, test in (("nan", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        a, e = test(actual), test(expected)
        if not np.array_equal(a, e):
            cells = np.argwhere(a != e)[:3].tolist()
            return (f"{kind} in {int(a.sum())} cells, naive has {int(e.sum())}; "
                    f"first differing cells {cells}")
    finite = np.isfinite(expected)
    if finite.any():
        t = tol(actual.dtype)
        a, e = actual[finite].astype(np.float64), expected[finite].astype(np.float64)
        scale = max(1.0, float(np.max(np.abs(e))))
        bad = np.abs(a - e) > t["atol"] * scale + t["rtol"] * np.abs(e)
        if bad.any():
            return f"{int(bad.sum())} finite cells differ, e.g. {a[bad][0]} vs {e[bad][0]}"
    return None


def _conv(path, x, W, b, stride, pad, dout):
    """(out, dx, dW, db) through the public layer."""
    layer = fastconv.Convolution(W, b, stride=stride, pad=pad, backend=path)
    # numpy warns about the nan it makes (in BLAS products and in the naive
    # path's sums): making them is what these tests are about
    with np.errstate(invalid="ignore", over="ignore"):
        out = layer.forward(x)
        dx = layer.backward(dout.astype(x.dtype))
    return out, dx, layer.dW, layer.db


def _pool(path, x, pool_hw, stride, pad, mode, dout):
    """(out, dx) through the public layer."""
    layer = fastconv.Pooling(*pool_hw, stride=stride, pad=pad, mode=mode, backend=path)
    with np.errstate(invalid="ignore", over="ignore"):
        out = layer.forward(x)
        return out, layer.backward(dout.astype(x.dtype))


def _f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


def conv_mismatches(path, x, W, b, stride, pad, dout):
    """Names (and what differs) of the conv results of path that disagree with naive."""
    got = _conv(path, x, W, b, stride, pad, dout)
    want = _conv("naive", *_f64(x, W, b), stride, pad, dout.astype(np.float64))
    found = {}
    for name, g, w in zip(("out", "dx", "dW", "db"), got, want):
        assert g.dtype == x.dtype, name
        problem = mismatch(g, w)
        if problem:
            found[name] = problem
    return found


def pool_mismatches(path, x, pool_hw, stride, pad, mode, dout):
    got = _pool(path, x, pool_hw, stride, pad, mode, dout)
    want = _pool("naive", x.astype(np.float64), pool_hw, stride, pad, mode,
                 dout.astype(np.float64))
    found = {}
    for name, g, w in zip(("out", "dx"), got, want):
        assert g.dtype == x.dtype, name
        problem = mismatch(g, w)
        if problem:
            found[name] = problem
    return found


def _out_hw(hw, window, stride, pad):
    return tuple(fastconv.conv_output_size(s, f, st_, p)
                 for s, f, st_, p in zip(hw, window, stride, pad))


# ---------------------------------------------------------- worked examples

@pytest.mark.parametrize("path", ["naive", *GENERAL_PATHS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_nan_weight_reaches_only_the_cells_it_multiplies(path, dtype):
    # 4x4 ones, a 3x3 filter with nan at its centre, no padding: 2x2 output.
    # Every output reads the centre tap: 4 nan outputs. In dx the centre tap
    # of window (i, j) lands on x cell (i+1, j+1): the inner 2x2 cells only.
    x = np.ones((1, 1, 4, 4), dtype=dtype)
    W = np.ones((1, 1, 3, 3), dtype=dtype)
    W[0, 0, 1, 1] = np.nan
    out, dx, dW, db = _conv(path, x, W, np.zeros(1, dtype), 1, 0, np.ones((1, 1, 2, 2)))
    assert np.isnan(out).all()
    expected_dx = np.zeros((4, 4), dtype=bool)
    expected_dx[1:3, 1:3] = True
    np.testing.assert_array_equal(np.isnan(dx[0, 0]), expected_dx)
    # the other 12 cells: the count of windows that read them through a finite tap
    counts = np.array([[1, 2, 2, 1], [2, 0, 0, 2], [2, 0, 0, 2], [1, 2, 2, 1]], dtype=dtype)
    np.testing.assert_array_equal(dx[0, 0][~expected_dx], counts[~expected_dx])
    np.testing.assert_array_equal(dW, np.full((1, 1, 3, 3), 4, dtype=dtype))
    np.testing.assert_array_equal(db, [4])


@pytest.mark.parametrize("path", ["naive", *GENERAL_PATHS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_inf_in_x_gives_inf_in_dw_and_never_nan_where_the_true_value_is_finite(path, dtype):
    # x: ones with +inf at the top-left corner; 3x3 ones filter, pad 1: 4x4 output.
    # dW[fy, fx] sums dout * padded x over the windows; the corner is padded
    # cell (1, 1), read by tap (fy, fx) of window (1 - fy, 1 - fx): only taps
    # with fy, fx <= 1 ever read it, and there dW = +inf. The other taps never
    # read it and must stay finite (they read padding zeros and ones).
    x = np.ones((1, 1, 4, 4), dtype=dtype)
    x[0, 0, 0, 0] = np.inf
    W = np.ones((1, 1, 3, 3), dtype=dtype)
    out, dx, dW, db = _conv(path, x, W, np.zeros(1, dtype), 1, 1, np.ones((1, 1, 4, 4)))
    inf_taps = np.zeros((3, 3), dtype=bool)
    inf_taps[:2, :2] = True
    np.testing.assert_array_equal(np.isposinf(dW[0, 0]), inf_taps)
    # last row / column of taps: 3 of 4 window rows (columns) hold x, the
    # fourth reads padding; the middle tap of them misses x's corner row too
    np.testing.assert_array_equal(dW[0, 0, 2], [9, 12, 9])
    np.testing.assert_array_equal(dW[0, 0, :, 2], [9, 12, 9])
    assert np.isfinite(dx).all()
    np.testing.assert_array_equal(np.isposinf(out[0, 0]),
                                  np.pad(np.ones((2, 2), bool), ((0, 2), (0, 2))))


@pytest.mark.parametrize("path", GENERAL_PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride, pad", [((1, 1), (0, 0)), ((2, 1), (1, 2)), ((3, 2), (2, 1)),
                                         ((1, 3), (1, 0))])
def test_a_non_finite_weight_or_pixel_matches_naive_cell_by_cell(path, dtype, stride, pad):
    rng = np.random.default_rng(sum(stride) * 10 + sum(pad))
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    W = rng.standard_normal((5, 3, 3, 4)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    oh, ow = _out_hw((9, 8), (3, 4), stride, pad)
    dout = rng.standard_normal((2, 5, oh, ow))
    for special in SPECIALS:
        Wbad = W.copy()
        Wbad[1, 2, 0, 3] = special
        assert conv_mismatches(path, x, Wbad, b, stride, pad, dout) == {}, special
        xbad = x.copy()
        xbad[1, 0, 4, 0] = special
        assert conv_mismatches(path, xbad, W, b, stride, pad, dout) == {}, special


# ----------------------------------------------------------- property tests

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def conv_cases(draw):
    fh, fw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h = draw(st.integers(max(1, fh - 2 * ph), 9))
    w = draw(st.integers(max(1, fw - 2 * pw), 9))
    rate = st.sampled_from([0.0, 0.02, 0.1, 0.3])
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 5)), h=h, w=w,
                fn=draw(st.integers(1, 6)), fh=fh, fw=fw,
                stride=(draw(st.integers(1, 4)), draw(st.integers(1, 4))), pad=(ph, pw),
                x_rate=draw(rate), w_rate=draw(rate), dout_rate=draw(st.sampled_from([0.0, 0.05])),
                dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2**32 - 1)))


@fast_path
@SETTINGS
@given(case=conv_cases())
def test_conv_non_finite_matches_naive(path, case):
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    x = _sprinkle(rng, rng.standard_normal((case["n"], case["c"], case["h"], case["w"])),
                  case["x_rate"]).astype(dt)
    W = _sprinkle(rng, rng.standard_normal((case["fn"], case["c"], case["fh"], case["fw"])),
                  case["w_rate"]).astype(dt)
    b = rng.standard_normal(case["fn"]).astype(dt)
    oh, ow = _out_hw((case["h"], case["w"]), (case["fh"], case["fw"]), case["stride"], case["pad"])
    dout = _sprinkle(rng, rng.standard_normal((case["n"], case["fn"], oh, ow)), case["dout_rate"])
    assert conv_mismatches(path, x, W, b, case["stride"], case["pad"], dout) == {}


@st.composite
def pool_cases(draw):
    ph_, pw_ = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pad = (draw(st.integers(0, ph_ - 1)), draw(st.integers(0, pw_ - 1)))
    h = draw(st.integers(max(1, ph_ - 2 * pad[0]), 9))
    w = draw(st.integers(max(1, pw_ - 2 * pad[1]), 9))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 4)), h=h, w=w,
                pool=(ph_, pw_), stride=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
                pad=pad, mode=draw(st.sampled_from(["max", "avg"])),
                x_rate=draw(st.sampled_from([0.02, 0.1, 0.3, 1.0])),
                dout_rate=draw(st.sampled_from([0.0, 0.05])),
                dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2**32 - 1)))


@fast_path
@SETTINGS
@given(case=pool_cases())
def test_pool_non_finite_matches_naive(path, case):
    rng = np.random.default_rng(case["seed"])
    x = _sprinkle(rng, rng.standard_normal((case["n"], case["c"], case["h"], case["w"])),
                  case["x_rate"]).astype(case["dtype"])
    oh, ow = _out_hw((case["h"], case["w"]), case["pool"], case["stride"], case["pad"])
    dout = _sprinkle(rng, rng.standard_normal((case["n"], case["c"], oh, ow)), case["dout_rate"])
    assert pool_mismatches(path, x, case["pool"], case["stride"], case["pad"], case["mode"],
                           dout) == {}


# --------------------------------------------------------------------- fuzz

# Each call carries BATCH independent images: every image has its own x and
# dout, and its own out and dx cells, so one call checks BATCH cases of
# forward and dx at once (dW and db, sums over the batch, once per call).
BATCH = 16
FUZZ_CASES = 10_240           # conv and pooling together, on each fast path


def _fuzz_geometry(rng, window_max=3, size_max=6):
    fh, fw = rng.integers(1, window_max + 1, size=2)
    ph, pw = rng.integers(0, 3, size=2)
    h = int(rng.integers(max(1, fh - 2 * ph), size_max + 1))
    w = int(rng.integers(max(1, fw - 2 * pw), size_max + 1))
    stride = tuple(int(s) for s in rng.integers(1, 5, size=2))
    return (h, w), (int(fh), int(fw)), stride, (int(ph), int(pw))


def _fuzz_conv(path, rng, dtype):
    (h, w), (fh, fw), stride, pad = _fuzz_geometry(rng)
    c, fn = (int(v) for v in rng.integers(1, 4, size=2))
    rates = rng.choice([0.0, 0.01, 0.05, 0.2, 0.5], size=3)
    x = _sprinkle(rng, rng.standard_normal((BATCH, c, h, w)), rates[0]).astype(dtype)
    W = _sprinkle(rng, rng.standard_normal((fn, c, fh, fw)), rates[1]).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    oh, ow = _out_hw((h, w), (fh, fw), stride, pad)
    dout = _sprinkle(rng, rng.standard_normal((BATCH, fn, oh, ow)), rates[2] / 4)
    return conv_mismatches(path, x, W, b, stride, pad, dout), (x.shape, W.shape, stride, pad)


def _fuzz_pool(path, rng, dtype):
    (h, w), (fh, fw), stride, _ = _fuzz_geometry(rng, window_max=4)
    pad = (int(rng.integers(0, fh)), int(rng.integers(0, fw)))
    h, w = max(h, fh), max(w, fw)
    mode = ["max", "avg"][int(rng.integers(2))]
    c = int(rng.integers(1, 4))
    x = _sprinkle(rng, rng.standard_normal((BATCH, c, h, w)),
                  rng.choice([0.01, 0.1, 0.5, 1.0])).astype(dtype)
    oh, ow = _out_hw((h, w), (fh, fw), stride, pad)
    dout = _sprinkle(rng, rng.standard_normal((BATCH, c, oh, ow)), rng.choice([0.0, 0.05]))
    found = pool_mismatches(path, x, (fh, fw), stride, pad, mode, dout)
    return found, (x.shape, (fh, fw), stride, pad, mode)


@fast_path
def test_fuzz_ten_thousand_small_non_finite_cases(path):
    rng = np.random.default_rng(20261201)
    calls = FUZZ_CASES // BATCH
    failures = []
    for i in range(calls):
        dtype = DTYPES[i % 2]
        run = _fuzz_conv if i % 2 == 0 else _fuzz_pool
        found, where = run(path, rng, dtype)
        if found:
            failures.append((run.__name__, np.dtype(dtype).name, where, found))
    assert calls * BATCH >= 10_000
    assert not failures, f"{len(failures)} of {calls} calls disagree with naive: {failures[:3]}"
