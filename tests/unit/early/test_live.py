"""A live boot (the ISO): its mode, its RAM-only mount plan, /oem in RAM, and the ISO's own
config read by the stages and the collector. The mode must agree with `kairos state`."""

from __future__ import annotations

from pathlib import Path

import pytest

from kairos.agent.state import boot_from_cmdline, detect_boot
from kairos.artifacts.iso import live_cmdline, render_live_grub_cfg
from kairos.boot.live import LIVE_CMDLINE, live_label
from kairos.config.collect import collect
from kairos.early import main as early_main
from kairos.early import stage
from kairos.early.plan import (
    DEFAULT_PERSISTENT_PATHS,
    IMMUCORE_RW_PATHS,
    cover,
    make_plan,
    parse_cmdline,
    parse_env,
)
from kairos.stages.loader import DEFAULT_DIRS

LIVE = f"BOOT_IMAGE=/boot/kernel {live_cmdline()}"
# early-init's mode name -> the boot state `kairos state` reports
STATE_OF = {"active": "active_boot", "passive": "passive_boot", "recovery": "recovery_boot",
            "autoreset": "autoreset_boot", "live": "livecd_boot", "unknown": "unknown"}
LAYOUT_ENV = parse_env(  # what the image's 00_rootfs.yaml writes on a non-recovery boot
    'VOLUMES="LABEL=COS_PERSISTENT:/usr/local"\nOVERLAY="tmpfs:25%"\n'
    'RW_PATHS="/var /etc /srv"\n'
    f'PERSISTENT_STATE_PATHS="{" ".join(DEFAULT_PERSISTENT_PATHS)}"\n')


def test_the_isos_command_line_is_a_live_boot() -> None:
    assert live_label(LIVE) == "COS_LIVE"
    assert parse_cmdline(LIVE).mode == "live"
    assert boot_from_cmdline(LIVE) == "livecd_boot"
    assert live_cmdline() in render_live_grub_cfg()


@pytest.mark.parametrize("cmdline", [
    LIVE,
    "root=live:LABEL=MYSTICK rd.live.dir=/ rd.live.squashimg=rootfs.squashfs",
    "root=live:LABEL=COS_RECOVERY rd.live.squashimg=recovery.squashfs",  # Kairos's recovery
    "netboot root=live:http://10.0.0.1/rootfs.squashfs",
    "root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img",
    "root=LABEL=COS_PASSIVE cos-img/filename=/cOS/passive.img",
    "root=LABEL=COS_SYSTEM cos-img/filename=/cOS/recovery.squashfs",
    "root=LABEL=COS_SYSTEM cos-img/filename=/cOS/recovery.squashfs kairos.reset",
    "quiet",
])
def test_early_init_and_state_agree_on_the_boot_mode(cmdline: str) -> None:
    assert STATE_OF[parse_cmdline(cmdline).mode] == boot_from_cmdline(cmdline)


def test_the_sentinel_early_init_writes_is_read_as_livecd(tmp_path: Path) -> None:
    (tmp_path / "run/cos").mkdir(parents=True)
    (tmp_path / f"run/cos/{parse_cmdline(LIVE).mode}_mode").touch()
    assert detect_boot(tmp_path, cmdline="") == "livecd_boot"


def test_cover_keeps_the_topmost_paths() -> None:
    assert cover(["/etc/ssh", "/var", "/etc", "/var/log", "/usr/local", "/usr/libexec"]) == \
        ("/etc", "/var", "/usr/libexec", "/usr/local")
    assert cover(["/var/lib", "/var/lib2"]) == ("/var/lib", "/var/lib2")


def test_live_plan_is_ram_only_and_writable_where_an_install_is() -> None:
    plan = make_plan(parse_cmdline(LIVE), LAYOUT_ENV)
    assert plan.volumes == () and plan.binds == () and not plan.persistent
    assert plan.overlay_source == "tmpfs" and plan.overlay_size == "25%"
    paths = {o.path for o in plan.overlays}
    # what an installed system writes: its rw paths, /usr/local (COS_PERSISTENT), the
    # persistent paths (under /etc, /var, /home, /root, /opt, /usr/libexec)
    assert paths == {"/etc", "/var", "/srv", "/usr/local", "/home", "/root", "/opt",
                     "/usr/libexec"}
    assert set(IMMUCORE_RW_PATHS) <= paths
    for path in DEFAULT_PERSISTENT_PATHS:
        assert any(path == p or path.startswith(p + "/") for p in paths), path
    # no overlay inside another: each is mounted once, on the read-only root
    assert cover(sorted(paths)) == tuple(sorted(paths, key=lambda p: (p.count("/"), p)))
    assert make_plan(parse_cmdline(LIVE), {}) == plan  # no layout env: the same


