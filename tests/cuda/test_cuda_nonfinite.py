"""nan and +-inf on the cuda path land in the same cells as on the naive path.

The naive path pads x with zeros, so a weight that is inf or nan meets the
padding in forward (0 * inf = nan) and an inf in dout meets it in dW. Both
forward kernels and the dW kernel must keep those zero terms; dx and pooling
have no padded terms. Cell by cell: the same cells nan, +inf and -inf, finite
cells within the dtype's tolerance.
"""
import numpy as np
import pytest
from cuda_support import DTYPES, FORWARD_KERNELS, skip_without_cuda
from support import assert_same_cells

from fastconv import conv_spec
from fastconv.kernels import cuda as kc
from fastconv.kernels import naive

skip_without_cuda()

# (N, C, H, W), (FN, C/groups, FH, FW), stride, pad, dilation, groups: all padded
CASES = {
    "pad1": ((1, 2, 5, 4), (3, 2, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    "stride2_pad2": ((2, 1, 6, 7), (2, 1, 3, 2), (2, 2), (2, 1), (1, 1), 1),
    "dilated_grouped": ((1, 4, 6, 6), (4, 2, 2, 2), (1, 1), (1, 2), (2, 1), 2),
}


def _naive(x, W, b, spec, dout):
    x64, W64, b64, d64 = (a.astype(np.float64) for a in (x, W, b, dout))
    out, cache = naive.conv_forward(x64, W64, b64, spec)
    return (out, *naive.conv_backward(d64, cache))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kernel", FORWARD_KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_non_finite_weights_and_dout_meet_the_padding_as_in_naive(case, dtype, kernel):
    x_shape, w_shape, stride, pad, dilation, groups = case
    spec = conv_spec(x_shape, w_shape, stride, pad, dtype, dilation=dilation, groups=groups)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    W = rng.standard_normal(w_shape).astype(dtype)
    W[0, 0, 0, 0] = np.inf              # meets the top-left padding: nan there
    W[-1, -1, -1, -1] = np.nan
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    dout = rng.standard_normal(spec.out_shape).astype(dtype)
    dout[0, 0, 0, 0] = -np.inf          # its window reads padding: nan in dW
    want = _naive(x, W, b, spec, dout)
    assert np.isnan(want[0]).any() and np.isnan(want[2]).any()     # the cases bite
    out, cache = kc._conv_forward(x, W, b, spec, kernel)
    got = (out, *kc.conv_backward(dout, cache))
    for name, g, e in zip(("out", "dx", "dW", "db"), got, want):
        assert_same_cells(np.asarray(g), e, f"{name} ({kernel})")
