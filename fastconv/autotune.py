"""Measured choice of compute path for ``backend="auto"``, remembered on disk.

The first time ``backend="auto"`` meets a key (op, x shape, filter shape,
stride, pad, dtype, Numba thread count), it times the candidate paths on
identical random inputs (one warm-up call, then a few timed rounds, the paths
interleaved round by round so that a burst of load on the machine hits all of
them alike) and keeps the path with the smallest forward + backward time. The
winner is written to a small JSON file, one file per key, so later calls and
later processes reuse it without measuring.

Which paths compete (the *candidates*): every available path except ``naive``
(the oracle, never the fastest once a compiled path exists) and except
``cuda`` (host arrays never go to the GPU behind the caller's back; device
arrays are sent to ``cuda`` by ``fastconv.functional`` before "auto" is asked).
With a single candidate nothing is measured.

Measuring never touches the caller's arrays: it runs on its own random inputs,
and the caller's call then runs on the chosen path alone, so ``auto`` returns
exactly what that path returns.

Where the choices live:
    ``$FASTCONV_CACHE_DIR/autotune/<namespace>/`` when the variable is set, else
    the user cache directory: ``$XDG_CACHE_HOME/fastconv`` or
    ``~/.cache/fastconv`` (``~/Library/Caches/fastconv`` on macOS,
    ``%LOCALAPPDATA%\\fastconv\\Cache`` on Windows). ``<namespace>`` names the
    CPU model and the Numba, NumPy and fastconv versions: a choice measured on
    another CPU or with other compiled code is never reused. Each file is
    written to a temporary name and moved into place with ``os.replace``, so a
    reader in another process sees the old file or the new one, never half of
    one; two processes measuring the same key at once both write a complete
    file and the last one stays.

Turning measurement off: ``FASTCONV_AUTOTUNE=0`` (also ``off``/``false``/``no``)
makes "auto" follow the static rule in :func:`static_choice` and neither read
nor write the cache; results are then reproducible from one machine to the
next.

Pooling: "auto" can only time a pooling when it is told the window and mode
(``pool_hw=``, ``mode=`` in the shape information); without them it uses the
static rule.
"""
import dataclasses
import datetime
import hashlib
import importlib
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numba
import numpy as np

from . import backends
from .geometry import as_pair, output_hw

ENV_CACHE_DIR = "FASTCONV_CACHE_DIR"
ENV_AUTOTUNE = "FASTCONV_AUTOTUNE"
_OFF_VALUES = ("0", "off", "false", "no")
FILE_FORMAT = 1

# Static rule, for FASTCONV_AUTOTUNE=0 and for poolings "auto" cannot time
# (see static_choice): a convolution whose receptive field C*FH*FW holds at
# most this many values goes to the direct loops, larger ones to im2col + GEMM.
DIRECT_MAX_FIELD = 64

# Timing protocol for one measurement: warm-up, then up to REPEAT interleaved
# rounds; a path leaves after MIN_RUNS timed runs once they add up to BUDGET_S
# seconds. Two runs at least, because on a busy machine one run can be
# several times too slow (measured here: 14 ms and 400 ms for the same call).
REPEAT = 3
MIN_RUNS = 2
BUDGET_S = 1.0


@dataclass(frozen=True)
class Decision:
    """What "auto" chose for one key, and why.

    path: the chosen path. source: "measured" (timed just now), "cache" (read
    from disk or memory, measured earlier), "static" (rule, no timing), "only"
    (a single candidate). times_ms: {path: {"forward": ms, "backward": ms}}
    for measured or cached choices, else empty. key: the cache key as a dict.
    """

    path: str
    reason: str
    source: str
    key: dict
    times_ms: dict = field(default_factory=dict)
    measured_at: str = ""

    def __str__(self):
        return f"{self.path} ({self.source}): {self.reason}"


# ------------------------------------------------------------------ location

def cache_root():
    """fastconv's cache directory: $FASTCONV_CACHE_DIR, else the user cache dir + /fastconv."""
    override = os.environ.get(ENV_CACHE_DIR)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "fastconv" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "fastconv"
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "fastconv"


