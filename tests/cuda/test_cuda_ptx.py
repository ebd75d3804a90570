"""The cuda path's kernels as NVIDIA's compiler builds them for real GPUs, checked on any machine.

``numba.cuda.compile_ptx`` needs NVVM and NVRTC (the ``nvidia-nvvm`` and
``nvidia-cuda-nvrtc`` wheels), not a GPU, so these checks run in the main test
process of a machine without one. They do not run on the simulator, which
compiles nothing (its ``compile_ptx`` cannot be called).

Which kernels, with which argument types: the path's own host code
(``conv_forward`` with each forward kernel, ``conv_backward``, ``pool_forward``,
``pool_backward``) runs on small problems with every kernel launch recorded
instead of run, and host arrays standing in for device arrays. A kernel added
to the path is therefore compiled with the types it is really launched with,
without a change here; so is every convolution and pooling option the spec
builders accept (``dilation``, ``groups``, ``ceil_mode``, ...), tried by
keyword and left out where refused.

For compute capability 8.0 and 9.0, float32 and float64:
- every kernel compiles to PTX;
- float32 kernels contain no float64 instruction (a literal or a division
  that silently promotes would put ``.f64`` in the code);
- no kernel uses local memory (a per-thread array the compiler could not keep
  in registers), and, where ``ptxas`` is installed (``nvidia-cuda-nvcc``), no
  kernel spills registers or needs a stack frame.
"""
import contextlib
import functools
import inspect
import re
import subprocess

import numpy as np
import pytest
from cuda_support import DEVICE, SIMULATOR, cuda_conv_forward

from fastconv import functional as F
from fastconv.kernels import cuda as kc
from fastconv.spec import POOL_MODES, conv_spec, pool_spec

if SIMULATOR:
    pytest.skip("the simulator compiles nothing (its compile_ptx cannot be called); these "
                "checks run in the main test process", allow_module_level=True)

from numba import cuda, typeof  # noqa: E402  (after the simulator check, as numba reads it at import)

CCS = [(8, 0), (9, 0)]
DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]


@functools.lru_cache(maxsize=1)
def _compiler_missing() -> str | None:
    """Why compile_ptx cannot run here (a message), or None when it can."""
    def probe(a):
        a[0] = 1.0

    try:
        cuda.compile_ptx(probe, (typeof(np.zeros(1, np.float32)),), cc=CCS[0])
    except Exception as err:          # any failure of a trivial kernel means no usable toolchain
        return (f"NVVM/NVRTC not usable ({type(err).__name__}: {str(err).splitlines()[0]}); "
                f"install them with: pip install 'nvidia-nvvm==13.*' 'nvidia-cuda-nvrtc==13.*'")
    return None


def _require_compiler():
    reason = _compiler_missing()
    if reason:
        pytest.skip(reason)


# ------------------------------------------------------------ recording launches

class _HostDeviceArray(np.ndarray):
    """A host array standing in for a device array while launches are recorded."""

    __cuda_ndarray__ = True

    def copy_to_host(self, *args, **kwargs):
        return np.array(self)

    def copy_to_device(self, other, *args, **kwargs):
        self[...] = other

    def is_c_contiguous(self):
        return self.flags.c_contiguous

    def is_f_contiguous(self):
        return self.flags.f_contiguous


def _stand_in(a) -> _HostDeviceArray:
    return np.array(a).view(_HostDeviceArray)


class _HostCuda:
    """Stands in for ``numba.cuda`` in the path's host code: transfers and allocations
    make host arrays; anything else is the real module's."""

    def to_device(self, a, *args, **kwargs):
        return _stand_in(a)

    def as_cuda_array(self, a, *args, **kwargs):
        return _stand_in(a)

    def device_array(self, shape, dtype=np.float64, *args, **kwargs):
        return _stand_in(np.zeros(shape, dtype))

    def device_array_like(self, a, *args, **kwargs):
        return _stand_in(np.zeros_like(a))

    def synchronize(self):
        pass

    def __getattr__(self, name):
        return getattr(cuda, name)


def _numba_type(value):
    """The type a real launch gives ``value``: device arrays type as the host arrays they mirror."""
    if isinstance(value, np.ndarray):
        return typeof(np.asarray(value))
    return typeof(value)


class _Launches:
    """kernel name -> (Python function, jit options, set of argument-type tuples), per dtype."""

    def __init__(self):
        self.seen = {}

    def wrap(self, real_kernels):
        def recording_kernels(dtype):
            return {name: _Recorder(self, np.dtype(dtype), name, dispatcher)
                    for name, dispatcher in real_kernels(dtype).items()}
        return recording_kernels


class _Recorder:
    def __init__(self, launches, dtype, name, dispatcher):
        self.launches, self.dtype, self.name, self.dispatcher = launches, dtype, name, dispatcher

    def __getitem__(self, launch_config):
        def launch(*args):
            entry = self.launches.seen.setdefault(
                (self.dtype, self.name),
                (self.dispatcher.py_func, dict(self.dispatcher.targetoptions), set()))
            entry[2].add(tuple(_numba_type(a) for a in args))
        return launch


