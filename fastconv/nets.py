"""Networks built from fastconv layers: SimpleConvNet ("Deep Learning from Scratch", ch. 7) and LeNet (1998).

A network keeps its layers in order and its parameters in ``params``, a dict
whose arrays ARE the layers' ``W`` and ``b``: optimizers update them in place,
and the layers see the change. Assigning ``params[key] = value`` copies the
value into the existing array, and ``load_params`` does the same, so the two
views can never drift apart.

x: (N, C, H, W) images in the network's dtype (float32 by default); t: (N,)
integer labels or (N, K) one-hot rows.
"""
from collections import Counter, OrderedDict

import numpy as np

from . import io
from .functional import check_backend, no_grad
from .geometry import conv_output_size
from .layers import (INIT_GAINS, Affine, Convolution, Dropout, Pooling, Relu,  # noqa: F401
                     Sigmoid, SoftmaxWithLoss, init_std)


class LinkedParams(dict):
    """name -> the layer's own parameter array. Assignment writes into that array
    (same shape and dtype required) instead of replacing it."""

    def __setitem__(self, key, value):
        if key not in self:
            raise KeyError(f"unknown parameter {key!r}; the network has {list(self)}")
        target = dict.__getitem__(self, key)
        if value is target:          # `params[key] -= g` already changed it in place
            return
        value = np.asarray(value)
        if value.shape != target.shape or value.dtype != target.dtype:
            raise ValueError(f"params[{key!r}] is {target.dtype}{target.shape}; cannot assign "
                             f"an array of {value.dtype}{value.shape}")
        np.copyto(target, value)

    def update(self, other=(), **kwargs):
        for key, value in dict(other, **kwargs).items():
            self[key] = value

    def __delitem__(self, key):
        raise TypeError("a network's parameters cannot be removed")


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


