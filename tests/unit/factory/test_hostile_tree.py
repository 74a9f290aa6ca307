"""A base tree is not ours: absolute links in it (`etc -> /etc`, `boot -> /boot`, …) are
followed inside the tree, so the factory's writes, deletes and reads never reach the build
host. Here "the host" is a scratch directory the links point at, which must stay untouched."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kairos.artifacts.bootid import compute_image_id, render_boot_cfg
from kairos.errors import BadInput, KairosError
from kairos.factory import base, kairosify, treefs
from kairos.factory.release import Release

KVER = "6.1.0-9-amd64"
RELEASE = Release(version="v1.2.3", flavor="debian", flavor_release="12")


def snapshot(top: Path) -> dict[str, str]:
    """Every entry below `top` with its type and content (links by their target)."""
    seen: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(top))
            if p.is_symlink():
                seen[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                seen[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                seen[rel] = "dir"
    return seen


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """The stand-in for the build host. Not under /tmp: a tree's `tmp -> /tmp/…/host/tmp`
    would be a link to itself inside the tree, and what the links lead to inside the tree
    must not be where normalize() cleans (tmp, var/tmp, run)."""
    path = Path(tempfile.mkdtemp(prefix="kairos-host-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _host(host: Path) -> Path:
    """What a careless build would write to: files where the links point."""
    for rel, text in (("etc/hostname", "buildhost\n"), ("etc/fstab", "/dev/sda1 / ext4\n"),
                      ("etc/machine-id", "0123456789abcdef\n"), ("etc/shadow", "root:x:19000::\n"),
                      ("etc/kairos-release", "HOST\n"), ("etc/resolv.conf", "nameserver 9.9.9.9\n"),
                      ("etc/old-", "keep\n"), ("log/syslog", "host log\n"), ("tmp/work", "x\n"),
                      ("run/pid", "1\n"), ("boot/vmlinuz-host", "host kernel\n"),
                      ("boot/initrd.img-host", "host initrd\n"), ("units/cos-setup-fs.service", "x"),
                      ("sbin/policy-rc.d", "#!/bin/sh\nexit 0\n"), ("dbus/machine-id", "abc\n"),
                      ("python/x.py", "host = 1\n"), ("bin/kairos", "host tool\n")):
        (host / rel).parent.mkdir(parents=True, exist_ok=True)
        (host / rel).write_text(text)
    return host


def _hostile_tree(tmp_path: Path, host: Path) -> Path:
    """A small Debian-like tree whose directories are absolute links to the host dir."""
    root = tmp_path / "root"
    for rel in ("usr/bin", "usr/sbin", "usr/lib/systemd", "var/lib", "var/cache", "system"):
        (root / rel).mkdir(parents=True)
    links = {"etc": host / "etc", "var/log": host / "log", "tmp": host / "tmp",
             "run": host / "run", "boot": host / "boot",
             "usr/lib/systemd/system": host / "units", "var/lib/dbus": host / "dbus",
             "usr/lib/kairos": host / "python", "usr/bin/kairos": host / "bin/kairos"}
    for rel, target in links.items():
        (root / rel).symlink_to(target)
        inner = root / str(target).lstrip("/")  # where the link leads inside the tree
        if rel != "usr/bin/kairos":
            inner.mkdir(parents=True, exist_ok=True)
    inner_etc = root / str(host / "etc").lstrip("/")
    (inner_etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (inner_etc / "os-release").write_text("ID=debian\nVERSION_ID=12\n")
    inner_boot = root / str(host / "boot").lstrip("/")
    (inner_boot / f"vmlinuz-{KVER}").write_text("kernel\n")
    (inner_boot / "initrd.img-old").write_text("old initrd\n")
    moddir = root / "lib/modules" / KVER
    (moddir / "kernel").mkdir(parents=True)
    (moddir / "kernel/loop.ko").write_bytes(b"\x7fELF loop")
    (moddir / "modules.dep").write_text("kernel/loop.ko:\n")
    (root / "vmlinuz").symlink_to(f"boot/vmlinuz-{KVER}")
    return root


@pytest.fixture
def no_chroot(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Commands the factory runs in the chroot, recorded instead of run (no root here)."""
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> None:
        calls.append([str(a) for a in argv])

    monkeypatch.setattr(kairosify, "run", fake_run)
    return calls


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static not installed")
@pytest.mark.parametrize("init", ["systemd", "openrc"])
def test_kairosify_never_writes_through_links_out_of_the_tree(
        tmp_path: Path, host_dir: Path, init: str, no_chroot: list[list[str]]) -> None:
    host = _host(host_dir)
    before = snapshot(host)
    root = _hostile_tree(tmp_path, host)
    kairosify.kairosify(root, RELEASE, 1_700_000_000, init=init)
    assert snapshot(host) == before, "the build host was changed"
    inner = root / str(host).lstrip("/")
    assert 'KAIROS_VERSION="v1.2.3"' in (inner / "etc/kairos-release").read_text()
    assert (inner / "etc/hostname").read_text() == "localhost\n"
    assert (inner / "etc/machine-id").read_text() == ""
    assert (inner / "etc/shadow").read_text() == f"root:*:{1_700_000_000 // 86400}:0:99999:7:::\n"
    assert (inner / "boot/initrd").stat().st_size > 0
    assert (inner / "boot/vmlinuz").read_text() == "kernel\n"
    boot_id = hashlib.sha256(b"kernel\n" + (inner / "boot/initrd").read_bytes()).hexdigest()
    assert (inner / "boot/kairos-boot.cfg").read_text() == render_boot_cfg(
        boot_id[:32], compute_image_id(root, boot_id[:32]))
    assert not (inner / "boot/initrd.img-old").exists()
    assert (inner / "python/python/kairos/cli/__init__.py").is_file()  # the agent, inside
    wrapper = root / "usr/bin/kairos"  # a link leading nowhere inside: replaced by our file
    assert not wrapper.is_symlink() and "kairos.cli" in wrapper.read_text()
    assert not (root / "vmlinuz").is_symlink()
    if init == "systemd":
        assert (inner / "units/cos-setup-fs.service").is_file()
        wants = inner / "units/multi-user.target.wants/cos-setup-boot.service"
        assert os.readlink(wants) == "../cos-setup-boot.service"
    assert no_chroot and no_chroot[0][:2] == ["chroot", str(root)]