@lru_cache(maxsize=None)
def cpu_model():
    """The CPU's model name, from /proc/cpuinfo where there is one, else from platform."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            info = f.read()
    except OSError:
        info = ""
    # x86 says "model name"; ARM kernels say "Model", "Hardware" or only "CPU part".
    for label in ("model name", "Model", "Hardware", "cpu model", "CPU part"):
        m = re.search(rf"^{label}\s*:\s*(.+)$", info, re.MULTILINE)
        if m and m.group(1).strip():
            return m.group(1).strip()
    return platform.processor() or platform.machine() or "unknown-cpu"


@lru_cache(maxsize=None)
def _cpu_details():
    """What LLVM compiles for on this host (e.g. 'znver5' and its feature flags):
    two CPUs with one marketing name (common on cloud VMs) can still differ here."""
    try:
        import llvmlite.binding as ll

        return f"{ll.get_host_cpu_name()}|{ll.get_host_cpu_features().flatten()}"
    except Exception:  # an llvmlite without these calls: the model name must do
        return ""


def namespace():
    """The directory name that keeps choices apart per CPU and compiled-code versions.

    It reads ``<cpu model>-<digest>_numba-<v>_numpy-<v>_fastconv-<v>``; the
    digest covers the model name, the machine type and the CPU name and
    features LLVM targets.
    """
    return _namespace(cpu_model(), _fastconv_version())


@lru_cache(maxsize=None)
def _namespace(model, fastconv_version):
    # Cached: "auto" asks for it on every call.
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", model).strip("-")[:48] or "cpu"
    digest = hashlib.sha1(f"{model}|{platform.machine()}|{_cpu_details()}".encode()).hexdigest()[:8]
    return (f"{slug}-{digest}_numba-{numba.__version__}_numpy-{np.__version__}"
            f"_fastconv-{fastconv_version}")


def _fastconv_version():
    # Read at call time: this module is imported while fastconv/__init__ runs.
    return getattr(sys.modules.get("fastconv"), "__version__", "unknown")


def cache_dir():
    """Where this machine's and these versions' choices are stored."""
    return cache_root() / "autotune" / namespace()


# ----------------------------------------------------------------------- keys

def current_threads():
    """``numba.get_num_threads()``, after fastconv's kernels have set up Numba's threads.

    Asking Numba for its thread count starts its thread pool; fastconv's
    kernel options (``fastconv.kernels._jit``) must get to start it first, with
    their thread-waiting arrangement, so that is imported before asking.
    """
    importlib.import_module("fastconv.kernels._jit")
    return numba.get_num_threads()



def make_key(op, x_shape, w_shape, stride, pad, dtype, threads=None, mode=None):
    """The cache key as a dict of plain JSON values.

    op: "conv" or "pool". x_shape: (N, C, H, W). w_shape: (FN, C, FH, FW) for
    a convolution, the window (PH, PW) for a pooling. mode: "max"/"avg" for a
    pooling, None for a convolution. threads defaults to current_threads().
    """
    return {
        "op": op,
        "x_shape": [int(s) for s in x_shape],
        "w_shape": [int(s) for s in w_shape],
        "stride": list(as_pair(stride, "stride")),
        "pad": list(as_pair(pad, "pad")),
        "dtype": np.dtype(dtype).name,
        "threads": int(current_threads() if threads is None else threads),
        "mode": mode,
    }


def _key_tuple(key):
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(key.items()))


def _key_file(key):
    text = json.dumps(key, sort_keys=True)
    return f"{key['op']}-{hashlib.sha1(text.encode()).hexdigest()[:20]}.json"


# ----------------------------------------------------------------- candidates

def candidates(op="conv"):
    """The paths "auto" times for host arrays: available ones but naive and cuda.

    naive competes only when nothing else is available.
    """
    fast = [p for p in backends.available_backends() if p not in ("naive", "cuda")]
    return fast or ["naive"]


def static_choice(op, x_shape, w_shape, available=None, stride=1, pad=0):
    """The rule "auto" follows without measuring -> (path, reason).

    Convolution: ``direct`` when the receptive field C*FH*FW is at most
    DIRECT_MAX_FIELD values, else ``im2col``. With so short a reduction the
    unrolled matrix is mostly copying (each input value written ~FH*FW times
    for 2*FN FLOPs on it), and the direct loops, which read the input in
    place, win; with a long one the matrix product runs near the BLAS rate
    and the copy is a small part. Measured on the layer suite (2-core AMD
    EPYC, quiet machine, 2026-11, two runs): direct won on dlfs_conv1 (25)
    and cifar_3to32 (27), im2col on every other layer (363 to 4608, 1x1
    included); resnet_128 and strided_3x3 were within 10%.
    Pooling: ``direct``. A missing path falls back along
    ``backends._AUTO_PREFERENCE``. stride and pad do not enter the rule today.
    """
    available = candidates(op) if available is None else list(available)
    if op == "conv":
        reduction = w_shape[1] * w_shape[2] * w_shape[3]
        if reduction <= DIRECT_MAX_FIELD:
            want, why = "direct", f"receptive field C*FH*FW={reduction} <= {DIRECT_MAX_FIELD}"
        else:
            want, why = "im2col", f"receptive field C*FH*FW={reduction} > {DIRECT_MAX_FIELD}"
    else:
        want, why = "direct", "pooling needs no unrolled copy"
    if want in available:
        return want, f"static rule: {why}"
    for name in backends._AUTO_PREFERENCE:
        if name in available:
            return name, f"static rule: {want} ({why}) is not available, next preference"
    return available[0], "static rule: the only path available"


def autotune_enabled():
    """False when FASTCONV_AUTOTUNE is set to 0/off/false/no."""
    return os.environ.get(ENV_AUTOTUNE, "1").strip().lower() not in _OFF_VALUES


# ---------------------------------------------------------------- measurement

def make_inputs(op, x_shape, w_shape, stride, pad, dtype, mode=None, seed=0):
    """Random inputs for one timing, identical for every path -> (args, out_hw, dout).

    For "conv" args is (x, W, b); for "pool" it is (x,).
    """
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(tuple(x_shape)).astype(dtype)
    stride, pad = as_pair(stride, "stride"), as_pair(pad, "pad")
    if op == "conv":
        FN, C, FH, FW = w_shape
        W = (rng.standard_normal(tuple(w_shape)) / np.sqrt(C * FH * FW)).astype(dtype)
        b = rng.standard_normal(FN).astype(dtype)
        out_hw = output_hw(tuple(x_shape[2:]), (FH, FW), stride, pad, "floor")
        out_shape = (x_shape[0], FN, *out_hw)
        args = (x, W, b)
    else:
        out_hw = output_hw(tuple(x_shape[2:]), tuple(w_shape), stride, pad, "floor")
        out_shape = (x_shape[0], x_shape[1], *out_hw)
        args = (x,)
    dout = rng.standard_normal(out_shape).astype(dtype)
    return args, out_hw, dout


def time_paths(op, x_shape, w_shape, stride, pad, dtype, paths, mode=None,
               repeat=REPEAT, budget_s=BUDGET_S, seed=0):
    """Time forward and backward of each path on identical inputs.

    Returns {path: {"first": s, "forward": ms, "backward": ms}}: "first" is
    the first forward + backward call in seconds (it includes JIT compilation
    or loading compiled code from Numba's cache if this process has not run
    the path for this dtype yet); "forward"/"backward" are the best of up to
    ``repeat`` timed runs after it, rounds interleaved across paths; a path
    stops early once its timed runs exceed ``budget_s`` seconds, after at
    least ``min(repeat, MIN_RUNS)`` runs.
    """
    stride, pad = as_pair(stride, "stride"), as_pair(pad, "pad")
    args, out_hw, dout = make_inputs(op, x_shape, w_shape, stride, pad, dtype, mode, seed)
    modules = {p: backends.get_path(p) for p in paths}

    def run(module):
        t0 = time.perf_counter()
        if op == "conv":
            _, cache = module.conv_forward(*args, stride, pad, out_hw)
            t1 = time.perf_counter()
            module.conv_backward(dout, cache)
        else:
            _, cache = module.pool_forward(*args, tuple(w_shape), stride, pad, out_hw, mode)
            t1 = time.perf_counter()
            module.pool_backward(dout, cache)
        return t1 - t0, time.perf_counter() - t1

    result = {}
    for p, module in modules.items():
        t0 = time.perf_counter()
        run(module)
        result[p] = {"first": time.perf_counter() - t0, "forward": float("inf"),
                     "backward": float("inf")}
    spent = dict.fromkeys(paths, 0.0)
    for done in range(max(1, repeat)):
        busy = [p for p in paths if spent[p] < budget_s or done < MIN_RUNS]
        if not busy:
            break
        for p in busy:
            fwd, bwd = run(modules[p])
            spent[p] += fwd + bwd
            result[p]["forward"] = min(result[p]["forward"], fwd * 1e3)
            result[p]["backward"] = min(result[p]["backward"], bwd * 1e3)
    return result


def _format_times(times_ms):
    return ", ".join(f"{p} {t['forward'] + t['backward']:.3g} ms"
                     for p, t in sorted(times_ms.items(), key=lambda kv: kv[1]["forward"] + kv[1]["backward"]))


# --------------------------------------------------------------- the cache

# Counters a test (or a curious user) can read: how often "auto" measured,
# found a choice on disk, or in this process's memory.
stats = {"measured": 0, "disk": 0, "memory": 0}

_memory = {}
_lock = threading.RLock()
_warned_unwritable = False


def _read(path, key, cands):
    """The stored Decision at ``path`` if it is complete and still valid, else None."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    valid = (isinstance(data, dict) and data.get("format") == FILE_FORMAT
             and data.get("key") == key and data.get("candidates") == cands
             and data.get("path") in cands and isinstance(data.get("times_ms"), dict))
    if not valid:
        return None
    return _as_cached(Decision(path=data["path"], reason="", source="cache", key=key,
                               times_ms=data["times_ms"], measured_at=data.get("measured_at", "?")))


