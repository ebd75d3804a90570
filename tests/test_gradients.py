"""Backward passes against central finite differences, float64, output-weighted:
L = sum(forward(...) * G) for a random G, so backward(G) must equal dL/d(input)."""
import numpy as np
import pytest

import fastconv.layers
from fastconv import Affine, Convolution, Pooling, Relu, SoftmaxWithLoss, conv_spec, pool_spec
from gradcheck import check_layer_gradients, numerical_gradient, rel_error
from support import skip_unless_supported

MAX_REL_ERROR = 1e-6


@pytest.mark.parametrize("x_shape, w_shape, stride, pad", [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 0),
    ((2, 2, 7, 8), (3, 2, 3, 3), (2, 1), 1),
    ((1, 2, 6, 7), (2, 2, 3, 2), 1, (1, 2)),      # non-square kernel, per-axis pad
    ((2, 2, 8, 7), (3, 2, 2, 4), (2, 1), (1, 2)),
    ((2, 4, 5, 5), (3, 4, 1, 1), 1, 0),           # 1x1 mixes channels only
    ((1, 2, 9, 9), (2, 2, 3, 3), 2, 0),           # stride 2, floor leaves nothing out
    ((1, 1, 8, 8), (2, 1, 3, 3), 3, 0),           # floor drops the last row/column
])
def test_convolution_gradients(path, x_shape, w_shape, stride, pad):
    skip_unless_supported(path, conv_spec(x_shape, w_shape, stride, pad))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    layer = Convolution(rng.standard_normal(w_shape), rng.standard_normal(w_shape[0]),
                        stride=stride, pad=pad, backend=path)
    assert max(check_layer_gradients(layer, x)) < MAX_REL_ERROR


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("pool, stride, pad", [
    ((2, 2), 2, 0), ((3, 3), 2, 1), ((2, 3), (1, 2), (1, 0)), ((2, 2), 1, 0),
])
def test_pooling_gradients(path, mode, pool, stride, pad):
    rng = np.random.default_rng(1)
    # distinct values 1e-2 apart: a 1e-5 nudge never changes which cell is the max
    x = rng.permutation(2 * 3 * 6 * 7).reshape(2, 3, 6, 7) * 1e-2
    skip_unless_supported(path, pool_spec(x.shape, *pool, stride, pad, mode))
    layer = Pooling(*pool, stride=stride, pad=pad, mode=mode, backend=path)
    G = rng.standard_normal(layer.forward(x).shape)
    dx = layer.backward(G)
    numeric = numerical_gradient(lambda: float(np.sum(layer.forward(x) * G)), x)
    assert rel_error(dx, numeric) < MAX_REL_ERROR


def test_affine_gradients_with_4d_input():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 3, 4))
    layer = Affine(rng.standard_normal((24, 5)), rng.standard_normal(5))
    G = rng.standard_normal((3, 5))
    layer.forward(x)
    dx = layer.backward(G)
    assert dx.shape == x.shape

    def loss():
        return float(np.sum(layer.forward(x) * G))

    assert rel_error(dx, numerical_gradient(loss, x)) < MAX_REL_ERROR
    assert rel_error(layer.dW, numerical_gradient(loss, layer.W)) < MAX_REL_ERROR
    assert rel_error(layer.db, numerical_gradient(loss, layer.b)) < MAX_REL_ERROR


def test_relu_gradient():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6))
    x[np.abs(x) < 1e-3] = 0.5                      # keep clear of the kink at 0
    layer = Relu()
    G = rng.standard_normal(x.shape)
    layer.forward(x)
    dx = layer.backward(G)
    numeric = numerical_gradient(lambda: float(np.sum(layer.forward(x) * G)), x)
    assert rel_error(dx, numeric) < MAX_REL_ERROR


@pytest.mark.parametrize("chunk", [None, 7])          # 7: chunks that end mid-row
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_relu_values_bit_for_bit(dtype, chunk, monkeypatch):
    # the definition, cell by cell: out = 0 where x <= 0, else x (nan stays nan); the
    # gradient is 0 where x <= 0, else dout, whatever dout holds (nan and inf included)
    if chunk:
        monkeypatch.setattr(fastconv.layers, "_ZERO_WHERE_CHUNK", chunk)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 2.5, -2.5, 1e-30, -1e-30])
    x = np.repeat(special, special.size).reshape(9, 9).astype(dtype)
    dout = np.tile(special, special.size).reshape(9, 9).astype(dtype)
    blocked = [[not (v > 0 or v != v) for v in row] for row in x.tolist()]
    zero = dtype(0)
    want_out = np.array([[zero if b else v for b, v in zip(br, row)]
                         for br, row in zip(blocked, x)], dtype=dtype)
    want_dx = np.array([[zero if b else v for b, v in zip(br, row)]
                        for br, row in zip(blocked, dout)], dtype=dtype)
    layer = Relu()
    x_before, dout_before = x.copy(), dout.copy()
    out = layer.forward(x)
    dx = layer.backward(dout)
    for got, want in ((out, want_out), (dx, want_dx)):
        assert got.dtype == np.dtype(dtype)
        # the same bits: +0.0 (never -0.0) where blocked, nan where nan
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    np.testing.assert_array_equal(x.view(np.uint8), x_before.view(np.uint8))
    np.testing.assert_array_equal(dout.view(np.uint8), dout_before.view(np.uint8))
    # a strided dout (a view) gives the same gradient
    wide = np.zeros((9, 18), dtype=dtype)
    wide[:, ::2] = dout
    np.testing.assert_array_equal(layer.backward(wide[:, ::2]).view(np.uint8),
                                  want_dx.view(np.uint8))


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_with_loss_gradient(one_hot):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, size=5)
    t = np.eye(4)[labels] if one_hot else labels
    layer = SoftmaxWithLoss()
    layer.forward(x, t)
    dx = layer.backward()
    numeric = numerical_gradient(lambda: float(layer.forward(x, t)), x)
    assert rel_error(dx, numeric) < MAX_REL_ERROR
