"""The worked examples of the reference notes (the book and CS231n), exact, on every path and both dtypes."""
import numpy as np
import pytest
from support import skip_unless_supported

from fastconv import Convolution, Pooling, conv2d, conv_spec, im2col, pool_spec

DTYPES = [np.float32, np.float64]

EX1_X = [[1, 2, 3, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1]]
EX1_W = [[2, 0, 1], [0, 1, 2], [1, 0, 2]]


def as4d(rows, dtype):
    return np.array(rows, dtype=dtype)[None, None]


@pytest.mark.parametrize("dtype", DTYPES)
def test_example1_single_channel_with_and_without_padding(path, dtype):
    x, w = as4d(EX1_X, dtype), as4d(EX1_W, dtype)
    padded = conv2d(x, w, pad=1, backend=path)
    assert padded.dtype == dtype
    np.testing.assert_array_equal(
        padded[0, 0], [[7, 12, 10, 2], [4, 15, 16, 10], [10, 6, 15, 6], [8, 10, 4, 3]])
    np.testing.assert_array_equal(conv2d(x, w, backend=path)[0, 0], [[15, 16], [6, 15]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_example2_vertical_edge_detector(path, dtype):
    x = np.zeros((1, 1, 5, 6), dtype)
    x[..., 3:] = 100
    w = as4d([[-1, 0, 1]] * 3, dtype)
    out = conv2d(x, w, backend=path)
    np.testing.assert_array_equal(out[0, 0], [[0, 300, 300, 0]] * 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_example3_toy_layer_forward_and_backward(path, dtype):
    x = np.arange(9, dtype=dtype).reshape(1, 1, 3, 3)
    W = np.ones((2, 1, 2, 2), dtype)
    W[1] *= 2
    skip_unless_supported(path, conv_spec(x.shape, W.shape))
    layer = Convolution(W, np.ones(2, dtype), stride=1, pad=0, backend=path)
    out = layer.forward(x)
    np.testing.assert_array_equal(out[0, 0], [[9, 13], [21, 25]])
    np.testing.assert_array_equal(out[0, 1], [[17, 25], [41, 49]])
    dx = layer.backward(np.ones_like(out))
    np.testing.assert_array_equal(layer.db, [4, 4])
    for k in range(2):
        np.testing.assert_array_equal(layer.dW[k, 0], [[8, 12], [20, 24]])
    np.testing.assert_array_equal(dx[0, 0], [[3, 6, 3], [6, 12, 6], [3, 6, 3]])
    assert {out.dtype, dx.dtype, layer.dW.dtype, layer.db.dtype} == {np.dtype(dtype)}


@pytest.mark.parametrize("n, expected", [(1, (9, 75)), (10, (90, 75))])
def test_example4_im2col_shapes(n, expected):
    x = np.random.default_rng(0).standard_normal((n, 3, 7, 7))
    assert im2col(x, 5, 5, stride=1, pad=0).shape == expected


@pytest.mark.parametrize("dtype", DTYPES)
def test_example5_max_pooling_forward_and_backward(path, dtype):
    x = np.arange(18, dtype=dtype).reshape(1, 2, 3, 3)
    skip_unless_supported(path, pool_spec(x.shape, 2, 2))
    pool = Pooling(2, 2, stride=1, mode="max", backend=path)
    out = pool.forward(x)
    np.testing.assert_array_equal(out[0, 0], [[4, 5], [7, 8]])
    np.testing.assert_array_equal(out[0, 1], [[13, 14], [16, 17]])
    dx = pool.backward(np.ones_like(out))
    # each window's max is its bottom-right cell: the gradient lands there only
    expected = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 1]], dtype)
    np.testing.assert_array_equal(dx[0, 0], expected)
    np.testing.assert_array_equal(dx[0, 1], expected)
    assert dx.dtype == dtype