def test_normalize_deletes_only_inside(tmp_path: Path, host_dir: Path) -> None:
    host = _host(host_dir)
    before = snapshot(host)
    root = _hostile_tree(tmp_path, host)
    inner = root / str(host).lstrip("/")
    (inner / "log/dpkg.log").write_text("inside\n")
    (inner / "tmp/dir").mkdir()
    (root / "var/lib/systemd").mkdir()
    (root / "var/lib/systemd/deb-systemd-helper-enabled").symlink_to(host / "etc")
    kairosify.normalize(root, 1_700_000_000)
    assert snapshot(host) == before
    assert not (inner / "log/dpkg.log").exists()
    assert not (inner / "tmp/dir").exists()
    assert os.readlink(inner / "dbus/machine-id") == "/etc/machine-id"


def test_install_packages_keeps_resolv_conf_and_policy_inside(
        tmp_path: Path, host_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = _host(host_dir)
    before = snapshot(host)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr/sbin").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\n")
    (root / "etc/resolv.conf").symlink_to(host / "etc/resolv.conf")
    (root / "usr/sbin/policy-rc.d").symlink_to(host / "sbin/policy-rc.d")
    seen: dict[str, bytes] = {}

    def fake_run(argv: list[str], **_: object) -> None:
        seen["policy"] = (root / "usr/sbin/policy-rc.d").read_bytes()
        seen["resolv"] = (root / "etc/resolv.conf").read_bytes()

    @contextlib.contextmanager
    def fake_mounts(_root: Path) -> Iterator[Path]:
        yield _root

    monkeypatch.setattr(base, "run", fake_run)
    monkeypatch.setattr(base, "chroot_mounts", fake_mounts)
    monkeypatch.setattr(base, "missing_packages", lambda *_: ["sudo"])
    base.install_packages(root, ["sudo"])
    assert snapshot(host) == before
    assert seen["policy"] == b"#!/bin/sh\nexit 101\n"
    assert seen["resolv"] == Path("/etc/resolv.conf").read_bytes()
    assert os.readlink(root / "etc/resolv.conf") == str(host / "etc/resolv.conf")  # put back
    assert not os.path.lexists(root / "usr/sbin/policy-rc.d")


def test_initrd_reads_the_kernel_of_the_tree_not_the_host(tmp_path: Path) -> None:
    from kairos.artifacts.initrd import kernel_version
    host = tmp_path / "host"
    (host / "lib/modules/9.9.9-host").mkdir(parents=True)
    (host / "lib/modules/9.9.9-host/modules.dep").write_text("")
    root = tmp_path / "root"
    root.mkdir()
    (root / "lib").symlink_to(host / "lib")  # an absolute usr-merge style link
    with pytest.raises(KairosError, match="no kernel modules"):
        kernel_version(root)
    moddir = root / str(host).lstrip("/") / "lib/modules" / KVER
    moddir.mkdir(parents=True)
    (moddir / "modules.dep").symlink_to(host / "lib/modules/9.9.9-host/modules.dep")
    with pytest.raises(KairosError, match="no kernel modules"):
        kernel_version(root)  # a modules.dep that is a link out does not count
    (moddir / "modules.dep").unlink()
    (moddir / "modules.dep").write_text("")
    assert kernel_version(root) == KVER


def test_self_referencing_link_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").symlink_to("/etc")  # inside the tree: itself
    (root / "usr").mkdir()
    with pytest.raises(BadInput, match="symbolic link loop at /etc"):
        treefs.inside(root, "etc/os-release")
    with pytest.raises(BadInput, match="symbolic link loop"):
        treefs.write(root, "etc/kairos-release", "x")


def test_glob_never_leads_through_a_link(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "deep").mkdir(parents=True)
    (host / "deep/secret").write_text("x")
    root = tmp_path / "root"
    (root / "var/log/a").mkdir(parents=True)
    (root / "var/log/a/one.log").write_text("1")
    (root / "var/log/out").symlink_to(host)
    (root / "var/lib").mkdir()
    (root / "var/lib/deb-x").symlink_to(host)
    found = treefs.glob(root, "var/log/**/*")
    assert root / "var/log/a/one.log" in found
    assert root / "var/log/out" in found  # the link itself, to be deleted as a link
    assert not [p for p in found if "secret" in str(p)]
    assert treefs.glob(root, "var/lib/deb-*/**/*") == []
    assert treefs.glob(root, "nothing/*") == []
