"""Optimizers with the interface of "Deep Learning from Scratch": ``update(params, grads)``.

``params`` and ``grads`` are dicts of arrays with the same keys. Every update
writes into the parameter arrays in place, so a network whose layers hold those
very arrays sees the new values without any re-linking. State arrays (velocity,
squared-gradient sums, Adam's moments) take each parameter's dtype: a float32
network is trained entirely in float32.

Each optimizer can describe itself for a checkpoint: ``state_dict()`` returns
``(scalars, arrays)`` (plain Python numbers, and a dict of named arrays), and
``load_state_dict(scalars, arrays)`` restores it.
"""
import math

import numpy as np


class Optimizer:
    """Base class: hyper-parameters in ``self.hyper`` (a dict of floats)."""

    def __init__(self, **hyper):
        for name, value in hyper.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{type(self).__name__}: {name} must be a number >= 0, got {value!r}")
        self.hyper = {name: float(value) for name, value in hyper.items()}
        self.state = {}        # slot name -> {param key -> array}
        self.iter = 0

    def __getattr__(self, name):
        hyper = self.__dict__.get("hyper", {})
        if name in hyper:
            return hyper[name]
        raise AttributeError(name)

    def update(self, params, grads):
        """Apply one step: params[key] changes in place for every key of params."""
        missing = [k for k in params if k not in grads]
        if missing:
            raise ValueError(f"grads lacks keys {missing} present in params")
        for key, p in params.items():
            g = grads[key]
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(f"grads[{key!r}] is {g.dtype}{g.shape} but params[{key!r}] is "
                                 f"{p.dtype}{p.shape}")
        self.iter += 1
        self._step(params, grads)

    def _slot(self, slot, key, like):
        """The state array ``slot`` for parameter ``key``, zeros at first use."""
        arrays = self.state.setdefault(slot, {})
        if key not in arrays:
            arrays[key] = np.zeros_like(like)
        return arrays[key]

    def state_dict(self):
        scalars = {"type": type(self).__name__, "iter": self.iter, **self.hyper}
        arrays = {f"{slot}/{key}": a for slot, d in self.state.items() for key, a in d.items()}
        return scalars, arrays

    def load_state_dict(self, scalars, arrays):
        if scalars.get("type") != type(self).__name__:
            raise ValueError(f"checkpoint holds a {scalars.get('type')} optimizer state, "
                             f"not {type(self).__name__}")
        self.hyper = {k: float(scalars[k]) for k in self.hyper}
        self.iter = int(scalars["iter"])
        self.state = {}
        for name, a in arrays.items():
            slot, key = name.split("/", 1)
            self.state.setdefault(slot, {})[key] = np.array(a, copy=True)


class SGD(Optimizer):
    """p <- p - lr * g."""

    def __init__(self, lr=0.01):
        super().__init__(lr=lr)

    def _step(self, params, grads):
        for key, p in params.items():
            p -= self.lr * grads[key]


class Momentum(Optimizer):
    """v <- momentum * v - lr * g; p <- p + v."""

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr=lr, momentum=momentum)

    def _step(self, params, grads):
        for key, p in params.items():
            v = self._slot("v", key, p)
            v *= self.momentum
            v -= self.lr * grads[key]
            p += v


class AdaGrad(Optimizer):
    """h <- h + g*g; p <- p - lr * g / (sqrt(h) + 1e-7)."""

    def __init__(self, lr=0.01):
        super().__init__(lr=lr)

    def _step(self, params, grads):
        for key, p in params.items():
            g = grads[key]
            h = self._slot("h", key, p)
            h += g * g
            p -= self.lr * g / (np.sqrt(h) + 1e-7)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) in the book's form: the bias corrections are folded
    into the step size, lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t), and
    p <- p - lr_t * m / (sqrt(v) + 1e-7)."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        super().__init__(lr=lr, beta1=beta1, beta2=beta2)
        if not (self.beta1 < 1 and self.beta2 < 1):
            raise ValueError(f"Adam: beta1 and beta2 must be < 1, got {beta1}, {beta2}")

    def _step(self, params, grads):
        t = self.iter
        # Python floats: they adopt the arrays' dtype instead of promoting float32
        lr_t = self.lr * math.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        for key, p in params.items():
            g = grads[key]
            m, v = self._slot("m", key, p), self._slot("v", key, p)
            m += (1.0 - self.beta1) * (g - m)
            v += (1.0 - self.beta2) * (g * g - v)
            step = np.sqrt(v)
            step += 1e-7
            np.divide(m, step, out=step)
            step *= lr_t
            p -= step


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adagrad": AdaGrad, "adam": Adam}


def make_optimizer(name, **params):
    """An optimizer by case-insensitive name ('SGD', 'Momentum', 'AdaGrad', 'Adam')."""
    if isinstance(name, Optimizer):
        return name
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"optimizer must be one of SGD, Momentum, AdaGrad, Adam; got {name!r}")
    return cls(**params)
