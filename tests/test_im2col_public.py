"""fastconv.im2col / col2im: the book's layout, and col2im as the adjoint of im2col."""
import numpy as np
import pytest
from support import assert_close

from fastconv import col2im, conv2d, im2col


def test_rows_are_windows_batch_major_columns_channel_row_col():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 6))
    col = im2col(x, 2, 3, stride=(2, 1), pad=(1, 0))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    OH, OW = 3, 4                                  # (5+2-2)//2+1, (6-3)//1+1
    assert col.shape == (2 * OH * OW, 3 * 2 * 3)
    row = 0
    for n in range(2):
        for i in range(OH):
            for j in range(OW):
                np.testing.assert_array_equal(col[row], xp[n, :, 2 * i:2 * i + 2, j:j + 3].ravel())
                row += 1


@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1), ((1, 2), (2, 0)), (3, 0)])
def test_col2im_is_the_adjoint_of_im2col(stride, pad):
    # <im2col(x), c> == <x, col2im(c)> for every x and c
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 7, 8))
    col = im2col(x, 3, 2, stride, pad)
    c = rng.standard_normal(col.shape)
    lhs = np.sum(col * c)
    rhs = np.sum(x * col2im(c, x.shape, 3, 2, stride, pad))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_convolution_is_im2col_times_reshaped_weights():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 6, 6))
    W = rng.standard_normal((4, 2, 3, 3))
    col = im2col(x, 3, 3, stride=1, pad=1)
    out = (col @ W.reshape(4, -1).T).reshape(3, 6, 6, 4).transpose(0, 3, 1, 2)
    assert_close(out, conv2d(x, W, pad=1, backend="naive"), "out")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    x = np.ones((1, 1, 4, 4), dtype)
    col = im2col(x, 2, 2)
    assert col.dtype == dtype
    assert col2im(col, x.shape, 2, 2).dtype == dtype
