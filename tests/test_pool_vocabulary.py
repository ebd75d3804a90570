"""PyTorch's pooling vocabulary on every path: ceil_mode, count_include_pad,
divisor_override, dilation and return_indices.

Expected values come from worked examples by hand, from the naive path (the
oracle every path is compared with), from central finite differences and, when
it is installed, from PyTorch itself.
"""
import numpy as np
import pytest
from gradcheck import numerical_gradient, rel_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import GENERAL_PATHS, assert_close, pool_through_entry, skip_unless_supported

import fastconv
from fastconv import Pooling, pool2d, pool_spec
from fastconv import functional as F
from fastconv import tuner
from fastconv.geometry import pool_output_size

NEG_INF = -np.inf

# (x shape, (PH, PW), stride, pad, mode, options): each option alone and mixed
CASES = {
    "ceil_max": ((2, 3, 7, 6), (2, 3), (2, 2), (1, 1), "max", dict(ceil_mode=True)),
    "ceil_avg_pad": ((2, 2, 6, 6), (3, 3), (2, 2), (1, 1), "avg", dict(ceil_mode=True)),
    "ceil_avg_exclude_pad": ((1, 3, 6, 7), (3, 2), (2, 3), (1, 1), "avg",
                             dict(ceil_mode=True, count_include_pad=False)),
    "exclude_pad": ((2, 2, 5, 6), (3, 3), (1, 2), (1, 1), "avg", dict(count_include_pad=False)),
    "divisor_override": ((2, 2, 6, 5), (2, 3), (2, 1), (1, 1), "avg", dict(divisor_override=5)),
    "override_and_ceil": ((1, 2, 7, 7), (3, 3), (2, 2), (0, 1), "avg",
                          dict(divisor_override=2, ceil_mode=True)),
    "dilated_max": ((2, 2, 8, 7), (2, 3), (1, 2), (0, 0), "max", dict(dilation=(2, 1))),
    "dilated_padded_max": ((1, 3, 7, 8), (3, 2), (2, 1), (1, 2), "max", dict(dilation=(2, 3))),
    "dilated_ceil_max": ((2, 2, 9, 6), (2, 2), (3, 2), (1, 1), "max",
                         dict(dilation=2, ceil_mode=True)),
    "window_past_input_ceil": ((1, 2, 2, 3), (3, 3), (2, 2), (0, 0), "max", dict(ceil_mode=True)),
}
CASE_IDS = list(CASES)


def _arrays(case, dtype, seed=0):
    shape, pool_hw, stride, pad, mode, options = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    spec = pool_spec(shape, *pool_hw, stride, pad, mode, dtype, **options)
    dout = rng.standard_normal(spec.out_shape).astype(dtype)
    return x, dout, spec




def _oracle(x, dout, spec):
    """The naive path in float64 (indices from the same values), cast back to x's dtype."""
    out, dx, indices = pool_through_entry(x.astype(np.float64), dout.astype(np.float64), spec, "naive")
    return out.astype(x.dtype), dx.astype(x.dtype), indices


# ------------------------------------------------------------ worked examples

def test_ceil_mode_output_sizes_by_hand():
    # (5 - 2)/2 = 1.5: floor keeps 2 windows, ceil a third, clipped to column 4
    assert pool_output_size(5, 2, stride=2) == 2
    assert pool_output_size(5, 2, stride=2, ceil_mode=True) == 3
    # pad 1: (5 + 2 - 2)/2 = 2.5 rounds up to 4 windows, but the 4th would start at
    # padded cell 6 = 5 + 1, in the right padding: it is dropped again
    assert pool_output_size(5, 2, stride=2, pad=1, ceil_mode=True) == 3
    # (4 + 2 - 3)/2 = 1.5 -> 3: the last window starts at padded cell 4 < 4 + 1 and stays
    assert pool_output_size(4, 3, stride=2, pad=1, ceil_mode=True) == 3
    assert pool_output_size(4, 3, stride=2, pad=1) == 2
    # exact divisions: ceil_mode changes nothing
    assert pool_output_size(6, 2, stride=2, ceil_mode=True) == 3
    # a window one cell wider than the input still starts inside it in ceil mode
    assert pool_output_size(2, 3, stride=2, ceil_mode=True) == 1
    with pytest.raises(ValueError, match="larger than the padded input"):
        pool_output_size(2, 3, stride=2)
    with pytest.raises(ValueError, match="no window starts inside it"):
        pool_output_size(2, 5, stride=2, ceil_mode=True)
    # dilation 2 spreads a 3-tap window over 5 cells: (7 - 5)/1 + 1 = 3
    assert pool_output_size(7, 3, stride=1, dilation=2) == 3
    assert pool_output_size(8, 3, stride=2, dilation=2, ceil_mode=True) == 3
    assert pool_output_size(8, 3, stride=2, dilation=2) == 2


