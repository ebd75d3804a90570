"""Sigmoid and Dropout against finite differences (Relu, Affine and SoftmaxWithLoss are in
test_gradients.py), and float32 kept by every non-conv layer."""
import numpy as np
import pytest

from fastconv import Affine, Dropout, Relu, Sigmoid, SoftmaxWithLoss
from gradcheck import numerical_gradient, rel_error

MAX_REL_ERROR = 1e-6


def test_sigmoid_gradient():
    rng = np.random.default_rng(0)
    x = 3 * rng.standard_normal((4, 5))
    layer = Sigmoid()
    G = rng.standard_normal(x.shape)
    layer.forward(x)
    dx = layer.backward(G)
    numeric = numerical_gradient(lambda: float(np.sum(layer.forward(x) * G)), x)
    assert rel_error(dx, numeric) < MAX_REL_ERROR


def test_sigmoid_is_exact_in_the_tails_without_overflow():
    x = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow is fine
        y = Sigmoid().forward(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [0.0, np.exp(-40.0), 0.5, 1.0, 1.0], rtol=1e-6, atol=0)


def test_dropout_gradient_with_a_fixed_mask():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 4, 4))
    G = rng.standard_normal(x.shape)
    layer = Dropout(0.4, seed=0)

    def loss():
        layer.rng = np.random.default_rng(7)       # the same mask on every call
        return float(np.sum(layer.forward(x, train=True) * G))

    loss()
    dx = layer.backward(G)
    assert rel_error(dx, numerical_gradient(loss, x)) < MAX_REL_ERROR
    dropped = 1 - layer.mask.mean()
    assert 0.25 < dropped < 0.55                   # about ratio=0.4 of 96 units


def test_dropout_evaluation_scales_and_training_is_seeded():
    x = np.ones((2, 1000), dtype=np.float32)
    out = Dropout(0.25).forward(x, train=False)
    assert out.dtype == np.float32 and (out == np.float32(0.75)).all()
    a, b = Dropout(0.5, seed=3), Dropout(0.5, seed=3)
    assert np.array_equal(a.forward(x), b.forward(x))
    with pytest.raises(ValueError, match="ratio"):
        Dropout(1.0)
    with pytest.raises(RuntimeError, match="before a training forward"):
        Dropout().backward(x)


def test_float32_stays_float32_through_the_dense_layers():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 2, 3)).astype(np.float32)
    affine = Affine(rng.standard_normal((12, 4)).astype(np.float32), np.zeros(4, np.float32))
    chain = [Relu(), Sigmoid(), Dropout(0.5, seed=0)]
    h = x
    for layer in chain:
        h = layer.forward(h)
        assert h.dtype == np.float32
    scores = affine.forward(h)
    softmax = SoftmaxWithLoss()
    assert scores.dtype == np.float32 and softmax.forward(scores, [0, 1, 3]).dtype == np.float32
    d = affine.backward(softmax.backward())
    assert d.dtype == affine.dW.dtype == affine.db.dtype == np.float32 and d.shape == x.shape
    for layer in reversed(chain):
        d = layer.backward(d)
        assert d.dtype == np.float32
