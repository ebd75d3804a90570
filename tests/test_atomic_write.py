"""The one atomic-write helper (fastconv.io.atomic_write and friends): permissions from
the umask, symbolic links written through, the directory fsynced after the rename, and
the leftovers of killed writers cleaned by the next write."""
import os
import signal
import stat
import subprocess
import textwrap
import time

import numpy as np
import pytest

from fastconv import io
from support import PYTHON

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and signals")


@pytest.fixture
def umask():
    """Set the process umask for one test, restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def temp_files(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith(io.TEMP_PREFIX))


@posix_only
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_new_files_get_the_umask_mode(tmp_path, umask, mask, expected):
    umask(mask)
    io.save_params(tmp_path / "p.npz", {"W": np.zeros(3, np.float32)})
    io.atomic_write_text(tmp_path / "c.json", "{}")
    io.atomic_write_bytes(tmp_path / "sub" / "b.bin", b"\x00\x01")
    assert mode(tmp_path / "p.npz") == expected
    assert mode(tmp_path / "c.json") == expected
    assert mode(tmp_path / "sub" / "b.bin") == expected


@posix_only
def test_a_replaced_file_keeps_its_permissions(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "p.npz"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    io.save_params(path, {"W": np.ones(2)})
    assert mode(path) == 0o640
    assert np.array_equal(io.load_arrays(path)["W"], np.ones(2))


def test_text_and_bytes_land_exactly(tmp_path):
    assert io.atomic_write_text(tmp_path / "a.txt", "grüße\n") == str(tmp_path / "a.txt")
    assert (tmp_path / "a.txt").read_bytes() == "grüße\n".encode()
    io.atomic_write_bytes(tmp_path / "a.txt", b"\xff" * 3)
    assert (tmp_path / "a.txt").read_bytes() == b"\xff" * 3
    written = io.atomic_write(tmp_path / "w.bin", lambda f: (f.write(b"ab"), f.write(b"c")))
    assert open(written, "rb").read() == b"abc"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "w.bin"]


def test_a_failing_writer_leaves_no_file_and_no_temp(tmp_path):
    def broken(f):
        f.write(b"half")
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        io.atomic_write(tmp_path / "x.bin", broken)
    assert os.listdir(tmp_path) == []


@posix_only
def test_symlinks_are_written_through(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    target = data / "weights.npz"
    io.save_params(target, {"W": np.zeros(2)})
    link = tmp_path / "latest.npz"
    link.symlink_to(os.path.relpath(target, tmp_path))
    io.save_params(link, {"W": np.arange(2.0)})
    assert link.is_symlink() and os.readlink(link) == os.path.relpath(target, tmp_path)
    assert np.array_equal(io.load_arrays(target)["W"], np.arange(2.0))
    assert temp_files(tmp_path) == [] and temp_files(data) == []
    # a dangling link: its target is created, the link stays
    dangling = tmp_path / "next.json"
    dangling.symlink_to("data/next-real.json")
    io.atomic_write_text(dangling, "[1]")
    assert dangling.is_symlink() and (data / "next-real.json").read_text() == "[1]"


@posix_only
def test_a_symlink_loop_and_a_directory_are_refused(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    with pytest.raises(OSError, match="loops"):
        io.atomic_write_text(loop, "x")
    assert loop.is_symlink()
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError, match="directory"):
        io.save_params(tmp_path / "dir", {"W": np.zeros(1)})


@pytest.mark.skipif(not hasattr(os, "O_DIRECTORY"), reason="directories cannot be fsynced")
def test_the_file_then_its_directory_are_fsynced(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    io.save_params(tmp_path / "p.npz", {"W": np.zeros(2)})
    assert events == ["fsync file", "rename", "fsync dir"]


KILLED_SAVE = textwrap.dedent("""
    import sys, time
    import numpy as np
    from fastconv import io

    def slow_savez(f, **arrays):
        f.write(b"PK" + bytes(1 << 20))      # part of the archive, then hang
        f.flush()
        print("writing", flush=True)
        time.sleep(60)

    np.savez = slow_savez
    io.save_params(sys.argv[1], {"W": np.zeros(3)})
""")


@posix_only
def test_temp_files_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    target = tmp_path / "p.npz"
    child = subprocess.Popen([*PYTHON, "-c", KILLED_SAVE, str(target)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    leftovers = temp_files(tmp_path)
    assert len(leftovers) == 1 and not target.exists()
    # files that are not fastconv's, and a temp file of a live writer, are kept
    (tmp_path / ".tmp-abc123.npz").write_bytes(b"someone else's")
    (tmp_path / "notes.txt").write_text("keep")
    live = tmp_path / f"{io.TEMP_PREFIX}{io._host_tag()}-{os.getpid()}-0123456789ab.npz"
    live.write_bytes(b"in progress")
    io.save_params(target, {"W": np.ones(3)})
    assert sorted(os.listdir(tmp_path)) == sorted(
        [".tmp-abc123.npz", "notes.txt", live.name, "p.npz"])
    assert np.array_equal(io.load_arrays(target)["W"], np.ones(3))
    # ... until it is older than any write could take
    old = time.time() - io.STALE_TEMP_SECONDS - 60
    os.utime(live, (old, old))
    io.atomic_write_text(tmp_path / "other.json", "{}")
    assert sorted(os.listdir(tmp_path)) == [".tmp-abc123.npz", "notes.txt", "other.json",
                                            "p.npz"]


def test_stale_cleanup_only_matches_its_own_naming(tmp_path):
    names = [io.TEMP_PREFIX + "nothex-1-x", io.TEMP_PREFIX + "abcdefgh-notapid-x",
             io.TEMP_PREFIX, ".tmp-1234"]
    old = time.time() - io.STALE_TEMP_SECONDS - 60
    for name in names:
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (old, old))
    assert io.remove_stale_temp_files(tmp_path) == 0
    assert sorted(os.listdir(tmp_path)) == sorted(names)


def test_a_leftover_that_cannot_be_deleted_does_not_stop_the_save(tmp_path, monkeypatch):
    # say, another user's file in a shared directory with the sticky bit
    stale = tmp_path / f"{io.TEMP_PREFIX}{io._host_tag()}-1-0123456789ab.npz"
    stale.write_bytes(b"")
    old = time.time() - io.STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.path.basename(path) == stale.name:
            raise PermissionError(1, "Operation not permitted", path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    io.save_params(tmp_path / "p.npz", {"W": np.ones(2)})
    assert sorted(os.listdir(tmp_path)) == sorted([stale.name, "p.npz"])


def test_liveness_is_probed_with_signal_0_and_never_on_windows(monkeypatch):
    # on Windows os.kill(pid, 0) terminates the process: there only the age counts
    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    assert io._process_alive(12345) and sent == [(12345, 0)]
    monkeypatch.setattr(os, "name", "nt")
    assert io._process_alive(12345) and sent == [(12345, 0)]