def test_ceil_mode_max_and_avg_values_by_hand(path):
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    skip_unless_supported(path, pool_spec(x.shape, 2, 2, ceil_mode=True))
    out, indices = pool2d(x, 2, 2, ceil_mode=True, return_indices=True, backend=path)
    # the third row and column of windows hold one input row/column each
    expected = np.array([[6, 8, 9], [16, 18, 19], [21, 23, 24]], dtype=np.float64)
    np.testing.assert_array_equal(out[0, 0], expected)
    np.testing.assert_array_equal(indices[0, 0], expected.astype(np.int64))   # x holds its indices
    avg = pool2d(x, 2, 2, mode="avg", ceil_mode=True, backend=path)
    # a clipped window divides by the cells it keeps: (4 + 9)/2, (20 + 21)/2, 24/1
    np.testing.assert_array_equal(avg[0, 0], [[3, 5, 6.5], [13, 15, 16.5], [20.5, 22.5, 24]])


def test_ceil_mode_divisors_count_the_padding_the_window_keeps(path):
    # 6x6 ones, 3x3 windows, stride 2, pad 1: ceil_mode adds a 4th row and column of
    # windows starting at padded cell 6, clipped to input cell 5 and one padded cell
    x = np.ones((1, 1, 6, 6))
    skip_unless_supported(path, pool_spec(x.shape, 3, 3, 2, 1, "avg", "float64", ceil_mode=True))
    with_pad = pool2d(x, 3, 3, 2, 1, "avg", ceil_mode=True, backend=path)[0, 0]
    assert with_pad.shape == (4, 4)
    assert with_pad[0, 0] == 4 / 9           # 2x2 input cells of a 3x3 padded window
    assert with_pad[3, 3] == 1 / 4           # 1 input cell of a 2x2 window (clipped, pad kept)
    assert with_pad[3, 1] == 3 / 6           # 1x3 input cells of a 2x3 window
    assert with_pad[1, 1] == 1.0
    no_pad = pool2d(x, 3, 3, 2, 1, "avg", ceil_mode=True, count_include_pad=False, backend=path)
    np.testing.assert_array_equal(no_pad, np.ones((1, 1, 4, 4)))


def test_count_include_pad_false_divides_by_input_cells_at_corners(path):
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    skip_unless_supported(path, pool_spec(x.shape, 3, 3, 1, 1, "avg", "float64"))
    out = pool2d(x, 3, 3, 1, 1, "avg", count_include_pad=False, backend=path)[0, 0]
    assert out[0, 0] == (0 + 1 + 4 + 5) / 4          # corner: 2x2 input cells
    assert out[0, 1] == (0 + 1 + 2 + 4 + 5 + 6) / 6  # edge: 2x3
    assert out[3, 3] == (10 + 11 + 14 + 15) / 4
    assert out[1, 1] == (0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10) / 9
    counted = pool2d(x, 3, 3, 1, 1, "avg", backend=path)[0, 0]
    assert counted[0, 0] == (0 + 1 + 4 + 5) / 9      # the default counts the padding
    override = pool2d(x, 3, 3, 1, 1, "avg", divisor_override=2, backend=path)[0, 0]
    assert override[0, 0] == (0 + 1 + 4 + 5) / 2
    assert override[1, 1] == (0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10) / 2


