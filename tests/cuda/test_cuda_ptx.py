"""On a real GPU only: the float32 kernels compile to float32 code, with no
silent promotion to float64 anywhere (the simulator runs Python, so it cannot
show this)."""
import numpy as np
import pytest
from cuda_support import SIMULATOR, cuda_conv_forward, skip_without_cuda

from fastconv import functional as F
from fastconv.kernels import cuda as kc

skip_without_cuda()
if SIMULATOR:
    pytest.skip("the simulator compiles nothing", allow_module_level=True)


def test_float32_kernels_have_no_float64_instructions():
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
        ptx = dispatcher.inspect_asm()
        assert ptx, f"{name} was never compiled"
        for signature, code in ptx.items():
            assert ".f64" not in code, f"{name}{signature} computes in float64"
