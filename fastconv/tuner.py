"""Measured choice of compute path for ``backend="auto"``, remembered on disk.

This module is the "auto" policy; it sits above the dispatch table
(``fastconv.backends``), which knows nothing of it.

The first time ``backend="auto"`` meets a key (op, x shape with the batch
size rounded up to a power of two, filter shape, stride, pad, dtype, Numba
thread count), it times the candidate paths on identical random inputs with
the shared timing protocol (``fastconv.timing``: a warm-up call that absorbs
compilation, then interleaved rounds) and keeps the path with the smallest
forward + backward time, unless that beats the static rule's pick by less
than ``MARGIN``. The winner is written to a small JSON file, one file per
key, so later calls and later processes reuse it without measuring. A
forward-only call of the same problem (``conv2d``, or under ``no_grad``) is
not timed again: it runs the path whose forward was fastest in those
timings, unless that beats the winner's forward by less than ``MARGIN``
(:func:`forward_pick`).

Which paths compete (the *candidates*): every path of the table that
supports the spec, except ``naive`` (the oracle, never the fastest once a
compiled path exists) and ``cuda`` (host arrays never go to the GPU behind
the caller's back; device arrays are sent to ``cuda`` by
``fastconv.functional`` before "auto" is asked). With a single candidate
nothing is measured.

Measuring never touches the caller's arrays: it runs on its own random inputs,
and the caller's call then runs on the chosen path alone, so ``auto`` returns
exactly what that path returns.

Where the choices live:
    ``$FASTCONV_CACHE_DIR/autotune/<namespace>/`` when the variable is set, else
    the user cache directory: ``$XDG_CACHE_HOME/fastconv`` or
    ``~/.cache/fastconv`` (``~/Library/Caches/fastconv`` on macOS,
    ``%LOCALAPPDATA%\\fastconv\\Cache`` on Windows). ``<namespace>`` names the
    CPU model, the Numba, NumPy and fastconv versions and a digest of the
    kernels' source: a choice measured on another CPU or with other compiled
    code is never reused. Each file is
    written to a temporary name and moved into place with ``os.replace``, so a
    reader in another process sees the old file or the new one, never half of
    one; two processes measuring the same key at once both write a complete
    file and the last one stays.

Turning measurement off: ``FASTCONV_AUTOTUNE=0`` (also ``off``/``false``/``no``)
makes "auto" follow the static rule in :func:`static_choice` and neither read
nor write the cache; results are then reproducible from one machine to the
next.

A damaged, unreadable or foreign file in the cache (wrong types, a FIFO, a
directory, a huge or deeply nested JSON) is ignored with one warning; the key
is measured again and the file replaced.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import re
import stat
import sys
import threading
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numba
import numpy as np

from . import backends, io, timing
from .kernels._jit import warn_at_caller
from .geometry import as_pair
from .spec import (POOL_DEFAULTS, ConvSpec, PoolSpec, as_forward_only, batch_bucket, conv_spec,
                   pool_spec)

ENV_CACHE_DIR = "FASTCONV_CACHE_DIR"
ENV_AUTOTUNE = "FASTCONV_AUTOTUNE"
_OFF_VALUES = ("0", "off", "false", "no")
FILE_FORMAT = 1

# Static rule, for FASTCONV_AUTOTUNE=0 and for poolings "auto" cannot time
# (see static_choice): a convolution whose receptive field C*FH*FW holds at
# most this many values goes to the direct loops, larger ones to im2col + GEMM.
DIRECT_MAX_FIELD = 64

# The order in which the static rule falls back when the path it wants is missing.
AUTO_PREFERENCE = ("im2col", "direct", "naive")

# A measured winner replaces the static rule's pick only when it is at least
# this much faster: closer than that, the two are within the noise of a
# shared machine, and a choice that flips from run to run helps nobody.
MARGIN = 0.10

# Timing stops after a round in which one path took at most this fraction of
# every other's time (forward + backward, best runs): a gap that wide is far
# beyond MARGIN and the noise of a shared machine, so more rounds would not
# change the choice.
DECISIVE = 0.5


@dataclass(frozen=True)
class Decision:
    """What "auto" chose for one key, and why.

    path: the chosen path. source: "measured" (timed just now), "cache" (read
    from disk or memory, measured earlier), "static" (rule, no timing), "only"
    (a single candidate), "shared" (every candidate runs the very same kernels
    for this problem, e.g. pooling on im2col and direct: the static rule's
    pick, nothing timed). times_ms: {path: {"forward": ms, "backward": ms}}
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

    It reads ``<cpu model>-<digest>_numba-<v>_numpy-<v>_fastconv-<v>-<kernels>``;
    the first digest covers the model name, the machine type and the CPU name
    and features LLVM targets; ``<kernels>`` is a digest of the compute
    kernels' source (``kernels_digest``), so that an install of changed
    kernels under an unchanged version number (from a clone, say) measures
    again instead of reusing choices made for the old code.
    """
    return _namespace(cpu_model(), _fastconv_version())


@lru_cache(maxsize=None)
def _namespace(model, fastconv_version):
    # Cached: "auto" asks for it on every call.
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", model).strip("-")[:48] or "cpu"
    digest = hashlib.sha1(f"{model}|{platform.machine()}|{_cpu_details()}".encode()).hexdigest()[:8]
    return (f"{slug}-{digest}_numba-{numba.__version__}_numpy-{np.__version__}"
            f"_fastconv-{fastconv_version}-{kernels_digest()}")


def kernels_digest(folder=None):
    """8 hex digits of SHA-1 over the ``.py`` files of ``folder`` (default: the
    installed ``fastconv.kernels``, read once per process), by name and content,
    in name order."""
    if folder is None:
        return _installed_kernels_digest()
    h = hashlib.sha1()
    for path in sorted(Path(folder).glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:8]


@lru_cache(maxsize=None)
def _installed_kernels_digest():
    from . import kernels

    return kernels_digest(Path(kernels.__file__).parent)


def _fastconv_version():
    # Read at call time: this module is imported while fastconv/__init__ runs.
    return getattr(sys.modules.get("fastconv"), "__version__", "unknown")


def cache_dir():
    """Where this machine's and these versions' choices are stored."""
    return cache_root() / "autotune" / namespace()


# ----------------------------------------------------------------------- keys

def current_threads() -> int:
    """``numba.get_num_threads()``: part of every key, since paths scale differently."""
    return numba.get_num_threads()


def make_key(op, x_shape, w_shape, stride, pad, dtype, threads=None, mode=None, *,
             dilation=1, groups=1, options=None, input_grad=True) -> dict:
    """The cache key as a dict of plain JSON values.

    op: "conv" or "pool". x_shape: (N, C, H, W), whose batch N is stored as
    its bucket (:func:`fastconv.spec.batch_bucket`, the next power of two), so
    one decision serves a family of batch sizes. w_shape: (FN, C // groups,
    FH, FW) for a convolution, the window (PH, PW) for a pooling. mode:
    "max"/"avg" for a pooling, None for a convolution. threads defaults to
    current_threads(). A convolution's dilation and groups, and a pooling's
    options (ceil_mode, count_include_pad, divisor_override, dilation), enter
    the key only when they differ from their defaults, under their own names:
    plain layers keep the keys (and files) they always had, and a dilated,
    grouped or optioned layer never shares a plain one's choice. So does
    ``input_grad`` (False: a backward without dx, timed as such).
    """
    extra = {}
    if as_pair(dilation, "dilation") != (1, 1):
        extra["dilation"] = list(as_pair(dilation, "dilation"))
    if int(groups) != 1:
        extra["groups"] = int(groups)
    if not input_grad:
        extra["input_grad"] = False
    key = {
        "op": op,
        "x_shape": [batch_bucket(int(x_shape[0]))] + [int(s) for s in x_shape[1:]],
        "w_shape": [int(s) for s in w_shape],
        "stride": list(as_pair(stride, "stride")),
        "pad": list(as_pair(pad, "pad")),
        "dtype": np.dtype(dtype).name,
        "threads": int(current_threads() if threads is None else threads),
        "mode": mode,
        **extra,
    }
    for name, value in (options or {}).items():
        key[name] = list(value) if isinstance(value, tuple) else value
    return key


def spec_key(spec: ConvSpec | PoolSpec, threads=None) -> dict:
    """make_key for a spec."""
    if spec.op == "conv":
        return make_key("conv", spec.x_shape, spec.w_shape, spec.stride, spec.pad, spec.dtype,
                        threads, dilation=spec.dilation, groups=spec.groups,
                        input_grad=spec.input_grad)
    options = {name: value for name, value in spec.options.items()
               if value != POOL_DEFAULTS[name]}
    return make_key("pool", spec.x_shape, spec.pool_hw, spec.stride, spec.pad, spec.dtype,
                    threads, spec.mode, options=options)


def _spec_of(op, x_shape, w_shape, stride, pad, dtype, mode, dilation=1, groups=1):
    if op == "conv":
        return conv_spec(x_shape, w_shape, stride, pad, dtype, dilation=dilation, groups=groups)
    if op == "pool":
        return pool_spec(x_shape, *w_shape, stride, pad, mode or "max", dtype)
    raise ValueError(f"op must be 'conv' or 'pool', got {op!r}")


def _key_tuple(key):
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(key.items()))


def _key_file(key):
    text = json.dumps(key, sort_keys=True)
    return f"{key['op']}-{hashlib.sha1(text.encode()).hexdigest()[:20]}.json"


# ----------------------------------------------------------------- candidates

def candidates(spec: ConvSpec | PoolSpec | None = None) -> list[str]:
    """The paths "auto" times for host arrays: those of the table but naive and cuda
    (the oracle, and the GPU, which host arrays never reach behind the caller's
    back) that support ``spec``. naive competes only when nothing else can."""
    fast = [p for p in backends.PATHS if p not in ("naive", "cuda")
            and (spec is None or backends.get_path(p).supports(spec))]
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
    Pooling: ``direct``. A missing path falls back along AUTO_PREFERENCE.
    stride and pad do not enter the rule today.
    """
    available = candidates() if available is None else list(available)
    if op == "conv":
        reduction = w_shape[1] * w_shape[2] * w_shape[3]
        if reduction <= DIRECT_MAX_FIELD:
            want, why = "direct", f"receptive field C*FH*FW={reduction} <= {DIRECT_MAX_FIELD}"
        else:
            want, why = "im2col", f"receptive field C*FH*FW={reduction} > {DIRECT_MAX_FIELD}"
    else:
        want, why = "direct", "pooling"
    if want in available:
        return want, f"static rule: {want} ({why})"
    for name in AUTO_PREFERENCE:
        if name in available:
            return name, f"static rule: {want} ({why}) is not available, next preference"
    return available[0], "static rule: the only path available"