def _write(directory, key, cands, decision):
    """Store a decision atomically: write a temporary file, then os.replace it into place."""
    global _warned_unwritable
    payload = {
        "format": FILE_FORMAT, "key": key, "candidates": cands, "path": decision.path,
        "times_ms": decision.times_ms, "measured_at": decision.measured_at,
        "score": "forward + backward, best of the timed runs",
        "cpu": cpu_model(), "numba": numba.__version__, "numpy": np.__version__,
        "fastconv": _fastconv_version(),
    }
    tmp = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / _key_file(key))
    except OSError as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if not _warned_unwritable:
            _warned_unwritable = True
            warnings.warn(f"fastconv could not store its auto-tuning choice in {directory} "
                          f"({err}); choices are kept in memory for this process only. Set "
                          f"{ENV_CACHE_DIR} to a writable directory.", RuntimeWarning, stacklevel=3)


def _decision_from_times(key, cands, times):
    times_ms = {p: {"forward": float(times[p]["forward"]), "backward": float(times[p]["backward"])}
                for p in cands}
    best = min(cands, key=lambda p: times_ms[p]["forward"] + times_ms[p]["backward"])
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return Decision(path=best, reason=f"measured now: {_format_times(times_ms)} (forward + backward)",
                    source="measured", key=key, times_ms=times_ms, measured_at=now)


