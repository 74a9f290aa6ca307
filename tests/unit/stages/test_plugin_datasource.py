from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kairos import safefs
from kairos.stages.context import Context, PluginError
from kairos.stages.plugins import datasource
from kairos.stages.runner import run_stage

from .helpers import make_step

USERDATA = "#cloud-config\nhostname: from-datasource\n"


def test_file_provider_writes_to_run_config(ctx: Context) -> None:
    (ctx.root / "srv").mkdir()
    (ctx.root / "srv/ud.yaml").write_text(USERDATA)
    datasource.apply(make_step(datasource={"providers": ["file"], "path": "/srv/ud.yaml"}), ctx)
    assert (ctx.root / "run/config/userdata").read_text() == USERDATA
    assert (ctx.root / "run/config/userdata.yaml").read_text() == USERDATA


def no_media(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasource, "find_labeled", lambda label: [])
    monkeypatch.setattr(datasource, "cd_drives", lambda: [])


def test_nothing_found_is_the_normal_case(ctx: Context, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    no_media(monkeypatch)
    with caplog.at_level(logging.DEBUG, logger=ctx.logger.name):
        datasource.apply(make_step(datasource={"providers": ["cdrom", "aws", "gcp"],
                                               "path": "/oem/95_userdata"}), ctx)
    assert not (ctx.root / "oem/95_userdata").exists()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.INFO, "datasource: no user data found (tried cdrom)") in messages
    assert (logging.INFO, "datasource: providers aws, gcp are not supported here; skipped") \
        in messages
    assert all(level < logging.WARNING for level, _ in messages), messages


def test_only_unsupported_providers_is_not_a_failure(ctx: Context,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=ctx.logger.name):
        datasource.apply(make_step(datasource={"providers": ["aws", "azure"]}), ctx)
    assert "no supported provider given" in caplog.text
    assert all(r.levelno < logging.WARNING for r in caplog.records)


def test_missing_file_source_is_not_a_failure(ctx: Context) -> None:
    datasource.apply(make_step(datasource={"providers": ["file"], "path": "/srv/none.yaml"}),
                     ctx)
    assert not (ctx.root / "run/config").exists()