def kernel_groups(spec: ConvSpec | PoolSpec, cands: list[str]) -> list[list[str]]:
    """The candidates grouped by the functions they run for ``spec`` (in ``cands`` order).

    Paths of one group call the very same forward and backward functions (im2col
    and direct both pool with ``fastconv.kernels.cpu_pooling``): timing them
    against each other would compare identical code, so "auto" times one path
    per group, and nothing at all when there is one group.
    """
    groups = {}
    for path in cands:
        module = backends.get_path(path)
        if spec.op == "conv":
            kernels = (module.conv_forward, module.conv_backward)
        else:
            kernels = (module.pool_forward, module.pool_backward)
        groups.setdefault(kernels, []).append(path)
    return list(groups.values())


def _static(spec, cands):
    w = spec.w_shape if spec.op == "conv" else spec.pool_hw
    return static_choice(spec.op, spec.x_shape, w, cands, spec.stride, spec.pad)


def autotune_enabled() -> bool:
    """False when FASTCONV_AUTOTUNE is set to 0/off/false/no."""
    return os.environ.get(ENV_AUTOTUNE, "1").strip().lower() not in _OFF_VALUES


def _format_times(times_ms):
    ranked = sorted(times_ms.items(), key=lambda kv: kv[1]["forward"] + kv[1]["backward"])
    return ", ".join(f"{p} {t['forward'] + t['backward']:.3g} ms" for p, t in ranked)


