"""A few hundred real MNIST images for the network and trainer tests (skip when no source)."""
import functools

import numpy as np
import pytest

from fastconv.datasets import DatasetNotFoundError, load_mnist


@functools.lru_cache(maxsize=1)
def _mnist():
    try:
        return load_mnist()
    except DatasetNotFoundError as err:
        return err


def mnist_subset(n_train, n_test, dtype=np.float32):
    """(x_train, t_train, x_test, t_test): the first n_train / n_test official images."""
    data = _mnist()
    if isinstance(data, Exception):
        pytest.skip(f"real MNIST not installed: {data}")
    (x_train, t_train), (x_test, t_test) = data
    return (x_train[:n_train].astype(dtype), t_train[:n_train].copy(),
            x_test[:n_test].astype(dtype), t_test[:n_test].copy())
