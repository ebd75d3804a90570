"""Central finite differences, the oracle for every gradient test."""
import numpy as np


def numerical_gradient(f, a, h=1e-5):
    """d f() / d a by central differences, perturbing ``a`` in place and restoring it.

    f: () -> float, reading ``a``; a: float64 array. Returns an array like ``a``.
    """
    grad = np.zeros_like(a)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


def rel_error(analytic, numeric):
    """max |a - n| relative to the larger of the two gradients' max magnitude."""
    scale = max(np.max(np.abs(analytic)), np.max(np.abs(numeric)), 1e-300)
    return float(np.max(np.abs(analytic - numeric)) / scale)


def check_layer_gradients(layer, x, seed=0):
    """Relative errors of (dx, dW, db) of a float64 layer against central differences
    of the loss sum(layer.forward(x) * G), G random."""
    G = np.random.default_rng(seed).standard_normal(layer.forward(x).shape)
    dx = layer.backward(G)

    def loss():
        return float(np.sum(layer.forward(x) * G))

    return (rel_error(dx, numerical_gradient(loss, x)),
            rel_error(layer.dW, numerical_gradient(loss, layer.W)),
            rel_error(layer.db, numerical_gradient(loss, layer.b)))
