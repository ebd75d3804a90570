"""Parameter files: bit-exact round trips, atomic writes, no pickle, checked loads."""
import os
import zipfile
from io import BytesIO

import numpy as np
import pytest

from fastconv import LeNet, SimpleConvNet, io


def small(seed, dtype=np.float32):
    return SimpleConvNet(input_dim=(1, 10, 10), conv_param={"filter_num": 3}, hidden_size=7,
                         dtype=dtype, seed=seed)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_bit_exact(tmp_path, dtype):
    a, b = small(1, dtype), small(2, dtype)
    a.params["W1"][0, 0, 0, 0] = np.nextafter(dtype(1), dtype(2))   # last-bit detail
    a.save_params(tmp_path / "p.npz")
    b.load_params(tmp_path / "p.npz")
    for key in a.params:
        assert b.params[key].dtype == np.dtype(dtype)
        assert a.params[key].tobytes() == b.params[key].tobytes()


def test_file_is_written_exactly_where_asked_without_leftovers(tmp_path):
    small(0).save_params(tmp_path / "sub" / "weights.params")
    assert sorted(os.listdir(tmp_path / "sub")) == ["weights.params"]
    assert set(io.load_arrays(tmp_path / "sub" / "weights.params")) == {
        "W1", "b1", "W2", "b2", "W3", "b3"}


def test_a_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "p.npz"
    net = small(0)
    net.save_params(path)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        small(5).save_params(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["p.npz"]


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, W1=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        small(0).load_params(path)


@pytest.mark.parametrize("change, message", [
    (lambda p: p.pop("b3"), r"missing \['b3'\]"),
    (lambda p: p.update(W9=np.zeros(3, np.float32)), r"unexpected \['W9'\]"),
    (lambda p: p.update(W2=p["W2"][:-1]), r"'W2'.*shape \(26, 7\).*\(27, 7\)"),
    (lambda p: p.update(b1=p["b1"].astype(np.float64)), r"'b1'.*dtype float64.*float32"),
])
def test_load_checks_keys_shapes_and_dtypes(tmp_path, change, message):
    params = {k: v.copy() for k, v in small(0).params.items()}
    change(params)
    io.save_params(tmp_path / "p.npz", params)
    net = small(3)
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(ValueError, match=message):
        net.load_params(tmp_path / "p.npz")
    # nothing was half-loaded
    assert all(np.array_equal(before[k], net.params[k]) for k in before)


def test_lenet_params_do_not_load_into_simple_conv_net(tmp_path):
    LeNet(seed=0).save_params(tmp_path / "lenet.npz")
    with pytest.raises(ValueError, match="missing|unexpected|shape"):
        SimpleConvNet(seed=0).load_params(tmp_path / "lenet.npz")


# ----------------------------------------------------- files that are not what they claim

def test_a_npy_file_is_named_as_such(tmp_path):
    path = tmp_path / "W1.npy"
    np.save(path, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=rf"{path} is a \.npy file"):
        small(0).load_params(path)
    with pytest.raises(ValueError, match=rf"{path} is a \.npy file"):
        io.load_arrays(path)


@pytest.mark.parametrize("content, message", [
    (b"just some text", "is not an .npz archive"),
    (b"", "is not an .npz archive"),
    (b"PK\x03\x04 half a zip", "not a readable .npz archive"),
])
def test_files_that_are_not_archives_name_the_file(tmp_path, content, message):
    path = tmp_path / "p.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{path}.*{message}|{path} {message}"):
        io.load_arrays(path)


def npz_with_member(path, name, header_shape, data, dtype="<f8", compress=False):
    """An .npz whose member's .npy header declares header_shape, followed by data."""
    header = {"descr": dtype, "fortran_order": False, "shape": header_shape}
    buf = BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        zf.writestr(name + ".npy", buf.getvalue() + data)   # the header carries the magic


def test_a_header_claiming_a_terabyte_is_refused_before_reading(tmp_path):
    path = tmp_path / "p.npz"
    npz_with_member(path, "W1", (1 << 37,), b"\0" * 16)
    with pytest.raises(ValueError, match=rf"{path}: array 'W1': its header promises shape "
                                         r"\(137438953472,\)"):
        io.load_arrays(path)


def test_load_params_checks_declared_shapes_before_reading_data(tmp_path, monkeypatch):
    params = {k: v.copy() for k, v in small(0).params.items()}
    params["W1"] = np.zeros((300, 1, 5, 5), np.float32)
    io.save_params(tmp_path / "big.npz", params)

    def no_reading(*args, **kwargs):
        raise AssertionError("array data was read before the shapes were checked")

    monkeypatch.setattr(np.lib.format, "read_array", no_reading)
    with pytest.raises(ValueError, match=r"'W1'.*shape \(300, 1, 5, 5\)"):
        small(0).load_params(tmp_path / "big.npz")


def test_a_deflated_member_claiming_too_much_is_refused(tmp_path):
    path = tmp_path / "p.npz"
    npz_with_member(path, "W1", (4,), np.zeros(4).tobytes(), compress=True)
    # rewrite the central directory's uncompressed size to 1 GiB
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("W1.npy")
    cd = raw.rindex(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = (1 << 30).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{path}: array 'W1' claims 1073741824 bytes from "
                                         rf"{info.compress_size} compressed bytes"):
        io.load_arrays(path)


def test_compressed_archives_still_load(tmp_path):
    arrays = {"a": np.arange(12.0).reshape(3, 4),
              "b": np.asfortranarray(np.eye(3, dtype=np.float32))}
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    back = io.load_arrays(tmp_path / "c.npz")
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)


def test_a_member_claiming_more_than_the_file_holds_is_refused(tmp_path):
    path = tmp_path / "p.npz"
    npz_with_member(path, "W1", (4,), np.zeros(4).tobytes(), compress=True)
    raw = bytearray(path.read_bytes())
    cd = raw.rindex(b"PK\x01\x02")
    raw[cd + 20:cd + 24] = (1 << 31).to_bytes(4, "little")    # compressed size: 2 GiB
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{path}: array 'W1' claims 2147483648 compressed "
                                         r"bytes in a file of \d+ bytes"):
        io.load_arrays(path)
