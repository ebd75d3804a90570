"""Bad input raises a clear ValueError/TypeError naming the argument and shapes,
before any kernel runs."""
import numpy as np
import pytest

import fastconv
from fastconv import Affine, Convolution, Pooling, SoftmaxWithLoss, col2im, conv2d, im2col, pool2d

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 8, 8))
W = rng.standard_normal((4, 3, 3, 3))
B = rng.standard_normal(4)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(x=X[0, 0]), ValueError,
     r"x must be 3-D or 4-D \(N, C, H, W\) or one image \(C, H, W\), got shape \(8, 8\)"),
    (dict(W=W[0]), ValueError, r"W must be 4-D \(FN, C, FH, FW\), got shape \(3, 3, 3\)"),
    (dict(W=W[:, :2]), ValueError,
     r"x has C=3 channels \(x.shape=\(2, 3, 8, 8\)\) but W expects C=2 \(W.shape=\(4, 2, 3, 3\)\)"),
    (dict(b=B[:3]), ValueError, r"b must have shape \(FN,\) = \(4,\) .* got \(3,\)"),
    (dict(b=B[None]), ValueError, r"b must be 1-D \(FN,\), got shape \(1, 4\)"),
    (dict(stride=0), ValueError, r"stride must be >= 1, got \(0, 0\)"),
    (dict(stride=(1, 0)), ValueError, r"stride must be >= 1, got \(1, 0\)"),
    (dict(pad=-1), ValueError, r"pad must be >= 0"),
    (dict(pad=(1, 2, 3)), ValueError, r"pad must be an int or an \(h, w\) pair"),
    (dict(stride=1.5), TypeError, r"stride must be an int"),
    (dict(W=rng.standard_normal((4, 3, 9, 3))), ValueError,
     r"W's filter \(9, 3\) does not fit input \(H, W\)=\(8, 8\).*larger than the padded input"),
    (dict(x=X.astype(np.int64)), TypeError, r"x has dtype int64; .* float32 or float64.*astype"),
    (dict(x=X.astype(np.complex64)), TypeError, r"x has dtype complex64"),
    (dict(x=X.tolist()), TypeError,
     r"x must be a numpy array of shape \(N, C, H, W\) or one image \(C, H, W\), got list"),
    (dict(x=np.zeros((0, 3, 8, 8))), ValueError, r"x must not be empty"),
    (dict(backend="gpu"), ValueError, r"backend must be one of 'auto', 'naive'.*got 'gpu'"),
    (dict(rounding="exact", stride=2), ValueError, r"\(8 \+ 2\*0 - 3\)/2 \+ 1 = 3.50 is not an integer"),
])
def test_conv2d_rejects(kwargs, exc, match):
    args = dict(x=X, W=W, b=B, stride=1, pad=0, backend="naive")
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        conv2d(args.pop("x"), args.pop("W"), **args)


def test_errors_come_before_any_kernel(monkeypatch):
    from fastconv import backends

    def no_kernel(name):
        raise AssertionError("a kernel module was reached")

    monkeypatch.setattr(backends, "get_path", no_kernel)
    with pytest.raises(ValueError, match="channels"):
        conv2d(X, W[:, :2])
    with pytest.raises(ValueError, match="mode"):
        pool2d(X, 2, 2, mode="median")


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(mode="min"), ValueError, r"mode must be one of \('max', 'avg'\), got 'min'"),
    (dict(pool_h=0), ValueError, r"pool window \(pool_h, pool_w\) must be >= 1, got \(0, 2\)"),
    (dict(pool_h=9), ValueError, r"pool window \(9, 2\) does not fit input \(H, W\)=\(8, 8\)"),
    (dict(pad=2), ValueError, r"pad \(2, 2\) must be smaller than the pool window \(2, 2\)"),
    (dict(stride=0), ValueError, r"stride must be >= 1"),
    (dict(x=X.astype(np.int32)), TypeError, r"x has dtype int32"),
    (dict(x=X[0, 0]), ValueError, r"x must be 3-D or 4-D"),
    (dict(backend="fast"), ValueError, r"backend must be one of"),
])
def test_pool2d_rejects(kwargs, exc, match):
    args = dict(x=X, pool_h=2, pool_w=2, stride=2, pad=0, mode="max", backend="naive")
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        pool2d(args.pop("x"), args.pop("pool_h"), args.pop("pool_w"), **args)


def test_layer_constructors_validate():
    with pytest.raises(ValueError, match="backend must be one of"):
        Convolution(W, B, backend="turbo")
    with pytest.raises(ValueError, match=r"b must have shape \(4,\)"):
        Convolution(W, B[:2])
    with pytest.raises(TypeError, match="mixed dtypes"):
        Convolution(W.astype(np.float32), B)
    with pytest.raises(ValueError, match="mode must be one of"):
        Pooling(2, 2, mode="median")
    with pytest.raises(ValueError, match=r"b must have shape \(5,\)"):
        Affine(np.zeros((6, 5)), np.zeros(6))


