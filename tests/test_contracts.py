"""Contracts every path keeps: dtypes preserved, inputs never modified."""
import numpy as np
import pytest
from support import assert_close, skip_unless_supported

from fastconv import Convolution, Pooling, conv_spec, pool_spec


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_convolution_keeps_dtype_and_leaves_inputs_alone(path, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    W = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    skip_unless_supported(path, conv_spec(x.shape, W.shape, (2, 1), (1, 0)))
    x0, W0, b0 = x.copy(), W.copy(), b.copy()
    layer = Convolution(W, b, stride=(2, 1), pad=(1, 0), backend=path)
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dout0 = dout.copy()
    dx = layer.backward(dout)
    for name, a in [("out", out), ("dx", dx), ("dW", layer.dW), ("db", layer.db)]:
        assert a.dtype == dtype, name
    assert dx.shape == x.shape and layer.dW.shape == W.shape and layer.db.shape == b.shape
    for a, a0 in [(x, x0), (W, W0), (b, b0), (dout, dout0)]:
        np.testing.assert_array_equal(a, a0)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_keeps_dtype_and_leaves_inputs_alone(path, mode, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    skip_unless_supported(path, pool_spec(x.shape, 3, 2, 2, 1, mode))
    x0 = x.copy()
    layer = Pooling(3, 2, stride=2, pad=1, mode=mode, backend=path)
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dout0 = dout.copy()
    dx = layer.backward(dout)
    assert out.dtype == dtype and dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dout, dout0)


def test_non_contiguous_input_is_accepted(path):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((2, 6, 8, 8))
    x = base[:, ::2]                               # a strided view
    W = rng.standard_normal((2, 3, 3, 3))
    ref = Convolution(W, np.zeros(2), backend="naive").forward(np.ascontiguousarray(x))
    assert_close(Convolution(W, np.zeros(2), backend=path).forward(x), ref, "out")


def test_backward_sees_the_inputs_as_they_were_at_forward(path):
    """One contract on every path: forward keeps what backward needs as it was, so a
    caller that changes x or W in between does not change the gradients."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    W = rng.standard_normal((4, 3, 3, 3))           # 3x3, stride 1: every path runs it
    dout = rng.standard_normal((2, 4, 5, 4))
    clean = Convolution(W.copy(), np.zeros(4), backend=path)
    clean.forward(x.copy())
    expected = clean.backward(dout)
    layer = Convolution(W, np.zeros(4), backend=path)
    layer.forward(x)
    x *= 3.0                     # the caller reuses its buffers before backward
    W -= 1.0
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dx, expected)
    np.testing.assert_array_equal(layer.dW, clean.dW)


@pytest.mark.parametrize("make", [
    lambda a: np.ma.masked_array(a, mask=a > 0),
    lambda a: np.asmatrix(a.reshape(a.shape[0], -1)),
])
def test_masked_arrays_and_matrices_are_refused(make):
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 6))
    with pytest.raises((TypeError, ValueError), match="x"):
        Convolution(np.ones((2, 3, 3, 3)), np.zeros(2), backend="naive").forward(make(x))
    with pytest.raises(TypeError, match="mask"):
        Pooling(2, 2, stride=2, backend="naive").forward(np.ma.masked_array(x, mask=x > 0))