def test_avg_gradient_is_shared_by_the_divisor_by_hand(path):
    x = np.zeros((1, 1, 2, 3))
    skip_unless_supported(path, pool_spec(x.shape, 2, 2, 1, 1, "avg", "float64"))
    # 2x2 windows, stride 1, pad 1: 3x4 outputs; corner cell (0, 0) is in 4 windows
    out, saved = F.pool_forward(x, 2, 2, 1, 1, "avg", backend=path, count_include_pad=False)
    dx = F.pool_backward(np.ones(out.shape), saved)
    # windows over (0, 0): the corner window holds 1 input cell, the two edge ones 2,
    # the inner one 4: 1/1 + 1/2 + 1/2 + 1/4
    assert dx[0, 0, 0, 0] == 1 + 0.5 + 0.5 + 0.25
    out, saved = F.pool_forward(x, 2, 2, 1, 1, "avg", backend=path, divisor_override=8)
    dx = F.pool_backward(np.ones(out.shape), saved)
    np.testing.assert_array_equal(dx, np.full(x.shape, 4 / 8))    # every cell in 4 windows


def test_dilated_max_windows_by_hand(path):
    x = -np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    skip_unless_supported(path, pool_spec(x.shape, 2, 2, 1, 0, "max", "float64", dilation=2))
    out, indices = pool2d(x, 2, 2, 1, dilation=2, return_indices=True, backend=path)
    # taps (i, j), (i, j+2), (i+2, j), (i+2, j+2): the largest of -index is the first tap
    i, j = np.indices((3, 3))
    np.testing.assert_array_equal(indices[0, 0], i * 5 + j)
    np.testing.assert_array_equal(out[0, 0], -(i * 5 + j))
    out, indices = pool2d(-x, 2, 2, 1, dilation=2, return_indices=True, backend=path)
    np.testing.assert_array_equal(indices[0, 0], (i + 2) * 5 + j + 2)     # ... or the last
    # the gradient goes to the tap that won, two cells away from the window's corner
    _, saved = F.pool_forward(-x, 2, 2, 1, 0, "max", backend=path, dilation=2)
    dx = F.pool_backward(np.ones((1, 1, 3, 3)), saved)
    expected = np.zeros((5, 5))
    expected[2:, 2:] = 1
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_dilated_padded_window_reads_input_taps_only(path):
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    skip_unless_supported(path, pool_spec(x.shape, 2, 2, 1, 1, "max", "float64", dilation=2))
    out, indices = pool2d(x, 2, 2, 1, 1, dilation=2, return_indices=True, backend=path)
    assert out.shape == (1, 1, 4, 4)       # (4 + 2 - 3)/1 + 1
    # window (0, 0): taps at rows -1, 1 and columns -1, 1: only (1, 1) is an input cell
    assert out[0, 0, 0, 0] == 5 and indices[0, 0, 0, 0] == 5
    # window (3, 3): taps at rows 2, 4 and columns 2, 4: only (2, 2)
    assert out[0, 0, 3, 3] == 10 and indices[0, 0, 3, 3] == 10


def test_indices_ties_nan_and_minus_inf_by_hand(path):
    skip_unless_supported(path, pool_spec((1, 1, 1, 6), 1, 2, (1, 2), 0, "max", "float64"))
    x = np.array([[[[3.0, 3.0, 1.0, np.nan, np.nan, 2.0]]]])
    out, indices = pool2d(x, 1, 2, (1, 2), backend=path, return_indices=True)
    np.testing.assert_array_equal(indices[0, 0, 0], [0, 3, 4])     # first maximum; NaN wins
    assert out[0, 0, 0, 0] == 3 and np.isnan(out[0, 0, 0, 1:]).all()
    x = np.array([[[[np.nan, 1.0, np.nan, 5.0]]]])
    _, indices = pool2d(x, 1, 4, backend=path, return_indices=True)
    assert indices[0, 0, 0, 0] == 0                                # the first NaN wins


def test_padding_never_wins_a_window_of_minus_inf(path):
    # PyTorch's answer: indices [0, 0, 1]; each window's gradient goes to an input cell
    x = np.full((1, 1, 1, 2), NEG_INF)
    skip_unless_supported(path, pool_spec(x.shape, 1, 2, 1, (0, 1), "max", "float64"))
    out, indices, saved = F.pool_forward(x, 1, 2, 1, (0, 1), backend=path, return_indices=True)
    np.testing.assert_array_equal(out[0, 0, 0], [NEG_INF] * 3)
    np.testing.assert_array_equal(indices[0, 0, 0], [0, 0, 1])
    dx = F.pool_backward(np.ones((1, 1, 1, 3)), saved)
    np.testing.assert_array_equal(dx[0, 0, 0], [2.0, 1.0])


