"""Optimizers: each step against its textbook formula written out here, in place,
dtype kept, state save/restore exact, and every one descends a quadratic."""
import math

import numpy as np
import pytest

from fastconv import SGD, AdaGrad, Adam, Momentum
from fastconv.optim import make_optimizer


def setup(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    params = {"W": rng.standard_normal((3, 4)).astype(dtype), "b": rng.standard_normal(4).astype(dtype)}
    grads = [{k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
             for _ in range(3)]
    return params, grads


def test_sgd_step():
    params, grads = setup()
    expected = {k: v - 0.1 * grads[0][k] for k, v in params.items()}
    SGD(lr=0.1).update(params, grads[0])
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-15)


def test_momentum_steps():
    params, grads = setup()
    p = {k: v.copy() for k, v in params.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    opt = Momentum(lr=0.1, momentum=0.8)
    for g in grads:
        opt.update(params, g)
        for k in p:
            v[k] = 0.8 * v[k] - 0.1 * g[k]
            p[k] = p[k] + v[k]
    for k in params:
        np.testing.assert_allclose(params[k], p[k], rtol=1e-13)


def test_adagrad_steps():
    params, grads = setup()
    p = {k: v.copy() for k, v in params.items()}
    h = {k: np.zeros_like(a) for k, a in p.items()}
    opt = AdaGrad(lr=0.1)
    for g in grads:
        opt.update(params, g)
        for k in p:
            h[k] = h[k] + g[k] ** 2
            p[k] = p[k] - 0.1 * g[k] / (np.sqrt(h[k]) + 1e-7)
    for k in params:
        np.testing.assert_allclose(params[k], p[k], rtol=1e-13)


def test_adam_matches_kingma_and_ba():
    """The paper's Algorithm 1 (separate bias corrections); eps differs only in where it
    is added, far below the tolerance."""
    params, grads = setup()
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(a) for k, a in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    lr, b1, b2 = 0.01, 0.9, 0.999
    opt = Adam(lr=lr, beta1=b1, beta2=b2)
    for t, g in enumerate(grads, start=1):
        opt.update(params, g)
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            m_hat, v_hat = m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)
            p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    for k in params:
        np.testing.assert_allclose(params[k], p[k], rtol=1e-6)


def test_adam_first_step_moves_every_weight_by_lr():
    params, grads = setup()
    before = {k: v.copy() for k, v in params.items()}
    Adam(lr=0.001).update(params, grads[0])
    # m_hat / sqrt(v_hat) = g / |g| at t=1; the book adds eps=1e-7 to sqrt(v) before the
    # bias correction, i.e. about 3e-6 / |g| relative
    for k in params:
        np.testing.assert_allclose(before[k] - params[k], 0.001 * np.sign(grads[0][k]), rtol=1e-3)


@pytest.mark.parametrize("name", ["SGD", "Momentum", "AdaGrad", "Adam"])
def test_float32_in_place_and_state_in_float32(name):
    params, grads = setup(np.float32)
    arrays = dict(params)
    opt = make_optimizer(name, lr=0.01)
    for g in grads:
        opt.update(params, g)
    for k in params:
        assert params[k] is arrays[k] and params[k].dtype == np.float32
    _, state = opt.state_dict()
    assert all(a.dtype == np.float32 for a in state.values())


@pytest.mark.parametrize("name, lr", [("SGD", 0.1), ("Momentum", 0.05), ("AdaGrad", 0.5),
                                      ("Adam", 0.1)])
def test_each_optimizer_descends_a_quadratic(name, lr):
    # f(x) = sum(a * x^2), minimum 0 at x = 0
    a = np.array([1.0, 3.0, 0.5])
    params = {"x": np.array([1.0, -2.0, 3.0])}
    opt = make_optimizer(name, lr=lr)
    f0 = float(np.sum(a * params["x"] ** 2))
    for _ in range(200):
        opt.update(params, {"x": 2 * a * params["x"]})
    assert float(np.sum(a * params["x"] ** 2)) < 1e-2 * f0


@pytest.mark.parametrize("name", ["SGD", "Momentum", "AdaGrad", "Adam"])
def test_state_dict_restores_exactly(name):
    params_a, grads = setup(np.float32)
    params_b = {k: v.copy() for k, v in params_a.items()}
    a = make_optimizer(name, lr=0.01)
    for g in grads:
        a.update(params_a, g)
    b = make_optimizer(name, lr=0.01)
    b.update(params_b, grads[0])
    scalars, arrays = b.state_dict()
    c = make_optimizer(name, lr=0.5)            # hyper-parameters come from the state
    c.load_state_dict(scalars, arrays)
    for g in grads[1:]:
        c.update(params_b, g)
    for k in params_a:
        assert np.array_equal(params_a[k], params_b[k])
    with pytest.raises(ValueError, match="optimizer state"):
        make_optimizer("SGD" if name != "SGD" else "Adam").load_state_dict(scalars, arrays)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("RMSprop")
    with pytest.raises(ValueError, match="lr"):
        SGD(lr=-1)
    with pytest.raises(ValueError, match="beta"):
        Adam(beta1=1.0)
    params, grads = setup()
    with pytest.raises(ValueError, match="lacks keys"):
        SGD().update(params, {"W": grads[0]["W"]})
    with pytest.raises(ValueError, match="grads\\['W'\\]"):
        SGD().update(params, {"W": grads[0]["W"].T, "b": grads[0]["b"]})
    assert math.isclose(Adam(lr=0.002).lr, 0.002)
