"""save_atomic: the file appears whole with a plain open()'s permissions, or not at all."""

import os
import stat

import pytest

from blindfast.atomic_file import save_atomic


def test_writes_with_the_umask_permissions(tmp_path):
    previous = os.umask(0o027)
    try:
        save_atomic(tmp_path / "out.bin", lambda f: f.write(b"abc"))
    finally:
        os.umask(previous)
    assert (tmp_path / "out.bin").read_bytes() == b"abc"
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["out.bin"]


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path):
    (tmp_path / "out.bin").write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic(tmp_path / "out.bin", fail)
    assert (tmp_path / "out.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]
