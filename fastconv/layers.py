"""Layers: thin stateful wrappers with ``forward(x)`` and ``backward(dout)``.

Layers with parameters keep them as ``W`` and ``b`` (the very arrays passed
in, so a network's ``params`` dict and its layers stay one set of arrays) and,
after ``backward``, their gradients as ``dW`` and ``db``. Convolution and
Pooling know nothing of how a path computes; they go through
``fastconv.functional``, which validates and dispatches.
"""
from collections import Counter

import numpy as np

from . import functional as F
from .functional import check_backend
from .geometry import _as_int, as_pair, check_ceil_rounding, check_dilation, check_padding, check_rounding
from .spec import _stride_pad, check_groups, check_pool_options, check_return_indices


def _check_params(W, b, w_layout, b_name, n_out):
    """W of layout w_layout and b of shape (n_out,), one float dtype."""
    F.check_array(W, "W", len(w_layout.split(",")), w_layout)
    F.check_array(b, "b", 1, f"({b_name},)")
    if tuple(b.shape) != (n_out(W),):
        raise ValueError(f"b must have shape ({n_out(W)},) to match W.shape={tuple(W.shape)}, "
                         f"got {tuple(b.shape)}")
    F.check_dtypes(W=W, b=b)


INIT_GAINS = {"he": 2.0, "relu": 2.0, "xavier": 1.0, "sigmoid": 1.0}


def init_std(spec, fan_in: int, name: str = "weight_init_std") -> float:
    """Standard deviation of initial weights: a finite number > 0 as given, or "he"/"relu"
    (sqrt(2/fan_in)) or "xavier"/"sigmoid" (sqrt(1/fan_in)), the book's names.
    ``name`` is the argument the errors name."""
    if isinstance(spec, str):
        if spec.lower() not in INIT_GAINS:
            raise ValueError(f"{name} must be a number or one of {sorted(INIT_GAINS)}, "
                             f"got {spec!r}")
        return float(np.sqrt(INIT_GAINS[spec.lower()] / fan_in))
    if isinstance(spec, bool) or not isinstance(spec, (int, float, np.number)) \
            or not np.isfinite(spec) or not spec > 0:
        raise ValueError(f"{name} must be a finite number > 0 or one of {sorted(INIT_GAINS)}, "
                         f"got {spec!r}")
    return float(spec)


class Layer:
    """Base class: forward(x) -> out, backward(dout) -> dx."""

    # Convolution and Pooling count the paths their forward calls ran on
    # (``path_counts``, a Counter); other layers have none.
    path_counts = None

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def _saved_or_raise(self, saved):
        if saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return saved


