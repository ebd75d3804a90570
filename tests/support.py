"""What the tests share: which paths run, and the one table of tolerances per dtype.

(A plain module, not conftest.py, so that a sub-folder may have a conftest of its own.)
"""
import os
import sys

import numpy as np
import pytest

import fastconv

# How closely a path must match the naive oracle (or SciPy), per dtype. float32
# sums of up to a few hundred products drift by a few ulps per term.
TOLERANCES = {
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
}


def tol(dtype):
    return TOLERANCES[np.dtype(dtype)]


def assert_close(actual, expected, name=""):
    """Compare against an oracle with its dtype's tolerance; dtypes must agree too."""
    actual = np.asarray(actual)
    dtype = np.dtype(expected.dtype)
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype} != {dtype}"
    # A sum's rounding error scales with the size of its terms, not of its result:
    # an element that cancels to near zero carries the error of its large neighbours.
    t = tol(dtype)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=t["rtol"], atol=t["atol"] * scale,
                               err_msg=name)


def assert_same_cells(actual, expected, name=""):
    """Non-finite values cell by cell: nan, +inf and -inf in the same cells of actual and of
    expected (cast to actual's dtype), the finite cells close (``assert_close``)."""
    expected = np.asarray(expected).astype(actual.dtype)
    for kind, test in (("nan", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        np.testing.assert_array_equal(test(actual), test(expected), err_msg=f"{name}: {kind} cells")
    finite = np.isfinite(expected)
    if finite.any():
        assert_close(actual[finite], expected[finite], name)


def oracle_conv(x, W, b, stride, pad, dout):
    """(out, dx, dW, db) of the naive path run in float64 on the same values, cast back
    to x's dtype: a float32 oracle would carry rounding errors as large as the path's own."""
    from fastconv import functional as F

    x64, W64, b64, dout64 = (np.asarray(a, dtype=np.float64) for a in (x, W, b, dout))
    out, saved = F.conv_forward(x64, W64, b64, stride, pad, backend="naive")
    return [a.astype(x.dtype) for a in (out, *F.conv_backward(dout64, saved))]


def oracle_pool(x, pool_h, pool_w, stride, pad, mode, dout):
    """(out, dx) of the naive path in float64, cast back to x's dtype."""
    from fastconv import functional as F

    out, saved = F.pool_forward(np.asarray(x, dtype=np.float64), pool_h, pool_w, stride, pad,
                                mode, backend="naive")
    dx = F.pool_backward(np.asarray(dout, dtype=np.float64), saved)
    return out.astype(x.dtype), dx.astype(x.dtype)


def conv_kernel(module, x, W, b, stride, pad, out_hw=None):
    """``module.conv_forward`` called with the spec the public entry point would build."""
    from fastconv.spec import conv_spec

    spec = conv_spec(x.shape, W.shape, stride, pad, x.dtype)
    assert out_hw is None or spec.out_hw == tuple(out_hw), (spec.out_hw, out_hw)
    return module.conv_forward(x, W, b, spec)


def pool_kernel(module, x, pool_hw, stride, pad, out_hw, mode):
    """``module.pool_forward`` called with the spec the public entry point would build."""
    from fastconv.spec import pool_spec

    spec = pool_spec(x.shape, *pool_hw, stride, pad, mode, x.dtype)
    assert spec.out_hw == tuple(out_hw), (spec.out_hw, out_hw)
    return module.pool_forward(x, spec)


def _test_paths():
    """FASTCONV_TEST_PATHS=cuda (say) limits the run; by default every available path
    but cuda, whose tests run in their own process on the simulator."""
    chosen = os.environ.get("FASTCONV_TEST_PATHS")
    if chosen:
        return [p.strip() for p in chosen.split(",") if p.strip()]
    return [p for p in fastconv.available_backends() if p != "cuda"]


PATHS = _test_paths()
FAST_PATHS = [p for p in PATHS if p != "naive"]


def _runs_everything(path):
    from fastconv import backends, pool_spec

    return backends.get_path(path).supports(pool_spec((1, 1, 2, 2), 2, 2))


# The fast paths that run every convolution and pooling (winograd runs a
# subset and has its own tests); property tests over random geometry use these.
GENERAL_PATHS = [p for p in FAST_PATHS if _runs_everything(p)]


def skip_unless_supported(path, spec):
    """Skip the calling test for a path of narrower scope (winograd runs 3x3 stride-1
    convolutions only) when it does not run ``spec``; such a path's own test file
    covers what it does run. Paths that run everything are never skipped."""
    from fastconv import backends

    module = backends.get_path(path)
    if not module.supports(spec):
        pytest.skip(f"the {path} path runs {module.SCOPE}, not {spec.describe()}")


# A Python for subprocesses: -P keeps the current directory off sys.path, so a
# child started in the repo root imports the installed fastconv (the source
# folder fastconv/ alone lacks fastconv.kernels, which installs from kernels/).
PYTHON = [sys.executable, "-P"]


def pool_through_entry(x, dout, spec, path):
    """(out, dx, indices or None) of the pooling ``spec`` describes, through the checked
    entry points (``functional.pool_forward``/``pool_backward``) on ``path``; max
    pooling asks for the indices."""
    from fastconv import functional as F

    want = spec.mode == "max"
    result = F.pool_forward(x, *spec.pool_hw, spec.stride, spec.pad, spec.mode, backend=path,
                            return_indices=want, **spec.options)
    out, indices, saved = result if want else (result[0], None, result[1])
    return out, F.pool_backward(dout, saved), indices


# Convolutions that reach the branches of each path's forward and backward:
# (x shape, W shape, stride, pad, dilation, groups)
CONV_BRANCHES = {
    "3x3": ((2, 3, 9, 8), (4, 3, 3, 3), 1, 1, 1, 1),
    "5x5_stride2": ((3, 2, 11, 10), (5, 2, 5, 5), 2, 2, 1, 1),
    "1x1": ((2, 6, 16, 17), (3, 6, 1, 1), 1, 0, 1, 1),        # im2col: no unroll (>= 256 columns)
    "groups": ((2, 4, 8, 8), (6, 2, 3, 3), 1, 1, 1, 2),
    "depthwise": ((2, 3, 8, 9), (6, 1, 3, 3), 1, 1, 1, 3),     # direct: its own kernels
    "dilated": ((2, 2, 10, 10), (3, 2, 3, 3), 1, 2, 2, 1),
    "unequal_pad": ((2, 2, 7, 7), (3, 2, 3, 3), 1, ((0, 1), (2, 0)), 1, 1),
}


def conv_branch(case, dtype, seed=0):
    """x, W, b (seeded random values) and the keywords (stride, pad, dilation, groups)
    of ``CONV_BRANCHES[case]``; the spec the kernels run for them is ``lowered_spec``."""
    x_shape, w_shape, stride, pad, dilation, groups = CONV_BRANCHES[case]
    rng = np.random.default_rng([seed, sorted(CONV_BRANCHES).index(case)])
    x = rng.standard_normal(x_shape).astype(dtype)
    W = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, W, b, dict(stride=stride, pad=pad, dilation=dilation, groups=groups)


def lowered_spec(x, W, kw):
    """The spec the kernels run for ``conv_forward(x, W, b, **kw)`` (unequal padding
    lowered as the entry point lowers it)."""
    from fastconv import functional as F

    return F.lowered_conv_spec(x.shape, W.shape, kw["stride"], kw["pad"], x.dtype,
                               dilation=kw["dilation"], groups=kw["groups"])[0]