def _as_cached(decision):
    return dataclasses.replace(
        decision, source="cache",
        reason=f"cached: measured {decision.measured_at}: {_format_times(decision.times_ms)} "
               f"(forward + backward)")


def _store(key, cands, decision):
    directory = cache_dir()
    with _lock:
        _write(directory, key, cands, decision)
        # later calls in this process get it as what it then is: a cached choice
        _memory[(str(directory), tuple(cands), _key_tuple(key))] = _as_cached(decision)


def remember(op, x_shape, w_shape, stride, pad, dtype, times, mode=None):
    """Store a choice from timings measured elsewhere (``fastconv.explain``) -> Decision.

    times: {path: {"forward": ms, "backward": ms, ...}} covering every candidate.
    """
    cands = candidates(op)
    missing = [p for p in cands if p not in times]
    if missing:
        raise ValueError(f"times must cover every candidate path {cands}; missing {missing}")
    key = make_key(op, x_shape, w_shape, stride, pad, dtype, mode=mode)
    decision = _decision_from_times(key, cands, times)
    _store(key, cands, decision)
    return decision


def decide(op, x_shape, w_shape, stride=1, pad=0, dtype="float32", mode=None,
           measure=True, force=False, ignore_env=False):
    """The Decision "auto" makes for this key.

    Order: this process's memory, then the disk cache, then (``measure=True``)
    a fresh measurement that is stored. With ``measure=False`` an unknown key
    gets the static rule and nothing is stored; ``force=True`` re-measures
    even a known key. With FASTCONV_AUTOTUNE=0 (unless ``ignore_env``), the
    static rule decides and the cache is neither read nor written. The key's
    thread count is the current ``numba.get_num_threads()``.
    """
    cands = candidates(op)
    if op == "pool" and w_shape is None:
        raise ValueError("a pooling decision needs the window: pass w_shape=(PH, PW)")
    key = make_key(op, x_shape, w_shape, stride, pad, dtype, mode=mode)
    if len(cands) == 1:
        return Decision(cands[0], "the only candidate path available", "only", key)
    if not ignore_env and not autotune_enabled():
        path, why = static_choice(op, x_shape, w_shape, cands, stride, pad)
        return Decision(path, f"{why} ({ENV_AUTOTUNE}=0)", "static", key)
    directory = cache_dir()
    mem_key = (str(directory), tuple(cands), _key_tuple(key))
    with _lock:
        if not force:
            hit = _memory.get(mem_key)
            if hit is not None:
                stats["memory"] += 1
                return hit
            hit = _read(directory / _key_file(key), key, cands)
            if hit is not None:
                stats["disk"] += 1
                _memory[mem_key] = hit
                return hit
        if not measure:
            path, why = static_choice(op, x_shape, w_shape, cands, stride, pad)
            return Decision(path, f"{why} (not measured yet)", "static", key)
        times = time_paths(op, key["x_shape"], key["w_shape"], key["stride"], key["pad"],
                           key["dtype"], cands, mode=mode)
        stats["measured"] += 1
        decision = _decision_from_times(key, cands, times)
        _store(key, cands, decision)
        return decision