def test_return_indices_follow_pytorchs_convention(path):
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 6))
    skip_unless_supported(path, pool_spec(x.shape, 3, 2, 2, 1))
    out, indices = pool2d(x, 3, 2, 2, 1, backend=path, return_indices=True)
    assert indices.dtype == np.int64 and indices.shape == out.shape
    # a flat index into each (n, c) plane of the unpadded input
    picked = np.take_along_axis(x.reshape(2, 3, -1), indices.reshape(2, 3, -1), axis=2)
    np.testing.assert_array_equal(picked.reshape(out.shape), out)
    assert_close(out, pool2d(x, 3, 2, 2, 1, backend="naive"), "out")


# ------------------------------------------------------------- paths vs naive

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASE_IDS)
def test_every_option_matches_naive(path, case, dtype):
    x, dout, spec = _arrays(case, dtype)
    skip_unless_supported(path, spec)
    out, dx, indices = pool_through_entry(x, dout, spec, path)
    out_ref, dx_ref, indices_ref = _oracle(x, dout, spec)
    assert out.shape == spec.out_shape and dx.shape == x.shape
    assert_close(out, out_ref, "out")
    assert_close(dx, dx_ref, "dx")
    if spec.mode == "max":
        assert indices.dtype == np.int64
        np.testing.assert_array_equal(indices, indices_ref)


@pytest.mark.parametrize("fill", ["mixed", "all_minus_inf"])
@pytest.mark.parametrize("case", CASE_IDS)
def test_non_finite_values_propagate_as_in_naive(path, case, fill):
    x, dout, spec = _arrays(case, np.float64, seed=7)
    skip_unless_supported(path, spec)
    rng = np.random.default_rng(8)
    if fill == "mixed":
        hit = rng.random(x.shape) < 0.3
        x[hit] = rng.choice([np.inf, -np.inf, np.nan], size=int(hit.sum()))
        dout[rng.random(dout.shape) < 0.1] = np.inf
    else:
        x[:] = -np.inf
    out, dx, indices = pool_through_entry(x, dout, spec, path)
    out_ref, dx_ref, indices_ref = pool_through_entry(x, dout, spec, "naive")
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=0, equal_nan=True)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=0, equal_nan=True)
    if spec.mode == "max":
        np.testing.assert_array_equal(indices, indices_ref)


@pytest.mark.parametrize("case", CASE_IDS)
def test_float64_gradients_match_finite_differences(path, case):
    x, dout, spec = _arrays(case, np.float64, seed=1)
    skip_unless_supported(path, spec)

    def loss():
        out = pool2d(x, *spec.pool_hw, spec.stride, spec.pad, spec.mode, backend=path,
                     **spec.options)
        return float(np.sum(out * dout))

    # standard normal values: ties in a max window have probability zero, and a step of
    # 1e-5 does not change which cell wins
    analytic = pool_through_entry(x, dout, spec, path)[1]
    numeric = numerical_gradient(loss, x)
    assert rel_error(analytic, numeric) < 1e-7


@pytest.mark.parametrize("case", ["ceil_avg_exclude_pad", "dilated_padded_max"])
def test_unbatched_input_and_float16_take_the_options(path, case):
    x, dout, spec = _arrays(case, np.float32, seed=2)
    skip_unless_supported(path, spec)
    kwargs = dict(backend=path, **spec.options)
    if spec.mode == "max":
        kwargs["return_indices"] = True
    args = (*spec.pool_hw, spec.stride, spec.pad, spec.mode)
    batched = pool2d(x[:1], *args, **kwargs)
    single = pool2d(x[0], *args, **kwargs)
    if spec.mode == "max":
        (batched, batched_idx), (single, single_idx) = batched, single
        assert single_idx.shape == spec.out_shape[1:]
        np.testing.assert_array_equal(single_idx, batched_idx[0])
    assert single.shape == spec.out_shape[1:] and single.dtype == np.float32
    np.testing.assert_array_equal(single, batched[0])
    half = pool2d(x.astype(np.float16), *args, **kwargs)
    if spec.mode == "max":
        half, half_idx = half
        assert half_idx.dtype == np.int64
    assert half.dtype == np.float16
    # computed in float32 from the float16 values, rounded once
    expected = pool2d(x.astype(np.float16).astype(np.float32), *args, backend="naive",
                      **spec.options)
    np.testing.assert_array_equal(half, expected.astype(np.float16))
    result = F.pool_forward(x[0], *args, **kwargs)
    out, saved = result[0], result[-1]
    assert F.pool_backward(np.ones_like(out), saved).shape == x[0].shape


