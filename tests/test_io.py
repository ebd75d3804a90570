"""Parameter files: bit-exact round trips, atomic writes, no pickle, checked loads."""
import os

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
