"""Compute kernels of fastconv, installed as ``fastconv.kernels``.

Every path module (``naive``, ``im2col``, ``direct``, ``cuda``) exports the same
four pure functions, in the CS231n style (``(out, cache)`` forward, gradients
from ``(dout, cache)`` backward):

- ``conv_forward(x, W, b, stride, pad, out_hw) -> (out, cache)``
- ``conv_backward(dout, cache) -> (dx, dW, db)``
- ``pool_forward(x, pool_hw, stride, pad, out_hw, mode) -> (out, cache)``
- ``pool_backward(dout, cache) -> dx``

``stride``, ``pad``, ``pool_hw`` and ``out_hw`` are ``(h, w)`` tuples of ints.
The caller (``fastconv.functional``) has already validated shapes and dtypes:
kernels assume C-contiguous float32 or float64 arrays of one dtype and never
modify their inputs. Caches are private to the path that made them.

Never import this package as top-level ``kernels``: it must be loaded as
``fastconv.kernels``, or every compiled function would exist twice.
"""