@pytest.mark.parametrize("case", ["ceil_avg_pad", "dilated_ceil_max"])
def test_float32_stays_float32(path, case):
    x, dout, spec = _arrays(case, np.float32)
    skip_unless_supported(path, spec)
    out, dx, indices = pool_through_entry(x, dout, spec, path)
    assert out.dtype == np.float32 and dx.dtype == np.float32
    assert indices is None or indices.dtype == np.int64


def test_the_default_average_divides_by_the_window_area_bit_for_bit(path):
    """Options that leave every divisor at PH*PW compute today's average exactly."""
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)
    skip_unless_supported(path, pool_spec(x.shape, 2, 3, 2, 0, "avg"))
    default = pool2d(x, 2, 3, 2, 0, "avg", backend=path)
    # no padding: the input cells are the whole window; 6 = 2*3
    for options in (dict(count_include_pad=False), dict(divisor_override=6)):
        np.testing.assert_array_equal(pool2d(x, 2, 3, 2, 0, "avg", backend=path, **options),
                                      default)
    # 2x2 windows, stride 2 over 8x8: no partial window for ceil_mode to keep
    np.testing.assert_array_equal(pool2d(x, 2, 2, 2, 0, "avg", ceil_mode=True, backend=path),
                                  pool2d(x, 2, 2, 2, 0, "avg", backend=path))
    # the sum of the six cells, in window order, over the float 6
    windows = np.lib.stride_tricks.sliding_window_view(x, (2, 3), axis=(2, 3))[:, :, ::2, ::2]
    total = np.zeros(default.shape, np.float32)
    for a in range(2):
        for b in range(3):
            total = total + windows[..., a, b]
    np.testing.assert_allclose(default, total / np.float32(6), rtol=2e-7, atol=0)


# --------------------------------------------------------------- properties

@st.composite
def option_cases(draw):
    mode = draw(st.sampled_from(["max", "avg"]))
    ph_, pw_ = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dil = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if mode == "max" else (1, 1)
    span = (dil[0] * (ph_ - 1) + 1, dil[1] * (pw_ - 1) + 1)
    return dict(
        mode=mode, pool=(ph_, pw_), dilation=dil,
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        pad=(draw(st.integers(0, span[0] - 1)), draw(st.integers(0, span[1] - 1))),
        h=draw(st.integers(1, 8)), w=draw(st.integers(1, 8)),
        n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)),
        ceil_mode=draw(st.booleans()),
        count_include_pad=draw(st.booleans()) if mode == "avg" else True,
        divisor_override=draw(st.sampled_from([None, 1, 3])) if mode == "avg" else None,
        dtype=draw(st.sampled_from([np.float32, np.float64])), seed=draw(st.integers(0, 2**16)))


def _case_spec(case):
    options = {k: case[k] for k in ("ceil_mode", "count_include_pad", "divisor_override",
                                    "dilation")}
    return pool_spec((case["n"], case["c"], case["h"], case["w"]), *case["pool"], case["stride"],
                     case["pad"], case["mode"], case["dtype"], **options)


def _spec_or_none(case):
    try:
        return _case_spec(case)
    except ValueError:
        return None