class Network:
    """Ordered layers ending in SoftmaxWithLoss, with the book's methods."""

    def __init__(self, dtype=np.float32, seed=None):
        self.dtype = _check_dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.layers = OrderedDict()
        self.last_layer = SoftmaxWithLoss()
        self.params = LinkedParams()
        self._owners = {}            # param key -> (layer, "W" or "b")

    # -- building
    def _weights(self, shape, std):
        return (std * self.rng.standard_normal(shape)).astype(self.dtype)

    def _add(self, name, layer, W=None, b=None):
        """Append a layer; W and b name its parameters in ``params``."""
        if not self.layers and isinstance(layer, Convolution):
            # nothing below the first layer takes its dx: backward skips it
            layer.needs_input_grad = False
        self.layers[name] = layer
        for attr, key in (("W", W), ("b", b)):
            if key is not None:
                dict.__setitem__(self.params, key, getattr(layer, attr))
                self._owners[key] = (layer, attr)
        return layer

    # -- the book's interface
    def predict(self, x, train_flg=False):
        """x: (N, C, H, W) -> scores (N, K), before the softmax."""
        for layer in self.layers.values():
            x = layer.forward(x, train_flg) if isinstance(layer, Dropout) else layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        """Mean cross-entropy loss of the batch (a scalar of the network's dtype)."""
        return self.last_layer.forward(self.predict(x, train_flg), t)

    def accuracy(self, x, t, batch_size=100):
        """Fraction of x whose top score is the label, computed batch_size at a time."""
        return self.evaluate(x, t, batch_size)[1]

    def evaluate(self, x, t, batch_size=100):
        """(mean loss, accuracy) over x in one pass, batch_size images at a time."""
        t = np.asarray(t)
        labels = t.argmax(axis=1) if t.ndim == 2 else t
        if len(x) != len(labels):
            raise ValueError(f"x has {len(x)} images but t has {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        total_loss, correct = 0.0, 0
        for i in range(0, len(x), batch_size):
            xb, tb = x[i:i + batch_size], labels[i:i + batch_size]
            with no_grad():             # no backward follows: keep no copies for one
                scores = self.predict(xb)
            total_loss += float(self.last_layer.forward(scores, tb)) * len(xb)
            correct += int(np.sum(scores.argmax(axis=1) == tb))
        return total_loss / len(x), correct / len(x)

    def gradient(self, x, t):
        """Backprop gradients of loss(x, t): a dict with the keys of params."""
        self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        return {key: getattr(layer, "d" + attr) for key, (layer, attr) in self._owners.items()}

    def numerical_gradient(self, x, t, h=None):
        """Central-difference gradients of loss(x, t), one parameter element at a time.

        Slow (two forward passes per parameter): for checking ``gradient`` on tiny
        networks and batches, in float64. h defaults to 1e-4 (float64), 1e-2 (float32).
        """
        if h is None:
            h = 1e-4 if self.dtype == np.float64 else 1e-2
        grads = {}
        for key, p in self.params.items():
            grad = np.zeros_like(p)
            flat, gflat = p.reshape(-1), grad.reshape(-1)
            for i in range(flat.size):
                old = flat[i]
                flat[i] = old + h
                up = float(self.loss(x, t, train_flg=True))
                flat[i] = old - h
                down = float(self.loss(x, t, train_flg=True))
                flat[i] = old
                gflat[i] = (up - down) / (2 * h)
            grads[key] = grad
        return grads

    # -- parameters on disk
    def save_params(self, path="params.npz"):
        """Write params to ``path`` as .npz (atomically: temp file + rename)."""
        io.save_params(path, self.params)

    def load_params(self, path="params.npz"):
        """Read params saved by save_params into the existing arrays.

        Raises ValueError naming any missing/unexpected key or wrong shape/dtype.
        """
        loaded = io.load_params(path, self.params)
        for key, value in loaded.items():
            self.params[key] = value

    # -- precision
    def astype(self, dtype):
        """Convert every parameter to ``dtype`` (float16, float32 or float64), in one call -> self.

        float16 is for inference, as in "Deep Learning from Scratch" ch. 8: the
        parameters are stored in float16, the layers compute in float32 and
        hand float16 results back. The arrays are replaced (``params`` and the
        layers keep sharing them).
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.float16, np.float32, np.float64):
            raise TypeError(f"dtype must be float16, float32 or float64, got {dtype}")
        for key, (layer, attr) in self._owners.items():
            converted = getattr(layer, attr).astype(dtype)
            setattr(layer, attr, converted)
            dict.__setitem__(self.params, key, converted)
        self.dtype = dtype
        return self

    # -- paths
    def set_backend(self, backend):
        """Send every Convolution and Pooling layer to ``backend`` from now on."""
        check_backend(backend)
        for layer in self.layers.values():
            if isinstance(layer, (Convolution, Pooling)):
                layer.backend = backend

    def paths(self):
        """Layer name -> the path its last forward ran on (conv and pool layers).

        For what ran over many calls, see :meth:`path_counts`.
        """
        return {name: layer.path for name, layer in self.layers.items()
                if isinstance(layer, (Convolution, Pooling))}

    def path_counts(self):
        """Layer name -> Counter {path: forward calls run on it}, since the layer was made."""
        return {name: Counter(layer.path_counts) for name, layer in self.layers.items()
                if layer.path_counts is not None}


def _conv_param(conv_param):
    defaults = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}
    unknown = set(conv_param or {}) - set(defaults)
    if unknown:
        raise ValueError(f"conv_param has unknown keys {sorted(unknown)}; allowed: {sorted(defaults)}")
    return {**defaults, **(conv_param or {})}


class SimpleConvNet(Network):
    """conv - relu - max pool (2x2, stride 2) - affine - relu - affine - softmax.

    input_dim: (C, H, W). Parameters: W1 (FN, C, FS, FS), b1 (FN,),
    W2 (FN*PH*PW, hidden_size), b2, W3 (hidden_size, output_size), b3, all
    drawn with standard deviation ``weight_init_std`` (biases zero): 0.01 as in
    the book, or "he" for sqrt(2/fan_in) per layer, which learns faster.
    ``backend`` goes to the conv and pool layers; ``seed`` fixes the weights.
    """

    def __init__(self, input_dim=(1, 28, 28), conv_param=None, hidden_size=100,
                 output_size=10, weight_init_std=0.01, backend="auto", dtype=np.float32,
                 seed=None):
        super().__init__(dtype, seed)
        cp = _conv_param(conv_param)
        C, H, W = input_dim
        fn, fs, pad, stride = cp["filter_num"], cp["filter_size"], cp["pad"], cp["stride"]
        oh = conv_output_size(H, fs, stride, pad)
        ow = conv_output_size(W, fs, stride, pad)
        pool_out = fn * (oh // 2) * (ow // 2)
        zeros = lambda n: np.zeros(n, dtype=self.dtype)  # noqa: E731

        def weights(shape, fan_in):
            return self._weights(shape, init_std(weight_init_std, fan_in))

        self._add("Conv1", Convolution(weights((fn, C, fs, fs), C * fs * fs), zeros(fn),
                                       stride=stride, pad=pad, backend=backend), "W1", "b1")
        self._add("Relu1", Relu())
        self._add("Pool1", Pooling(2, 2, stride=2, backend=backend))
        self._add("Affine1", Affine(weights((pool_out, hidden_size), pool_out),
                                    zeros(hidden_size)), "W2", "b2")
        self._add("Relu2", Relu())
        self._add("Affine2", Affine(weights((hidden_size, output_size), hidden_size),
                                    zeros(output_size)), "W3", "b3")


class LeNet(Network):
    """LeNet-5 shape (LeCun et al., 1998): conv 6@5x5 pad 2 - pool - conv 16@5x5 -
    pool - affine 120 - affine 84 - affine 10 - softmax, pools 2x2 stride 2.

    activation "relu" (default) or "sigmoid" (as in 1998); pooling "max" (default)
    or "avg" (1998's subsampling). weight_init_std None picks He (sqrt(2/fan_in))
    for ReLU and Xavier (sqrt(1/fan_in)) for sigmoid; a number or one of those
    names overrides it. Parameters W1..W5, b1..b5.
    """

    def __init__(self, input_dim=(1, 28, 28), output_size=10, activation="relu",
                 pooling="max", weight_init_std=None, backend="auto", dtype=np.float32,
                 seed=None):
        super().__init__(dtype, seed)
        activations = {"relu": Relu, "sigmoid": Sigmoid}
        if activation not in activations:
            raise ValueError(f"activation must be 'relu' or 'sigmoid', got {activation!r}")
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        act = activations[activation]
        spec = activation if weight_init_std is None else weight_init_std
        C, H, W = input_dim

        def weights(shape, fan_in):
            return self._weights(shape, init_std(spec, fan_in))

        zeros = lambda n: np.zeros(n, dtype=self.dtype)  # noqa: E731
        h, w = H, W                                       # conv1 keeps the size (pad 2)
        self._add("Conv1", Convolution(weights((6, C, 5, 5), C * 25), zeros(6), pad=2,
                                       backend=backend), "W1", "b1")
        self._add("Act1", act())
        self._add("Pool1", Pooling(2, 2, stride=2, mode=pooling, backend=backend))
        h, w = h // 2, w // 2
        self._add("Conv2", Convolution(weights((16, 6, 5, 5), 6 * 25), zeros(16),
                                       backend=backend), "W2", "b2")
        self._add("Act2", act())
        h, w = conv_output_size(h, 5), conv_output_size(w, 5)
        self._add("Pool2", Pooling(2, 2, stride=2, mode=pooling, backend=backend))
        flat = 16 * (h // 2) * (w // 2)
        self._add("Affine1", Affine(weights((flat, 120), flat), zeros(120)), "W3", "b3")
        self._add("Act3", act())
        self._add("Affine2", Affine(weights((120, 84), 120), zeros(84)), "W4", "b4")
        self._add("Act4", act())
        self._add("Affine3", Affine(weights((84, output_size), 84), zeros(output_size)),
                  "W5", "b5")
