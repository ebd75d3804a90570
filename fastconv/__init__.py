"""fastconv: 2-D convolutional networks made fast with Numba, with visible trade-offs.

One Layer interface (``forward``/``backward``, parameters ``W``/``b`` and
gradients ``dW``/``db``, NCHW arrays) over four compute paths: ``naive`` (the
oracle), ``im2col``, ``direct`` and ``cuda``.
"""
# Imported first for its side effect: it picks Numba's threading layer, which
# must happen before anything (even numba.get_num_threads()) starts the pool.
from .kernels import _jit  # noqa: F401
from .backends import available_backends
from .functional import col2im, conv2d, im2col, pool2d
from .geometry import conv_output_size
from .layers import (Affine, Convolution, Dropout, Layer, Pooling, Relu, Sigmoid,
                     SoftmaxWithLoss)
from .autotune import autotune, clear_cache
from .explain import explain
from . import datasets
from .nets import LeNet, SimpleConvNet
from .optim import SGD, AdaGrad, Adam, Momentum
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "Affine", "Convolution", "Dropout", "Layer", "Pooling", "Relu", "Sigmoid",
    "SoftmaxWithLoss", "available_backends", "col2im", "conv2d", "conv_output_size",
    "im2col", "pool2d",
    "autotune", "clear_cache", "explain",
    "datasets", "LeNet", "SimpleConvNet", "SGD", "Momentum", "AdaGrad", "Adam", "Trainer",
]