@pytest.mark.parametrize("fast_path", GENERAL_PATHS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=option_cases())
def test_random_options_match_naive(fast_path, case):
    spec = _spec_or_none(case)
    if spec is None:
        return                           # too small for the window: refused for every path alike
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(spec.x_shape).astype(case["dtype"])
    dout = rng.standard_normal(spec.out_shape).astype(case["dtype"])
    out, dx, indices = pool_through_entry(x, dout, spec, fast_path)
    out_ref, dx_ref, indices_ref = _oracle(x, dout, spec)
    assert_close(out, out_ref, "out")
    assert_close(dx, dx_ref, "dx")
    if indices is not None:
        np.testing.assert_array_equal(indices, indices_ref)


def _brute_force_sizes(size, k, s, p, d, ceil_mode):
    """Output count along one axis by trying every window start, and whether some
    window's taps all miss the input: the rule stated plainly."""
    span = d * (k - 1) + 1
    padded = size + 2 * p
    count = 0
    while True:
        start = count * s                                 # padded coordinates
        if ceil_mode:
            # a new window while the one before did not reach the end of the padded
            # input, as long as it starts inside the input or its left padding
            keep = start - s + span < padded and start < size + p
        else:
            keep = start + span <= padded
        if not keep:
            break
        count += 1
    padding_only = any(all(not 0 <= o * s - p + d * t < size for t in range(k))
                       for o in range(count))
    return count, padding_only


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 12), k=st.integers(1, 4), s=st.integers(1, 4), p=st.integers(0, 6),
       d=st.integers(1, 4), ceil_mode=st.booleans())
def test_sizes_and_padding_only_windows_match_the_rule_stated_plainly(size, k, s, p, d,
                                                                      ceil_mode):
    span = d * (k - 1) + 1
    count, padding_only = _brute_force_sizes(size, k, s, p, d, ceil_mode)
    try:
        spec = pool_spec((1, 1, size, 1), k, 1, (s, 1), (p, 0), "max", "float64",
                         ceil_mode=ceil_mode, dilation=(d, 1))
    except ValueError as err:
        assert p >= span or count == 0 or padding_only, (count, err)
        return
    assert p < span and not padding_only
    assert spec.out_hw[0] == count


# -------------------------------------------------------------- PyTorch

