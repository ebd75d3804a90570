"""fastconv: 2-D convolutional networks made fast with Numba, with visible trade-offs.

One Layer interface (``forward``/``backward``, parameters ``W``/``b`` and
gradients ``dW``/``db``, NCHW arrays) over compute paths: ``naive`` (the
oracle), ``im2col``, ``direct``, ``winograd`` (3x3 stride-1 convolutions) and
``cuda``.
"""
# The one definition of the version; pyproject.toml reads it from here.
__version__ = "0.1.0"

import os as _os

# Before anything imports numpy: OpenBLAS reads this once, when numpy loads it.
# By default its idle threads spin for about 0.1 s after every product, and on
# a machine with as many threads as cores the spinners take the cores from the
# Numba kernel that follows (measured: an 8x64x56x56 Winograd input transform
# right after a product ran 1.9x slower; a ResNet-18 training step on the im2col
# path 1.15x slower). 2**18 cycles (about 0.1 ms) still lets back-to-back
# products find their threads awake. A value the program set is kept; when numpy
# was imported before fastconv, only processes started later see it.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")

# Imported first for its side effect: it arranges Numba's threads, which must
# happen before anything (even numba.get_num_threads()) starts the pool.
from .kernels import _jit  # noqa: F401, E402
from . import datasets  # noqa: E402
from .backends import available_backends  # noqa: E402
from .explain import explain  # noqa: E402
from .functional import col2im, conv2d, enable_grad, im2col, no_grad, pool2d  # noqa: E402
from .geometry import conv_output_size  # noqa: E402
from .layers import (Affine, Convolution, Dropout, Layer, Pooling, Relu, Sigmoid,  # noqa: E402
                     SoftmaxWithLoss)
from .nets import LeNet, SimpleConvNet  # noqa: E402
from .optim import SGD, AdaGrad, Adam, Momentum  # noqa: E402
from .spec import ConvSpec, PoolSpec, conv_spec, pool_spec  # noqa: E402
from .trainer import Trainer  # noqa: E402
from .tuner import autotune, clear_cache  # noqa: E402
from .warmup import CompileNotice, autotune_network, warmup  # noqa: E402

__all__ = [
    "Affine", "Convolution", "Dropout", "Layer", "Pooling", "Relu", "Sigmoid",
    "SoftmaxWithLoss", "available_backends", "col2im", "conv2d", "conv_output_size",
    "im2col", "no_grad", "enable_grad", "pool2d", "ConvSpec", "PoolSpec", "conv_spec", "pool_spec",
    "autotune", "clear_cache", "explain", "warmup", "autotune_network", "CompileNotice",
    "datasets", "LeNet", "SimpleConvNet", "SGD", "Momentum", "AdaGrad", "Adam", "Trainer",
]
