"""The one place where Numba compile options for the CPU paths are chosen."""
import ctypes
import functools
import importlib.metadata
import os
import sys
import threading
import time
import warnings

import numba
import numba.core.event
from numba.core import cgutils
from numba.extending import intrinsic

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


# Rough compile times of a path's convolution kernels (forward and backward) on
# this project's 2-core machine, for the notice. Measured (2026-12-02, cold
# Numba cache, the README example and `fastconv train`): im2col 7-10 s, direct
# 19 s without dx and 31 s with it, CPU pooling 5-7 s, winograd 12 s (about
# 6 s more with its F(4x4) transform kernels, measured later the same day;
# 22 and 29 s, two runs, once its filter transforms had become loops too;
# 58 s, forward 21 and backward 37, once its fused kernels had come, which
# compile the direct path's register tiles into themselves).
COMPILE_SECONDS = {"im2col": 9, "direct": 30, "cpu_pooling": 6, "winograd": 55, "cuda": 10}
_noticed = set()


# Seconds this process spent compiling fastconv's kernels (outermost compiles
# only: a helper or a Numba overload compiled inside a kernel's compile is part
# of it). Loads from Numba's cache fire no compile event and are not counted.
_compiling = {"depth": 0, "start": None, "seconds": 0.0}


def compile_seconds() -> float:
    """Wall seconds this process has spent compiling fastconv's kernels so far."""
    return _compiling["seconds"]


class _FirstCompileListener(numba.core.event.Listener):
    def on_start(self, event):
        func = getattr(event.data.get("dispatcher"), "py_func", None)
        module = getattr(func, "__module__", "") or ""
        # Numba compiles under one lock: events nest, they never interleave
        _compiling["depth"] += 1
        if _compiling["depth"] == 1 and module.startswith("fastconv.kernels."):
            _compiling["start"] = time.perf_counter()
        if not module.startswith("fastconv.kernels."):
            return
        # the phase planes are the direct path's layout (CPU pooling uses them too)
        path = {"_planes": "direct"}.get(module.rsplit(".", 1)[1], module.rsplit(".", 1)[1])
        dtype = next((str(a.dtype) for a in event.data.get("args", ())
                      if isinstance(a, numba.types.Array)
                      and isinstance(a.dtype, numba.types.Float)), "")
        # a helper of scalars or integer arrays only (compiled inside a kernel's
        # compile, e.g. the finiteness scan's bit test) says nothing
        if not dtype or (path, dtype) in _noticed:
            return
        _noticed.add((path, dtype))
        what = ("the CPU pooling kernels (the im2col and direct paths pool with them)"
                if path == "cpu_pooling" else f"the {path} path's kernels")
        warn_at_caller(f"fastconv: compiling {what} for {dtype} (first use "
                       f"on this machine, ~{COMPILE_SECONDS.get(path, 5)} s; later runs load them "
                       f"from Numba's cache)")

    def on_end(self, event):
        _compiling["depth"] -= 1
        if _compiling["depth"] == 0 and _compiling["start"] is not None:
            _compiling["seconds"] += time.perf_counter() - _compiling["start"]
            _compiling["start"] = None


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


def jit(fn=None, *, parallel=False, in_order=False, inline=False):
    """``@jit`` / ``@jit(parallel=True)``: ``numba.njit`` with fastconv's options.

    A parallel kernel is wrapped in ``ParallelKernel`` and must be called from
    Python, not from other compiled code. ``in_order=True`` (serial functions)
    leaves 'reassoc' out of fastmath: LLVM then adds every sum's terms in the
    order the code does, so a result does not depend on how its loop was split.
    ``inline=True``: Numba pastes the function into each compiled caller
    (``inline='always'``), so LLVM sees the caller's constant arguments as
    constants, and a caller's stack array as its own.
    """
    def wrap(f):
        if parallel:
            return ParallelKernel(f)
        options = dict(JIT_OPTIONS)
        if in_order:
            options["fastmath"] = JIT_OPTIONS["fastmath"] - {"reassoc"}
        if inline:
            options["inline"] = "always"
        return numba.njit(**options)(f)

    return wrap(fn) if fn is not None else wrap


