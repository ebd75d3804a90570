"""The one place where Numba compile options for the CPU paths are chosen."""
import functools
import os
import sys
import threading
import warnings

import numba
import numba.core.event

# cache=True: compiled machine code is written next to the module, so a fresh
#   process pays the compile once per machine, not once per run.
# fastmath: only the flags that let LLVM reorder and fuse sums (which is what
#   vectorises a reduction); 'nnan'/'ninf' are left out on purpose because max
#   pooling pads with -inf and must see it.
# error_model='numpy': no Python-style ZeroDivisionError checks in hot loops.
JIT_OPTIONS = dict(
    cache=True,
    nogil=True,
    fastmath={"reassoc", "contract", "nsz"},
    error_model="numpy",
)


# -------------------------------------------------------- first-use notice
#
# A path's kernels are compiled the first time they run on a machine (later
# processes load them from Numba's cache), which takes seconds. Numba's
# "numba:compile" event fires only after a cache miss, right before a compile:
# at the first one for a path and dtype, one line says so. Silence it with
# ``warnings.filterwarnings("ignore", category=fastconv.CompileNotice)``.

class CompileNotice(UserWarning):
    """fastconv is compiling a path's kernels (once per machine, dtype and version)."""


# Rough compile times on this project's 2-core machine, for the notice.
COMPILE_SECONDS = {"im2col": 4, "direct": 12, "cuda": 10}
_noticed = set()


class _FirstCompileListener(numba.core.event.Listener):
    def on_start(self, event):
        func = getattr(event.data.get("dispatcher"), "py_func", None)
        module = getattr(func, "__module__", "") or ""
        if not module.startswith("fastconv.kernels."):
            return
        path = module.rsplit(".", 1)[1]
        dtype = next((str(a.dtype) for a in event.data.get("args", ())
                      if isinstance(a, numba.types.Array)), "")
        if (path, dtype) in _noticed:
            return
        _noticed.add((path, dtype))
        what = f"the {path} path's kernels" + (" (pooling on every CPU path uses them)"
                                                if path == "direct" else "")
        warn_at_caller(f"fastconv: compiling {what} for {dtype or 'these arguments'} (first use "
                       f"on this machine, ~{COMPILE_SECONDS.get(path, 5)} s; later runs load them "
                       f"from Numba's cache)")

    def on_end(self, event):
        pass


numba.core.event.register("numba:compile", _FirstCompileListener())

_INTERNAL = ("fastconv", "numba", "contextlib", "llvmlite")


def warn_at_caller(message, category=CompileNotice):
    """warnings.warn, attributed to the first frame outside fastconv and Numba (the
    user's line that triggered the work), so the notice names a line the user wrote."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in _INTERNAL:
        frame = frame.f_back
    if frame is None:
        warnings.warn(message, category, stacklevel=2)
        return
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                           module=frame.f_globals.get("__name__"),
                           registry=frame.f_globals.setdefault("__warningregistry__", {}))


def jit(fn=None, *, parallel=False):
    """``@jit`` / ``@jit(parallel=True)``: ``numba.njit`` with fastconv's options."""
    def wrap(f):
        return numba.njit(parallel=parallel, **JIT_OPTIONS)(f)

    return wrap(fn) if fn is not None else wrap


# ------------------------------------------------------------------ threads
#
# The im2col path alternates Numba parallel loops (unroll, col2im) with BLAS
# matrix products, and the two thread pools fight: a pool that has just
# finished keeps its threads spinning, and on a machine with as many threads
# as cores the spinners steal the cores the other pool needs.
#
# The arrangement: Numba's 'workqueue' layer, whose threads sleep as soon as a
# parallel loop ends, unless the user chose a layer (NUMBA_THREADING_LAYER).
# Measured here (2 cores, numpy's OpenBLAS, ResNet-18 stage 1 forward as a
# fraction of the sgemm rate of the same shape, fresh processes, best of 8-10;
# the machine was shared, so single runs scatter widely): Numba's default
# OpenMP layer 16-18% in every run, OpenMP with OMP_WAIT_POLICY=PASSIVE mostly
# 20-40%, workqueue mostly 70-100%. Workqueue is also fork-safe, which GNU
# OpenMP is not.
#
# Its one restriction: two Python threads must never launch parallel kernels
# at the same time (workqueue aborts the process). fastconv's kernels hold
# ``launch_lock`` around their launches; user code that calls its own
# parallel Numba functions from several threads should choose
# NUMBA_THREADING_LAYER=omp (or tbb) itself, which fastconv then keeps.
#
# The other direction, OpenBLAS spinning (~0.1 s) after a product, can only be
# shortened before numpy loads OpenBLAS (export OPENBLAS_THREAD_TIMEOUT=1) or
# with a new dependency (threadpoolctl); neither is done here.

launch_lock = threading.RLock()


def one_launch_at_a_time(fn):
    """Decorator for a path's public functions: hold ``launch_lock`` while they run."""
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with launch_lock:
            return fn(*args, **kwargs)
    return locked


def _threads_started():
    try:
        numba.threading_layer()
    except ValueError:                  # "Threading layer is not initialized."
        return False
    return True


def arrange_threads():
    """Choose the workqueue layer unless the user chose one or Numba's threads already run."""
    if "NUMBA_THREADING_LAYER" in os.environ or _threads_started():
        return
    numba.config.THREADING_LAYER = "workqueue"


arrange_threads()
