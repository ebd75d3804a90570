"""Benchmark cases and helpers of fastconv's bench suite (see conftest.py for how to run it)."""
import inspect
import json
import os
import pathlib
from dataclasses import dataclass, replace

import numpy as np
import pytest

import fastconv.functional as F
from fastconv.backends import available_backends, get_path
from fastconv.geometry import output_hw
from fastconv.spec import conv_spec, pool_spec

LAYERS_JSON = pathlib.Path(__file__).with_name("layers.json")
DTYPE = np.dtype(np.float32)
DIRECTIONS = ("forward", "backward")

# Small (smoke) mode caps every layer at this batch, channel count and spatial
# size (never below the filter), so that one pass over everything takes seconds.
SMALL_N, SMALL_CHANNELS, SMALL_HW = 2, 8, 12
# Batch at which the naive path runs in full mode: a Python loop over output
# positions, its time is linear in N, so it is compared by GFLOP/s only.
NAIVE_FULL_N = 1
# --bench-quick runs this share of each layer's (and network's) batch
QUICK_BATCH_DIVISOR = 4
# Paths that are not fastconv backends, in the order they run within a layer
# (after fastconv's paths).
BASELINES = ("book_numpy", "gemm", "torch")
POOL_BASELINES = ("book_numpy", "torch")
# Baselines that run a layer with dilation or groups (the book's code has neither).
GROUPED_BASELINES = ("gemm", "torch")


def small_mode(option=False):
    """True when the suite runs shrunk layers (--bench-small or FASTCONV_BENCH_SMALL=1)."""
    env = os.environ.get("FASTCONV_BENCH_SMALL", "").strip().lower()
    return bool(option) or env not in ("", "0", "false", "no")


def quick_mode(config):
    """True for --bench-quick (timed, a quarter of each batch), unless smoke mode is on."""
    return bool(config.getoption("--bench-quick")) and not small_mode(
        config.getoption("--bench-small"))


