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
