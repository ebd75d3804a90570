"""The one place fastconv imports CUDA: ``from fastconv.kernels._cuda_shim import cuda``.

Numba's bundled ``numba.cuda`` is deprecated in favour of the separate
``numba-cuda`` package; both are imported the same way, so this module is the
only line to change if that ever stops being true. Importing it starts no
driver and compiles nothing. The simulator (``NUMBA_ENABLE_CUDASIM=1``) must be
switched on before the first ``import numba`` of the process to take effect.
"""
from numba import cuda

__all__ = ["cuda"]
