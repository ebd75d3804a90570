"""Errors that name the argument or file at fault: col2im's input_shape, a .npy file given
to load_params, a truncated IDX header."""
import gzip
import struct

import numpy as np
import pytest

from fastconv import io
from fastconv.datasets import read_idx
from fastconv.functional import col2im


@pytest.mark.parametrize("bad", [None, 4, 2.5])
def test_col2im_names_a_missing_input_shape(bad):
    with pytest.raises(ValueError, match=r"input_shape must be \(N, C, H, W\), got "
                                         + repr(bad).replace(".", r"\.")):
        col2im(np.zeros((72, 27)), bad, 3, 3)


def test_load_params_names_a_npy_file(tmp_path):
    path = tmp_path / "params.npy"
    np.save(path, np.arange(3.0))
    with pytest.raises(ValueError, match=rf"{path} is a \.npy file"):
        io.load_params(path, {"W": np.zeros(3)})


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("content, what", [
    (b"\x00\x00", "the magic number needs 4 bytes, the file ends after 2"),
    (bytes([0, 0, 8, 3]) + struct.pack(">I", 60000) + b"\x00", "3 dimension sizes needs 12 "
                                                               "bytes, the file ends after 5"),
])
def test_a_truncated_idx_header_names_the_file(tmp_path, gz, content, what):
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(content)
    with pytest.raises(ValueError, match=rf"{path}: the IDX header is truncated: {what}"):
        read_idx(path)