class Convolution(Layer):
    """Convolution (cross-correlation) layer.

    W: (FN, C // groups, FH, FW), b: (FN,) or None (zeros). forward: x (N, C, H, W) ->
    (N, FN, OH, OW); backward returns dx and sets ``dW`` and ``db``.
    stride and dilation are ints or (h, w) pairs; pad is an int, an (h, w)
    pair, ``((top, bottom), (left, right))``, "valid" or "same" (see
    ``fastconv.conv2d``); groups divides C and FN. ``backend`` picks the
    compute path ("auto", "naive", "im2col", "direct", "winograd", "cuda");
    ``path`` tells which one ran last, and ``path_counts`` how many forward
    calls ran on each path. ``needs_input_grad = False`` makes the next
    forward/backward pair set ``dW`` and ``db`` only, backward returning None:
    a network's first layer has no layer below to take dx, and dx costs about
    as much as dW (``Network`` sets it on its first layer).
    """

    def __init__(self, W: np.ndarray, b: np.ndarray | None = None, stride: F.Pair = 1,
                 pad: F.Padding = 0, dilation: F.Pair = 1, groups: int = 1,
                 backend: str = "auto", rounding: str = "floor"):
        F.check_array(W, "W", 4, "(FN, C // groups, FH, FW)")
        if b is None:
            b = np.zeros(W.shape[0], dtype=W.dtype)
        _check_params(W, b, "(FN, C // groups, FH, FW)", "FN", lambda w: w.shape[0])
        self.W, self.b = W, b
        # checked now, so a bad layer fails where it is made, not at its first forward
        self.stride, _ = _stride_pad(stride, 0)
        self.pad = check_padding(pad)
        self.dilation, self.groups = check_dilation(dilation), check_groups(groups)
        if W.shape[0] % self.groups:
            raise ValueError(f"groups={self.groups} must divide the number of filters "
                             f"FN={W.shape[0]} (W.shape={tuple(W.shape)})")
        self.backend = check_backend(backend)
        self.rounding = check_rounding(rounding)
        self.dW = self.db = None
        self.bias = True
        self.needs_input_grad = True
        self.path = None
        self.path_counts = Counter()
        self._saved = None

    @classmethod
    def from_shape(cls, in_channels: int, out_channels: int, kernel_size: F.Pair,
                   stride: F.Pair = 1, pad: F.Padding = 0, bias: bool = True, init="he",
                   seed: int | None = None, dtype=np.float32, backend: str = "auto",
                   rounding: str = "floor", dilation: F.Pair = 1,
                   groups: int = 1) -> "Convolution":
        """A layer built from sizes, as ``torch.nn.Conv2d(in_channels, out_channels, kernel_size)``.

        W: (out_channels, in_channels // groups, KH, KW) drawn from a normal
        distribution with standard deviation ``init``: "he" (sqrt(2 / fan_in),
        for ReLU), "xavier" (sqrt(1 / fan_in)) or a number; fan_in =
        in_channels // groups * KH * KW (the values one output sums over).
        b: zeros, or (bias=False) zeros that stay zero unless you train them.
        ``seed`` makes the weights reproducible. groups must divide both
        in_channels and out_channels.
        """
        in_channels, out_channels = _as_int(in_channels, "in_channels"), _as_int(out_channels, "out_channels")
        if min(in_channels, out_channels) < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got "
                             f"{in_channels}, {out_channels}")
        kh, kw = as_pair(kernel_size, "kernel_size")
        if min(kh, kw) < 1:
            raise ValueError(f"kernel_size must be >= 1, got {(kh, kw)}")
        groups = _as_int(groups, "groups")
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups must be an int >= 1 that divides in_channels="
                             f"{in_channels} and out_channels={out_channels}, got {groups}")
        dtype = np.dtype(dtype)
        if dtype not in F.FLOAT_DTYPES + (F.HALF,):
            raise TypeError(f"dtype must be float16, float32 or float64, got {dtype}")
        std = init_std(init, in_channels // groups * kh * kw, "init")
        rng = np.random.default_rng(seed)
        W = (std * rng.standard_normal((out_channels, in_channels // groups, kh, kw))).astype(dtype)
        b = np.zeros(out_channels, dtype=dtype)
        layer = cls(W, b, stride=stride, pad=pad, dilation=dilation, groups=groups,
                    backend=backend, rounding=rounding)
        layer.bias = bool(bias)
        return layer

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._saved = F.conv_forward(x, self.W, self.b, self.stride, self.pad,
                                          self.rounding, self.backend, self.dilation, self.groups,
                                          input_grad=self.needs_input_grad)
        self.path = self._saved.path
        self.path_counts[self.path] += 1
        return out

    def backward(self, dout):
        dx, self.dW, self.db = F.conv_backward(dout, self._saved_or_raise(self._saved))
        if not self.bias:
            self.db = np.zeros_like(self.db)    # a layer without bias keeps b at zero
        return dx


class Pooling(Layer):
    """Max or average pooling, x: (N, C, H, W) -> (N, C, OH, OW); no parameters.

    stride=None (the default) steps by the window, as PyTorch does: a 2x2
    window halves each side. One image (C, H, W) gives (C, OH, OW).

    mode "max" looks at input cells only and sends each gradient to the
    window's first maximum; mode "avg" pads with zeros and spreads the gradient
    evenly over the cells its divisor counted (pool_h*pool_w by default).
    ceil_mode, count_include_pad, divisor_override, dilation and return_indices
    are ``fastconv.pool2d``'s; with return_indices=True, forward still returns
    out and keeps the indices (N, C, OH, OW) in ``self.indices``.
    """

    def __init__(self, pool_h: int, pool_w: int, stride: F.Pair | None = None, pad: F.Pair = 0,
                 mode: str = "max", backend: str = "auto", rounding: str = "floor", *,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None, dilation: F.Pair = 1,
                 return_indices: bool = False):
        self.pool_h, self.pool_w = _as_int(pool_h, "pool_h"), _as_int(pool_w, "pool_w")
        if min(self.pool_h, self.pool_w) < 1:
            raise ValueError(f"pool window (pool_h, pool_w) must be >= 1, got "
                             f"{(self.pool_h, self.pool_w)}")
        # stride=None steps by the window, as PyTorch's pooling does
        self.stride, self.pad = _stride_pad((self.pool_h, self.pool_w) if stride is None
                                            else stride, pad)
        if mode not in F.MODES:
            raise ValueError(f"mode must be one of {F.MODES}, got {mode!r}")
        self.mode = mode
        self.ceil_mode, self.count_include_pad, self.divisor_override, self.dilation = \
            check_pool_options(mode, ceil_mode, count_include_pad, divisor_override, dilation)
        self.return_indices = check_return_indices(mode, return_indices)
        self.indices = None
        self.backend = check_backend(backend)
        self.rounding = check_rounding(rounding)
        check_ceil_rounding(self.ceil_mode, self.rounding)
        self.path = None
        self.path_counts = Counter()
        self._saved = None

    @property
    def options(self) -> dict:
        """ceil_mode, count_include_pad, divisor_override and dilation, as keywords."""
        return dict(ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad,
                    divisor_override=self.divisor_override, dilation=self.dilation)

    def forward(self, x: np.ndarray) -> np.ndarray:
        result = F.pool_forward(x, self.pool_h, self.pool_w, self.stride, self.pad, self.mode,
                                self.rounding, self.backend, return_indices=self.return_indices,
                                **self.options)
        if self.return_indices:
            out, self.indices, self._saved = result
        else:
            out, self._saved = result
        self.path = self._saved.path
        self.path_counts[self.path] += 1
        return out

    def backward(self, dout):
        return F.pool_backward(dout, self._saved_or_raise(self._saved))


# Signed integers as wide as each float, for _zero_where.
_SAME_WIDTH_INT = {2: np.int16, 4: np.int32, 8: np.int64}
# Cells per chunk of _zero_where's mask words (1 MB of int32): measured best of 2^14-2^18.
_ZERO_WHERE_CHUNK = 1 << 18


def _zero_where(mask, a):
    """+0.0 where mask is True, a elsewhere, bit for bit (nan and inf kept, never -0.0).

    Not ``np.where``: on a random mask its per-cell branch mispredicts half the
    time (7.6 ms for the 1.7M cells of SimpleConvNet's conv output). Here a's
    bits are ANDed with words of all ones or all zeros, built from the mask a
    chunk at a time so that they stay in cache: 1.0 ms on those cells, 3.9 ms
    instead of 28 ms on the 6.4M cells of ResNet-18's first activation.
    ``np.maximum(x, 0)`` is no substitute: it returns -0.0 for -0.0 in float16.
    """
    word = _SAME_WIDTH_INT.get(a.dtype.itemsize) if a.dtype.kind == "f" else None
    if word is None or a.shape != mask.shape:
        return np.where(mask, np.zeros((), a.dtype), a)
    out = np.empty(a.shape, dtype=a.dtype)
    src = np.ascontiguousarray(a).reshape(-1).view(word)
    dst = out.reshape(-1).view(word)
    flags = mask.reshape(-1)
    keep = np.empty(min(_ZERO_WHERE_CHUNK, src.size), dtype=word)
    for i in range(0, src.size, _ZERO_WHERE_CHUNK):
        k = keep[:min(_ZERO_WHERE_CHUNK, src.size - i)]
        np.copyto(k, flags[i:i + k.size], casting="unsafe")
        k -= 1                      # True 1 -> 0, False 0 -> -1 (all bits set)
        np.bitwise_and(src[i:i + k.size], k, out=dst[i:i + k.size])
    return out


class Relu(Layer):
    """max(x, 0), any shape; the gradient passes where x > 0 (and where x is nan).

    mask: x <= 0 of the last forward (the book's name); both directions put +0.0
    where it is True (``_zero_where``).
    """

    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        return _zero_where(self.mask, x)

    def backward(self, dout):
        if self.mask is None:
            raise RuntimeError("Relu.backward called before forward")
        return _zero_where(self.mask, dout)


class Sigmoid(Layer):
    """1 / (1 + exp(-x)), any shape."""

    def __init__(self):
        self.out = None

    def forward(self, x):
        # exp(-log(1 + exp(-x))): never overflows, and keeps tiny outputs accurate
        self.out = np.exp(-np.logaddexp(0, -x))
        return self.out

    def backward(self, dout):
        if self.out is None:
            raise RuntimeError("Sigmoid.backward called before forward")
        return dout * (1 - self.out) * self.out


class Affine(Layer):
    """Fully connected: x (N, D) or (N, C, H, W) with C*H*W = D -> (N, M).

    W: (D, M), b: (M,). 4-D input is flattened; backward restores its shape.
    """

    def __init__(self, W, b):
        _check_params(W, b, "(D, M)", "M", lambda w: w.shape[1])
        self.W, self.b = W, b
        self.dW = self.db = None
        self.x = None
        self.original_x_shape = None

    def forward(self, x):
        if not isinstance(x, np.ndarray) or x.ndim < 2:
            raise ValueError(f"x must be an array of shape (N, D) or (N, C, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        # NumPy's promotion (float32 x through float64 W computes in float64);
        # float16 is computed in float32 and handed back as float16
        out_dtype, compute = F.compute_dtype(x, self.W, self.b)
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.W.shape[0]:
            raise ValueError(f"x of shape {x.shape} flattens to D={flat.shape[1]} features but "
                             f"W.shape={self.W.shape} expects D={self.W.shape[0]}")
        self.original_x_shape = x.shape
        self.x = flat
        out = flat.astype(compute, copy=False) @ self.W.astype(compute, copy=False) + self.b
        return out.astype(out_dtype, copy=False)

    def backward(self, dout):
        """dout: (N, M) -> dx in x's shape and dtype; sets dW, db in W's and b's dtypes."""
        if self.x is None:
            raise RuntimeError("Affine.backward called before forward")
        expected = (self.x.shape[0], self.W.shape[1])
        if tuple(dout.shape) != expected:
            raise ValueError(f"dout must have shape {expected}, got {tuple(dout.shape)}")
        _, compute = F.compute_dtype(self.x, self.W, dout)
        d = dout.astype(compute, copy=False)
        self.dW = (self.x.astype(compute, copy=False).T @ d).astype(self.W.dtype, copy=False)
        self.db = d.sum(axis=0).astype(self.b.dtype, copy=False)
        dx = d @ self.W.astype(compute, copy=False).T
        return dx.astype(self.x.dtype, copy=False).reshape(self.original_x_shape)


def softmax(x):
    """Row-wise softmax of x: (N, K), shifted by the row max for stability."""
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class SoftmaxWithLoss(Layer):
    """Softmax then cross-entropy. forward(x, t): x (N, K) scores, t (N,) labels or
    (N, K) one-hot -> scalar loss; backward(dout=1) -> dx (N, K)."""

    def __init__(self):
        self.y = self.t = None
        self.loss = None

    def forward(self, x, t):
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise ValueError(f"x must be 2-D (N, K) scores, got {getattr(x, 'shape', type(x))}")
        F.check_dtypes(x=x)
        self.dtype = x.dtype
        if x.dtype == F.HALF:           # log-sum-exp in float32, never a float16 running sum
            x = x.astype(np.float32)
        t = np.asarray(t)
        if t.ndim == 2:
            if t.shape != x.shape:
                raise ValueError(f"one-hot t must have x's shape {x.shape}, got {t.shape}")
            t = t.argmax(axis=1)
        elif t.shape != (x.shape[0],):
            raise ValueError(f"t must be labels (N,)=({x.shape[0]},) or one-hot {x.shape}, "
                             f"got {t.shape}")
        if not np.issubdtype(t.dtype, np.integer):
            raise TypeError(f"labels t must be integers, got dtype {t.dtype}")
        if t.min() < 0 or t.max() >= x.shape[1]:
            raise ValueError(f"labels t must lie in [0, {x.shape[1]}), got range "
                             f"[{t.min()}, {t.max()}]")
        self.t = t
        # log-softmax through log-sum-exp: exact (no epsilon inside the log) and
        # finite even when a probability underflows to zero
        z = x - x.max(axis=1, keepdims=True)
        log_y = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        self.y = np.exp(log_y)
        self.loss = self.dtype.type(-log_y[np.arange(x.shape[0]), t].mean())
        return self.loss

    def backward(self, dout=1):
        if self.y is None:
            raise RuntimeError("SoftmaxWithLoss.backward called before forward")
        n = self.y.shape[0]
        dx = self.y.copy()
        dx[np.arange(n), self.t] -= 1
        return (dx * (dout / n)).astype(self.dtype, copy=False)


class Dropout(Layer):
    """Dropout as in "Deep Learning from Scratch" (not inverted): in training, zero each unit with
    probability ``ratio``; in evaluation, scale by (1 - ratio).

    forward(x, train=True). ``seed`` makes the masks reproducible.
    """

    def __init__(self, ratio=0.5, seed=None):
        if not 0 <= ratio < 1:
            raise ValueError(f"ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio
        self.rng = np.random.default_rng(seed)
        self.mask = None

    def forward(self, x, train=True):
        if train:
            self.mask = self.rng.random(x.shape) >= self.ratio
            return x * self.mask
        return x * x.dtype.type(1.0 - self.ratio)

    def backward(self, dout):
        if self.mask is None:
            raise RuntimeError("Dropout.backward called before a training forward")
        return dout * self.mask
