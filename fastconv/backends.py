"""From a path name to the kernel module that runs it: one plain-Python table.

Layers and functions never import a kernel module themselves; they ask
``get_path(name)`` here. Kernel modules are imported on first use, so
``import fastconv`` compiles nothing.
"""
import importlib

# path name -> module implementing the kernel API described in fastconv.kernels
PATHS = {
    "naive": "fastconv.kernels.naive",
    "im2col": "fastconv.kernels.im2col",
    "direct": "fastconv.kernels.direct",
    "cuda": "fastconv.kernels.cuda",
}

# The order in which "auto" falls back when the path its static rule wants is
# missing (see fastconv.autotune.static_choice).
_AUTO_PREFERENCE = ("im2col", "direct", "naive")


def _cuda_present():
    """True when numba.cuda sees a GPU, or the simulator (NUMBA_ENABLE_CUDASIM=1)."""
    try:
        from fastconv.kernels._cuda_shim import cuda
    except ImportError:
        return False
    return bool(cuda.is_available())


def available_backends():
    """The path names usable on this machine, in the order naive, im2col, direct, cuda."""
    return [name for name in PATHS if name != "cuda" or _cuda_present()]


def check_backend(backend):
    """Raise ValueError for a name that is neither 'auto' nor a known path."""
    if backend != "auto" and backend not in PATHS:
        valid = ", ".join(repr(n) for n in ("auto", *PATHS))
        raise ValueError(f"backend must be one of {valid}; got {backend!r}")
    return backend


def resolve(backend, op, **shape_info):
    """The concrete path name for ``backend`` (which may be "auto") and this operation.

    op is "conv" or "pool"; shape_info (x_shape, w_shape, stride, pad, dtype)
    lets "auto" choose per shape.
    """
    check_backend(backend)
    if backend == "auto":
        return choose_auto(op, **shape_info)
    if backend == "cuda" and not _cuda_present():
        raise RuntimeError(
            "backend 'cuda' was selected but no CUDA device was found. Install "
            "numba-cuda and run on a machine with an NVIDIA GPU, or set "
            "NUMBA_ENABLE_CUDASIM=1 before numba is imported to use the simulator.")
    return backend


def choose_auto(op, **shape_info):
    """The path backend="auto" runs for host arrays: measured once per shape, then remembered.

    See fastconv.autotune: the first call with a new (op, shapes, stride, pad,
    dtype, threads) key times the candidate paths and stores the fastest on
    disk; FASTCONV_AUTOTUNE=0 switches to a static rule instead.
    """
    # By module name: fastconv.autotune (the attribute) is the autotune() function,
    # and the module is imported late because it imports this one.
    return importlib.import_module("fastconv.autotune").choose(op, **shape_info)


def get_path(name):
    """The kernel module for a concrete (already resolved) path name."""
    return importlib.import_module(PATHS[name])