def test_backward_checks_dout():
    layer = Convolution(W, B, backend="naive")
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((2, 4, 6, 6)))
    out = layer.forward(X)
    with pytest.raises(ValueError,
                       match=r"dout must have the forward output's shape \(2, 4, 6, 6\), got \(2, 4, 6, 5\)"):
        layer.backward(out[..., :5])
    with pytest.raises(TypeError, match="dout has dtype float32 but forward ran in float64"):
        layer.backward(out.astype(np.float32))


def test_affine_and_softmax_validate():
    with pytest.raises(ValueError, match=r"flattens to D=192 features but W.shape=\(10, 5\) expects D=10"):
        Affine(np.zeros((10, 5)), np.zeros(5)).forward(X)
    with pytest.raises(ValueError, match=r"labels t must lie in \[0, 3\)"):
        SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"t must be labels \(N,\)=\(2,\)"):
        SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0, 1, 2]))


def test_cuda_without_device_is_a_clear_runtime_error(monkeypatch):
    from fastconv import backends

    monkeypatch.setattr(backends, "cuda_present", lambda: False)
    if "cuda" not in backends.PATHS:
        pytest.skip("the cuda path is not in the dispatch table")
    with pytest.raises(RuntimeError, match="no CUDA device was found.*NUMBA_ENABLE_CUDASIM=1"):
        conv2d(X, W, B, backend="cuda")
    assert "cuda" not in fastconv.available_backends()


def test_im2col_and_col2im_validate():
    with pytest.raises(ValueError, match="x must be 4-D"):
        im2col(X[0], 3, 3)
    with pytest.raises(ValueError, match=r"col must have shape \(N\*OH\*OW, C\*FH\*FW\) = \(72, 27\)"):
        col2im(np.zeros((70, 27)), X.shape, 3, 3)
    with pytest.raises(ValueError, match=r"input_shape must be \(N, C, H, W\)"):
        col2im(np.zeros((72, 27)), (2, 3, 8), 3, 3)


@pytest.mark.parametrize("make, match", [
    (lambda: Convolution(np.ones((2, 1, 3, 3)), stride=0), r"stride must be >= 1, got \(0, 0\)"),
    (lambda: Convolution(np.ones((2, 1, 3, 3)), pad=-1), r"pad must be >= 0, got \(-1, -1\)"),
    (lambda: Convolution(np.ones((2, 1, 3, 3)), stride=(1, 0)), r"stride must be >= 1"),
    (lambda: Pooling(0, 2), r"pool window \(pool_h, pool_w\) must be >= 1, got \(0, 2\)"),
    (lambda: Pooling(2, 2, stride=0), r"stride must be >= 1"),
    (lambda: Pooling(2, 2, pad=-2), r"pad must be >= 0"),
])
def test_layers_refuse_bad_arguments_when_made(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# Arguments the specs' caches cannot hash: a dict is named, a NumPy array or a
# nested list is taken as the tuple it holds.
@pytest.mark.parametrize("kwargs, match", [
    (dict(pad={}), r"pad must be an int, an \(h, w\) pair, \(\(top, bottom\)"),
    (dict(stride={}), r"stride must be an int or an \(h, w\) pair of ints, got \{\} \(dict\)"),
    (dict(dilation={}), r"dilation must be an int or an \(h, w\) pair"),
    (dict(groups={}), r"groups must be an int, got \{\}"),
    (dict(pad=[{}, 1]), r"pad must be .*got \(\{\}, 1\)"),
])
def test_conv2d_names_an_unhashable_argument(kwargs, match):
    x, W = np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3))
    with pytest.raises(TypeError, match=match):
        conv2d(x, W, backend="naive", **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(pad={}), r"pad must be an int or an \(h, w\) pair of ints, got \{\}"),
    (dict(stride={}), r"stride must be an int or an \(h, w\) pair"),
    (dict(ceil_mode={}), r"ceil_mode must be True or False"),
])
def test_pool2d_names_an_unhashable_argument(kwargs, match):
    with pytest.raises(TypeError, match=match):
        pool2d(np.ones((1, 1, 6, 6)), 2, 2, backend="naive", **kwargs)


def test_numpy_arrays_and_nested_lists_are_taken_as_tuples():
    rng = np.random.default_rng(0)
    x, W = rng.standard_normal((1, 2, 7, 6)), rng.standard_normal((3, 2, 3, 3))
    want = conv2d(x, W, stride=(2, 1), pad=((1, 1), (0, 2)), backend="naive")
    got = conv2d(x, W, stride=np.array([2, 1]), pad=((1, 1), [0, 2]), backend="naive")
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(conv2d(x, W, pad=np.array([1, 1]), backend="naive"),
                                  conv2d(x, W, pad=(1, 1), backend="naive"))
    np.testing.assert_array_equal(pool2d(x, 2, 2, stride=np.array([2, 2]), backend="naive"),
                                  pool2d(x, 2, 2, stride=(2, 2), backend="naive"))
