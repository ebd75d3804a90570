"""The one timing protocol: a warm-up call, then interleaved timed rounds.

Used by the auto-tuner, ``explain(measure=True)`` and ``fastconv compare``
(the benchmark suite times with pytest-benchmark, after the same untimed
warm-up call). The protocol:

1. every callable runs once untimed: JIT compilation, loading compiled code
   from Numba's cache and first-touch of buffers stay out of the figures (that
   first call's duration is reported separately, as ``first_s``);
2. then rounds: each round runs every callable once, in turn, so that a burst
   of load from other processes hits all of them alike;
3. a callable leaves after ``min_runs`` timed runs once its runs add up to
   ``budget_s`` seconds; at most ``rounds`` rounds, fewer when ``stop`` says
   the rounds so far settle the question (the tuner stops once one path is
   more than twice as fast as every other);
4. the result keeps the best and the median run. The best estimates what the
   code costs on a quiet machine; comparisons use it, because on a shared
   machine one run can be several times too slow (measured here: 14 ms and
   400 ms for the same call).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from . import backends
from .spec import ConvSpec, PoolSpec

ROUNDS = 3
MIN_RUNS = 2
BUDGET_S = 1.0


@dataclass(frozen=True)
class Timing:
    """One callable's figures, in seconds: the first (untimed) call, the best and median runs."""

    first_s: float
    best_s: float
    median_s: float
    runs: int


def measure(calls: dict[Hashable, Callable[[], object]], *, rounds: int = ROUNDS,
            min_runs: int = MIN_RUNS, budget_s: float = BUDGET_S,
            stop: Callable[[dict], bool] | None = None) -> dict[Hashable, Timing]:
    """Time each callable of ``calls`` with the protocol above -> {name: Timing}.

    stop: called after each round with {name: [seconds of each timed run]};
    True ends the timing there (after one round at least).
    """
    first, runs = {}, {name: [] for name in calls}
    for name, fn in calls.items():
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    for done in range(max(1, rounds)):
        busy = [n for n in calls if done < min_runs or sum(runs[n]) < budget_s]
        if not busy:
            break
        for name in busy:
            t0 = time.perf_counter()
            calls[name]()
            runs[name].append(time.perf_counter() - t0)
        if stop is not None and stop(runs):
            break
    return {n: Timing(first[n], min(runs[n]), statistics.median(runs[n]), len(runs[n]))
            for n in calls}


@dataclass(frozen=True)
class PathTimes:
    """A path's forward and backward Timing on one spec; ``first_s`` is both first calls."""

    forward: Timing
    backward: Timing

    @property
    def first_s(self) -> float:
        return self.forward.first_s + self.backward.first_s

    @property
    def best_ms(self) -> float:
        """Forward + backward, best runs, in ms: the figure paths are ranked by."""
        return (self.forward.best_s + self.backward.best_s) * 1e3


def random_inputs(spec: ConvSpec | PoolSpec, seed: int = 0):
    """Deterministic inputs for ``spec`` -> (args, dout): args is (x, W, b) or (x,)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.x_shape).astype(spec.dtype)
    if spec.op == "conv":
        W = (rng.standard_normal(spec.w_shape) / np.sqrt(spec.field)).astype(spec.dtype)
        args = (x, W, rng.standard_normal(spec.w_shape[0]).astype(spec.dtype))
    else:
        args = (x,)
    return args, rng.standard_normal(spec.out_shape).astype(spec.dtype)


def decisive_gap(runs: dict, paths: list[str], ratio: float) -> bool:
    """True when one path's best forward + best backward so far is at most ``ratio``
    times every other path's: runs is {(path, "forward"|"backward"): [seconds, ...]}."""
    totals = sorted(min(runs[p, "forward"]) + min(runs[p, "backward"]) for p in paths)
    return len(totals) > 1 and totals[0] <= ratio * totals[1]


def time_paths(spec: ConvSpec | PoolSpec, paths: list[str], *, rounds: int = ROUNDS,
               budget_s: float = BUDGET_S, seed: int = 0,
               decisive: float | None = None) -> dict[str, PathTimes]:
    """Time forward and backward of each path's kernels on identical random inputs.

    The kernels are called directly (the spec is already checked), and the
    backward runs reuse one cache from the warm-up forward call. decisive: stop
    after a round in which one path took at most this fraction of every
    other's time (see ``decisive_gap``); None: all rounds.
    """
    args, dout = random_inputs(spec, seed)
    calls, caches = {}, {}
    for path in paths:
        module = backends.get_path(path)
        forward = module.conv_forward if spec.op == "conv" else module.pool_forward
        backward = module.conv_backward if spec.op == "conv" else module.pool_backward

        def fwd(forward=forward, path=path):
            caches[path] = forward(*args, spec)[1]

        calls[path, "forward"] = fwd
        calls[path, "backward"] = lambda backward=backward, path=path: backward(dout, caches[path])
    stop = None if decisive is None else (lambda runs: decisive_gap(runs, paths, decisive))
    timings = measure(calls, rounds=rounds, budget_s=budget_s, stop=stop)
    return {p: PathTimes(timings[p, "forward"], timings[p, "backward"]) for p in paths}
