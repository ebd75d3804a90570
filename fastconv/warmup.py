"""Compile ahead of time: run a network's conv and pool layers once on small inputs.

Numba compiles a kernel the first time it is called with a new dtype and array
layout, and keeps the machine code in its on-disk cache (``cache=True``), so
the cost comes once per machine (per fastconv and Numba version). ``warmup``
pays it at a moment of the caller's choosing (after installing, before a
timed run, before a progress bar starts) instead of inside the first training
step. With ``batch_sizes`` it also lets ``backend="auto"`` layers choose their
path for those batch sizes (``fastconv.tuner``), which is the other one-time
cost of a first run.

The kernels are specialised on dtype and array layout only, never on sizes:
a small batch (two images) at the layer's own geometry compiles exactly the
kernels a full batch runs.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import functional as F
from . import tuner
from .kernels._jit import CompileNotice
from .layers import Convolution, Dropout, Pooling, Relu, Sigmoid
from .spec import ConvSpec, PoolSpec, conv_spec, pool_spec, without_input_grad

# Images per warm-up call: two, so the im2col path's multi-image layouts
# (images side by side) are compiled as well as its one-image layout.
WARMUP_BATCH = 2
# Input (H, W) assumed for a network whose input size is unknown: MNIST's.
DEFAULT_HW = (28, 28)

__all__ = ["warmup", "autotune_network", "WarmupReport", "CompileNotice"]


@dataclass
class WarmupReport:
    """What ``warmup`` ran: one row per (layer, path), and how long it took.

    runs: (layer name, op, path) in the order they ran; tuned: layer name ->
    {batch size: path chosen by "auto"}; seconds: wall time of the whole call.
    """

    runs: list = field(default_factory=list)
    tuned: dict = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self):
        paths = sorted({p for _, _, p in self.runs})
        text = (f"warmed {len(self.runs)} layer/path pairs on {', '.join(paths) or 'no path'} "
                f"in {self.seconds:.1f} s")
        if self.tuned:
            text += "; auto chose " + ", ".join(
                f"{name} {'/'.join(f'N={n}:{p}' for n, p in sorted(c.items()))}"
                for name, c in self.tuned.items())
        return text


def _chain(layers, x_shape, dtype):
    """(name, spec, backend) of the conv/pool layers from the start of ``layers`` up to the
    first layer that is not conv, pool or elementwise, and the shape that layer receives."""
    found = []
    for name, lay in layers:
        if isinstance(lay, Convolution):
            # an unequal pad runs as x padded by the excess: the spec the kernels see
            spec = F.lowered_conv_spec(x_shape, lay.W.shape, lay.stride, lay.pad, dtype,
                                       lay.rounding, lay.dilation, lay.groups)[0]
            if not lay.needs_input_grad:
                spec = without_input_grad(spec)
        elif isinstance(lay, Pooling):
            spec = pool_spec(x_shape, lay.pool_h, lay.pool_w, lay.stride, lay.pad, lay.mode,
                             dtype, lay.rounding, **lay.options)
        elif isinstance(lay, (Relu, Sigmoid, Dropout)):
            continue
        else:
            return found, x_shape, lay
        found.append((name, spec, lay.backend))
        x_shape = spec.out_shape
    return found, x_shape, None


def _infer_input_hw(layers, C, dtype, largest=1024):
    """The square input size whose conv/pool output fills the next Affine layer exactly,
    or None: a network keeps no record of its input size, but its first Affine does."""
    for size in range(1, largest + 1):
        try:
            _, shape, nxt = _chain(layers, (1, C, size, size), dtype)
        except ValueError:          # too small for some window
            continue
        W = getattr(nxt, "W", None)
        if W is None:
            return None
        if int(np.prod(shape[1:])) == W.shape[0]:
            return size, size
        if int(np.prod(shape[1:])) > W.shape[0]:
            return None
    return None


def _net_layers(net, dtype, input_shape):
    """(name, spec at batch WARMUP_BATCH, layer) for each conv/pool layer of ``net`` that
    comes before the first layer that is not conv, pool or elementwise (Affine)."""
    layers = list(net.layers.items())
    first_conv = next((lay for _, lay in layers if isinstance(lay, Convolution)), None)
    if input_shape is None:
        input_shape = getattr(net, "input_dim", None)
    if input_shape is None:
        if first_conv is None:
            return []
        C = first_conv.W.shape[1]
        input_shape = (C, *(_infer_input_hw(layers, C, dtype) or DEFAULT_HW))
    return _chain(layers, (WARMUP_BATCH, *(int(s) for s in input_shape)), dtype)[0]


def _shape_specs(shapes, dtype):
    """Specs from a list in any format ``fastconv.autotune`` accepts, or ConvSpec/PoolSpec."""
    found = []
    for i, item in enumerate(shapes):
        if isinstance(item, (ConvSpec, PoolSpec)):
            spec = item
        else:
            spec = tuner.layer_spec(item, dtype)
        name = item.get("id", f"layer{i + 1}") if isinstance(item, dict) else f"layer{i + 1}"
        found.append((name, spec, "auto"))
    return found


def _resize(spec, n):
    """The same layer at batch n."""
    x_shape = (n, *spec.x_shape[1:])
    if spec.op == "conv":
        resized = conv_spec(x_shape, spec.w_shape, spec.stride, spec.pad, spec.dtype,
                            dilation=spec.dilation, groups=spec.groups)
        return resized if spec.input_grad else without_input_grad(resized)
    return pool_spec(x_shape, *spec.pool_hw, spec.stride, spec.pad, spec.mode, spec.dtype,
                     **spec.options)


def _run_once(spec, path, seed=0):
    """Forward and backward of ``spec`` on ``path``, through the checked entry points."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.x_shape).astype(spec.dtype)
    dout = rng.standard_normal(spec.out_shape).astype(spec.dtype)
    if spec.op == "conv":
        W = rng.standard_normal(spec.w_shape).astype(spec.dtype)
        b = np.zeros(spec.w_shape[0], spec.dtype)
        with F.enable_grad():           # a warm-up inside no_grad() still compiles backward
            _, saved = F.conv_forward(x, W, b, spec.stride, spec.pad, backend=path,
                                      dilation=spec.dilation, groups=spec.groups,
                                      input_grad=spec.input_grad)
        F.conv_backward(dout, saved)
    else:
        _, saved = F.pool_forward(x, *spec.pool_hw, spec.stride, spec.pad, spec.mode,
                                  backend=path, **spec.options)
        F.pool_backward(dout, saved)


