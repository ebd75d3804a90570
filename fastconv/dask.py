"""fastconv beyond one machine: layers, inference and data-parallel training on Dask.

Install with ``pip install "fastconv[dask]"`` (dask, distributed, zarr,
threadpoolctl). ``import fastconv`` never imports Dask; ``import fastconv.dask``
does.

What runs where:

- ``conv2d`` and ``pool2d`` take an ``(N, C, H, W)`` dask array chunked along
  the batch (N), the image (H, W) or both; C is merged into one chunk. They
  take the arguments of ``fastconv.conv2d`` (stride, pad in every form,
  dilation, groups) and ``fastconv.pool2d`` (ceil_mode, count_include_pad,
  divisor_override, dilation; not return_indices), checked before a graph is
  built. Each output chunk is computed from exactly the input rows and columns
  its windows read (its halo: the window's span, dilation included), cut from
  the neighbouring chunks and padded at the image border (zeros; -inf for max
  pooling), so every chunk's outputs land on the global output grid whatever
  the stride. An average's divisor can depend on where the border is, so an
  average-pooling chunk at the border runs with the true padding there
  instead. Chunks smaller than the halo are fine: a halo may reach across
  several chunks.
- ``predict``, ``features`` and ``accuracy`` run a network over a dask array
  chunked along N (other axes are merged into one chunk).
- ``DataParallelTrainer`` takes synchronous data-parallel steps on a
  ``distributed`` cluster: each step the mini-batch is split into shards, every
  shard's gradient is computed on a worker by ``network.gradient``, and the
  shards' gradients are summed in shard order, weighted by shard size, then
  applied by one optimizer update on the client.

Weights travel once per graph: the filters (or a network, as its pickled
structure and parameters) are one key of the graph that every chunk's task
depends on, so a worker receives them once, not once per chunk.

Bit-identity with one process. A chunked result equals the unchunked one bit
for bit wherever the per-image (per-pixel) arithmetic does not depend on what
else is in the call. Measured on this project's kernels:

- the ``direct`` and ``naive`` paths: conv2d and pool2d, any chunking (batch
  and spatial) -- bit-identical;
- the ``im2col`` path: its products are BLAS matrix products whose rounding
  depends on the product's shape (how many images or output columns share it)
  and on BLAS's thread count, so chunked results are close (float rounding),
  not identical. Images with at least 256 output positions get one product
  each, and batch chunking is then bit-identical too (same BLAS threads);
- networks: the Affine layers are BLAS products over the batch, so
  ``predict`` equals the in-process ``network.predict`` of each chunk (the
  same images in one call, the same BLAS and Numba thread counts) bit for bit,
  and the whole array in one call only to float rounding.

Threads. A worker process runs one task per Dask thread; inside a task,
Numba's parallel loops and BLAS use ``threads`` threads. ``setup_workers``
sets that to the worker's share of its machine's cores (cores divided by the
Dask threads of all workers on that machine) through a worker plugin:
BLAS's limit is process-wide (threadpoolctl), Numba's is per thread, so each
task sets it on the thread it runs in. The recommended layout is one worker
process per share of cores, ``threads_per_worker=1``: fastconv's kernels take
one launch lock per process, so two Dask threads of one worker wait for each
other anyway. Compiled kernels come from Numba's on-disk cache (the kernels
are compiled with ``cache=True``), so worker processes on one machine compile
nothing that another process (or an earlier run) already compiled.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import CancelledError
from typing import NamedTuple

import dask
import dask.array as da
import numba
import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from . import backends
from .functional import Padding, Pair, check_backend, lowered_conv_spec, no_grad
from .functional import conv2d as _conv2d
from .functional import pool2d as _pool2d
from .geometry import as_pair, check_dilation, check_rounding, resolve_padding, span
from .layers import Dropout
from .optim import make_optimizer
from .spec import POOL_MODES, check_groups, pool_spec
from .trainer import check_data

__all__ = [
    "conv2d", "pool2d", "predict", "features", "accuracy", "DataParallelTrainer",
    "FastconvThreads", "setup_workers", "set_threads", "threads", "thread_counts", "cpu_share",
    "network_blob", "load_network", "split_batch", "combine_gradients", "workers_of",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ------------------------------------------------------------------- threads

_task_threads = None         # threads per task in this process (set by FastconvThreads)
_blas_threads = None         # the BLAS limit last applied in this process
_controller = None


def _available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int) -> None:
    """Numba threads of the calling thread, and BLAS threads of the whole process, to ``threads``.

    Numba's limit is per Python thread (``numba.set_num_threads``) and is
    capped at ``NUMBA_NUM_THREADS``; BLAS's limit (set with threadpoolctl) is
    process-wide.
    """
    global _blas_threads, _controller
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    if _blas_threads != threads:
        from threadpoolctl import ThreadpoolController

        if _controller is None:
            _controller = ThreadpoolController()
        # the returned object would restore the old limit when used as a
        # context manager; called plainly, the limit stays
        _controller.limit(limits=threads, user_api="blas")
        _blas_threads = threads


@contextlib.contextmanager
def threads(n: int):
    """Run the block with ``n`` Numba threads (this thread) and ``n`` BLAS threads, then restore.

    What a worker task runs with; use it to compute an in-process result
    under the same thread counts as the workers (BLAS products can round
    differently with another thread count).
    """
    global _blas_threads
    from threadpoolctl import threadpool_limits

    old_numba, old_blas = numba.get_num_threads(), _blas_threads
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            _blas_threads = n
            yield
    finally:
        _blas_threads = old_blas
        numba.set_num_threads(old_numba)


def thread_counts() -> tuple[int, int]:
    """(Numba threads of this thread, BLAS threads) as a fastconv task sees them."""
    from threadpoolctl import threadpool_info

    _enter_task()
    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    return numba.get_num_threads(), min(blas) if blas else 0


def _enter_task():
    """First thing every task does: apply this process's thread setting, if any."""
    if _task_threads is not None and numba.get_num_threads() != min(
            _task_threads, numba.config.NUMBA_NUM_THREADS):
        set_threads(_task_threads)


