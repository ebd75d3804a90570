"""Without a GPU and without the simulator, the cuda path is absent and asking
for it is a clear error. This module runs in the main (non-simulator) test
process; the simulator run skips it."""
import numpy as np
import pytest
from cuda_support import DEVICE

import fastconv
from fastconv import conv2d, pool2d

if DEVICE:
    pytest.skip("a CUDA device (or the simulator) is present", allow_module_level=True)


def test_cuda_is_not_listed_without_a_device():
    assert "cuda" not in fastconv.available_backends()


def test_selecting_cuda_without_a_device_says_how_to_get_one():
    x = np.zeros((1, 1, 4, 4), np.float32)
    w = np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(RuntimeError, match="no CUDA device was found.*NUMBA_ENABLE_CUDASIM=1"):
        conv2d(x, w, backend="cuda")
    with pytest.raises(RuntimeError, match="no CUDA device was found"):
        pool2d(x, 2, 2, backend="cuda")