def choose(op, x_shape, w_shape=None, stride=1, pad=0, dtype="float32", pool_hw=None,
           mode=None, **_ignored):
    """The path name for backend="auto" (called by ``fastconv.backends.choose_auto``)."""
    if op == "pool":
        if pool_hw is None:
            path, _ = static_choice(op, x_shape, None)
            return path
        w_shape = pool_hw
    return decide(op, x_shape, w_shape, stride, pad, dtype, mode=mode).path


# ------------------------------------------------------------- public helpers

def _spec_to_args(spec, dtype):
    """One layer spec -> (op, x_shape, w_shape, stride, pad, dtype, mode)."""
    if isinstance(spec, dict):
        d = np.dtype(spec.get("dtype", dtype))
        stride, pad = spec.get("stride", 1), spec.get("pad", 0)
        if "x_shape" in spec:
            op = spec.get("op", "conv" if spec.get("mode") is None else "pool")
            return (op, tuple(spec["x_shape"]), tuple(spec["w_shape"]), stride, pad, d,
                    spec.get("mode"))
        x_shape = (spec["N"], spec["C"], spec["H"], spec["W"])
        if "K" in spec:
            return "conv", x_shape, (spec["K"], spec["C"], spec["FH"], spec["FW"]), stride, pad, d, None
        return "pool", x_shape, (spec["FH"], spec["FW"]), stride, pad, d, spec.get("mode", "max")
    if isinstance(spec, (tuple, list)) and 2 <= len(spec) <= 4:
        x_shape, w_shape, *rest = spec
        stride, pad = (list(rest) + [1, 0][len(rest):])[:2]
        return "conv", tuple(x_shape), tuple(w_shape), stride, pad, np.dtype(dtype), None
    raise TypeError(
        f"a layer spec must be a dict (layers.json style: N, C, H, W, K, FH, FW, stride, pad; "
        f"or x_shape, w_shape) or a tuple (x_shape, w_shape[, stride[, pad]]), got {spec!r}")


def autotune(layers, dtype="float32", force=False):
    """Measure and store the "auto" choice for each layer ahead of time -> list of Decisions.

    layers: a path to a JSON file shaped like ``bench/layers.json`` (its
    "layers" and "pooling" lists), or a list of specs, each a dict in that
    format (N, C, H, W, K, FH, FW, stride, pad; pooling specs have no K and a
    "mode"), a dict with "x_shape" and "w_shape", or a tuple
    ``(x_shape, w_shape[, stride[, pad]])``. dtype applies where a spec names
    none. Known keys are read from the cache unless ``force=True``. Runs even
    when FASTCONV_AUTOTUNE=0 (an explicit request), but "auto" only uses the
    stored choices when autotuning is on.
    """
    if isinstance(layers, (str, os.PathLike)):
        with open(layers, encoding="utf-8") as f:
            suite = json.load(f)
        layers = list(suite.get("layers", [])) + list(suite.get("pooling", []))
    decisions = []
    for spec in layers:
        op, x_shape, w_shape, stride, pad, d, mode = _spec_to_args(spec, dtype)
        # An explicit autotune() call measures even under FASTCONV_AUTOTUNE=0.
        decisions.append(decide(op, x_shape, w_shape, stride, pad, d, mode=mode,
                                force=force, ignore_env=True))
    return decisions


def clear_cache():
    """Forget every stored choice (all namespaces) and this process's memory -> files removed."""
    removed = 0
    root = cache_root() / "autotune"
    with _lock:
        _memory.clear()
        if root.is_dir():
            for f in root.glob("*/*.json"):
                try:
                    f.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass  # another process removed it first
            for d in root.iterdir():
                if d.is_dir():
                    for leftover in d.glob(".tmp-*"):
                        # Only stale ones: a young one may be a concurrent write.
                        try:
                            if time.time() - leftover.stat().st_mtime > 60:
                                leftover.unlink()
                        except FileNotFoundError:
                            pass
                    try:
                        d.rmdir()
                    except OSError:
                        pass  # a concurrent writer just put a file there
    return removed

