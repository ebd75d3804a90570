"""fastconv: 2-D convolutional networks made fast with Numba, with visible trade-offs.

One Layer interface (``forward``/``backward``, parameters ``W``/``b`` and
gradients ``dW``/``db``, NCHW arrays) over four compute paths: ``naive`` (the
oracle), ``im2col``, ``direct`` and ``cuda``.
"""
from .backends import available_backends
from .functional import col2im, conv2d, im2col, pool2d
from .geometry import conv_output_size
from .layers import (Affine, Convolution, Dropout, Layer, Pooling, Relu, Sigmoid,
                     SoftmaxWithLoss)

__version__ = "0.1.0"

__all__ = [
    "Affine", "Convolution", "Dropout", "Layer", "Pooling", "Relu", "Sigmoid",
    "SoftmaxWithLoss", "available_backends", "col2im", "conv2d", "conv_output_size",
    "im2col", "pool2d",
]