def _accepted(builder, keywords) -> dict:
    """The keywords of ``keywords`` that ``builder`` has a parameter for."""
    params = inspect.signature(builder).parameters
    return {k: v for k, v in keywords.items() if k in params}


def _conv_specs(dtype):
    """Small convolutions: plain, strided and padded, and each option the spec builder takes."""
    base = [((2, 3, 7, 6), (4, 3, 3, 2), dict(stride=1, pad=1)),
            ((1, 2, 9, 8), (3, 2, 3, 3), dict(stride=2, pad=0))]
    options = [((2, 4, 9, 8), (4, 4, 3, 3), dict(stride=1, pad=2, dilation=2)),
               ((2, 4, 7, 6), (6, 2, 3, 3), dict(stride=1, pad=1, groups=2)),
               ((2, 4, 7, 6), (4, 1, 3, 3), dict(stride=1, pad=1, groups=4)),
               ((2, 3, 7, 6), (4, 3, 3, 2), dict(stride=1, pad="same")),
               ((2, 3, 7, 6), (4, 3, 3, 2), dict(stride=1, pad="valid"))]
    for x_shape, w_shape, kw in base + options:
        try:
            yield conv_spec(x_shape, w_shape, dtype=dtype, **kw)
        except (ValueError, TypeError):          # an option this version does not have
            continue


POOL_OPTIONS = [dict(), dict(ceil_mode=True), dict(count_include_pad=False),
                dict(divisor_override=3), dict(dilation=2), dict(return_indices=True),
                dict(ceil_mode=True, count_include_pad=False)]


def _pool_specs(dtype):
    """Small poolings, each mode, plain and padded, and with each option the spec builder takes."""
    for mode in POOL_MODES:
        for x_shape, window, stride, pad in [((2, 3, 7, 6), (2, 2), None, 0),
                                             ((1, 2, 9, 8), (3, 3), 2, 1)]:
            for option in POOL_OPTIONS:
                keywords = _accepted(pool_spec, option)
                if len(keywords) < len(option):
                    continue
                try:
                    yield pool_spec(x_shape, *window, stride, pad, mode, dtype=dtype, **keywords)
                except (ValueError, TypeError):
                    continue


def _run_host_code(dtype, rng):
    """Every kernel launch the path makes for the problems above (launches are recorded, not run)."""
    for spec in _conv_specs(dtype):
        x = rng.standard_normal(spec.x_shape).astype(dtype)
        W = rng.standard_normal(spec.w_shape).astype(dtype)
        b = rng.standard_normal(spec.w_shape[0]).astype(dtype)
        for kernel in kc.FORWARD_KERNELS:
            out, cache = kc._conv_forward(x, W, b, spec, kernel)
            kc.conv_backward(np.ones(spec.out_shape, dtype), cache)
    for spec in _pool_specs(dtype):
        x = rng.standard_normal(spec.x_shape).astype(dtype)
        out, cache = kc.pool_forward(x, spec)
        kc.pool_backward(np.ones(spec.out_shape, dtype), cache)


def _clear_caches(module):
    """Empty the module's memoised helpers, which may hold stand-in arrays."""
    for value in vars(module).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


@pytest.fixture(scope="module")
def launches():
    """{(dtype, kernel name): (function, jit options, argument-type tuples)} of every launch."""
    _require_compiler()
    recorded = _Launches()
    rng = np.random.default_rng(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kc, "_kernels", recorded.wrap(kc._kernels))
        mp.setattr(kc, "cuda", _HostCuda())
        try:
            for dtype in DTYPES:
                _run_host_code(dtype, rng)
        finally:
            _clear_caches(kc)
    return recorded.seen


@pytest.fixture(scope="module")
def ptx(launches):
    """{(dtype, cc, kernel name, argument types): PTX text} for every recorded launch."""
    codes = {}
    for (dtype, name), (func, options, signatures) in sorted(launches.items(), key=str):
        # the options the path's own launches compile with (launch bounds change register use)
        flags = {k: options[k] for k in ("fastmath", "lineinfo", "debug", "opt", "launch_bounds")
                 if options.get(k) is not None}
        for cc in CCS:
            for sig in sorted(signatures, key=str):
                with _target_device(cc):
                    code, _ = cuda.compile_ptx(func, sig, cc=cc, **flags)
                codes[dtype, cc, name, sig] = code
    return codes


class _Device:
    def __init__(self, cc):
        self.compute_capability = cc


@contextlib.contextmanager
def _target_device(cc):
    """numba-cuda types a call to a device function (``@cuda.jit(device=True)``) by compiling
    it for the current device, which needs a GPU; the target architecture stands in for it."""
    from numba.cuda import dispatcher

    with pytest.MonkeyPatch.context() as mp:
        if hasattr(dispatcher, "get_current_device"):
            mp.setattr(dispatcher, "get_current_device", lambda: _Device(cc))
        yield


