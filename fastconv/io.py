"""Files fastconv writes and reads: one atomic-write helper, and named arrays as ``.npz``.

``atomic_write`` (and ``atomic_write_bytes`` / ``atomic_write_text``) is the one way
fastconv puts a file on disk. The data goes to a temporary file in the target's
directory, named ``.fastconv-tmp-<host>-<pid>-<random><suffix>``; the file is flushed
and fsynced, renamed over the target, and the directory is fsynced so the rename itself
survives a power cut. A crash therefore never leaves a truncated file under the real
name. A temporary file that a killed process left behind is removed by the next write
into the same directory (only files of the naming above, and only when their process is
gone or they are older than ``STALE_TEMP_SECONDS``).

The new file gets the permissions any newly created file gets (``0o666`` less the
umask, so 0644 under umask 022); a file that is replaced keeps its permission bits.
A symbolic link is written through: its target receives the data, the link stays.

``load_arrays`` refuses pickled objects (``allow_pickle=False``) and checks each
array's declared size against the archive before reading it; ``load_params`` also
checks the file's names, shapes and dtypes against the arrays it is meant to replace
before any data is read, naming every mismatch.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import socket
import time
import zipfile
from collections.abc import Callable, Mapping
from typing import BinaryIO

import numpy as np

TEMP_PREFIX = ".fastconv-tmp-"
# A temporary file whose writer may still be alive (another machine sharing the
# directory, or a reused pid) is left alone until it is this old.
STALE_TEMP_SECONDS = 3600.0


# ----------------------------------------------------------------- atomic writes

def _host_tag() -> str:
    # a short, file-name-safe tag: a pid only identifies a process on its own host
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_owner(name: str):
    """(host tag, pid) of a fastconv temporary file name, or None for other names."""
    if not name.startswith(TEMP_PREFIX):
        return None
    parts = name[len(TEMP_PREFIX):].split("-", 2)
    if len(parts) != 3 or len(parts[0]) != 8 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _process_alive(pid: int) -> bool:
    if os.name == "nt":
        return True         # os.kill(pid, 0) would terminate it there: rely on the age
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True         # exists, owned by someone else (or cannot tell: keep it)
    return True


def remove_stale_temp_files(directory, max_age: float = STALE_TEMP_SECONDS) -> int:
    """Delete fastconv's own leftover temporary files in ``directory`` -> how many.

    A file counts as a leftover when its name has fastconv's temporary naming and either
    the process that wrote it (same host) no longer runs or it is older than ``max_age``
    seconds. Other files are never touched.
    """
    removed = 0
    host = _host_tag()
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        owner = _temp_owner(entry.name)
        if owner is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
            dead = owner[0] == host and owner[1] != os.getpid() and not _process_alive(owner[1])
            if dead or age > max_age:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass            # cleaned by another writer first, or not ours to delete
    return removed


def _resolve_target(path: str) -> str:
    """The file a write to ``path`` must land in: a symbolic link is followed to its end."""
    target = os.path.realpath(path)
    if os.path.islink(target):
        raise OSError(errno.ELOOP, f"cannot write through the symbolic link {path}: "
                                   f"it loops", path)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, "cannot write a file over a directory", path)
    return target


def _fsync_directory(directory: str) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return              # Windows cannot open a directory; NTFS renames are journaled
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:
        # some file systems (and FUSE mounts) do not support fsync on a directory
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[BinaryIO], object], suffix: str = "") -> str:
    """Create or replace the file ``path`` with what ``write(f)`` writes to the binary file
    object ``f``, atomically -> the path of the file written (a symlink's target).

    Readers see the old file or the complete new one, never a part. The parent directory
    is created when missing. ``suffix`` ends the temporary file's name (say ".npz", for
    tools that look at extensions). If ``write`` raises, the temporary file is removed and
    the old file is untouched. See the module docstring for permissions, symbolic links
    and the clean-up of leftovers.
    """
    target = _resolve_target(os.fspath(path))
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    remove_stale_temp_files(directory)
    try:
        keep_mode = os.stat(target).st_mode & 0o777
    except FileNotFoundError:
        keep_mode = None
    prefix = f"{TEMP_PREFIX}{_host_tag()}-{os.getpid()}-"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, prefix + secrets.token_hex(6) + suffix)
        try:
            # 0o666 less the umask: the mode of any newly created file
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            if keep_mode is not None:
                os.chmod(tmp, keep_mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)
    return target


def atomic_write_bytes(path, data: bytes, suffix: str = "") -> str:
    """Write ``data`` to ``path`` atomically (see ``atomic_write``) -> the path written."""
    return atomic_write(path, lambda f: f.write(data), suffix)


def atomic_write_text(path, text: str, encoding: str = "utf-8", suffix: str = "") -> str:
    """Write ``text`` to ``path`` atomically (see ``atomic_write``) -> the path written.

    The text is written as is (no newline translation)."""
    return atomic_write_bytes(path, text.encode(encoding), suffix)


# ----------------------------------------------------------------- .npz archives

def save_arrays(path, arrays: Mapping[str, object]) -> None:
    """Write ``arrays`` (name -> array or str) to ``path`` as an uncompressed .npz.

    The file is written exactly at ``path`` (no ".npz" is appended), atomically.
    """
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    atomic_write(path, lambda f: np.savez(f, **arrays), suffix=".npz")


# Deflate cannot shrink data more than about 1032:1: a member that claims more is damaged
# or built to exhaust memory.
_DEFLATE_MAX_RATIO = 1032
_NPY_MAGIC = b"\x93NUMPY"


def _open_archive(path: str) -> zipfile.ZipFile:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not an .npz file") from None
    if magic == _NPY_MAGIC:
        raise ValueError(f"{path} is a .npy file (one array); parameters and checkpoints "
                         f"are .npz archives of named arrays (written by save_params / "
                         f"save_arrays or np.savez)")
    if magic[:2] != b"PK":
        raise ValueError(f"{path} is not an .npz archive (it does not start like a zip file)")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path} is not a readable .npz archive: {err}") from None


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, archive_size: int):
    """(shape, fortran_order, dtype) from a member's .npy header, checked against the
    member's size in the archive before any data is read."""
    name = info.filename[:-4]
    where = f"{path}: array {name!r}"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"{where} uses zip compression method {info.compress_type}; only "
                         f"stored and deflated members are read")
    if info.compress_size > archive_size:
        raise ValueError(f"{where} claims {info.compress_size} compressed bytes in a file of "
                         f"{archive_size} bytes: the archive is damaged")
    limit = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED
                                  else _DEFLATE_MAX_RATIO) + 1024
    if info.file_size > limit:
        raise ValueError(f"{where} claims {info.file_size} bytes from {info.compress_size} "
                         f"compressed bytes: the archive is damaged")
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            header_len = f.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{where} has a damaged .npy header: {err}") from None
    if dtype.hasobject:
        raise ValueError(f"{where} holds Python objects (dtype {dtype}); reading them needs "
                         f"pickle, which is refused (allow_pickle=False)")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if header_len + nbytes != info.file_size:
        raise ValueError(f"{where}: its header promises shape {shape} of {dtype} "
                         f"({nbytes} bytes) but the archive holds "
                         f"{info.file_size - header_len} bytes of data")
    return shape, fortran, dtype