def _beyond_pytorchs_pad(spec):
    """PyTorch's avg_pool2d and max_pool2d with indices take pad <= kernel_size/2 only;
    fastconv takes any pad smaller than the window's span."""
    return any(p > k // 2 for p, k in zip(spec.pad, spec.pool_hw))


def _torch_case(x, spec):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    t = torch.tensor(x, requires_grad=True)
    if spec.mode == "max":
        out, indices = tf.max_pool2d(t, spec.pool_hw, spec.stride, spec.pad, spec.dilation,
                                     ceil_mode=spec.ceil_mode, return_indices=True)
    else:
        out = tf.avg_pool2d(t, spec.pool_hw, spec.stride, spec.pad, ceil_mode=spec.ceil_mode,
                            count_include_pad=spec.count_include_pad,
                            divisor_override=spec.divisor_override)
        indices = None
    return t, out, indices


@pytest.mark.parametrize("case", CASE_IDS)
def test_pytorch_agrees(path, case):
    x, dout, spec = _arrays(case, np.float64, seed=5)
    skip_unless_supported(path, spec)
    if _beyond_pytorchs_pad(spec):
        pytest.skip("PyTorch's pooling with indices allows pad <= kernel_size/2 only")
    t, ref, ref_indices = _torch_case(x, spec)
    ref.backward(pytest.importorskip("torch").tensor(dout))
    out, dx, indices = pool_through_entry(x, dout, spec, path)
    assert_close(out, ref.detach().numpy(), "out")
    assert_close(dx, t.grad.numpy(), "dx")
    if indices is not None:
        np.testing.assert_array_equal(indices, ref_indices.numpy())


@settings(max_examples=150, deadline=None)
@given(case=option_cases())
def test_random_options_match_pytorch(case):
    torch = pytest.importorskip("torch")
    case = dict(case, dtype=np.float64)
    spec = _spec_or_none(case)
    if spec is None or _beyond_pytorchs_pad(spec):
        return
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(spec.x_shape)
    dout = rng.standard_normal(spec.out_shape)
    t, ref, ref_indices = _torch_case(x, spec)
    ref.backward(torch.tensor(dout))
    out, dx, indices = pool_through_entry(x, dout, spec, "naive")
    assert out.shape == tuple(ref.shape)
    assert_close(out, ref.detach().numpy(), "out")
    assert_close(dx, t.grad.numpy(), "dx")
    if indices is not None:
        np.testing.assert_array_equal(indices, ref_indices.numpy())


# ----------------------------------------------------------- the layer, keys

def test_pooling_layer_takes_the_options_and_keeps_the_indices(path):
    x, dout, spec = _arrays("dilated_padded_max", np.float64)
    skip_unless_supported(path, spec)
    layer = Pooling(*spec.pool_hw, spec.stride, spec.pad, backend=path, return_indices=True,
                    **spec.options)
    assert layer.indices is None
    out = layer.forward(x)
    out_ref, dx_ref, indices_ref = _oracle(x, dout, spec)
    assert_close(out, out_ref, "out")
    np.testing.assert_array_equal(layer.indices, indices_ref)
    assert_close(layer.backward(dout), dx_ref, "dx")
    avg = Pooling(3, 3, 2, 1, "avg", backend=path, ceil_mode=True, count_include_pad=False)
    x6 = np.ones((1, 1, 6, 6))
    np.testing.assert_array_equal(avg.forward(x6), np.ones((1, 1, 4, 4)))
    assert avg.indices is None


def test_the_tuners_key_tells_the_options_apart():
    base = pool_spec((8, 3, 12, 12), 3, 3, 2, 1, "avg")
    keys = [tuner.spec_key(base, threads=1)]
    for options in (dict(ceil_mode=True), dict(count_include_pad=False),
                    dict(divisor_override=4)):
        keys.append(tuner.spec_key(pool_spec(base.x_shape, 3, 3, 2, 1, "avg", **options),
                                   threads=1))
    maxpool = pool_spec(base.x_shape, 3, 3, 2, 1, "max")
    keys.append(tuner.spec_key(maxpool, threads=1))
    keys.append(tuner.spec_key(pool_spec(base.x_shape, 3, 3, 2, 1, "max", dilation=(1, 2)),
                               threads=1))
    assert len({tuner._key_file(k) for k in keys}) == len(keys)
    # a default pooling keeps the key it always had, so stored choices stay valid
    assert tuner.spec_key(maxpool, threads=1) == tuner.make_key(
        "pool", base.x_shape, (3, 3), 2, 1, "float32", 1, "max")
    assert "dilation=(1, 2)" in pool_spec(base.x_shape, 3, 3, 2, 1, dilation=(1, 2)).describe()


# -------------------------------------------------------------- validation

X = np.zeros((2, 3, 8, 8))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(ceil_mode="yes"), TypeError, r"ceil_mode must be True or False, got 'yes' \(str\)"),
    (dict(ceil_mode=1), TypeError, r"ceil_mode must be True or False"),
    (dict(mode="avg", count_include_pad=None), TypeError,
     r"count_include_pad must be True or False"),
    (dict(mode="avg", divisor_override=0), ValueError,
     r"divisor_override must be an int >= 1 or None, got 0"),
    (dict(mode="avg", divisor_override=-3), ValueError, r"divisor_override must be an int >= 1"),
    (dict(mode="avg", divisor_override=2.0), TypeError, r"divisor_override must be an int"),
    (dict(mode="avg", divisor_override=True), TypeError, r"divisor_override must be an int"),
    (dict(mode="avg", divisor_override=[2]), TypeError, r"divisor_override must be an int"),
    (dict(dilation=0), ValueError, r"dilation must be >= 1, got \(0, 0\)"),
    (dict(dilation=(1, -1)), ValueError, r"dilation must be >= 1, got \(1, -1\)"),
    (dict(dilation=(1, 2, 3)), ValueError, r"dilation must be an int or an \(h, w\) pair"),
    (dict(dilation=1.5), TypeError, r"dilation must be an int"),
    (dict(mode="avg", dilation=2), ValueError, r"dilation \(2, 2\) applies to max pooling only"),
    (dict(divisor_override=2), ValueError, r"max pooling takes neither"),
    (dict(count_include_pad=False), ValueError, r"max pooling takes neither"),
    (dict(mode="avg", return_indices=True), ValueError,
     r"return_indices=True needs mode='max'.*x.shape=\(2, 3, 8, 8\)"),
    (dict(return_indices="no"), TypeError, r"return_indices must be True or False"),
    (dict(ceil_mode=True, rounding="exact"), ValueError,
     r"rounding='exact' refuses a partial last window and ceil_mode=True keeps one"),
    (dict(pool_h=3, pool_w=3, stride=1, pad=3), ValueError,
     r"pad \(3, 3\) must be smaller than the pool window \(3, 3\)"),
    (dict(pool_h=2, pool_w=2, stride=1, pad=4, dilation=3), ValueError,
     r"pad \(4, 4\) must be smaller than the pool window \(2, 2\) \(spanning \(4, 4\) "
     r"with dilation \(3, 3\)\)"),
    (dict(pool_h=11, pool_w=2, ceil_mode=True), ValueError,
     r"pool window \(11, 2\) does not fit input \(H, W\)=\(8, 8\) with stride=\(2, 2\), "
     r"pad=\(0, 0\), ceil_mode=True along the height"),
    (dict(pool_h=3, pool_w=3, stride=1, dilation=4), ValueError,
     r"pool window \(3, 3\) with dilation=\(4, 4\) does not fit input \(H, W\)=\(8, 8\)"),
])
def test_pool2d_rejects(kwargs, exc, match):
    args = dict(pool_h=2, pool_w=2, stride=2, pad=0, mode="max", backend="naive")
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        pool2d(X, args.pop("pool_h"), args.pop("pool_w"), **args)