def cpu_share(cores: int, dask_threads_on_host: int) -> int:
    """Threads per task: a machine's cores divided among the Dask threads it runs (at least 1)."""
    return max(1, cores // max(1, dask_threads_on_host))


class FastconvThreads(WorkerPlugin):
    """Worker plugin: fastconv tasks on this worker run ``threads`` Numba and BLAS threads.

    ``shares`` maps a host name to the threads per task of that host; a worker
    whose host is not in it (one that joined later) takes
    ``cpu_share(its cores, its own Dask threads)``. Register it with
    ``setup_workers(client)``.
    """

    name = "fastconv-threads"

    def __init__(self, shares: dict | None = None, threads: int | None = None):
        self.shares = dict(shares or {})
        self.threads = threads

    def setup(self, worker):
        global _task_threads
        threads = self.threads or self.shares.get(worker.address.rsplit(":", 1)[0].split("//")[-1])
        if threads is None:
            threads = cpu_share(_available_cores(), worker.state.nthreads)
        _task_threads = int(threads)
        set_threads(_task_threads)


def workers_of(client) -> dict:
    """Address -> the scheduler's facts about each worker (all of them, however many)."""
    try:
        return client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:                    # distributed before 2025: always all workers
        return client.scheduler_info()["workers"]


def _worker_facts():
    return {"cores": _available_cores()}


def setup_workers(client, threads: int | None = None) -> dict:
    """Register ``FastconvThreads`` on every worker of ``client`` (and on later ones).

    threads: threads per task on every worker; None gives each machine's
    workers their share of its cores (``cpu_share``). Returns worker address ->
    threads per task.
    """
    workers = workers_of(client)
    facts = client.run(_worker_facts)
    hosts = {}
    for addr, info in workers.items():
        host = info["host"]
        cores, nthreads = hosts.get(host, (facts[addr]["cores"], 0))
        hosts[host] = (cores, nthreads + info["nthreads"])
    shares = {host: cpu_share(cores, n) for host, (cores, n) in hosts.items()}
    client.register_plugin(FastconvThreads(shares, threads))
    return client.run(_report_threads)


def _report_threads():
    return _task_threads


# -------------------------------------------------------- argument checking

def _check_dask_images(x, name="x"):
    if not isinstance(x, da.Array):
        raise TypeError(f"{name} must be a dask array of shape (N, C, H, W), got "
                        f"{type(x).__name__}; wrap a numpy array with dask.array.from_array")
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {x.shape}")
    if any(math.isnan(s) for s in x.shape):
        raise ValueError(f"{name} has unknown chunk sizes {x.chunks}; call "
                         f"{name}.compute_chunk_sizes() first")
    if min(x.shape) < 1:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")
    if np.dtype(x.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {x.dtype}; fastconv computes in float32 or float64: "
                        f"convert it first, e.g. {name}.astype(np.float32)")


def _check_weight(a, name, ndim, layout, dtype):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of shape {layout}, got {type(a).__name__}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {a.shape}")
    if a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but x is {dtype}; all arrays must share "
                        f"one dtype: convert it with {name}.astype(np.{dtype})")


# ------------------------------------------------------------ tiling arithmetic

def _edges(chunks):
    """Chunk sizes (a, b, c) -> boundaries [0, a, a+b, a+b+c]."""
    return np.concatenate([[0], np.cumsum(chunks)]).astype(int).tolist()


