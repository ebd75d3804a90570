"""The worked examples of the reference notes 1-5 on the cuda path, exact, in both dtypes."""
import numpy as np
import pytest
from cuda_support import DTYPES, FORWARD_KERNELS, cuda_conv_forward, skip_without_cuda

from fastconv import Convolution, Pooling, conv2d, im2col, pool2d
from fastconv.kernels import cuda as kc

skip_without_cuda()

EX1_X = [[1, 2, 3, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1]]
EX1_W = [[2, 0, 1], [0, 1, 2], [1, 0, 2]]


def as4d(rows, dtype):
    return np.array(rows, dtype=dtype)[None, None]


@pytest.mark.parametrize("kernel", FORWARD_KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_example1_single_channel_with_and_without_padding(dtype, kernel):
    x, w = as4d(EX1_X, dtype), as4d(EX1_W, dtype)
    padded, _ = cuda_conv_forward(x, w, None, 1, 1, kernel)
    assert padded.dtype == dtype
    np.testing.assert_array_equal(
        padded[0, 0], [[7, 12, 10, 2], [4, 15, 16, 10], [10, 6, 15, 6], [8, 10, 4, 3]])
    valid, _ = cuda_conv_forward(x, w, None, 1, 0, kernel)
    np.testing.assert_array_equal(valid[0, 0], [[15, 16], [6, 15]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_example2_vertical_edge_detector(dtype):
    x = np.zeros((1, 1, 5, 6), dtype)
    x[..., 3:] = 100
    w = as4d([[-1, 0, 1]] * 3, dtype)
    out = conv2d(x, w, backend="cuda")
    assert out.shape == (1, 1, 3, 4) and out.dtype == dtype
    np.testing.assert_array_equal(out[0, 0], [[0, 300, 300, 0]] * 3)


@pytest.mark.parametrize("kernel", FORWARD_KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_example3_toy_layer_forward_and_backward(dtype, kernel):
    x = np.arange(9, dtype=dtype).reshape(1, 1, 3, 3)
    W = np.ones((2, 1, 2, 2), dtype)
    W[1] *= 2
    b = np.ones(2, dtype)
    out, cache = cuda_conv_forward(x, W, b, 1, 0, kernel)
    np.testing.assert_array_equal(out[0, 0], [[9, 13], [21, 25]])
    np.testing.assert_array_equal(out[0, 1], [[17, 25], [41, 49]])
    dx, dW, db = kc.conv_backward(np.ones_like(out), cache)
    assert dx.dtype == dW.dtype == db.dtype == dtype
    np.testing.assert_array_equal(db, [4, 4])
    for k in range(2):
        np.testing.assert_array_equal(dW[k, 0], [[8, 12], [20, 24]])
    np.testing.assert_array_equal(dx[0, 0], [[3, 6, 3], [6, 12, 6], [3, 6, 3]])


def test_example3_through_the_layer():
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    W = np.ones((2, 1, 2, 2), np.float32)
    W[1] *= 2
    layer = Convolution(W, np.ones(2, np.float32), backend="cuda")
    out = layer.forward(x)
    assert layer.path == "cuda"
    np.testing.assert_array_equal(out[0, 1], [[17, 25], [41, 49]])
    dx = layer.backward(np.ones_like(out))
    np.testing.assert_array_equal(layer.db, [4, 4])
    np.testing.assert_array_equal(layer.dW[1, 0], [[8, 12], [20, 24]])
    np.testing.assert_array_equal(dx[0, 0], [[3, 6, 3], [6, 12, 6], [3, 6, 3]])


@pytest.mark.parametrize("kernel", FORWARD_KERNELS)
def test_example4_conv_is_the_im2col_matrix_product(kernel):
    # (10, 3, 7, 7) with 5x5 filters unrolls to (90, 75); the cuda convolution
    # (which never builds that matrix) must equal col @ W_rows.T, rearranged.
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 4, (10, 3, 7, 7)).astype(np.float64)
    W = rng.integers(-3, 4, (2, 3, 5, 5)).astype(np.float64)
    col = im2col(x, 5, 5)
    assert col.shape == (90, 75)
    expected = (col @ W.reshape(2, 75).T).reshape(10, 3, 3, 2).transpose(0, 3, 1, 2)
    out, _ = cuda_conv_forward(x, W, None, 1, 0, kernel)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_example5_max_pooling_forward_and_backward(dtype):
    x = np.arange(18, dtype=dtype).reshape(1, 2, 3, 3)
    layer = Pooling(2, 2, stride=1, backend="cuda")
    out = layer.forward(x)
    assert out.dtype == dtype and layer.path == "cuda"
    np.testing.assert_array_equal(out[0, 0], [[4, 5], [7, 8]])
    np.testing.assert_array_equal(out[0, 1], [[13, 14], [16, 17]])
    dx = layer.backward(np.ones_like(out))
    # each window's maximum is its bottom-right cell: only those get gradient
    expected = np.zeros((3, 3), dtype)
    expected[1:, 1:] = 1
    np.testing.assert_array_equal(dx[0, 0], expected)
    np.testing.assert_array_equal(dx[0, 1], expected)
    np.testing.assert_array_equal(pool2d(x, 2, 2, 1, mode="avg", backend="cuda")[0, 0],
                                  [[2, 3], [5, 6]])
