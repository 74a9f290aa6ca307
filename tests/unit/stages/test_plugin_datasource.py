from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kairos.stages.context import Context, PluginError
from kairos.stages.plugins import datasource

from .helpers import make_step

USERDATA = "#cloud-config\nhostname: from-datasource\n"


def test_file_provider_writes_to_run_config(ctx: Context) -> None:
    (ctx.root / "srv").mkdir()
    (ctx.root / "srv/ud.yaml").write_text(USERDATA)
    datasource.apply(make_step(datasource={"providers": ["file"], "path": "/srv/ud.yaml"}), ctx)
    assert (ctx.root / "run/config/userdata").read_text() == USERDATA
    assert (ctx.root / "run/config/userdata.yaml").read_text() == USERDATA


def test_nothing_found_is_a_failure_naming_providers(ctx: Context,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasource, "find_labeled", lambda label: [])
    monkeypatch.setattr(datasource, "cd_drives", lambda: [])
    with pytest.raises(PluginError, match=r"no user data found \(tried cdrom\)"):
        datasource.apply(make_step(datasource={"providers": ["cdrom", "aws", "gcp"],
                                               "path": "/oem/95_userdata"}), ctx)


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