def test_a_window_of_padding_only_is_refused_with_the_shapes():
    # 3 rows, 2 taps 5 apart, pad 5: the window starting at row -2 taps rows -2 and 3
    with pytest.raises(ValueError, match=r"output row 3 of pooling x=\(1, 1, 3, 3\) with window "
                                         r"\(2, 1\), dilation \(5, 1\).*would hold padding only"):
        pool2d(np.zeros((1, 1, 3, 3)), 2, 1, 1, (5, 0), dilation=(5, 1), backend="naive")
    with pytest.raises(ValueError, match=r"output column 0 .* would hold padding only"):
        pool2d(np.zeros((1, 1, 2, 1)), 1, 2, 1, (0, 1), dilation=2, backend="naive")


def test_layer_rejects_bad_options_when_built():
    with pytest.raises(ValueError, match=r"dilation \(2, 2\) applies to max pooling only"):
        Pooling(2, 2, mode="avg", dilation=2)
    with pytest.raises(ValueError, match=r"divisor_override must be an int >= 1"):
        Pooling(2, 2, mode="avg", divisor_override=0)
    with pytest.raises(TypeError, match=r"ceil_mode must be True or False"):
        Pooling(2, 2, ceil_mode="no")
    with pytest.raises(ValueError, match=r"return_indices=True needs mode='max'"):
        Pooling(2, 2, mode="avg", return_indices=True)
    with pytest.raises(ValueError, match=r"rounding='exact' refuses a partial last window"):
        Pooling(2, 2, rounding="exact", ceil_mode=True)


def test_validation_happens_before_any_kernel_runs(monkeypatch):
    from fastconv import backends

    called = []
    naive = backends.get_path("naive")
    monkeypatch.setattr(naive, "pool_forward", lambda *a: called.append(a))
    for kwargs in (dict(dilation=0), dict(mode="avg", return_indices=True),
                   dict(mode="avg", divisor_override=0), dict(ceil_mode=None)):
        with pytest.raises((TypeError, ValueError)):
            pool2d(X, 2, 2, backend="naive", **kwargs)
    assert called == []


def test_indices_are_a_copy_backward_does_not_share():
    x = np.random.default_rng(6).standard_normal((1, 2, 4, 4))
    out, indices, saved = F.pool_forward(x, 2, 2, backend="naive", return_indices=True)
    dx = F.pool_backward(np.ones_like(out), saved)
    indices[:] = 0
    np.testing.assert_array_equal(F.pool_backward(np.ones_like(out), saved), dx)
    assert fastconv.pool2d(x, 2, 2, backend="naive").shape == out.shape
