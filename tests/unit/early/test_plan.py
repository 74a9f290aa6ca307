from __future__ import annotations

from pathlib import Path

from kairos.early.plan import (
    DEFAULT_PERSISTENT_PATHS,
    booted_params,
    dashed,
    make_plan,
    parse_cmdline,
    parse_env,
)

ACTIVE = ("BOOT_IMAGE=(loop0)/boot/vmlinuz root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img "
          "console=ttyS0 panic=5")


def test_modes_from_cmdline() -> None:
    assert parse_cmdline(ACTIVE).mode == "active"
    assert parse_cmdline("root=LABEL=COS_PASSIVE cos-img/filename=/cOS/passive.img").mode == "passive"
    assert parse_cmdline("root=LABEL=COS_SYSTEM cos-img/filename=/cOS/recovery.squashfs").mode \
        == "recovery"
    assert parse_cmdline("root=LABEL=COS_SYSTEM kairos.reset").mode == "autoreset"
    assert parse_cmdline("quiet").mode == "unknown"


def test_cmdline_keys_and_aliases() -> None:
    p = parse_cmdline(ACTIVE + " rd.immucore.overlay=tmpfs:30% rd.cos.mount=LABEL=DATA:/data "
                      "rd.immucore.mount=UUID=ab-cd:/srv/x rd.cos.debugrw rd.cos.oemlabel=MYOEM "
                      "rd.immucore.oemtimeout=3")
    assert p.image == "/cOS/active.img"
    assert p.overlay == "tmpfs:30%"
    assert p.extra_mounts == (("LABEL=DATA", "/data"), ("UUID=ab-cd", "/srv/x"))
    assert p.debugrw
    assert p.oem_label == "MYOEM"
    assert p.oem_timeout == 3.0
    assert not parse_cmdline(ACTIVE).debugrw


def test_default_active_plan_is_kairos_layout() -> None:
    plan = make_plan(parse_cmdline(ACTIVE), {})
    assert [o.path for o in plan.overlays] == ["/var", "/etc", "/srv"]
    assert plan.overlay_source == "tmpfs" and plan.overlay_size == "25%"
    assert [(v.source, v.target, v.writable) for v in plan.volumes] == \
        [("LABEL=COS_PERSISTENT", "/usr/local", True)]
    paths = [b.path for b in plan.binds]
    assert set(paths) == set(DEFAULT_PERSISTENT_PATHS)
    # parents before children: /etc/ssh is bound before anything below it would be
    depths = [p.count("/") for p in paths]
    assert depths == sorted(depths)
    ssh = next(b for b in plan.binds if b.path == "/etc/ssh")
    assert ssh.store == "/usr/local/.state/etc-ssh.bind"


def test_recovery_plan_has_nothing_persistent() -> None:
    plan = make_plan(parse_cmdline("root=LABEL=COS_SYSTEM cos-img/filename=/cOS/recovery.squashfs"),
                     {"OVERLAY": "tmpfs:25%"})
    assert plan.binds == ()
    assert plan.volumes == ()
    assert "/etc" in [o.path for o in plan.overlays]
    assert "/usr/local" in [o.path for o in plan.overlays]


def test_layout_env_overrides_and_cmdline_wins_for_overlay() -> None:
    env = parse_env('VOLUMES="LABEL=COS_PERSISTENT:/usr/local LABEL=DATA:/data"\n'
                    "OVERLAY=tmpfs:10%\nRW_PATHS='/var /etc'\n"
                    'PERSISTENT_STATE_PATHS="/home /var/lib/foo"\n# comment\n')
    plan = make_plan(parse_cmdline(ACTIVE), env)
    assert [o.path for o in plan.overlays] == ["/var", "/etc"]
    assert plan.overlay_size == "10%"
    assert [b.path for b in plan.binds] == ["/home", "/var/lib/foo"]
    assert [(v.target, v.writable) for v in plan.volumes] == [("/usr/local", True), ("/data", False)]
    plan2 = make_plan(parse_cmdline(ACTIVE + " rd.immucore.overlay=LABEL=OVL"), env)
    assert plan2.overlay_source == "LABEL=OVL"


def test_overlay_never_hides_a_volume() -> None:
    env = {"RW_PATHS": "/var /etc /usr/local"}
    plan = make_plan(parse_cmdline(ACTIVE), env)
    assert "/usr/local" not in [o.path for o in plan.overlays]


def test_dashed() -> None:
    assert dashed("/var/lib/rancher") == "var-lib-rancher"


def test_mode_follows_the_image_the_initrd_mounted() -> None:
    """After a boot id mismatch the initrd mounts another slot file than the command line
    names (/run/cos/booted-image): the mode is that file's."""
    active = parse_cmdline(ACTIVE)
    passive = parse_cmdline("root=LABEL=COS_PASSIVE cos-img/filename=/cOS/passive.img")
    swapped = booted_params(active, "/cOS/passive.img\n")
    assert (swapped.mode, swapped.image) == ("passive", "/cOS/passive.img")
    assert swapped.overlay == active.overlay and swapped.init == active.init
    assert booted_params(passive, "/cOS/active.img\n").mode == "active"
    moved = booted_params(passive, "/cOS/transition.img\n")
    assert (moved.mode, moved.image) == ("passive", "/cOS/transition.img")
    # the image the command line names, no record, or a file we do not know: as it was
    for record in ("/cOS/active.img\n", "", "/cOS/other.img\n", "garbage"):
        assert booted_params(active, record) == active
    recovery = parse_cmdline("root=LABEL=COS_SYSTEM cos-img/filename=/cOS/recovery.squashfs")
    assert booted_params(recovery, "/cOS/active.img\n") == recovery
    assert make_plan(swapped, {}).binds == make_plan(active, {}).binds


def test_early_init_reads_the_initrd_record(tmp_path: Path) -> None:
    from kairos.early.main import booted_mode

    record = tmp_path / "booted-image"
    active = parse_cmdline(ACTIVE)
    assert booted_mode(active, str(record)) == active  # an older initrd writes none
    record.write_text("/cOS/passive.img\n")
    assert booted_mode(active, str(record)).mode == "passive"