# --------------------------------------------------------------- the cache

# Counters a test (or a curious user) can read: how often "auto" measured,
# found a choice on disk, or in this process's memory.
stats = {"measured": 0, "disk": 0, "memory": 0}

_memory = {}            # (directory, candidates, key) -> Decision
_by_spec = {}           # (spec, threads) -> path: the hot path of choose()
_lock = threading.RLock()
_warned = set()         # which one-time warnings were given

# A stored choice is a few hundred bytes; anything much larger is not one of ours.
_MAX_FILE_BYTES = 64 * 1024


def _warn_once(kind, message):
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _read_regular_file(path):
    """The text of ``path`` if it is a small regular file, else None (never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_FILE_BYTES:
            return None
        return f.read(_MAX_FILE_BYTES + 1).decode("utf-8", errors="strict")


def _valid_times(times_ms, cands):
    if not isinstance(times_ms, dict) or set(times_ms) != set(cands):
        return False
    for t in times_ms.values():
        if not (isinstance(t, dict) and set(t) >= {"forward", "backward"}):
            return False
        for v in (t["forward"], t["backward"]):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                return False
    return True


def _read(path, key, cands):
    """The stored Decision at ``path`` if it is one of ours, complete and still valid, else None.

    Anything else (missing, unreadable, not a regular file, too large, not
    JSON, nested beyond reason, fields of the wrong type) reads as None, so
    the key is measured again and the file replaced.
    """
    if not os.path.exists(path):
        return None
    try:
        text = _read_regular_file(path)
        data = json.loads(text) if text is not None else None
    except (OSError, ValueError, RecursionError):
        data = None
    stored = data.get("candidates") if isinstance(data, dict) else None
    whole = (isinstance(data, dict) and data.get("format") == FILE_FORMAT
             and isinstance(data.get("key"), dict) and isinstance(stored, list)
             and all(isinstance(p, str) for p in stored)
             and isinstance(data.get("path"), str) and data["path"] in stored
             and _valid_times(data.get("times_ms"), stored)
             and isinstance(data.get("measured_at", ""), str))
    if not whole:
        _warn_once("damaged", f"fastconv ignored a damaged auto-tuning file {path}; the "
                              f"choice is measured again and the file replaced")
        return None
    if data["key"] != key or stored != cands:     # measured among other paths: stale
        return None
    return _as_cached(Decision(path=data["path"], reason="", source="cache", key=key,
                               times_ms=data["times_ms"], measured_at=data.get("measured_at", "?")))


def _write(directory, key, cands, decision):
    """Store a decision atomically (``fastconv.io.atomic_write_text``)."""
    payload = {
        "format": FILE_FORMAT, "key": key, "candidates": cands, "path": decision.path,
        "times_ms": decision.times_ms, "measured_at": decision.measured_at,
        "score": "forward + backward, best of the timed runs",
        "cpu": cpu_model(), "numba": numba.__version__, "numpy": np.__version__,
        "fastconv": _fastconv_version(),
    }
    try:
        target = directory / _key_file(key)
        if target.is_dir():             # a directory in the way is not ours to remove
            raise IsADirectoryError(f"{target} is a directory")
        io.atomic_write_text(target, json.dumps(payload, indent=1, sort_keys=True), suffix=".json")
    except OSError as err:
        _warn_once("unwritable", f"fastconv could not store its auto-tuning choice in "
                                 f"{directory} ({err}); choices are kept in memory for this "
                                 f"process only. Set {ENV_CACHE_DIR} to a writable directory.")


def _decision_from_times(key, cands, times, static_path):
    """The measured Decision: the fastest path, unless it beats the static rule's by less
    than MARGIN (then the rule's path: a small difference is as likely noise)."""
    times_ms = {p: {"forward": float(times[p]["forward"]), "backward": float(times[p]["backward"])}
                for p in cands}
    total = {p: t["forward"] + t["backward"] for p, t in times_ms.items()}
    best = min(cands, key=total.get)
    note = ""
    if static_path in total and best != static_path and total[best] > (1 - MARGIN) * total[static_path]:
        best, note = static_path, f"; within {MARGIN:.0%} of each other, the static rule's pick"
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return Decision(path=best, reason=f"measured now: {_format_times(times_ms)} "
                                      f"(forward + backward){note}",
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
        _by_spec.clear()


def _times_ms(path_times):
    return {p: {"forward": t.forward.best_s * 1e3, "backward": t.backward.best_s * 1e3}
            for p, t in path_times.items()}


def remember(spec: ConvSpec | PoolSpec, times: dict) -> Decision:
    """Store a choice from timings measured elsewhere (``fastconv.explain``) -> Decision.

    times: {path: PathTimes} covering every candidate.
    """
    cands = candidates(spec)
    missing = [p for p in cands if p not in times]
    if missing:
        raise ValueError(f"times must cover every candidate path {cands}; missing {missing}")
    key = spec_key(spec)
    decision = _decision_from_times(key, cands, _times_ms({p: times[p] for p in cands}),
                                    _static(spec, cands)[0])
    _store(key, cands, decision)
    return decision


def decide_spec(spec: ConvSpec | PoolSpec, measure=True, force=False,
                ignore_env=False) -> Decision:
    """The Decision "auto" makes for ``spec``.

    Order: this process's memory, then the disk cache, then (``measure=True``)
    a fresh measurement with the shared timing protocol (``fastconv.timing``:
    compile and cache-load time stay out of it) that is stored. With
    ``measure=False`` an unknown key gets the static rule and nothing is
    stored; ``force=True`` re-measures even a known key. With
    FASTCONV_AUTOTUNE=0 (unless ``ignore_env``), the static rule decides and
    the cache is neither read nor written.
    """
    cands = candidates(spec)
    key = spec_key(spec)
    if len(cands) == 1:
        return Decision(cands[0], "the only candidate path available", "only", key)
    if not ignore_env and not autotune_enabled():
        path, why = _static(spec, cands)
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
        groups = kernel_groups(spec, cands)
        if len(groups) == 1:
            # one implementation under several names: nothing to compare, and
            # timing it would only cost its compile time once more per name
            path, why = _static(spec, cands)
            decision = Decision(path, f"{', '.join(cands)} run the same kernels for this "
                                      f"problem, nothing to time; {why}", "shared", key)
            _memory[mem_key] = decision
            return decision
        if not measure:
            path, why = _static(spec, cands)
            return Decision(path, f"{why} (not measured yet)", "static", key)
        # one path per group is timed; the others of its group get its figures
        static_path = _static(spec, cands)[0]
        timed = [static_path if static_path in g else g[0] for g in groups]
        _announce(spec, timed, directory, static_path)
        measured = _times_ms(timing.time_paths(spec, timed, decisive=DECISIVE))
        times = {p: measured[t] for g, t in zip(groups, timed) for p in g}
        stats["measured"] += 1
        decision = _decision_from_times(key, cands, times, static_path)
        _store(key, cands, decision)
        return decision


def describe(spec: ConvSpec | PoolSpec) -> str:
    """One problem in a few words, for notices: 'conv x=(N, C, H, W) W=(...)' or 'max pool ...'."""
    x = "x=(" + ", ".join(map(str, spec.x_shape)) + ")"
    if spec.op == "conv":
        no_dx = "" if spec.input_grad else ", no dx"
        return f"conv {x} W=({', '.join(map(str, spec.w_shape))}) {spec.dtype}{no_dx}"
    ph, pw = spec.pool_hw
    return f"{spec.mode} pool {x} window {ph}x{pw} {spec.dtype}"


def _announce(spec, paths, directory, static_path):
    """One line before "auto" times paths: the first use of a shape can take seconds,
    tens of them when the paths' kernels are not compiled yet, so the line also says
    how to skip the timing (a ``CompileNotice``; ``warnings.filterwarnings("ignore",
    category=CompileNotice)`` silences it with the compile notices)."""
    warn_at_caller(f"fastconv: backend='auto' is timing {', '.join(paths)} on {describe(spec)} "
                   f"to choose the fastest (once per machine and shape, each path compiled "
                   f"first if it never ran here; the choice is stored in {directory}). "
                   f"{ENV_AUTOTUNE}=0 skips the timing and runs the static rule's pick, "
                   f"{static_path}; `fastconv autotune` measures ahead of time")


def decide(op, x_shape, w_shape, stride=1, pad=0, dtype="float32", mode=None,
           measure=True, force=False, ignore_env=False, *, dilation=1,
           groups=1) -> Decision:
    """:func:`decide_spec` for shapes: op "conv" (w_shape (FN, C // groups, FH, FW)) or "pool"
    (w_shape the window (PH, PW), mode "max"/"avg")."""
    spec = _spec_of(op, x_shape, w_shape, stride, pad, dtype, mode, dilation, groups)
    return decide_spec(spec, measure=measure, force=force, ignore_env=ignore_env)


def forward_pick(decision: Decision) -> str:
    """The path a forward-only call (``conv2d``, ``no_grad``) of ``decision``'s problem runs.

    The measurement is the training call's, which timed each path's forward and
    backward apart: the path whose forward was fastest, unless it beats the
    decision's own path by less than MARGIN. A decision without timings (static
    rule, a single candidate, shared kernels) is followed as it is. Measured on
    ResNet-18's stem (8x3x224x224, 64 7x7 filters, stride 2): im2col wins the
    training call (85 against direct's 124 ms, forward + backward) while direct's
    forward takes 0.55x im2col's.
    """
    forward = {p: t["forward"] for p, t in decision.times_ms.items()}
    if decision.path not in forward:
        return decision.path
    best = min(forward, key=forward.get)
    return best if forward[best] < (1 - MARGIN) * forward[decision.path] else decision.path


def choose(spec: ConvSpec | PoolSpec) -> str:
    """The path name backend="auto" runs for host arrays described by ``spec``.

    The hot path: a spec met before in this process (with the same thread
    count) is one dictionary look-up.
    """
    threads = numba.get_num_threads()
    path = _by_spec.get((spec, threads))
    if path is None:
        if spec.op == "conv" and spec.forward_only:
            # one measurement per problem, the training call's; a forward-only call
            # is never timed on its own, it takes the fastest forward of those timings
            path = forward_pick(decide_spec(as_forward_only(spec, False)))
        else:
            path = decide_spec(spec).path
        _by_spec[(spec, threads)] = path
    return path


# ------------------------------------------------------------- public helpers

def layer_spec(spec, dtype) -> ConvSpec | PoolSpec:
    """One layer of a suite (``bench/layers.json`` style dict, or a tuple) -> its checked spec.

    Dicts: N, C, H, W with K, FH, FW (a convolution; optional stride, pad,
    dilation, groups: W is then (K, C // groups, FH, FW)) or FH, FW without K
    (a pooling; optional mode); or x_shape, w_shape (optional op, mode).
    Tuples: (x_shape, w_shape[, stride[, pad]]).
    """
    if isinstance(spec, dict):
        d = np.dtype(spec.get("dtype", dtype))
        stride, pad = spec.get("stride", 1), spec.get("pad", 0)
        dilation, groups = spec.get("dilation", 1), spec.get("groups", 1)
        if "x_shape" in spec:
            op = spec.get("op", "conv" if spec.get("mode") is None else "pool")
            return _spec_of(op, tuple(spec["x_shape"]), tuple(spec["w_shape"]), stride, pad, d,
                            spec.get("mode"), dilation, groups)
        x_shape = (spec["N"], spec["C"], spec["H"], spec["W"])
        if "K" in spec:
            if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
                raise ValueError(f"groups must be an int >= 1, got {groups!r} in {spec!r}")
            w_shape = (spec["K"], spec["C"] // groups, spec["FH"], spec["FW"])
            return _spec_of("conv", x_shape, w_shape, stride, pad, d, None, dilation, groups)
        return _spec_of("pool", x_shape, (spec["FH"], spec["FW"]), stride, pad, d,
                        spec.get("mode", "max"))
    if isinstance(spec, (tuple, list)) and 2 <= len(spec) <= 4:
        x_shape, w_shape, *rest = spec
        stride, pad = (list(rest) + [1, 0][len(rest):])[:2]
        return _spec_of("conv", tuple(x_shape), tuple(w_shape), stride, pad, np.dtype(dtype), None)
    raise TypeError(
        f"a layer spec must be a dict (layers.json style: N, C, H, W, K, FH, FW, stride, pad, "
        f"optional dilation, groups; or x_shape, w_shape) or a tuple (x_shape, w_shape[, "
        f"stride[, pad]]), got {spec!r}")


def autotune(layers, dtype="float32", force: bool = False) -> list[Decision]:
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
        # An explicit autotune() call measures even under FASTCONV_AUTOTUNE=0.
        decisions.append(decide_spec(layer_spec(spec, dtype), force=force, ignore_env=True))
    return decisions


def clear_cache() -> int:
    """Forget every stored choice (all namespaces) and this process's memory -> files removed."""
    removed = 0
    root = cache_root() / "autotune"
    with _lock:
        _memory.clear()
        _by_spec.clear()
        if root.is_dir():
            for f in root.glob("*/*.json"):
                if not f.is_file():
                    continue  # a directory (or FIFO) in the way is not ours to remove
                try:
                    f.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass  # another process removed it first
            for d in root.iterdir():
                if d.is_dir():
                    # only leftovers: a young temporary file of a live process may
                    # be a concurrent write
                    io.remove_stale_temp_files(d, max_age=60)
                    try:
                        d.rmdir()
                    except OSError:
                        pass  # a concurrent writer just put a file there
    return removed