def vector_registers() -> tuple[int, int]:
    """(count, bytes) of the vector registers the machine code Numba compiles in this
    process may use: (32, 64) where the target CPU has AVX-512 (``+avx512f``),
    else (16, 32), AVX2's ymm0-15.

    The target is what Numba compiles for: the host's features, or
    ``NUMBA_CPU_FEATURES`` when that is set. Numba's cache keeps code per CPU
    name and features, so a kernel sized from this always runs on a target
    with these registers. LLVM vectorises with 256-bit registers even on
    AVX-512 CPUs (its tuning for them prefers that width) unless a function
    asks for more: ``prefer_wide_vectors``.
    """
    from numba.core.codegen import get_host_cpu_features
    features = numba.config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    return (32, 64) if "+avx512f" in features.split(",") else (16, 32)


def prefer_wide_vectors(builder):
    """Let LLVM vectorise the function that ``builder`` (an intrinsic's codegen) is
    building with the target's widest registers, 512 bits on AVX-512 CPUs: the
    LLVM function attribute ``"prefer-vector-width"="512"``. No effect elsewhere.

    llvmlite's attribute set validates enum attributes only, so the string
    attribute goes into the set as is, and llvmlite writes it verbatim after
    the function's parameter list, where LLVM reads it.
    ``tests/test_direct_regblock.py`` checks the machine code for 512-bit
    multiply-adds, so a llvmlite that stops writing it fails a test, not a
    benchmark.
    """
    if vector_registers()[1] == 64:
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')


def no_library_calls(builder):
    """Keep the copy loops of the function that ``builder`` (an intrinsic's codegen) is
    building as loops: the LLVM function attribute ``"no-builtins"``.

    LLVM's loop-idiom pass turns every loop that only copies a run of cells into
    a call to the C library's ``memmove``, whatever the run's length. For the
    runs of 2 to 16 cells that the Winograd transforms store per tile row and
    copy per map row, the call costs more than the copy: profiled on the
    F(4x4) input transform of an 8x256x14x14 layer, ``memmove`` took 45% of the
    time, and the attribute alone made the transform 0.66-0.77x as long on
    7x7 to 28x28 maps. Added to the attribute set as is, as in
    ``prefer_wide_vectors``; ``tests/test_winograd.py`` checks the compiled
    code for ``memmove`` calls.
    """
    set.add(builder.function.attributes, '"no-builtins"')


@intrinsic
def inline_copies(typingctx):
    """``inline_copies()`` in compiled code: ``no_library_calls`` on the function being
    compiled, for a ``prange`` body too (Numba compiles it as a function of its own)."""
    def codegen(context, builder, signature, args):
        no_library_calls(builder)
        return context.get_dummy_value()

    return numba.types.none(), codegen


def stack_array(context, builder, dtype, cells):
    """The code of an intrinsic that returns a 1-D C array of ``cells`` elements of
    ``dtype`` (a Numba type) on the stack, not the heap: one alloca in the function's
    entry block. LLVM then knows that no other array aliases it (so a loop that
    reads arrays and writes it needs no overlap test to vectorise), and with
    constant indices it keeps the cells in registers."""
    array_type = numba.types.Array(dtype, 1, "C")
    cell = context.get_value_type(dtype)
    itemsize = cgutils.intp_t(context.get_abi_sizeof(cell))
    array = context.make_array(array_type)(context, builder)
    context.populate_array(array, data=cgutils.alloca_once(builder, cell, size=cells),
                           shape=[cgutils.intp_t(cells)], strides=[itemsize],
                           itemsize=itemsize, meminfo=None)
    return array._getvalue()


# True in a child forked from a process whose GNU OpenMP threads had run:
# Numba terminates such a child as soon as it launches parallel code, so
# fastconv's kernels run a serial compile of themselves there instead.
_serial_only = False