def warmup(net_or_shapes=None, dtype="float32", paths=None, *, batch_sizes=None,
           input_shape=None) -> WarmupReport:
    """Compile (or load from Numba's cache) the kernels a network or a list of layers needs.

    net_or_shapes: a fastconv network (its conv and pool layers, in order, up
    to the first Affine), a JSON file shaped like ``bench/layers.json``, a
    list of layer shapes in any format
    ``fastconv.autotune`` takes (dicts like ``bench/layers.json``'s entries,
    ``(x_shape, w_shape[, stride[, pad]])`` tuples) or ConvSpec/PoolSpec
    objects; None: the SimpleConvNet of "Deep Learning from Scratch" (ch. 7),
    conv 30@5x5 and 2x2 max pooling on 1x28x28 images.
    dtype: "float32" or "float64" (for a network, its own dtype is used when
    this is left at the default).
    paths: the paths to compile; default: each layer's own backend; for
    ``backend="auto"``, the paths it chose for ``batch_sizes`` when given,
    else every path it may choose (only the static rule's pick under
    FASTCONV_AUTOTUNE=0).
    batch_sizes: when given, "auto" layers first choose (and store) their
    path for each of these batch sizes, as the first call at that size
    would; without it nothing is timed.
    input_shape: (C, H, W) of the network's input (default: its
    ``input_dim`` if it has one, else the square size that fits its first
    Affine layer, else C x 28 x 28).

    Layers run on random inputs of two images: parameters, layer state and
    path counts of a network are not touched. Returns a WarmupReport.
    """
    start = time.perf_counter()
    dtype = np.dtype(dtype)
    if net_or_shapes is None:
        layers = _shape_specs([((WARMUP_BATCH, 1, 28, 28), (30, 1, 5, 5)),
                               {"x_shape": (WARMUP_BATCH, 30, 24, 24), "w_shape": (2, 2),
                                "stride": 2, "mode": "max"}], dtype)
    elif isinstance(net_or_shapes, (str, os.PathLike)):
        with open(net_or_shapes, encoding="utf-8") as f:
            suite = json.load(f)
        layers = _shape_specs(list(suite.get("layers", [])) + list(suite.get("pooling", [])), dtype)
    elif hasattr(net_or_shapes, "layers"):
        net_dtype = getattr(net_or_shapes, "dtype", None)
        if net_dtype is not None and dtype == np.float32:
            dtype = np.dtype(net_dtype)
        layers = _net_layers(net_or_shapes, dtype, input_shape)
    else:
        layers = _shape_specs(list(net_or_shapes), dtype)
    if paths is not None:
        paths = [paths] if isinstance(paths, str) else list(paths)

    report = WarmupReport()
    if batch_sizes:
        # choose first: timing compiles what it times (outside its measurements),
        # and afterwards only the chosen paths are still needed; the tuner says
        # in one line before each shape it times (a CompileNotice)
        wanted = [(name, _resize(spec, int(n))) for name, spec, backend in layers
                  if backend == "auto" for n in batch_sizes]
        for name, spec in wanted:
            report.tuned.setdefault(name, {})[spec.x_shape[0]] = tuner.decide_spec(spec).path
    done = set()
    for name, spec, backend in layers:
        small = _resize(spec, min(WARMUP_BATCH, spec.x_shape[0]))
        if paths is not None:
            run = paths
        elif backend != "auto":
            run = [backend]
        elif name in report.tuned:
            run = sorted(set(report.tuned[name].values()))
        elif not tuner.autotune_enabled():
            run = [tuner.decide_spec(small).path]     # the static rule's pick
        else:
            run = tuner.candidates(small)             # "auto" may pick any of them later
        for path in run:
            # one run per distinct problem and path is enough: same kernels
            if (small, path) not in done:
                _run_once(small, path)
                done.add((small, path))
            report.runs.append((name, small.op, path))
    report.seconds = time.perf_counter() - start
    return report


def autotune_network(net, batch_size: int, *, input_shape=None, force: bool = False) -> dict:
    """Choose (and store) the path of every ``backend="auto"`` conv and pool layer of ``net``
    for mini-batches of ``batch_size`` images, ahead of time -> {layer name: Decision}.

    What the first training step would otherwise measure, done up front: later
    calls of those layers at that batch size (or any in its power-of-two bucket)
    read the stored choice. input_shape: (C, H, W) of the input (default: as
    for :func:`warmup`). ``force=True`` measures again.
    Runs even under FASTCONV_AUTOTUNE=0 (an explicit request), but "auto" only
    uses the stored choices when autotuning is on.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    layers = [(name, _resize(spec, int(batch_size)))
              for name, spec, backend in _net_layers(net, getattr(net, "dtype", "float32"),
                                                     input_shape)
              if backend == "auto"]
    return {name: tuner.decide_spec(spec, force=force, ignore_env=True) for name, spec in layers}
