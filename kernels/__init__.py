"""Compute kernels of fastconv, installed as ``fastconv.kernels``.

Every path module of the dispatch table (``naive``, ``im2col``, ``direct``,
``winograd``, ``cuda``; see ``fastconv.backends``) keeps one contract, in the CS231n style
(``(out, cache)`` forward, gradients from ``(dout, cache)`` backward), checked
by ``tests/test_kernel_contract.py``:

- ``SCOPE``: a phrase saying which problems the path runs ("every convolution
  and pooling", "3x3 stride-1 convolutions", ...);
- ``supports(spec) -> bool``: whether it runs this ``ConvSpec``/``PoolSpec``;
  "auto" skips a path that does not, and asking for it is a ``ValueError``;
- ``conv_forward(x, W, b, spec) -> (out, cache)``; cache is None, and nothing
  is copied for a backward, when the spec's ``forward_only`` is True;
- ``conv_backward(dout, cache) -> (dx, dW, db)``; dx is None, and its work
  skipped, when the spec's ``input_grad`` is False (a network's first layer);
- ``pool_forward(x, spec) -> (out, cache)``;
- ``pool_backward(dout, cache) -> dx``;
- ``plan(spec) -> dict``: how the path will compute ``spec`` (what
  ``fastconv.explain`` reports; the path is the one owner of that knowledge);
- ``release_workspace()``: free scratch memory kept between calls.

Caches are named tuples (``ConvCache``, ``PoolCache``) and private to the path
that made them, but for one field: a max pooling's ``PoolCache.argmax`` holds,
per output, the flat index ``h*W + w`` of its window's maximum in the (n, c)
input plane (an integer array; a device array on the cuda path), which
``fastconv.functional`` copies out as int64 for ``return_indices``.

The spec (``fastconv.spec``) is built and checked by
``fastconv.functional`` before any kernel runs: kernels assume C-contiguous
float32 or float64 arrays of one dtype, read their geometry from the spec and
never modify their inputs.

Never import this package as top-level ``kernels``: it must be loaded as
``fastconv.kernels``, or every compiled function would exist twice.
"""
