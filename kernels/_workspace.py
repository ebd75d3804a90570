"""The process-wide scratch store the CPU paths reuse across calls, and its budget.

Touching freshly allocated memory costs page faults (about 3x reusing a buffer
on this project's VM), so a path keeps its largest scratch arrays, per dtype
and slot, from call to call. There is one store per path for the whole
process, not one per Python thread: the paths' public functions run under
``launch_lock`` (``fastconv.kernels._jit``), so only one call at a time uses
it, and idle threads hold no memory. Callers must hold ``launch_lock`` while
they use a buffer and must never return a scratch array or a view of it.

The budget caps the im2col path's unrolled matrix (its largest scratch array);
it is defined here, once, and re-exported by ``fastconv.kernels.im2col``.
"""
import os

import numpy as np

from ._jit import launch_lock

DEFAULT_WORKSPACE_BUDGET = 256 * 2**20


def _budget_from_env():
    text = os.environ.get("FASTCONV_IM2COL_BUDGET")
    if text is None or not text.strip():
        return DEFAULT_WORKSPACE_BUDGET
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"FASTCONV_IM2COL_BUDGET must be a whole number of bytes, got {text!r}") from None
    if value < 1:
        raise ValueError(f"FASTCONV_IM2COL_BUDGET must be >= 1 byte, got {value}")
    return value


_budget = _budget_from_env()


def set_workspace_budget(nbytes: int) -> int:
    """Cap the im2col path's unrolled matrix at ``nbytes`` bytes (default 256 MiB).

    The batch is then processed in chunks of images whose unrolled matrix fits;
    one image that alone exceeds the budget is processed in bands of output
    positions (one output position, C*FH*FW + 1 values, at least, whatever
    the budget). The setting is process-wide; ``FASTCONV_IM2COL_BUDGET`` sets
    its initial value. Returns the previous budget.
    """
    global _budget
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"nbytes must be an int, got {nbytes!r}")
    if nbytes < 1:
        raise ValueError(f"nbytes must be >= 1, got {nbytes}")
    previous, _budget = _budget, int(nbytes)
    return previous


def get_workspace_budget() -> int:
    """The current cap, in bytes, on the im2col path's unrolled matrix."""
    return _budget


class Workspace:
    """One path's scratch store; ``slot`` tells apart arrays needed at the same time."""

    def __init__(self):
        self._buffers = {}

    def get(self, size, dtype, slot=0):
        """A 1-D array of ``size`` elements, reused by later calls (hold ``launch_lock``)."""
        key = (np.dtype(dtype).name, slot)
        buf = self._buffers.get(key)
        if buf is None or buf.size < size:
            self._buffers.pop(key, None)     # let the old one go before allocating
            buf = self._buffers[key] = np.empty(size, dtype=dtype)
        return buf[:size]

    def buffers(self):
        """The arrays held now (for tests and memory accounting)."""
        return list(self._buffers.values())

    def release(self):
        """Free the buffers (they are reallocated when next needed)."""
        with launch_lock:
            self._buffers.clear()
