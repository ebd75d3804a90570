"""Per-thread scratch buffers that the CPU paths reuse across calls.

Touching freshly allocated memory costs page faults (about 3x reusing a buffer
on this project's VM), so a path keeps its largest scratch array per thread,
dtype and slot. Per thread, so two threads never share scratch memory. Callers
must never return a scratch array or a view of it.
"""
import threading

import numpy as np


class Workspace:
    """One path's scratch store; ``slot`` tells apart arrays needed at the same time."""

    def __init__(self):
        self._local = threading.local()

    def get(self, size, dtype, slot=0):
        """A 1-D array of ``size`` elements, reused by later calls on this thread."""
        key = (np.dtype(dtype).name, slot)
        buf = self._local.__dict__.get(key)
        if buf is None or buf.size < size:
            self._local.__dict__.pop(key, None)     # let the old one go before allocating
            buf = self._local.__dict__[key] = np.empty(size, dtype=dtype)
        return buf[:size]

    def release(self):
        """Free this thread's buffers (they are reallocated when next needed)."""
        self._local.__dict__.clear()
