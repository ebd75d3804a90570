"""Dilated and grouped convolutions on the direct path, and its depthwise kernel.

The oracles do not use dilation or groups at all, so they are independent of
the loops under test:

- a convolution with dilation (dh, dw) equals the dense convolution (same
  stride and padding, dilation 1) with the *zero-inserted* filter, whose taps
  sit at (fy*dh, fx*dw) and whose other cells are zero (finite data: a zero
  weight times inf would be nan where the dilated filter has no term); its dW
  is the dense dW at the taps;
- a convolution with groups=g equals g dense convolutions, one per group of
  C/g channels and FN/g filters, concatenated (forward, dx, db) or stacked (dW);
- the dense pieces are computed by the naive path in float64.

Gradients are also checked against central finite differences in float64.
"""
import numba
import numpy as np
import pytest
from gradcheck import numerical_gradient, rel_error
from support import assert_close, assert_same_cells

from fastconv.kernels import direct, naive
from fastconv.spec import conv_spec

DTYPES = [np.float32, np.float64]


# ------------------------------------------------------------------ oracles

def _zero_inserted(W, dilation):
    """W: (FN, Cg, FH, FW) -> the dense filter (FN, Cg, dh*(FH-1)+1, dw*(FW-1)+1)
    with W's taps at (fy*dh, fx*dw) and zeros between them."""
    (dh, dw), (FN, Cg, FH, FW) = dilation, W.shape
    dense = np.zeros((FN, Cg, dh * (FH - 1) + 1, dw * (FW - 1) + 1), dtype=W.dtype)
    dense[:, :, ::dh, ::dw] = W
    return dense


