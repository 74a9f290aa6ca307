"""The one resolver for trees we do not own: links followed inside root, untrusted ones refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import pytest

from kairos.safefs import (
    UnsafePath,
    open_dir,
    open_parent,
    read_at,
    read_bytes,
    replace_at,
    resolve_in_root,
    write_atomic,
    write_file_atomic,
)


def test_resolve_keeps_absolute_links_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").symlink_to("/usr/local/etc/hosts")
    (root / "up").symlink_to("../../../..")
    assert resolve_in_root(root, "/etc/hosts") == root / "usr/local/etc/hosts"
    assert resolve_in_root(root, "/up/etc") == root / "etc"
    assert resolve_in_root(root, "/etc/hosts", follow_last=False) == root / "etc/hosts"


def test_write_follows_trusted_link_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/local/etc").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/hosts").symlink_to("/usr/local/etc/hosts")
    host_file = tmp_path / "usr-local-etc-hosts"  # what a host-following write would hit
    write_atomic(root, "/etc/hosts", b"127.0.0.1 x\n")
    assert (root / "usr/local/etc/hosts").read_bytes() == b"127.0.0.1 x\n"
    assert (root / "etc/hosts").is_symlink()
    assert not host_file.exists()


def test_absolute_link_never_reaches_the_host(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "etc").symlink_to(str(outside))  # absolute: means <root>/<outside> inside root
    with pytest.raises(FileNotFoundError):
        write_atomic(root, "/etc/passwd", b"x")
    write_atomic(root, "/etc/passwd", b"x", create_parents=True)
    assert not (outside / "passwd").exists()
    assert (root / str(outside).lstrip("/") / "passwd").read_bytes() == b"x"


def test_dotdot_stops_at_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_atomic(root, "/../../escape", b"x")
    assert (root / "escape").exists()
    assert not (tmp_path / "escape").exists()


def test_untrusted_link_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "home/u/.ssh").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/shadow").write_text("root:hash:\n")
    (root / "home/u/.ssh/authorized_keys").symlink_to("/etc/shadow")
    with pytest.raises(UnsafePath, match="not followed"):
        write_atomic(root, "/home/u/.ssh/authorized_keys", b"key\n", follow="none")
    with pytest.raises(UnsafePath):
        read_bytes(root, "/home/u/.ssh/authorized_keys", follow="none")
    assert (root / "etc/shadow").read_text() == "root:hash:\n"


def test_hard_link_is_replaced_not_written_through(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "secret").write_text("keep\n")
    os.link(root / "secret", root / "d/f")
    write_atomic(root, "/d/f", b"new\n")
    assert (root / "secret").read_text() == "keep\n"
    assert (root / "d/f").read_bytes() == b"new\n"


def test_read_refuses_fifo(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "p")
    with pytest.raises(UnsafePath, match="regular file"):
        read_bytes(root, "/p")
    assert read_bytes(root, "/missing") is None


def test_write_modes_and_no_temp_left(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_atomic(root, "/a/b/secret", b"s", mode=0o600, create_parents=True, dir_mode=0o700)
    assert (root / "a/b/secret").stat().st_mode & 0o777 == 0o600
    assert (root / "a").stat().st_mode & 0o777 == 0o700
    write_atomic(root, "/a/b/secret", b"t", mode=None)
    assert (root / "a/b/secret").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (root / "a/b").iterdir()) == ["secret"]


def test_open_dir_creates_and_refuses_non_dirs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_text("")
    with open_dir(root, "/x/y", create=True) as fd:
        assert os.fstat(fd).st_ino == (root / "x/y").stat().st_ino
    with pytest.raises(UnsafePath, match="not a directory"), open_dir(root, "/f/z"):
        pass


def test_write_file_atomic(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_file_atomic(target, b"{}", mode=0o640)
    assert target.read_bytes() == b"{}"
    assert target.stat().st_mode & 0o777 == 0o640


def test_open_parent_and_read_at_refuse_links_at_the_name(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d/f").write_text("data")
    (root / "d/l").symlink_to("/d/f")
    with open_parent(root, "/d/l") as (dfd, name, st):  # trusted link at the end: followed
        assert name == "f" and st is not None
        found = read_at(dfd, name)
        assert found is not None and found[0] == b"data"
    with open_parent(root, "/d/l", follow_last=False) as (dfd, name, st):
        assert name == "l" and st is not None
        with pytest.raises(UnsafePath, match="symbolic link"):
            read_at(dfd, name)  # read_at itself never follows
        assert read_at(dfd, "missing") is None


def test_replace_at_streams_and_cleans_up_on_failure(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d/f").write_text("old")

    def broken(fh: BinaryIO) -> None:
        fh.write(b"half")
        raise OSError(5, "Input/output error")

    with open_dir(root, "/d") as dfd:
        with pytest.raises(OSError):
            replace_at(dfd, "f", broken, mode=0o644)
        assert (root / "d/f").read_text() == "old"
        assert sorted(p.name for p in (root / "d").iterdir()) == ["f"]
        replace_at(dfd, "f", lambda fh: None, mode=0o600)
    assert (root / "d/f").read_bytes() == b""
    assert (root / "d/f").stat().st_mode & 0o777 == 0o600


def test_write_atomic_new_mode_and_keep_owner(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_atomic(root, "/shadow", b"a", mode=None, new_mode=0o600)
    assert (root / "shadow").stat().st_mode & 0o777 == 0o600
    (root / "shadow").chmod(0o640)
    if os.geteuid() == 0:
        os.chown(root / "shadow", 0, 42)
    write_atomic(root, "/shadow", b"b", mode=None, new_mode=0o600, keep_owner=True)
    st = (root / "shadow").stat()
    assert st.st_mode & 0o777 == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (0, 42)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a link owned by a user")
def test_trusted_follows_root_links_but_not_users(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/shadow").write_text("s")
    (root / "home/u").mkdir(parents=True)
    (root / "home/u/k").symlink_to("/etc/shadow")
    with open_parent(root, "/home/u/k") as (_dfd, name, _st):
        assert name == "shadow"  # root-owned: an image's or admin's link
    os.chown(root / "home/u/k", 1000, 1000, follow_symlinks=False)
    with pytest.raises(UnsafePath, match="owned by uid 1000"), open_parent(root, "/home/u/k"):
        pass
    with pytest.raises(UnsafePath):
        write_atomic(root, "/home/u/k", b"x")
    assert (root / "etc/shadow").read_text() == "s"