class ParallelKernel:
    """A ``parallel=True`` kernel that falls back to a serial compile of itself
    where parallel launches are impossible (see ``_serial_only``)."""

    def __init__(self, f):
        self.parallel = numba.njit(parallel=True, **JIT_OPTIONS)(f)
        self._serial = None
        functools.update_wrapper(self, f)

    def __call__(self, *args):
        if not _serial_only:
            return self.parallel(*args)
        if self._serial is None:
            # not from the cache: it could hand back the parallel machine code
            self._serial = numba.njit(**dict(JIT_OPTIONS, cache=False))(self.parallel.py_func)
        return self._serial(*args)

    def __getattr__(self, name):
        # signatures, py_func, ...: those of the parallel dispatcher
        return getattr(self.parallel, name)


# ------------------------------------------------------------------ threads
#
# The im2col path alternates Numba parallel loops (unroll, col2im) with BLAS
# matrix products, and the two thread pools fight: a pool that has just
# finished keeps its threads spinning, and on a machine with as many threads
# as cores the spinners steal the cores the other pool needs.
#
# Three of Numba's layers avoid the spinning, and they differ in what they
# allow a program to do:
#   workqueue  threads sleep at once; aborts the process ("Concurrent access")
#              when two Python threads launch parallel code at the same time,
#              e.g. a program's own @njit(parallel=True) function.
#   omp        (GNU OpenMP) safe under threads, spins unless OMP_WAIT_POLICY
#              is PASSIVE, and terminates a forked child that launches
#              parallel code after its parent did ("fork() called from a
#              process already using GNU OpenMP"); in such a child
#              fastconv's kernels run serial compiles instead
#              (``ParallelKernel``), slower but alive.
#   tbb        safe under threads and after fork; workers sleep when idle.
#              Numba only finds the runtime of the 'tbb' package from PyPI
#              when its lib folder is on the loader's path, which it is not
#              in a virtual environment.
# A library must not choose for the program a layer that aborts valid
# programs, so fastconv does not force workqueue. It (1) loads the runtime
# of an installed 'tbb' package, so that Numba's own default order (tbb,
# then omp, then workqueue) finds it; (2) otherwise loads Numba's OpenMP
# layer at import, bound to its own runtime (below), with
# OMP_WAIT_POLICY=PASSIVE in the environment while that runtime loads and
# reads it, unless the program set the variable, so that where OpenMP is the
# layer its threads sleep after a loop. The variable is then removed again:
# child processes, and OpenMP runtimes of other names, see the program's
# environment. A layer the program chose (NUMBA_THREADING_LAYER,
# numba.config) is kept, and nothing changes once Numba's threads run. With
# the tbb runtime, or where the loader has no RTLD_DEEPBIND (not Linux), the
# variable is set for the process instead.
#
# Bound to its own runtime: torch, for one, brings its own copy of GNU
# OpenMP and loads it into the global symbol scope at import. Numba's OpenMP
# layer, loaded after it, would resolve its OpenMP calls to that copy, whose
# threads spin. Measured (2 threads, medians of 9 calls, 4 alternating
# processes each way): with torch imported before fastconv, im2col forward
# took 2.8x the time of the other order on an 8x64x56x56 layer (64-72
# against 22-27 ms) and 4-6x on LeNet's second layer (8.0 against 1.4-1.9
# ms). Loaded with RTLD_DEEPBIND, the layer calls the runtime it was linked
# against, a copy of its own that reads the environment when it loads: 22-23
# and 1.2-1.9 ms again.
#
# The other order has a cost fastconv cannot remove: torch imported after
# fastconv finds a GNU OpenMP of its soname (libgomp.so.1) already loaded,
# Numba's, and uses it, threads that sleep between loops included. Measured
# (torch 2.13, 2 threads, medians of 21 calls, 6 alternating processes):
# torch's convolutions took 1.77x (strided 5x5), 2.34x (LeNet's conv2),
# 1.87x (a 1x1 on 17x17 maps), 1.15x (ResNet's 56x56 3x3) and 1.04x (its 7x7
# stage) the time of a process without fastconv; imported before fastconv,
# 0.92-1.09x. Hence the README's advice, and the benchmarks' order: torch
# first.
#
# Measured here (2 cores shared with several busy users, numpy's OpenBLAS;
# im2col forward of an 8x64x56x56 float32 layer, 64 3x3 filters, pad 1, as
# a fraction of numpy sgemm on the same GEMM shape timed in the same process
# before Numba's threads started; fresh processes, 5 interleaved rounds,
# median [range]; load average 8-10 on the 2 cores, so single runs scatter
# widely):
#   workqueue 1.16 [0.30-3.14]    omp, default spinning 0.62 [0.19-0.85]
#   omp + OMP_WAIT_POLICY=PASSIVE 0.92 [0.57-1.16]    tbb 1.09 [0.77-1.22]
#   omp, BLAS held to one thread around the call (threadpoolctl) 1.26 [0.80-1.51]
# Spinning OpenMP is the one clearly slow arrangement (conv 927 ms against
# 574-595 ms for the others); the passive policy and tbb are on a par with
# workqueue within the scatter. Holding BLAS to one thread only looks good
# because the shared machine rarely had two free cores; on an idle machine it
# would halve the speed of the products, so it is not done.
#
# ``launch_lock`` still serialises fastconv's own launches: the scratch store
# (``_workspace``) is one per process and used under it.

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


