"""From a path name to the kernel module that runs it: one plain table.

Every module in the table keeps the contract written down in
``fastconv.kernels`` (and checked by ``tests/test_kernel_contract.py``). The
"auto" policy is not here: it lives in ``fastconv.tuner``, above this table.
"""
from types import ModuleType

from .kernels import direct, im2col, naive, winograd

# path name -> kernel module. "cuda" is imported on first use (None until
# then): importing numba.cuda takes seconds, and most sessions never need it.
PATHS: dict[str, ModuleType | None] = {
    "naive": naive,
    "im2col": im2col,
    "direct": direct,
    "winograd": winograd,
    "cuda": None,
}


def get_path(name: str) -> ModuleType:
    """The kernel module of a path name from ``PATHS``."""
    module = PATHS[name]
    if module is None:
        from .kernels import cuda as module
        PATHS[name] = module
    return module


def cuda_present() -> bool:
    """True when numba.cuda sees a GPU, or the simulator (NUMBA_ENABLE_CUDASIM=1)."""
    try:
        from .kernels._cuda_shim import cuda
    except ImportError:
        return False
    return bool(cuda.is_available())


def available_backends() -> list[str]:
    """The path names usable on this machine, in the table's order (cuda only with a GPU
    or the simulator)."""
    return [name for name in PATHS if name != "cuda" or cuda_present()]
