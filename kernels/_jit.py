"""The one place where Numba compile options for the CPU paths are chosen."""
import numba

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


def jit(fn=None, *, parallel=False):
    """``@jit`` / ``@jit(parallel=True)``: ``numba.njit`` with fastconv's options."""
    def wrap(f):
        return numba.njit(parallel=parallel, **JIT_OPTIONS)(f)

    return wrap(fn) if fn is not None else wrap