def _codes(ptx, dtype, cc):
    found = {(name, sig): code for (dt, c, name, sig), code in ptx.items() if dt == dtype and c == cc}
    assert found, f"no kernel was compiled for {dtype} at cc {cc}"
    return found


def test_every_kernel_the_path_builds_is_launched_and_checked(launches):
    for dtype in DTYPES:
        built = set(kc._kernels(dtype))
        launched = {name for dt, name in launches if dt == dtype}
        assert built == launched, (
            f"{dtype}: kernels built but never launched by the host code on the test problems "
            f"(so not compiled here): {sorted(built - launched)}")


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm{cc[0]}{cc[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_kernel_compiles_to_ptx_for_the_architecture(ptx, dtype, cc):
    for (name, sig), code in _codes(ptx, dtype, cc).items():
        assert f".target sm_{cc[0]}{cc[1]}" in code, f"{name}{sig}: not built for sm_{cc[0]}{cc[1]}"
        assert ".entry" in code, f"{name}{sig}: no kernel entry point in the PTX"


# a float64 instruction, or a float64 register, parameter or constant
_F64 = re.compile(r"\.f64\b")


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm{cc[0]}{cc[1]}")
def test_float32_kernels_have_no_float64_instructions(ptx, cc):
    promoted = {}
    for (name, sig), code in _codes(ptx, np.dtype(np.float32), cc).items():
        lines = [line.strip() for line in code.splitlines() if _F64.search(line)]
        if lines:
            promoted[name] = lines[:3]
    assert not promoted, f"float32 kernels computing in float64: {promoted}"


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm{cc[0]}{cc[1]}")
def test_float64_kernels_do_use_float64(ptx, cc):
    """The float32 check can see float64 code: each float64 kernel shows it."""
    for (name, sig), code in _codes(ptx, np.dtype(np.float64), cc).items():
        assert _F64.search(code), f"{name}{sig}: no float64 instruction in the float64 build"


# a local-memory declaration (__local_depot), load or store
_LOCAL = re.compile(r"\.local\b")


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm{cc[0]}{cc[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_no_kernel_uses_local_memory(ptx, dtype, cc):
    spilled = {}
    for (name, sig), code in _codes(ptx, dtype, cc).items():
        lines = [line.strip() for line in code.splitlines() if _LOCAL.search(line)]
        if lines:
            spilled[name] = lines[:3]
    assert not spilled, f"{dtype} kernels using local memory at cc {cc}: {spilled}"


def _ptxas():
    try:
        from cuda.pathfinder import find_nvidia_binary_utility
    except ImportError:
        return None
    return find_nvidia_binary_utility("ptxas")


_PTXAS_INFO = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm{cc[0]}{cc[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_no_kernel_spills_registers(ptx, launches, dtype, cc, tmp_path):
    ptxas = _ptxas()
    if ptxas is None:
        pytest.skip("ptxas not installed (pip install 'nvidia-cuda-nvcc==13.*')")
    spills = {}
    for i, ((name, sig), code) in enumerate(sorted(_codes(ptx, dtype, cc).items(), key=str)):
        source = tmp_path / f"k{i}.ptx"
        source.write_text(code)
        command = [ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v", str(source), "-o", str(tmp_path / f"k{i}.o")]
        max_registers = launches[dtype, name][1].get("max_registers")
        if max_registers:
            command.append(f"--maxrregcount={max_registers}")
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"ptxas failed on {name}{sig}: {done.stderr}"
        counts = [tuple(map(int, m)) for m in _PTXAS_INFO.findall(done.stderr + done.stdout)]
        assert counts, f"no resource report from ptxas for {name}{sig}: {done.stderr}"
        if any(any(c) for c in counts):
            spills[name] = "; ".join(f"{s} B stack, {st} B spill stores, {ld} B spill loads"
                                     for s, st, ld in counts)
    assert not spills, (f"{dtype} kernels spilling registers or using a stack frame at "
                        f"sm_{cc[0]}{cc[1]}: {spills}")


# ------------------------------------------------------------------ on a real GPU

@pytest.mark.skipif(not DEVICE or SIMULATOR, reason="needs a real NVIDIA GPU")
def test_float32_kernels_have_no_float64_instructions_on_this_gpu():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    W = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    for kernel in ("tiled", "simple"):
        out, cache = cuda_conv_forward(x, W, None, 1, 1, kernel)
    kc.conv_backward(np.ones_like(out), cache)
    for mode in ("max", "avg"):
        out, saved = F.pool_forward(x, 2, 2, 2, 0, mode, backend="cuda")
        F.pool_backward(np.ones_like(out), saved)
    for name, dispatcher in kc._kernels(np.float32).items():
        asm = dispatcher.inspect_asm()
        assert asm, f"{name} was never compiled"
        for signature, code in asm.items():
            assert ".f64" not in code, f"{name}{signature} computes in float64"