def _output_pieces(size, chunks, window, stride, pad, n_out):
    """Output index ranges, one per input chunk, along one axis.

    window: the cells one window spans (``geometry.span``: dilation included);
    pad: the cells padded before and after the input, ``(before, after)``, or
    one int for both. Output i reads padded input [i*stride, i*stride + window).
    It belongs to the input chunk in which its window starts (the first chunk
    also takes the windows starting in the leading padding, the last the
    trailing padding), so the pieces tile 0..n_out exactly, on the global grid.
    Returns a list of (o0, o1, r0, r1): outputs o0..o1 read input rows r0..r1,
    which may reach before 0 or past ``size`` (padding, or with ceil_mode a
    last window clipped to nothing). Chunks in which no window starts give no
    piece.
    """
    before, after = (pad, pad) if np.ndim(pad) == 0 else pad
    bounds = _edges(chunks)
    starts = [0] + [e + before for e in bounds[1:-1]] + [size + before + after]
    pieces = []
    for a, b in zip(starts[:-1], starts[1:]):
        o0, o1 = -(-a // stride), min(-(-b // stride), n_out)
        if o1 > o0:
            pieces.append((o0, o1, o0 * stride - before, (o1 - 1) * stride + window - before))
    return pieces


class _Read(NamedTuple):
    """How one tile reads one axis: input cells [start, stop), ``fill`` cells
    (before, after) padded onto them explicitly, ``pad`` cells the kernel itself
    pads on both sides, and the kernel's outputs [skip, skip + n) that are the tile's."""

    start: int
    stop: int
    fill: tuple[int, int]
    pad: int
    skip: int


def _explicit_read(piece, size):
    """Exactly the cells the piece's windows read, those outside the image filled in."""
    o0, o1, r0, r1 = piece
    start, stop = min(max(r0, 0), size), max(min(r1, size), 0)
    if stop <= start:
        # every window of the piece lies in the padding (a convolution may pad
        # more than its filter spans): the tile is fill alone
        return _Read(start, start, (r1 - r0, 0), 0, 0)
    return _Read(start, stop, (start - r0, r1 - stop), 0, 0)


def _border_read(piece, size, stride, pad):
    """The piece's cells, read so that windows at the image border meet the kernel's own
    padding ``pad`` (and its ceil_mode clipping), for options whose result depends on
    where the border is.

    A piece inside the image reads its cells as they are. Otherwise the kernel pads
    the tile by ``pad`` on both sides, so its output j starts at tile cell
    j*stride - pad; a tile that starts at a multiple of the stride keeps those
    starts on the global grid (output o0 is the kernel's o0 - start // stride),
    and starting at or before r0 keeps every kept window off the padding the
    kernel adds where the tile does not reach the border. The outputs of the
    kernel beyond the piece's are computed and dropped.
    """
    o0, o1, r0, r1 = piece
    if r0 >= 0 and r1 <= size:
        return _Read(r0, r1, (0, 0), 0, 0)
    start = max(r0, 0) // stride * stride
    return _Read(start, min(r1, size), (0, 0), pad, o0 - start // stride)


def _pad_slice(block, fill, value):
    """Pad a (N, C, h, w) block by fill = ((top, bottom), (left, right)) cells of ``value``."""
    if fill is None or not any(fill[0] + fill[1]):
        return block
    return np.pad(block, ((0, 0), (0, 0), *fill), constant_values=value)


def _kept(out, keep):
    """The outputs ((i0, i1), (j0, j1)) of a tile's kernel call that are the tile's."""
    if keep is None or (keep[0] == (0, out.shape[2]) and keep[1] == (0, out.shape[3])):
        return out
    (i0, i1), (j0, j1) = keep
    # a copy: the dropped outputs are not kept alive by the chunk
    return np.ascontiguousarray(out[:, :, i0:i1, j0:j1])


def _conv_block(block, W, b, stride, dilation, groups, rounding, backend, pad=0, fill=None,
                keep=None):
    """One output tile of conv2d: block (N, C, h, w) padded by ``fill`` zeros, then the
    in-memory conv2d with ``pad`` -> (N, FN, oh, ow), the outputs ``keep``."""
    _enter_task()
    x = _pad_slice(block, fill, 0)
    out = _conv2d(x, W, b, stride, pad, dilation, groups, rounding=rounding, backend=backend)
    return _kept(out, keep)


def _pool_block(block, window, mode, stride, options, rounding, backend, pad=0, fill=None,
                keep=None):
    """One output tile of pool2d: block (N, C, h, w) padded by ``fill`` cells, then the
    in-memory pool2d with ``pad`` and ``options`` -> (N, C, oh, ow), the outputs ``keep``."""
    _enter_task()
    # -inf never wins a maximum, as the kernels' own padding; zeros for averages
    x = _pad_slice(block, fill, -np.inf if mode == "max" else 0)
    out = _pool2d(x, window[0], window[1], stride, pad, mode, rounding=rounding,
                  backend=backend, **options)
    return _kept(out, keep)


def _tiled(x, extent, stride, pad, out_hw, n_channels_out, fn, args, border=None):
    """Apply ``fn(block, *args, pad=, fill=, keep=)`` tile by tile: x (N, C, H, W) ->
    (N, n_channels_out, OH, OW).

    extent: the (h, w) cells one window spans; stride: (h, w); pad: the cells
    around the image, ((top, bottom), (left, right)); out_hw: (OH, OW). See
    conv2d for the chunks. border None: every tile gets its cells outside the
    image as ``fill`` and fn runs with pad (0, 0). border (ph, pw): tiles
    reaching the image border run with the kernel's own padding (ph, pw) there
    instead (``_border_read``), and fn keeps the outputs ``keep`` of its call.
    """
    reads = []
    for axis in (0, 1):
        size, chunks = x.shape[2 + axis], x.chunks[2 + axis]
        pieces = _output_pieces(size, chunks, extent[axis], stride[axis], pad[axis],
                                out_hw[axis])
        reads.append([(o1 - o0, _explicit_read((o0, o1, r0, r1), size) if border is None
                       else _border_read((o0, o1, r0, r1), size, stride[axis], border[axis]))
                      for o0, o1, r0, r1 in pieces])
    grid = []
    for n_rows, rows in reads[0]:
        line = []
        for n_cols, cols in reads[1]:
            # exactly the rows and columns these outputs read, cut across chunks
            piece = x[:, :, rows.start:rows.stop, cols.start:cols.stop]
            piece = piece.rechunk({2: -1, 3: -1})
            line.append(piece.map_blocks(
                fn, *args, pad=(rows.pad, cols.pad), fill=(rows.fill, cols.fill),
                keep=((rows.skip, rows.skip + n_rows), (cols.skip, cols.skip + n_cols)),
                dtype=x.dtype, chunks=(x.chunks[0], (n_channels_out,), (n_rows,), (n_cols,)),
                meta=np.empty((0, 0, 0, 0), x.dtype)))
        grid.append(line)
    return da.block(grid)


def _whole_images(x):
    """True when x is chunked along N only: every chunk holds whole images."""
    return len(x.chunks[2]) == 1 and len(x.chunks[3]) == 1


def _check_backend(backend, spec):
    """The path exists and runs ``spec`` (the in-memory call's messages), checked before
    any graph is built rather than in the first task."""
    check_backend(backend)
    # "cuda" is imported on first use (seconds): its tasks check for themselves
    module = None if backend == "auto" else backends.PATHS[backend]
    if module is not None and not module.supports(spec):
        raise ValueError(f"backend {backend!r} runs {module.SCOPE}; it cannot run "
                         f"{spec.describe()}")


def conv2d(x: da.Array, W: np.ndarray, b: np.ndarray | None = None, stride: Pair = 1,
           pad: Padding = 0, dilation: Pair = 1, groups: int = 1, *, flip: bool = False,
           rounding: str = "floor", backend: str = "auto") -> da.Array:
    """``fastconv.conv2d`` over a dask array x: (N, C, H, W) -> (N, FN, OH, OW), lazily.

    x may be chunked along N, H and W (C is merged into one chunk). W: (FN,
    C // groups, FH, FW) and b: (FN,) or None are numpy arrays of x's dtype;
    they enter the graph once. stride, pad, dilation, groups, flip and rounding
    as ``fastconv.conv2d`` takes them: pad an int, (h, w),
    ``((top, bottom), (left, right))``, "valid" or "same" (resolved once, for
    the whole image, so "same" gives the shape of the in-memory call).
    Everything is checked before a graph is built, with the in-memory call's
    messages.

    Output chunks: x's along N, one along FN, and along OH/OW one chunk per
    input chunk (the outputs whose windows start in it; a chunk in which no
    window starts, e.g. one smaller than the stride, gives none). Each output
    chunk reads its input rows/columns plus the halo its windows need
    (dilation*(FH-1) rows and dilation*(FW-1) columns, less what the stride
    skips), from as many neighbouring chunks as that takes, padded with zeros
    where it crosses the image border. Pass an explicit ``backend``: "auto"
    could pick different paths for chunks of different shapes. See the module
    docstring for which paths give results bit-identical to the unchunked call.
    """
    _check_dask_images(x)
    dtype = np.dtype(x.dtype)
    _check_weight(W, "W", 4, "(FN, C // groups, FH, FW)", dtype)
    if b is None:
        b = np.zeros(W.shape[0], dtype=dtype)
    _check_weight(b, "b", 1, "(FN,)", dtype)
    if b.shape != (W.shape[0],):
        raise ValueError(f"b must have shape ({W.shape[0]},) to match W.shape={W.shape}, "
                         f"got {b.shape}")
    check_rounding(rounding)
    stride = as_pair(stride, "stride")
    dilation, groups = check_dilation(dilation), check_groups(groups)
    pad = resolve_padding(pad, x.shape[2:], W.shape[2:], stride, dilation)
    # the in-memory call's checks (channels, groups, sizes) and its output size
    spec, _ = lowered_conv_spec(x.shape, W.shape, stride, pad, dtype, rounding, dilation, groups)
    _check_backend(backend, spec)
    if flip:
        W = W[:, :, ::-1, ::-1]
    W, b = np.ascontiguousarray(W), np.ascontiguousarray(b)
    # one key each; every chunk's task depends on it
    W_key, b_key = dask.delayed(W, pure=True), dask.delayed(b, pure=True)
    x = x.rechunk({1: -1}) if len(x.chunks[1]) > 1 else x
    FN, (OH, OW) = W.shape[0], spec.out_hw
    if _whole_images(x):
        # every chunk is whole images: the in-memory call pads them itself
        return x.map_blocks(_conv_block, W_key, b_key, stride, dilation, groups, rounding,
                            backend, pad=pad, dtype=dtype,
                            chunks=(x.chunks[0], (FN,), (OH,), (OW,)),
                            meta=np.empty((0, 0, 0, 0), dtype))
    # Tiles are cut to whole windows, so their calls divide exactly: "floor" is
    # the global size rule (checked above with the caller's rounding).
    extent = (span(W.shape[2], dilation[0]), span(W.shape[3], dilation[1]))
    return _tiled(x, extent, stride, pad, spec.out_hw, FN, _conv_block,
                  (W_key, b_key, stride, dilation, groups, "floor", backend))


MODES = POOL_MODES


def pool2d(x: da.Array, pool_h: int, pool_w: int, stride: Pair | None = None, pad: Pair = 0,
           mode: str = "max", *, ceil_mode: bool = False, count_include_pad: bool = True,
           divisor_override: int | None = None, dilation: Pair = 1, rounding: str = "floor",
           backend: str = "auto") -> da.Array:
    """``fastconv.pool2d`` over a dask array x: (N, C, H, W) -> (N, C, OH, OW), lazily.

    Chunking as in ``conv2d`` (N, H and W; C is merged into one chunk).
    stride=None steps by the window, as ``fastconv.pool2d`` does; pad is an
    int or (h, w) pair. ceil_mode, count_include_pad, divisor_override and
    dilation as ``fastconv.pool2d`` takes them (PyTorch's), checked before a
    graph is built, with its messages; return_indices is not offered.

    Chunks of whole images (chunked along N only) run the in-memory call with
    every option as given. With H or W chunked, a max-pooling tile is padded
    with -inf at the image border (padding never wins, whatever the dilation
    or ceil_mode). An average's divisor can depend on where the border is
    (count_include_pad=False, ceil_mode's clipped last window), so a tile that
    reaches the border runs the in-memory call with the true padding and
    options there, starting at a multiple of the stride, and keeps the outputs
    that are its own (``_border_read``).
    """
    _check_dask_images(x)
    dtype = np.dtype(x.dtype)
    # named errors for what the spec's cache could not even look up (a dict, say)
    stride = None if stride is None else as_pair(stride, "stride")
    check_rounding(rounding)
    spec = pool_spec(x.shape, pool_h, pool_w, stride, as_pair(pad, "pad"), mode, dtype, rounding,
                     ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                     divisor_override=divisor_override, dilation=dilation)
    _check_backend(backend, spec)
    x = x.rechunk({1: -1}) if len(x.chunks[1]) > 1 else x
    window, (OH, OW) = spec.pool_hw, spec.out_hw
    if _whole_images(x):
        return x.map_blocks(_pool_block, window, spec.mode, spec.stride, spec.options, rounding,
                            backend, pad=spec.pad, dtype=dtype,
                            chunks=(x.chunks[0], (x.shape[1],), (OH,), (OW,)),
                            meta=np.empty((0, 0, 0, 0), dtype))
    pad = tuple((p, p) for p in spec.pad)
    # Tile calls use "floor": their sizes are not the image's, which was checked above.
    if spec.mode == "max":
        # explicit -inf fill up to each window's end, ceil_mode's clipped ones included
        args = (window, "max", spec.stride, dict(dilation=spec.dilation), "floor", backend)
        return _tiled(x, spec.extent, spec.stride, pad, spec.out_hw, x.shape[1], _pool_block,
                      args)
    options = dict(ceil_mode=spec.ceil_mode, count_include_pad=spec.count_include_pad,
                   divisor_override=spec.divisor_override)
    args = (window, "avg", spec.stride, options, "floor", backend)
    return _tiled(x, spec.extent, spec.stride, pad, spec.out_hw, x.shape[1], _pool_block, args,
                  border=spec.pad)


# ------------------------------------------------------------------ networks

class _LeanPickler(pickle.Pickler):
    """Pickles a network without the arrays its layers keep from their last call.

    Every array that is not one of the network's parameters is such a cache
    (a layer's input, a ReLU mask, softmax outputs); it is written as a
    placeholder and comes back as None, the state of a fresh layer.
    """

    def __init__(self, file, keep):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._keep = keep

    def persistent_id(self, obj):
        if isinstance(obj, np.ndarray) and id(obj) not in self._keep:
            return "dropped"
        return None

    def reducer_override(self, obj):
        # A dict subclass whose item assignment does more than store (a network's
        # params copies into the existing array) cannot be rebuilt item by item.
        if (isinstance(obj, dict) and not isinstance(obj, OrderedDict)
                and type(obj).__setitem__ is not dict.__setitem__):
            return _rebuild_dict, (type(obj), list(dict.items(obj)))
        return NotImplemented


def _rebuild_dict(cls, items):
    obj = cls.__new__(cls)
    for key, value in items:
        dict.__setitem__(obj, key, value)
    return obj


class _LeanUnpickler(pickle.Unpickler):
    def persistent_load(self, pid):
        return None


def network_blob(network) -> bytes:
    """The network (structure and parameters, no layer caches) as bytes for the workers."""
    buf = io.BytesIO()
    _LeanPickler(buf, {id(p) for p in network.params.values()}).dump(network)
    return buf.getvalue()


def load_network(blob: bytes):
    """A private copy of a network pickled by ``network_blob``."""
    return _LeanUnpickler(io.BytesIO(blob)).load()


def _forward(network, x, upto=None):
    """Run the layers in evaluation mode, up to and including layer ``upto`` (all if None)."""
    for name, layer in network.layers.items():
        x = layer.forward(x, False) if isinstance(layer, Dropout) else layer.forward(x)
        if name == upto:
            break
    return x


def _in_batches(fn, x, batch_size):
    if batch_size is None or batch_size >= len(x):
        return fn(x)
    return np.concatenate([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _predict_block(block, blob, upto, batch_size):
    """A chunk's network outputs; the network is unpickled per task (a private copy,
    so two tasks on one worker never share layer caches)."""
    _enter_task()
    network = load_network(blob)
    with no_grad():                 # inference: no copies kept for a backward
        return _in_batches(lambda xb: _forward(network, xb, upto), block, batch_size)


def _batch_chunked(x, network):
    _check_dask_images(x)
    if np.dtype(x.dtype) != network.dtype:
        raise TypeError(f"x has dtype {x.dtype} but the network computes in {network.dtype}: "
                        f"convert it with x.astype(np.{network.dtype})")
    # a network needs whole images: merge C, H and W into one chunk each
    if any(len(c) > 1 for c in x.chunks[1:]):
        x = x.rechunk({1: -1, 2: -1, 3: -1})
    return x


def _check_batch_size(batch_size):
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}")


def features(network, x: da.Array, layer: str | None = None, *,
             batch_size: int | None = None) -> da.Array:
    """Outputs of ``network``'s layer ``layer`` (its name in ``network.layers``) for x, lazily.

    x: (N, C, H, W) dask array in the network's dtype, chunked along N (other
    axes are merged into one chunk). layer None: the last layer, i.e. the
    scores. Evaluation mode (Dropout scales instead of dropping). Each chunk
    is run ``batch_size`` images at a time (None: the whole chunk in one
    call). Output: (N, ...) with x's chunks along N.
    """
    if layer is not None and layer not in network.layers:
        raise ValueError(f"layer must be one of {list(network.layers)}, got {layer!r}")
    _check_batch_size(batch_size)
    x = _batch_chunked(x, network)
    blob = network_blob(network)
    # the output shape of one image, from a private copy of the network
    probe = _forward(load_network(blob), np.zeros((1, *x.shape[1:]), dtype=x.dtype), layer)
    blob_key = dask.delayed(blob, pure=True)
    drop = list(range(probe.ndim, 4))
    new = list(range(4, probe.ndim))
    return x.map_blocks(_predict_block, blob_key, layer, batch_size, dtype=probe.dtype,
                        chunks=(x.chunks[0], *((s,) for s in probe.shape[1:])),
                        drop_axis=drop or None, new_axis=new or None,
                        meta=np.empty((0,) * probe.ndim, probe.dtype))


def predict(network, x: da.Array, *, batch_size: int | None = None) -> da.Array:
    """Scores (N, K) of ``network.predict`` for x: (N, C, H, W), lazily; see ``features``."""
    return features(network, x, None, batch_size=batch_size)


def _correct_block(block, labels, blob, batch_size):
    _enter_task()
    network = load_network(blob)
    scores = _in_batches(network.predict, block, batch_size)
    return np.array([np.sum(scores.argmax(axis=1) == labels.reshape(-1))], dtype=np.int64)


def accuracy(network, x: da.Array, t, *, batch_size: int | None = None,
             compute: bool = True):
    """Fraction of x whose top score is its label, as ``network.accuracy``.

    t: (N,) integer labels or (N, K) one-hot rows, numpy or dask. Returns a
    float (computed on the current Dask scheduler or client), or with
    ``compute=False`` a lazy dask scalar.
    """
    _check_batch_size(batch_size)
    x = _batch_chunked(x, network)
    if t.ndim == 2:
        t = t.argmax(axis=1)
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} images but t has shape {t.shape}")
    if isinstance(t, da.Array):
        t = t.rechunk((x.chunks[0],))
    else:
        t = da.from_array(np.asarray(t), chunks=(x.chunks[0],))
    blob_key = dask.delayed(network_blob(network), pure=True)
    counts = da.map_blocks(_correct_block, x, t[:, None, None, None], blob_key, batch_size,
                           dtype=np.int64, chunks=((1,) * len(x.chunks[0]),), drop_axis=[1, 2, 3],
                           meta=np.empty((0,), np.int64))
    result = counts.sum() / x.shape[0]
    return float(result.compute()) if compute else result


# ------------------------------------------------------ data-parallel training

def _shard_gradient(blob, params, x, t, idx):
    """Gradients of the mean loss over images ``idx`` of (x, t) at ``params``.

    Runs on a worker. Returns (grads, mean loss, number of images, seconds).
    """
    _enter_task()
    start = time.perf_counter()
    network = load_network(blob)
    for key, value in params.items():
        network.params[key] = value
    grads = network.gradient(x[idx], t[idx])
    # copies: a layer's gradient arrays belong to that layer
    grads = {key: np.array(g) for key, g in grads.items()}
    return grads, float(network.last_layer.loss), len(idx), time.perf_counter() - start


def split_batch(idx: np.ndarray, n_shards: int) -> list[np.ndarray]:
    """Split batch indices into ``n_shards`` contiguous pieces (sizes differ by at most 1).

    Fewer pieces when the batch has fewer images than ``n_shards``.
    """
    return [piece for piece in np.array_split(np.asarray(idx), n_shards) if len(piece)]


def combine_gradients(results: Sequence) -> tuple[dict, float]:
    """Shard results (grads, mean loss, n, ...) in shard order -> (full-batch mean gradient, loss).

    Each shard's mean gradient is weighted by its share of the batch, n / N,
    and the shards are added in the order given, so the result depends on the
    shard contents only, never on which worker finished first.
    """
    total = sum(r[2] for r in results)
    grads, loss = None, 0.0
    for g, shard_loss, n, *_ in results:
        w = n / total                    # a Python float: keeps each array's dtype
        if grads is None:
            grads = {key: value * w for key, value in g.items()}
        else:
            for key, value in g.items():
                grads[key] += value * w
        loss += shard_loss * w
    return grads, loss


class DataParallelTrainer:
    """Synchronous data-parallel training of ``network`` on a ``distributed`` cluster.

    client: a ``distributed.Client``. x_train: (N, C, H, W) numpy array in the
    network's dtype, t_train: (N,) labels or (N, K) one-hot. The training data
    is scattered to every worker once, at construction. Each step:

    1. the client takes the next mini-batch of an epoch's permutation, drawn
       exactly as ``fastconv.Trainer`` draws it (``np.random.default_rng(seed)``,
       a new permutation per epoch, the last batch may be smaller);
    2. the parameters are scattered to every worker once (one copy per worker);
    3. the batch is split into ``n_shards`` contiguous shards (default: one per
       worker thread); each shard's gradient is computed on a worker by
       ``network.gradient``;
    4. the client adds the shards' gradients in shard order, weighted by shard
       size (``combine_gradients``): the full-batch mean gradient;
    5. one ``optimizer.update`` changes ``network.params`` in place.

    After k steps the parameters equal those of ``fastconv.Trainer`` (same
    seed, batch size and optimizer) after k steps up to float rounding: the
    shard sums are added in another order than one full-batch sum.

    A worker lost during a step is survivable: its shard task is run again on
    another worker (a task is a pure function of the scattered parameters and
    the batch indices), and the update waits for all shards, so the parameters
    never see a partial step. The scattered data lives on every worker; a
    replacement worker fetches it from the others.

    ``timings`` holds one dict per step: ``scatter_s`` (sending parameters),
    ``compute_s`` (the slowest shard's gradient, measured on its worker),
    ``step_s`` (the whole step, client side) and ``update_s``.
    """

    def __init__(self, client, network, x_train: np.ndarray, t_train: np.ndarray,
                 mini_batch_size: int = 100, optimizer="Adam", optimizer_param: dict | None = None,
                 n_shards: int | None = None, seed: int = 0):
        t_train = np.asarray(t_train)
        check_data(network, "train", x_train, t_train)
        if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int) \
                or mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be an int >= 1, got {mini_batch_size!r}")
        self.client = client
        self.network = network
        self.batch_size = mini_batch_size
        self.optimizer = make_optimizer(optimizer, **(optimizer_param or {"lr": 0.001}))
        if n_shards is None:
            workers = workers_of(client)
            n_shards = sum(w["nthreads"] for w in workers.values())
        if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
            raise ValueError(f"n_shards must be an int >= 1, got {n_shards!r}")
        self.n_shards = n_shards
        self.n_train = len(x_train)
        self.iter_per_epoch = -(-self.n_train // self.batch_size)
        self.rng = np.random.default_rng(seed)
        self._order = None
        self.step_in_epoch = 0
        self.epoch = 0
        self.losses, self.timings = [], []
        self._host = (network_blob(network), x_train, t_train)
        self._scatter_data()

    def _scatter_data(self):
        """The network's structure and the data, once, on every worker."""
        blob, x_train, t_train = self._host
        self._blob = self.client.scatter(blob, broadcast=True, hash=False)
        self._x = self.client.scatter(x_train, broadcast=True, hash=False)
        self._t = self.client.scatter(t_train, broadcast=True, hash=False)

    def next_batch(self) -> np.ndarray:
        """Indices of the next mini-batch (as ``fastconv.Trainer`` draws them)."""
        if self._order is None:
            self._order = self.rng.permutation(self.n_train)
            self.step_in_epoch = 0
        i = self.step_in_epoch * self.batch_size
        idx = self._order[i:i + self.batch_size]
        self.step_in_epoch += 1
        if self.step_in_epoch == self.iter_per_epoch:
            self._order, self.epoch = None, self.epoch + 1
        return idx

    def gradient(self, idx: np.ndarray, workers: Sequence[str] | None = None):
        """(mean gradient dict, mean loss, timings) of the images ``idx`` at the current
        parameters. workers: optional addresses; shard i then runs on
        workers[i % len(workers)] (for tests of placement independence)."""
        start = time.perf_counter()
        # a copy: the scatter must not race with the optimizer writing in place
        params = {key: np.array(value) for key, value in self.network.params.items()}
        try:
            results, scattered = self._shard_gradients(params, idx, workers)
        except CancelledError:
            # Scattered data has no recipe: if a worker dies while the scheduler
            # still counts its copy, the tasks that need it are cancelled rather
            # than recomputed. The step is a pure function of the parameters, so
            # sending the data again and repeating the step gives the same result.
            self._scatter_data()
            results, scattered = self._shard_gradients(params, idx, workers)
        grads, loss = combine_gradients(results)
        timing = {"scatter_s": scattered - start, "compute_s": max(r[3] for r in results)}
        return grads, loss, timing

    def _shard_gradients(self, params, idx, workers):
        """Every shard's (grads, loss, count, seconds) and when the parameters were sent."""
        # in a list: one key for the whole dict (a dict would be scattered key by key)
        [params] = self.client.scatter([params], broadcast=True, hash=False)
        scattered = time.perf_counter()
        futures = []
        for i, shard in enumerate(split_batch(idx, self.n_shards)):
            where = None if workers is None else [workers[i % len(workers)]]
            futures.append(self.client.submit(
                _shard_gradient, self._blob, params, self._x, self._t, shard,
                pure=False, workers=where, allow_other_workers=where is not None))
        return self.client.gather(futures), scattered

    def step(self) -> float:
        """One synchronous step on the next mini-batch; returns its loss (before the step)."""
        start = time.perf_counter()
        grads, loss, timing = self.gradient(self.next_batch())
        before_update = time.perf_counter()
        self.optimizer.update(self.network.params, grads)
        end = time.perf_counter()
        timing.update(update_s=end - before_update, step_s=end - start)
        self.timings.append(timing)
        self.losses.append(loss)
        return loss

    def train(self, steps: int) -> list[float]:
        """``steps`` synchronous steps; returns their losses."""
        return [self.step() for _ in range(steps)]
