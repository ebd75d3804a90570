"""Saving and loading named arrays as ``.npz``: written atomically, read without pickle.

``save_arrays`` writes to a temporary file in the target's directory, flushes it
to disk and renames it over the target, so a crash mid-write never leaves a
truncated file under the real name. ``load_arrays`` refuses pickled objects
(``allow_pickle=False``); ``load_params`` also checks the file against the
arrays it is meant to replace, naming every mismatch.
"""
import os
import tempfile

import numpy as np


def save_arrays(path, arrays):
    """Write ``arrays`` (name -> array or str) to ``path`` as an uncompressed .npz.

    The file is written exactly at ``path`` (no ".npz" is appended).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{name: np.asarray(a) for name, a in arrays.items()})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_arrays(path):
    """Read every array of an .npz file into memory: name -> array (no pickle)."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def check_params(loaded, expected, source="file"):
    """Raise ValueError unless ``loaded`` has exactly the keys of ``expected`` and each
    array has the expected shape and dtype."""
    missing = sorted(set(expected) - set(loaded))
    extra = sorted(set(loaded) - set(expected))
    if missing or extra:
        raise ValueError(f"parameter keys in {source} do not match the network: "
                         f"missing {missing}, unexpected {extra}")
    for key, ref in expected.items():
        a = loaded[key]
        if a.shape != ref.shape:
            raise ValueError(f"parameter {key!r} in {source} has shape {a.shape}, "
                             f"the network expects {ref.shape}")
        if a.dtype != ref.dtype:
            raise ValueError(f"parameter {key!r} in {source} has dtype {a.dtype}, "
                             f"the network expects {ref.dtype}")


def save_params(path, params):
    """Save a params dict (name -> array) to ``path`` (.npz, atomic)."""
    save_arrays(path, params)


def load_params(path, expected):
    """Load a params file and check it against ``expected`` (name -> array).

    Returns name -> array; raises ValueError naming a missing or unexpected key,
    or a shape or dtype that differs from ``expected``.
    """
    loaded = load_arrays(path)
    check_params(loaded, expected, source=os.fspath(path))
    return loaded