def _naive_dense(x, W, b, stride, pad, dout):
    """(out, dx, dW, db) of the naive path, dense (dilation 1, groups 1), float64."""
    x, W, b = (np.ascontiguousarray(a, dtype=np.float64) for a in (x, W, b))
    spec = conv_spec(x.shape, W.shape, stride, pad, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        out, cache = naive.conv_forward(x, W, b, spec)
        grads = naive.conv_backward(np.ascontiguousarray(dout, dtype=np.float64), cache)
    return (out, *grads)


def oracle(x, W, b, stride, pad, dilation, groups, dout):
    """(out, dx, dW, db) in float64 from dense naive convolutions: one per group, each
    with the zero-inserted filter; dW is read back at the taps."""
    FN, Cg = W.shape[:2]
    FNg = FN // groups
    dense = _zero_inserted(W, dilation)
    dh, dw = dilation
    parts = [_naive_dense(x[:, g * Cg:(g + 1) * Cg], dense[g * FNg:(g + 1) * FNg],
                          b[g * FNg:(g + 1) * FNg], stride, pad,
                          dout[:, g * FNg:(g + 1) * FNg]) for g in range(groups)]
    out = np.concatenate([p[0] for p in parts], axis=1)
    dx = np.concatenate([p[1] for p in parts], axis=1)
    dW = np.concatenate([p[2] for p in parts], axis=0)[:, :, ::dh, ::dw]
    db = np.concatenate([p[3] for p in parts])
    return out, dx, dW, db


def run_direct(x, W, b, stride, pad, dilation, groups, dout=None, seed=0):
    """(out, dx, dW, db) of the direct path, and the dout it used."""
    spec = conv_spec(x.shape, W.shape, stride, pad, x.dtype, dilation=dilation, groups=groups)
    out, cache = direct.conv_forward(x, W, b, spec)
    if dout is None:
        dout = np.random.default_rng(seed).standard_normal(out.shape).astype(x.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        grads = direct.conv_backward(dout, cache)
    return (out, *grads), dout


def random_problem(rng, x_shape, w_shape, dtype):
    return (rng.standard_normal(x_shape).astype(dtype),
            rng.standard_normal(w_shape).astype(dtype),
            rng.standard_normal(w_shape[0]).astype(dtype))


def assert_matches_oracle(x, W, b, stride, pad, dilation, groups):
    x_before, W_before, b_before = x.copy(), W.copy(), b.copy()
    got, dout = run_direct(x, W, b, stride, pad, dilation, groups)
    dout_before = dout.copy()
    want = oracle(x, W, b, stride, pad, dilation, groups, dout)
    for name, g, w in zip(("out", "dx", "dW", "db"), got, want):
        assert g.shape == w.shape, (name, g.shape, w.shape)
        assert_close(g, w.astype(x.dtype), name)
    for before, after in ((x_before, x), (W_before, W), (b_before, b), (dout_before, dout)):
        np.testing.assert_array_equal(before, after)        # inputs untouched
    return got


# (x shape, W shape, stride, pad, dilation, groups); W is (FN, C/groups, FH, FW)
GENERAL_CASES = {
    "dilated_3x3": ((2, 3, 9, 10), (4, 3, 3, 3), (1, 1), (2, 2), (2, 2), 1),
    "dilation_over_stride": ((2, 2, 13, 12), (3, 2, 3, 3), (2, 2), (1, 1), (3, 3), 1),
    "dilation_equals_stride": ((1, 2, 12, 11), (5, 2, 3, 2), (2, 2), (1, 0), (2, 2), 1),
    "rectangular_mixed": ((2, 3, 11, 9), (4, 3, 2, 3), (2, 1), (1, 2), (3, 2), 1),
    "stride_over_extent": ((1, 2, 14, 13), (3, 2, 2, 2), (5, 4), (1, 1), (2, 1), 1),
    "groups_2": ((2, 4, 8, 9), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2),
    "groups_partial_blocks": ((2, 10, 7, 6), (6, 5, 3, 2), (1, 2), (1, 0), (1, 1), 2),
    "groups_3_dilated_strided": ((2, 6, 11, 12), (9, 2, 3, 3), (2, 3), (2, 1), (2, 3), 3),
    "one_filter_per_group": ((1, 6, 7, 7), (3, 2, 3, 3), (1, 1), (1, 1), (1, 2), 3),
    "batch_1_channel_1": ((1, 1, 10, 7), (2, 1, 3, 2), (1, 1), (0, 1), (4, 2), 1),
    "pointwise_grouped": ((2, 8, 5, 6), (4, 2, 1, 1), (1, 1), (0, 0), (3, 3), 4),
}

# groups == C: the depthwise kernel
DEPTHWISE_CASES = {
    "mobilenet_s1": ((2, 4, 9, 10), (4, 1, 3, 3), (1, 1), (1, 1), (1, 1), 4),
    "mobilenet_s2": ((2, 3, 11, 10), (3, 1, 3, 3), (2, 2), (1, 1), (1, 1), 3),
    "multiplier_2": ((1, 3, 8, 9), (6, 1, 3, 3), (1, 1), (1, 1), (1, 1), 3),
    "dilated": ((2, 2, 12, 11), (2, 1, 3, 3), (1, 1), (2, 2), (2, 2), 2),
    "dilated_strided_rect": ((1, 3, 13, 12), (6, 1, 3, 3), (2, 1), (2, 0), (3, 2), 3),
    "5x5": ((2, 2, 9, 9), (2, 1, 5, 5), (1, 1), (2, 2), (1, 1), 2),
    "2x3_stride_over_extent": ((1, 2, 12, 13), (4, 1, 2, 3), (4, 3), (1, 1), (1, 1), 2),
    "1x1": ((2, 3, 5, 4), (3, 1, 1, 1), (1, 2), (1, 0), (2, 2), 3),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GENERAL_CASES.values(), ids=GENERAL_CASES.keys())
def test_general_loops_match_the_dense_and_per_group_oracle(case, dtype):
    x_shape, w_shape, stride, pad, dilation, groups = case
    spec = conv_spec(x_shape, w_shape, stride, pad, dtype, dilation=dilation, groups=groups)
    assert direct.supports(spec) and direct.plan(spec)["kernel"] == "general"
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    assert_matches_oracle(*random_problem(rng, x_shape, w_shape, dtype), stride, pad,
                          dilation, groups)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DEPTHWISE_CASES.values(), ids=DEPTHWISE_CASES.keys())
def test_depthwise_kernel_matches_the_per_channel_oracle(case, dtype):
    x_shape, w_shape, stride, pad, dilation, groups = case
    spec = conv_spec(x_shape, w_shape, stride, pad, dtype, dilation=dilation, groups=groups)
    assert direct.supports(spec) and direct.plan(spec)["kernel"] == "depthwise"
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    assert_matches_oracle(*random_problem(rng, x_shape, w_shape, dtype), stride, pad,
                          dilation, groups)


def test_depthwise_kernel_and_general_loops_agree(monkeypatch):
    # the same depthwise problem through both kernels (the general loops handle any groups)
    rng = np.random.default_rng(3)
    x, W, b = random_problem(rng, (2, 5, 10, 9), (10, 1, 3, 3), np.float64)
    fast, dout = run_direct(x, W, b, (2, 1), (1, 1), (2, 1), 5)
    monkeypatch.setattr(direct, "_is_depthwise", lambda spec: False)
    general, _ = run_direct(x, W, b, (2, 1), (1, 1), (2, 1), 5, dout=dout)
    for name, f, g in zip(("out", "dx", "dW", "db"), fast, general):
        assert_close(f, g, name)


def test_plan_names_the_kernel():
    dw = conv_spec((1, 8, 9, 9), (8, 1, 3, 3), 1, 1, "float32", groups=8)
    grouped = conv_spec((1, 8, 9, 9), (8, 2, 3, 3), 1, 1, "float32", groups=4)
    dilated = conv_spec((1, 8, 9, 9), (8, 8, 3, 3), 1, 2, "float32", dilation=2)
    single = conv_spec((1, 1, 9, 9), (4, 1, 3, 3), 1, 1, "float32", groups=1)
    assert [direct.plan(s)["kernel"] for s in (dw, grouped, dilated, single)] == \
        ["depthwise", "general", "general", "general"]
    assert direct.plan(dilated)["dilation"] == (2, 2) and direct.plan(grouped)["groups"] == 4
    assert all(direct.supports(s) for s in (dw, grouped, dilated, single))


# ------------------------------------------------------------- tap tables

def _taps_of(row):
    count = row[2]
    assert 1 <= count <= direct.GROUP
    assert all(t >= 0 for t in row[3:3 + count]) and all(t == -1 for t in row[3 + count:])
    return [(row[3 + g], g) for g in range(count)]


@pytest.mark.parametrize("C, FH, FW, sh, sw, dh, dw", [
    (2, 3, 3, 1, 1, 2, 2), (1, 3, 5, 2, 2, 2, 3), (2, 4, 3, 3, 2, 2, 4), (1, 2, 7, 2, 3, 5, 2)])
def test_dilated_forward_tap_table_covers_every_tap_once(C, FH, FW, sh, sw, dh, dw):
    Wq = 13
    ops = direct._forward_ops(C, FH, FW, sh, sw, Wq, dh, dw)
    step = direct._tap_step(sw, dw)
    Ph, Pw = min(sh, dh * (FH - 1) + 1), min(sw, dw * (FW - 1) + 1)
    seen = []
    for row in ops:
        for t, g in _taps_of(row):
            c, fy, fx = t // (FH * FW), t // FW % FH, t % FW
            # tap (fy, fx) sits at (fy*dh, fx*dw): its phase and its shift in that phase
            assert row[0] == (c * Ph + fy * dh % sh) * Pw + fx * dw % sw
            assert row[1] + g * step == (fy * dh // sh) * Wq + fx * dw // sw
            seen.append(t)
    assert sorted(seen) == list(range(C * FH * FW))


@pytest.mark.parametrize("K, FH, FW, sh, sw, dh, dw", [
    (2, 3, 3, 1, 1, 2, 2), (1, 3, 5, 2, 2, 2, 3), (2, 4, 3, 3, 2, 2, 4), (1, 2, 7, 2, 3, 5, 2)])
def test_dilated_backward_tap_table_covers_every_tap_once_in_its_phase(K, FH, FW, sh, sw, dh, dw):
    Wq = 17
    EH, EW = dh * (FH - 1) + 1, dw * (FW - 1) + 1
    Ty, Tx = (EH - 1) // sh + 1, (EW - 1) // sw + 1
    ops, starts = direct._backward_ops(K, FH, FW, sh, sw, Wq, Ty, Tx, dh, dw)
    step = direct._tap_step(sw, dw)
    Ph, Pw = min(sh, EH), min(sw, EW)
    assert len(starts) == Ph * Pw + 1
    seen = []
    for phase in range(Ph * Pw):
        for row in ops[starts[phase]:starts[phase + 1]]:
            for t, g in _taps_of(row):
                k, fy, fx = t // (FH * FW), t // FW % FH, t % FW
                assert row[0] == k and phase == (fy * dh % sh) * Pw + fx * dw % sw
                assert row[1] + g * step == (Ty - 1 - fy * dh // sh) * Wq + Tx - 1 - fx * dw // sw
                seen.append(t)
    assert sorted(seen) == list(range(K * FH * FW))


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("x_shape, w_shape, stride, pad, dilation, groups", [
    ((2, 4, 7, 6), (4, 2, 3, 2), (1, 1), (1, 1), (2, 1), 2),
    ((1, 3, 8, 9), (3, 1, 3, 3), (2, 2), (1, 1), (1, 2), 3),        # depthwise
    ((1, 2, 9, 8), (4, 1, 2, 3), (1, 2), (2, 0), (3, 2), 2),        # depthwise, multiplier 2
    ((2, 1, 8, 7), (2, 1, 2, 2), (2, 1), (0, 1), (3, 3), 1),
])
def test_gradients_against_finite_differences(x_shape, w_shape, stride, pad, dilation, groups):
    rng = np.random.default_rng(11)
    x, W, b = random_problem(rng, x_shape, w_shape, np.float64)
    spec = conv_spec(x_shape, w_shape, stride, pad, np.float64, dilation=dilation, groups=groups)
    G = rng.standard_normal(spec.out_shape)
    _, cache = direct.conv_forward(x, W, b, spec)
    dx, dW, db = direct.conv_backward(G, cache)

    def loss():
        return float(np.sum(direct.conv_forward(x, W, b, spec)[0] * G))

    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-6
    assert rel_error(dW, numerical_gradient(loss, W)) < 1e-6
    assert rel_error(db, numerical_gradient(loss, b)) < 1e-6


# ------------------------------------------------------------ non-finite

def _reach(x_mask, dout_mask, W, stride, pad, dilation, groups):
    """(outputs that read a marked x cell, x cells that a marked dout cell reaches), each
    through some tap: the oracle run on 0/1 masks with a ones filter (finite values only,
    so the zero-inserted filter's holes add exact zeros)."""
    found = oracle(x_mask.astype(float), np.ones(W.shape), np.zeros(W.shape[0]), stride, pad,
                   dilation, groups, dout_mask.astype(float))
    return found[0] > 0, found[1] > 0


NONFINITE_CASES = {
    "general_dilated_grouped": ((2, 4, 11, 10), (4, 2, 3, 3), (1, 1), (1, 1), (2, 2), 2),
    "general_strided_dilated": ((1, 2, 12, 11), (3, 2, 3, 2), (2, 2), (1, 0), (2, 3), 1),
    "depthwise": ((2, 3, 10, 9), (3, 1, 3, 3), (1, 1), (1, 1), (1, 1), 3),
    "depthwise_dilated_s2": ((1, 2, 12, 13), (4, 1, 3, 3), (2, 2), (1, 1), (2, 2), 2),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NONFINITE_CASES.values(), ids=NONFINITE_CASES.keys())
def test_nan_and_inf_in_x_reach_exactly_the_outputs_whose_taps_read_them(case, dtype):
    x_shape, w_shape, stride, pad, dilation, groups = case
    rng = np.random.default_rng(5)
    x, W, b = random_problem(rng, x_shape, w_shape, dtype)
    W = np.abs(W) + dtype(0.5)            # positive weights: an inf stays +inf in every sum
    bad = rng.random(x.shape) < 0.03
    bad[0, 0, 3, 4] = True                # at least one
    kinds = rng.integers(0, 2, x.shape)
    x[bad & (kinds == 0)] = np.nan
    x[bad & (kinds == 1)] = np.inf
    got, dout = run_direct(x, W, b, stride, pad, dilation, groups)
    no_dout = np.zeros(dout.shape, dtype=bool)
    nan_reads = _reach(np.isnan(x), no_dout, W, stride, pad, dilation, groups)[0]
    inf_reads = _reach(np.isinf(x), no_dout, W, stride, pad, dilation, groups)[0]
    out = got[0]
    assert out.dtype == dtype
    np.testing.assert_array_equal(np.isnan(out), nan_reads)
    np.testing.assert_array_equal(np.isposinf(out), inf_reads & ~nan_reads)
    # the other outputs read no marked cell: the oracle on x with those cells zeroed
    clean = np.where(bad, 0, x)
    want = oracle(clean, W, b, stride, pad, dilation, groups, dout)
    untouched = ~(nan_reads | inf_reads)
    assert_close(out[untouched], want[0].astype(dtype)[untouched], "out")
    # dx depends on dout and W only; dW at the taps has exactly the dense dW's terms
    full = oracle(x, W, b, stride, pad, dilation, groups, dout)
    assert_same_cells(got[1], want[1], "dx")
    assert_same_cells(got[2], full[2], "dW")
    assert_same_cells(got[3], full[3], "db")


def test_inf_in_cells_between_the_taps_touches_nothing():
    # stride 2, dilation 2: no window ever reads an odd row or column, though
    # every window's extent covers some; inf there must reach no result
    rng = np.random.default_rng(6)
    for w_shape, groups in (((4, 2, 3, 3), 2), ((4, 1, 3, 3), 4)):
        x, W, b = random_problem(rng, (2, 4, 11, 11), w_shape, np.float64)
        x[:, :, 1::2, :] = np.inf
        x[:, :, :, 1::2] = np.nan
        got, dout = run_direct(x, W, b, (2, 2), (0, 0), (2, 2), groups)
        clean = x.copy()
        clean[:, :, 1::2, :] = 0
        clean[:, :, :, 1::2] = 0
        want = oracle(clean, W, b, (2, 2), (0, 0), (2, 2), groups, dout)
        for name, g, w in zip(("out", "dx", "dW", "db"), got, want):
            assert np.isfinite(g).all(), name
            assert_close(g, w, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NONFINITE_CASES.values(), ids=NONFINITE_CASES.keys())
def test_non_finite_weights_match_the_dense_oracle_cell_by_cell(case, dtype):
    # finite x and dout: the zero-inserted filter's holes meet finite values only
    # (0 * x = 0), so the dense oracle has exactly the dilated filter's terms; a
    # non-finite weight also meets the zero padding (nan), as in the naive path.
    # (The depthwise kernel hands such weights to the general loops for dx.)
    x_shape, w_shape, stride, pad, dilation, groups = case
    rng = np.random.default_rng(7)
    x, W, b = random_problem(rng, x_shape, w_shape, dtype)
    W.reshape(-1)[rng.choice(W.size, 2, replace=False)] = [np.inf, np.nan]
    got, dout = run_direct(x, W, b, stride, pad, dilation, groups)
    with np.errstate(invalid="ignore", over="ignore"):
        want = oracle(x, W, b, stride, pad, dilation, groups, dout)
    for name, g, w in zip(("out", "dx", "dW", "db"), got, want):
        assert g.dtype == dtype, name
        assert_same_cells(g, w, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NONFINITE_CASES.values(), ids=NONFINITE_CASES.keys())
def test_non_finite_dout_reaches_exactly_the_x_cells_its_taps_read(case, dtype):
    x_shape, w_shape, stride, pad, dilation, groups = case
    rng = np.random.default_rng(8)
    x, W, b = random_problem(rng, x_shape, w_shape, dtype)
    W = np.abs(W) + dtype(0.5)            # positive weights: -inf stays -inf in every sum
    spec = conv_spec(x_shape, w_shape, stride, pad, dtype, dilation=dilation, groups=groups)
    dout = rng.standard_normal(spec.out_shape).astype(dtype)
    bad = rng.random(dout.shape) < 0.05
    bad[0, -1, 1, 1] = True
    dout[bad] = -np.inf
    got, _ = run_direct(x, W, b, stride, pad, dilation, groups, dout=dout)
    reached = _reach(np.zeros(x.shape, dtype=bool), bad, W, stride, pad, dilation, groups)[1]
    np.testing.assert_array_equal(np.isneginf(got[1]), reached)
    assert not np.isnan(got[1]).any() and not np.isposinf(got[1]).any()
    clean = oracle(x, W, b, stride, pad, dilation, groups, np.where(bad, 0, dout))
    assert_close(got[1][~reached], clean[1].astype(dtype)[~reached], "dx")
    # dW at the taps has exactly the dense dW's terms (padding zeros times -inf: nan)
    with np.errstate(invalid="ignore", over="ignore"):
        full = oracle(x, W, b, stride, pad, dilation, groups, dout)
    assert_same_cells(got[2], full[2], "dW")
    assert_same_cells(got[3], full[3], "db")


# ------------------------------------------------------ dtype and threads

def test_float32_stays_float32_and_compiles_natively():
    rng = np.random.default_rng(9)
    for w_shape, groups, dilation in (((6, 1, 3, 3), 3, (1, 1)), ((4, 1, 3, 3), 2, (2, 1)),
                                      ((6, 2, 3, 3), 2, (2, 2))):
        C = w_shape[1] * groups
        x, W, b = random_problem(rng, (2, C, 9, 8), w_shape, np.float32)
        got, _ = run_direct(x, W, b, (1, 1), (1, 1), dilation, groups)
        assert all(a.dtype == np.float32 for a in got)
    for kernel in (direct._depthwise_forward, direct._depthwise_dx, direct._depthwise_dw,
                   direct._conv_forward, direct._conv_dx, direct._conv_dw):
        float_args = [{a.dtype for a in sig if isinstance(a, numba.types.Array)
                       and a.dtype in (numba.float32, numba.float64)} for sig in kernel.signatures]
        assert {numba.float32} in float_args, kernel
        assert all(len(kinds) == 1 for kinds in float_args), kernel


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
@pytest.mark.parametrize("dtype", DTYPES)
def test_results_do_not_depend_on_the_thread_count(dtype):
    rng = np.random.default_rng(10)
    problems = [((3, 4, 13, 12), (4, 1, 3, 3), (1, 1), 4),      # depthwise
                ((3, 4, 13, 12), (6, 2, 3, 3), (2, 2), 2)]      # grouped, dilated
    before = numba.get_num_threads()
    try:
        for x_shape, w_shape, dilation, groups in problems:
            x, W, b = random_problem(rng, x_shape, w_shape, dtype)
            results = []
            for threads in (1, 2):
                numba.set_num_threads(threads)
                results.append(run_direct(x, W, b, (1, 1), (1, 1), dilation, groups)[0])
            for one, two in zip(*results):
                np.testing.assert_array_equal(one, two)
    finally:
        numba.set_num_threads(before)