def test_live_plan_ignores_the_layouts_disks_but_not_the_command_lines() -> None:
    env = dict(LAYOUT_ENV, VOLUMES="LABEL=COS_PERSISTENT:/usr/local LABEL=DATA:/data",
               OVERLAY="LABEL=COS_PERSISTENT")
    plan = make_plan(parse_cmdline(LIVE), env)
    assert plan.volumes == () and plan.overlay_source == "tmpfs"
    assert "/data" in {o.path for o in plan.overlays}  # writable, in RAM
    assert make_plan(parse_cmdline(LIVE), {"OVERLAY": "tmpfs:40%"}).overlay_size == "40%"
    asked = make_plan(parse_cmdline(LIVE + " rd.cos.overlay=tmpfs:60% "
                                     "rd.immucore.mount=LABEL=DATA:/srv"), env)
    assert asked.overlay_size == "60%"
    assert [(v.source, v.target, v.writable) for v in asked.volumes] == \
        [("LABEL=DATA", "/srv", False)]
    assert "/srv" not in {o.path for o in asked.overlays}  # the volume is not hidden


def test_installed_boots_keep_their_plan() -> None:
    active = make_plan(parse_cmdline("root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img"),
                       LAYOUT_ENV)
    assert [v.target for v in active.volumes] == ["/usr/local"] and active.binds
    recovery = make_plan(parse_cmdline("root=LABEL=COS_SYSTEM"), {"OVERLAY": "tmpfs:25%"})
    assert [o.path for o in recovery.overlays] == list(IMMUCORE_RW_PATHS)


def test_live_oem_is_ram_and_no_disk_is_looked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    mounted: list[tuple[str, ...]] = []

    def fake_mount(source: str, target: str, fstype: str | None = None,
                   options: str = "") -> bool:
        mounted.append((source, target, fstype or "", options))
        return True

    def no_label(*_: object) -> str:
        raise AssertionError("a live boot looked for a disk label")

    monkeypatch.setattr(early_main, "mount", fake_mount)
    monkeypatch.setattr(early_main, "find_label", no_label)
    assert early_main._mount_oem(parse_cmdline(LIVE))
    assert mounted == [("tmpfs", "/oem", "tmpfs", "mode=755,nosuid,nodev")]


def _live_root(tmp_path: Path, *, sentinel: bool = True) -> Path:
    live = tmp_path / "run/initramfs/live"
    (live / "oem").mkdir(parents=True)
    (live / "config.yaml").write_text(
        "#cloud-config\nhostname: from-iso\nstages:\n  boot:\n  - name: iso config\n"
        "    files:\n    - path: /run/from-iso\n      content: iso\n")
    (live / "oem/10_extra.yaml").write_text(
        "name: iso oem\nstages:\n  boot:\n  - name: iso oem\n    files:\n"
        "    - path: /run/from-iso-oem\n      content: oem\n")
    (live / "rootfs.squashfs").write_bytes(b"hsqs")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text(LIVE + "\n")
    if sentinel:
        (tmp_path / "run/cos").mkdir(parents=True)
        (tmp_path / "run/cos/live_mode").touch()
    return tmp_path


def test_live_stages_read_the_isos_config_after_the_images_own(tmp_path: Path) -> None:
    root = _live_root(tmp_path)
    dirs = stage.stage_dirs(root, DEFAULT_DIRS)
    assert dirs == ("/system/oem", "/run/initramfs/live/config.yaml",
                    "/run/initramfs/live/oem", "/oem", "/usr/local/cloud-config")
    report = stage.run_and_record("boot", root)
    assert report is not None and not report.failed
    assert (root / "run/from-iso").read_text() == "iso"
    assert (root / "run/from-iso-oem").read_text() == "oem"


def test_installed_stages_do_not_read_a_live_dir(tmp_path: Path) -> None:
    root = _live_root(tmp_path, sentinel=False)
    assert stage.stage_dirs(root, DEFAULT_DIRS) == DEFAULT_DIRS
    stage.run_and_record("boot", root)
    assert not (root / "run/from-iso").exists()


def test_the_collector_reads_the_isos_config_and_oem_dir(tmp_path: Path) -> None:
    root = _live_root(tmp_path)
    (root / "run/initramfs/live/oem/20_user.yaml").write_text(
        "#cloud-config\ninstall:\n  auto: true\n  device: auto\n")
    (root / "oem").mkdir()
    (root / "oem/95_userdata").write_text("#cloud-config\nhostname: from-cidata\n")
    (root / "oem/95_userdata.yaml").write_text("#cloud-config\nhostname: from-cidata\n")
    merged = collect(root, cmdline="", fetch=False)
    assert merged.get("install.device") == "auto"
    assert "/run/initramfs/live/config.yaml" in merged.files[0]
    assert any(f.endswith("/run/initramfs/live/oem/20_user.yaml") for f in merged.files)
    # /oem (where a cidata volume's user-data lands) comes later and wins
    assert merged.get("hostname") == "from-cidata"
    assert merged.sources["hostname"].endswith("/oem/95_userdata.yaml")
    assert LIVE_CMDLINE in LIVE