@dataclass(frozen=True)
class Case:
    """One benchmark: a conv or pool layer, a path, a direction, and the batch it runs at."""

    kind: str            # "conv" or "pool"
    layer: str
    path: str
    direction: str
    N: int
    C: int
    H: int
    W: int
    K: int               # filters (conv); equal to C for pooling
    FH: int
    FW: int
    stride: int
    pad: int
    mode: str = ""       # "max" / "avg" for pooling
    small: bool = False
    ref_N: int = 0       # the batch of the layer as the suite defines it
    dilation: int = 1    # conv only: spacing of the filter taps
    groups: int = 1      # conv only: W is (K, C // groups, FH, FW)
    skip: str = ""       # why this path cannot run this layer (the case is then skipped)

    @property
    def plain(self):
        """True for a conv without dilation and groups (what every path and baseline runs)."""
        return self.dilation == 1 and self.groups == 1

    @property
    def out_hw(self):
        # a dilated filter covers dilation*(F-1)+1 input pixels per side
        span = tuple(self.dilation * (f - 1) + 1 for f in (self.FH, self.FW))
        return output_hw((self.H, self.W), span, (self.stride,) * 2, (self.pad,) * 2, "floor")

    @property
    def flops(self):
        """Forward conv: 2*N*K*(C/groups)*FH*FW*OH*OW; backward (dx and dW): twice that.

        Pooling: N*C*OH*OW*FH*FW window reads (a nominal count, the same for
        both directions, so GFLOP/s ratios between paths stay meaningful).
        """
        OH, OW = self.out_hw
        if self.kind == "pool":
            return self.N * self.C * OH * OW * self.FH * self.FW
        forward = 2 * self.N * self.K * (self.C // self.groups) * self.FH * self.FW * OH * OW
        return forward if self.direction == "forward" else 2 * forward

    @property
    def group(self):
        batch = "" if self.N == self.ref_N else f"[N={self.N}]"
        return f"{self.layer}{batch} {self.direction}"

    @property
    def id(self):
        return f"{self.path}-{self.layer}-{self.direction}"

    def arrays(self, seed=0):
        """Deterministic float32 inputs: x (N, C, H, W), W (K, C // groups, FH, FW), b (K,),
        dout (N, K, OH, OW); W and b are None for pooling."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.N, self.C, self.H, self.W)).astype(DTYPE)
        OH, OW = self.out_hw
        if self.kind == "pool":
            dout = rng.standard_normal((self.N, self.C, OH, OW)).astype(DTYPE)
            return x, None, None, dout
        w_shape = (self.K, self.C // self.groups, self.FH, self.FW)
        w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(DTYPE)
        b = rng.standard_normal(self.K).astype(DTYPE)
        dout = rng.standard_normal((self.N, self.K, OH, OW)).astype(DTYPE)
        return x, w, b, dout

    def spec(self):
        """The fastconv ConvSpec or PoolSpec of this layer (float32)."""
        pair = (self.stride,) * 2, (self.pad,) * 2
        if self.kind == "pool":
            return pool_spec((self.N, self.C, self.H, self.W), self.FH, self.FW, *pair,
                             self.mode, DTYPE)
        return conv_spec((self.N, self.C, self.H, self.W),
                         (self.K, self.C // self.groups, self.FH, self.FW), *pair, DTYPE,
                         **self.conv_options())

    def conv_options(self):
        """dilation/groups keywords for fastconv and torch: none for a plain conv, so that
        plain layers run on a fastconv that takes neither keyword."""
        return {} if self.plain else dict(dilation=self.dilation, groups=self.groups)

    def extra_info(self, threads):
        OH, OW = self.out_hw
        return dict(
            kind=self.kind, layer=self.layer, path=self.path, direction=self.direction,
            library="baseline" if self.path in BASELINES else "fastconv",
            dtype=DTYPE.name, threads=threads, N=self.N, ref_N=self.ref_N,
            C=self.C, H=self.H, W=self.W, K=self.K, FH=self.FH, FW=self.FW,
            stride=self.stride, pad=self.pad, dilation=self.dilation, groups=self.groups,
            OH=OH, OW=OW, mode=self.mode, flops=self.flops, small=self.small,
        )


def load_layers(kind):
    """The suite's conv ("layers") or pooling ("pooling") entries from bench/layers.json."""
    with open(LAYERS_JSON) as f:
        suite = json.load(f)
    return suite["layers" if kind == "conv" else "pooling"]


def _base_case(kind, entry, small):
    C = entry["C"]
    K = entry.get("K", C)
    case = Case(kind=kind, layer=entry["id"], path="", direction="", N=entry["N"], C=C,
                H=entry["H"], W=entry["W"], K=K, FH=entry["FH"], FW=entry["FW"],
                stride=entry["stride"], pad=entry["pad"], mode=entry.get("mode", ""),
                small=small, ref_N=entry["N"], dilation=entry.get("dilation", 1),
                groups=entry.get("groups", 1))
    if not small:
        return case
    N_small = min(case.N, SMALL_N)
    # Groups shrink as a whole: each keeps its channels (up to the cap), and as many
    # groups stay as fit in the cap, so a depthwise layer stays depthwise.
    per_group_in, per_group_out = C // case.groups, K // case.groups
    groups = max(1, min(case.groups, SMALL_CHANNELS // per_group_in))
    C_small = min(per_group_in, SMALL_CHANNELS) * groups
    K_small = C_small if kind == "pool" else min(per_group_out, SMALL_CHANNELS) * groups
    span_h, span_w = (case.dilation * (f - 1) + 1 for f in (case.FH, case.FW))
    return replace(case, N=N_small, ref_N=N_small, C=C_small, K=K_small, groups=groups,
                   H=min(case.H, max(SMALL_HW, span_h)), W=min(case.W, max(SMALL_HW, span_w)))


def conv_takes_options():
    """True when fastconv's conv_forward takes dilation= and groups= keywords."""
    params = inspect.signature(F.conv_forward).parameters
    return "dilation" in params and "groups" in params


def why_not(case):
    """Why fastconv path ``case.path`` cannot run this layer, or "" when it can.

    fastconv's own ValueError says it: dilation/groups not supported (yet), or the
    path's scope (winograd: 3x3 stride 1) not covering the layer.
    """
    try:
        spec = case.spec()
    except ValueError as error:
        return f"fastconv cannot build {case.layer}: {error}"
    if case.kind == "conv" and not case.plain and not conv_takes_options():
        return (f"fastconv.functional.conv_forward takes no dilation/groups keywords, "
                f"which {case.layer} needs")
    module = get_path(case.path)
    if not module.supports(spec):
        return f"path {case.path!r} runs {module.SCOPE}; it cannot run {spec.describe()}"
    return ""


def make_cases(kind, small):
    """All benchmark cases of one kind, layer-major: every path of one layer and
    direction runs back to back, so load from other processes, which changes
    over minutes on a shared machine, hits the paths of one comparison alike."""
    fastconv_paths = list(available_backends())
    paths = fastconv_paths + list(BASELINES if kind == "conv" else POOL_BASELINES)
    cases = []
    for entry in load_layers(kind):
        base = _base_case(kind, entry, small)
        for direction in DIRECTIONS:
            for path in paths:
                case = replace(base, path=path, direction=direction)
                if path in fastconv_paths:
                    case = replace(case, skip=why_not(case))
                    if case.skip and case.plain:
                        # a path of narrower scope (winograd: 3x3 stride 1 only) has no
                        # case for a plain layer; layers with dilation/groups list the
                        # paths that cannot run them yet as skipped, with fastconv's reason
                        continue
                elif not case.plain and path not in GROUPED_BASELINES:
                    case = replace(case, skip=f"{path} has no dilation or groups")
                if path == "naive" and not small:
                    case = replace(case, N=min(case.N, NAIVE_FULL_N))
                cases.append(case)
    return cases


def blas_threads():
    """Threads of the BLAS behind numpy (None when threadpoolctl is not installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(counts) if counts else None


def numba_threads():
    import numba

    return numba.get_num_threads()


def torch_or_skip():
    """torch with 2 threads (as a user on this 2-core machine gets it), or skip."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    return torch


def run_benchmark(benchmark, case, fn, threads):
    """Label the benchmark for plotting, call ``fn`` once untimed, then time it."""
    benchmark.group = case.group
    benchmark.extra_info.update(case.extra_info(threads))
    fn()    # JIT compilation / cache load and first-touch stay out of the timing
    return benchmark(fn)


def assert_close(got, want, what):
    """float32 results of two paths agree (sums of up to a few thousand terms)."""
    for name, g, w in zip(("first", "second", "third"), got, want):
        g = np.asarray(g)
        assert g.shape == w.shape, f"{what}: {name} result shape {g.shape} != {w.shape}"
        assert g.dtype == w.dtype, f"{what}: {name} result dtype {g.dtype} != {w.dtype}"
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-4 * max(1.0, float(np.abs(w).max())),
                                   err_msg=f"{what}: {name} result")
