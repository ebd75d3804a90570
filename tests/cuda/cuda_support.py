"""What the tests in tests/cuda share: when they run, and how they call the path.

These tests need a GPU or Numba's CUDA simulator. The simulator must be switched
on before numba is first imported, so CI runs this folder in its own process:

    NUMBA_ENABLE_CUDASIM=1 pytest tests/cuda -q

In the main run (no simulator, no GPU) every module here is skipped, except the
no-device checks of test_cuda_no_device.py.
"""
import os
import sys
import threading

import numpy as np
import pytest

from fastconv.backends import cuda_present as _cuda_present
from fastconv.spec import conv_spec

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"
DEVICE = _cuda_present()          # a real GPU, or the simulator


def skip_without_cuda():
    """Skip the calling test module (one line in the report) unless a GPU or the simulator is present."""
    if not DEVICE:
        pytest.skip("needs an NVIDIA GPU or NUMBA_ENABLE_CUDASIM=1 (run tests/cuda on its own)",
                    allow_module_level=True)


def _make_simulator_shared_arrays_thread_safe():
    """Work around a race in numba-cuda's simulator (0.30.4).

    FakeCUDAShared.array looks a call site up in a dict and, if absent, creates
    the array and stores it: two threads of a launch's first block can both
    miss and each get a private "shared" array, so a block reduction silently
    adds the wrong partial sums. Same lookup, done under a lock.
    """
    from numba.cuda.simulator import kernelapi
    from numba.np.numpy_support import as_dtype

    original = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:        # dynamic shared memory / unsupported
            return original(self, shape, dtype, alignment)
        caller = sys._getframe(1)
        site = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            res = self._allocations.get(site)
            if res is None:
                if not isinstance(dtype, (type, np.dtype)):
                    dtype = as_dtype(dtype)
                res = self._allocations[site] = np.empty(shape, dtype)
        return res

    kernelapi.FakeCUDAShared.array = array


if SIMULATOR:
    _make_simulator_shared_arrays_thread_safe()
    # The simulator runs every CUDA thread as a Python thread and polls them at
    # each syncthreads(); with the default 5 ms GIL switch interval every
    # barrier costs milliseconds. A short interval makes the suite several times faster.
    sys.setswitchinterval(1e-5)

DTYPES = [np.float32, np.float64]
FORWARD_KERNELS = ["tiled", "simple"]


def cuda_conv_forward(x, W, b, stride, pad, kernel):
    """Validate like fastconv.functional, then run one named forward kernel of the cuda path."""
    from fastconv.kernels import cuda as kc

    spec = conv_spec(x.shape, W.shape, stride, pad, x.dtype)
    b = np.zeros(W.shape[0], dtype=W.dtype) if b is None else b
    return kc._conv_forward(np.ascontiguousarray(x), np.ascontiguousarray(W),
                            np.ascontiguousarray(b), spec, kernel)