def _read_archive(path, expected=None, source=None):
    path = os.fspath(path)
    with _open_archive(path) as zf:
        archive_size = os.path.getsize(path)
        members = {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"{path}: member {info.filename!r} is not a .npy array")
            members[info.filename[:-4]] = (info, _member_header(zf, info, path, archive_size))
        if expected is not None:
            declared = {name: _Declared(shape, dtype)
                        for name, (_, (shape, _, dtype)) in members.items()}
            check_params(declared, expected, source=source or path)
        out = {}
        for name, (info, _) in members.items():
            try:
                with zf.open(info) as f:
                    out[name] = np.lib.format.read_array(f, allow_pickle=False)
            except (OSError, EOFError, zipfile.BadZipFile) as err:
                raise ValueError(f"{path}: array {name!r} cannot be read: {err}") from None
        return out


class _Declared:
    """Shape and dtype of an array not read yet (what check_params looks at)."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), dtype


def load_arrays(path) -> dict[str, np.ndarray]:
    """Read every array of an .npz file into memory: name -> array (no pickle).

    Raises ValueError naming the file when it is not an .npz archive (a .npy file, say),
    is damaged, or holds an array of Python objects.
    """
    return _read_archive(path)


def check_params(loaded, expected, source="file") -> None:
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


def save_params(path, params: Mapping[str, np.ndarray]) -> None:
    """Save a params dict (name -> array) to ``path`` (.npz, atomic)."""
    save_arrays(path, params)


def load_params(path, expected: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Load a params file and check it against ``expected`` (name -> array).

    Returns name -> array; raises ValueError naming a missing or unexpected key, or a
    shape or dtype that differs from ``expected`` (checked from the file's headers,
    before any array is read), or a file that is not an .npz archive.
    """
    return _read_archive(path, expected, source=os.fspath(path))