# file names of the TBB runtime Numba's tbb layer links against, per system
_TBB_RUNTIME = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}


def _load_tbb_runtime():
    """Load the runtime of an installed 'tbb' package; True if it is loaded.

    Loaded globally, it satisfies Numba's tbb layer, which looks the library
    up by name when its threads start.
    """
    name = _TBB_RUNTIME.get(sys.platform)
    if name is None:
        return False
    try:
        dist = importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    for entry in dist.files or ():
        if entry.name == name:
            try:
                ctypes.CDLL(str(dist.locate_file(entry)), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                return False
            return True
    return False


def _after_fork_in_child():
    global _serial_only
    if _threads_started() and numba.threading_layer() == "omp":
        from numba.np.ufunc import omppool
        _serial_only = getattr(omppool, "openmp_vendor", "GNU") == "GNU"


os.register_at_fork(after_in_child=_after_fork_in_child)


def _load_openmp_layer_bound_to_its_own_runtime():
    """Import Numba's OpenMP layer with RTLD_DEEPBIND: its OpenMP calls then bind to the
    runtime it was linked against, not to a copy another library put in the global scope
    first. Numba's thread launch later imports the same, already loaded, module."""
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
    try:
        from numba.np.ufunc import omppool  # noqa: F401
    except ImportError:                 # a Numba built without OpenMP
        pass
    finally:
        sys.setdlopenflags(flags)


def arrange_threads():
    """Make Numba's threads sleep when idle, without choosing a layer that aborts programs.

    Nothing is changed when the program chose a layer or Numba's threads already run.
    """
    if _threads_started():
        return
    layer = os.environ.get("NUMBA_THREADING_LAYER", numba.config.THREADING_LAYER)
    tbb = layer == "default" and _load_tbb_runtime()
    if (layer in ("default", "omp", "threadsafe", "forksafe") and not tbb
            and hasattr(os, "RTLD_DEEPBIND") and "numba.np.ufunc.omppool" not in sys.modules):
        # Numba's OpenMP runtime reads the policy as it loads, now; the environment
        # that other libraries' runtimes read (torch's, loaded later) stays the program's
        program_set = "OMP_WAIT_POLICY" in os.environ
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            _load_openmp_layer_bound_to_its_own_runtime()
        finally:
            if not program_set:
                del os.environ["OMP_WAIT_POLICY"]
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


arrange_threads()