def test_unreadable_labelled_volume_is_a_failure(ctx: Context,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(device: str, files: tuple[str, ...]) -> bytes | None:
        raise PluginError(f"{device}: cannot be mounted (bad superblock)")

    monkeypatch.setattr(datasource, "find_labeled", lambda label: ["/dev/vdb"])
    monkeypatch.setattr(datasource, "cd_drives", lambda: ["/dev/sr0"])
    monkeypatch.setattr(datasource, "read_from_device", broken)
    with pytest.raises(PluginError) as err:
        datasource.apply(make_step(datasource={"providers": ["cdrom"]}), ctx)
    # the labelled volume is the error; the unlabelled (empty) CD drive is not mentioned
    assert err.value.message == "/dev/vdb: cannot be mounted (bad superblock)"


def test_empty_cd_drive_is_not_a_failure(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_medium(device: str, files: tuple[str, ...]) -> bytes | None:
        raise PluginError(f"{device}: cannot be mounted (no medium found)")

    monkeypatch.setattr(datasource, "find_labeled", lambda label: [])
    monkeypatch.setattr(datasource, "cd_drives", lambda: ["/dev/sr0"])
    monkeypatch.setattr(datasource, "read_from_device", no_medium)
    datasource.apply(make_step(datasource={"providers": ["cdrom"]}), ctx)


def test_data_on_a_later_volume_wins_over_an_unreadable_one(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    def read(device: str, files: tuple[str, ...]) -> bytes | None:
        if device == "/dev/vdb":
            raise PluginError("/dev/vdb: cannot be mounted (bad superblock)")
        return USERDATA.encode()

    monkeypatch.setattr(datasource, "find_labeled", lambda label: ["/dev/vdb", "/dev/vdc"])
    monkeypatch.setattr(datasource, "cd_drives", lambda: [])
    monkeypatch.setattr(datasource, "read_from_device", read)
    datasource.apply(make_step(datasource={"providers": ["cdrom"],
                                           "path": "/oem/95_userdata"}), ctx)
    assert (ctx.root / "oem/95_userdata/userdata.yaml").read_text() == USERDATA


def test_unreadable_file_source_is_a_failure(ctx: Context,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (ctx.root / "srv").mkdir()
    (ctx.root / "srv/ud.yaml").write_text(USERDATA)
    real = safefs.read_bytes

    def read_bytes(root: Path, path: str, **kw: Any) -> bytes | None:
        if path == "/srv/ud.yaml":  # root reads through any mode bits; fail the read directly
            raise PermissionError(13, "Permission denied", path)
        return real(root, path, **kw)

    monkeypatch.setattr(safefs, "read_bytes", read_bytes)
    with pytest.raises(PluginError, match=r"/srv/ud\.yaml: cannot be read \(Permission denied\)"):
        datasource.apply(make_step(datasource={"providers": ["file"], "path": "/srv/ud.yaml"}),
                         ctx)


def test_volume_that_cannot_be_mounted(tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-filesystem.img"
    garbage.write_bytes(b"\0" * 65536)
    with pytest.raises(PluginError, match=r"not-a-filesystem\.img: cannot be mounted"):
        datasource.read_from_device(str(garbage), ("user-data",))


def test_in_a_stage_no_datasource_counts_as_a_successful_step(
        root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    no_media(monkeypatch)
    (root / "system/oem").mkdir(parents=True)
    (root / "system/oem/00_datasource.yaml").write_text(
        "name: Datasource\nstages:\n  rootfs.before:\n  - name: pull\n    datasource:\n"
        "      providers: [aws, gcp, openstack, cdrom]\n      path: /oem/95_userdata\n")
    with caplog.at_level(logging.DEBUG):
        report = run_stage("rootfs", root=root, cmdline="")
    assert report.ok and [r.name for r in report.run] == ["Datasource.pull"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_failed_save_fails_the_step(root: Path) -> None:
    (root / "srv").mkdir()
    (root / "srv/ud.yaml").write_text(USERDATA)
    (root / "run").mkdir()
    (root / "run/config").write_text("a file where the directory should be")
    (root / "oem").mkdir()
    (root / "oem/00.yaml").write_text(
        "stages:\n  boot:\n  - name: pull\n    datasource: {providers: [file], "
        "path: /srv/ud.yaml}\n")
    report = run_stage("boot", root=root, cmdline="")
    assert [r.name for r in report.failed] == ["/oem/00.yaml.pull"]
    assert report.failed[0].detail.startswith("datasource: ")


def test_script_userdata_runs(ctx: Context) -> None:
    datasource.save_userdata(ctx, "/oem/95_userdata",
                             b'#!/bin/sh\ntouch "$ROOT/script-ran"\n', "userdata.yaml")
    assert (ctx.root / "script-ran").exists()
    assert not (ctx.root / "oem/95_userdata/userdata.yaml").exists()


def test_unparseable_userdata_is_kept_raw(ctx: Context) -> None:
    datasource.save_userdata(ctx, "/run/config", b"just some text", "userdata.yaml")
    assert (ctx.root / "run/config/userdata").read_bytes() == b"just some text"
    assert not (ctx.root / "run/config/userdata.yaml").exists()


def can_mount_iso() -> bool:
    filesystems = Path("/proc/filesystems").read_text()
    return (os.geteuid() == 0 and shutil.which("genisoimage") is not None
            and Path("/dev/loop-control").exists() and "iso9660" in filesystems)


def test_cdrom_provider_flow(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Device discovery order and where the data goes (mounting is covered below)."""
    tried: list[str] = []

    def fake_read(device: str, files: tuple[str, ...]) -> bytes | None:
        tried.append(device)
        return USERDATA.encode() if device == "/dev/sr0" else None

    monkeypatch.setattr(datasource, "find_labeled", lambda label: ["/dev/vdb"])
    monkeypatch.setattr(datasource, "cd_drives", lambda: ["/dev/vdb", "/dev/sr0"])
    monkeypatch.setattr(datasource, "read_from_device", fake_read)
    datasource.apply(make_step(datasource={"providers": ["aws", "cdrom", "cdrom"],
                                           "path": "/oem/95_userdata"}), ctx)
    assert tried == ["/dev/vdb", "/dev/sr0"]
    assert (ctx.root / "oem/95_userdata/userdata.yaml").read_text() == USERDATA


@pytest.mark.skipif(not can_mount_iso(),
                    reason="needs root, genisoimage, loop devices and iso9660 in the kernel")
def test_cdrom_nocloud_iso(ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "user-data").write_text(USERDATA)
    (seed / "meta-data").write_text("instance-id: x\n")
    iso = tmp_path / "seed.iso"
    subprocess.run(["genisoimage", "-quiet", "-output", str(iso), "-volid", "cidata",
                    "-joliet", "-rock", str(seed)], check=True)
    labels: list[str] = []

    def find_labeled(label: str) -> list[str]:
        labels.append(label)
        return [str(iso)]

    monkeypatch.setattr(datasource, "find_labeled", find_labeled)
    monkeypatch.setattr(datasource, "cd_drives", lambda: [])
    try:
        datasource.apply(make_step(datasource={"providers": ["cdrom"],
                                               "path": "/oem/95_userdata"}), ctx)
    except PluginError as exc:
        if "mount" in exc.message:
            pytest.skip(f"loop mount not permitted here: {exc.message}")
        raise
    assert labels == ["cidata"]
    assert (ctx.root / "oem/95_userdata/userdata.yaml").read_text() == USERDATA


def test_saved_userdata_is_private(ctx: Context) -> None:
    """User data may hold passwords and tokens: 0600 root, also when it was saved 0644."""
    base = ctx.root / "oem/95_userdata"
    base.mkdir(parents=True)
    (base / "userdata.yaml").write_text(USERDATA)
    (base / "userdata.yaml").chmod(0o644)  # left by an older version
    datasource.save_userdata(ctx, "/oem/95_userdata", USERDATA.encode(), "userdata.yaml")
    for name in ("userdata", "userdata.yaml"):
        st = (base / name).stat()
        assert st.st_mode & 0o777 == 0o600, name
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (0, 0)


def test_script_userdata_is_private(ctx: Context) -> None:
    datasource.save_userdata(ctx, "/oem/95_userdata", b"#!/bin/sh\ntrue\n", "userdata.yaml")
    assert (ctx.root / "oem/95_userdata/userdata").stat().st_mode & 0o777 == 0o700
