"""install.bind_mounts / install.ephemeral_mounts in the boot's mount plan (early/custom.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from kairos.early.custom import (
    MAX_ENTRIES,
    Entry,
    UserMounts,
    normalise,
    user_mounts,
)
from kairos.early.plan import Bind, MountPlan, Overlay, make_plan, parse_cmdline

ACTIVE = "root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img console=ttyS0"
RECOVERY = "root=LABEL=COS_SYSTEM cos-img/filename=/cOS/recovery.squashfs"
LIVE = "root=live:CDLABEL=COS_LIVE rd.live.image"


def plan_for(binds: Sequence[object] = (), ephemerals: Sequence[object] = (),
             cmdline: str = ACTIVE, env: dict[str, str] | None = None) -> MountPlan:
    user = user_mounts({"bind_mounts": list(binds), "ephemeral_mounts": list(ephemerals)})
    return make_plan(parse_cmdline(cmdline), env or {}, user)


def test_custom_paths_join_the_plan() -> None:
    plan = plan_for(["/srv/data", "/var/lib/docker"], ["/opt/scratch/", "/home/kairos/.cache"])
    user_binds = [b for b in plan.binds if b.user]
    assert [(b.path, b.store) for b in user_binds] == [
        ("/srv/data", "/usr/local/.state/srv-data.bind"),
        ("/var/lib/docker", "/usr/local/.state/var-lib-docker.bind")]
    assert all(not b.user for b in plan.binds if b not in user_binds)
    assert [(o.path, o.upper, o.user) for o in plan.ephemerals] == [
        ("/opt/scratch", "/run/overlay/opt-scratch/.overlay/upper", True),
        ("/home/kairos/.cache", "/run/overlay/home-kairos-.cache/.overlay/upper", True)]
    # the built-in overlays stay as they were: the user's come after the volumes
    assert [o.path for o in plan.overlays] == ["/var", "/etc", "/srv"]
    assert plan.warnings == ()


def test_late_mounts_put_parents_first_whatever_their_kind() -> None:
    """An ephemeral path inside a persistent one (and a bind inside an ephemeral one) is
    mounted after its parent, or the parent's mount would hide it."""
    plan = plan_for(["/data/keep"], ["/opt/scratch", "/data"])
    order = [(m.path, type(m).__name__) for m in plan.late_mounts()]
    assert order.index(("/opt", "Bind")) < order.index(("/opt/scratch", "Overlay"))
    assert order.index(("/data", "Overlay")) < order.index(("/data/keep", "Bind"))
    depths = [p.count("/") for p, _ in order]
    assert depths == sorted(depths)
    # without the persistent partition only the ephemeral paths are mounted
    assert {type(m) for m in plan.late_mounts(persistent_ok=False)} == {Overlay}


def test_a_bind_over_an_ephemeral_path_makes_it_persistent() -> None:
    """/srv is an overlay of the layout: a bind over it keeps it (as in Kairos, where the
    bind is mounted over the overlay)."""
    plan = plan_for(["/srv"])
    assert Bind("/srv", "/usr/local/.state/srv.bind", user=True) in plan.binds
    assert "/srv" in [o.path for o in plan.overlays]


@pytest.mark.parametrize(("entry", "why"), [
    ("var/lib/x", "is not an absolute path"),
    ("/", "is the root directory"),
    ("", "is empty"),
    ("/var/lib/../../etc/shadow", "is not a normal path"),
    ("/var//lib/x", "is not a normal path"),
    ("/var/./lib", "is not a normal path"),
    ("/proc/x", "is under /proc"),
    ("/sys", "is under /sys"),
    ("/dev/disk", "is under /dev"),
    ("/run/cos", "is under /run"),
    ("/run/initramfs/cos-state", "is under /run"),
    ("/tmp/x", "is under /tmp"),
    ("/oem", "is under /oem"),
    ("/oem/90_custom.yaml", "is under /oem"),
    ("/usr/local", "is on the volume mounted at /usr/local"),
    ("/usr/local/.state/x", "is on the volume mounted at /usr/local"),
    ("/usr", "would hide the volume mounted at /usr/local"),
    ("/a b", "contains a space"),
    ("/a,upperdir=/etc", "contains a space, control character"),
    ("/a:/etc", "contains a space, control character"),
    ("/a\nb", "contains a space, control character"),
    (5, "is not a path but int"),
    ({"path": "/x"}, "is not a path but dict"),
    ("/" + "x" * 2000, "is longer than"),
])
def test_a_bad_entry_is_skipped_with_one_line(entry: object, why: str) -> None:
    for plan, key in ((plan_for([entry]), "install.bind_mounts"),
                      (plan_for([], [entry]), "install.ephemeral_mounts")):
        assert len(plan.warnings) == 1, plan.warnings
        line = plan.warnings[0]
        assert line.startswith(f"{key} entry ") and " skipped: it " in line and why in line
        assert "\n" not in line and len(line) < 300
        assert not [b for b in plan.binds if b.user] and plan.ephemerals == ()


@pytest.mark.parametrize("tree", ["/usr", "/etc", "/var", "/lib", "/bin", "/system", "/boot"])
def test_a_whole_system_tree_is_never_made_persistent(tree: str) -> None:
    plan = plan_for([tree])
    assert len(plan.warnings) == 1 and tree in plan.warnings[0]
    assert tree not in [b.path for b in plan.binds if b.user]


def test_duplicates_of_the_layout_are_merged_not_mounted_twice() -> None:
    plan = plan_for(["/etc/ssh", "/home/kairos", "/var/lib/x", "/var/lib/x/"],
                    ["/var/tmp", "/etc", "/srv/cache"])
    assert [b.path for b in plan.binds].count("/etc/ssh") == 1
    assert [b.path for b in plan.binds if b.user] == ["/var/lib/x"]
    assert plan.ephemerals == ()
    assert plan.warnings == ()
    assert any("/etc/ssh: already a persistent path" in n for n in plan.notes)
    assert any("/home/kairos: already persistent, under /home" in n for n in plan.notes)
    assert any("/var/tmp: already ephemeral, under /var" in n for n in plan.notes)
    assert any("/etc: already an ephemeral path" in n for n in plan.notes)
    # the same entry twice: one mount, or one line
    twice = plan_for(["/etc/ssh", "/etc/ssh", "/data", "/data"])
    assert len([n for n in twice.notes if "/etc/ssh" in n]) == 1
    assert [b.path for b in twice.binds if b.user] == ["/data"]


def test_conflicts_keep_what_persists() -> None:
    """A path in both lists, or an ephemeral entry naming a persistent path of the layout,
    stays persistent (immucore mounts the bind over the overlay), with a line saying so."""
    plan = plan_for(["/data"], ["/data", "/home"])
    assert [b.path for b in plan.binds if b.user] == ["/data"]
    assert plan.ephemerals == ()
    assert len(plan.warnings) == 2
    assert ("install.ephemeral_mounts entry /data skipped: it is in bind_mounts too; it "
            "stays persistent") in plan.warnings
    assert any(w.startswith("install.ephemeral_mounts entry /home skipped: it is a persistent")
               for w in plan.warnings)


def test_a_store_name_another_path_owns_is_refused() -> None:
    """immucore names stores by dashes: /var/lib-kairos would share /var/lib/kairos's."""
    plan = plan_for(["/var/lib-kairos"], ["/va-r"])
    assert [b.path for b in plan.binds if b.user] == []
    assert plan.warnings == ("install.bind_mounts entry /var/lib-kairos skipped: its store "
                             "name var-lib-kairos is the one of /var/lib/kairos",)
    assert [o.path for o in plan.ephemerals] == ["/va-r"]


def test_layout_volumes_from_the_env_and_cmdline_are_off_limits() -> None:
    plan = plan_for(["/data/x"], ["/mnt"],
                    cmdline=ACTIVE + " rd.immucore.mount=LABEL=DATA:/data",
                    env={"VOLUMES": "LABEL=COS_PERSISTENT:/usr/local LABEL=M:/mnt/disk"})
    assert not [b for b in plan.binds if b.user] and plan.ephemerals == ()
    assert "is on the volume mounted at /data" in plan.warnings[0]
    assert "would hide the volume mounted at /mnt/disk" in plan.warnings[1]


@pytest.mark.parametrize("cmdline", [RECOVERY, RECOVERY + " kairos.reset", LIVE])
def test_not_applied_on_recovery_autoreset_and_live_boots(cmdline: str) -> None:
    plan = plan_for(["/data"], ["/scratch"], cmdline=cmdline)
    assert not [b for b in plan.binds if b.user] and plan.ephemerals == ()
    assert plan.warnings == ()
    assert any("2 custom mount(s) not applied" in n for n in plan.notes)
    assert make_plan(parse_cmdline(cmdline), {}).notes == \
        tuple(n for n in plan.notes if "custom mount" not in n)


def test_no_custom_paths_leave_the_plan_as_it_was() -> None:
    assert make_plan(parse_cmdline(ACTIVE), {}, UserMounts()) == make_plan(parse_cmdline(ACTIVE), {})


def test_entries_from_the_config_and_kairos_env_files() -> None:
    user = user_mounts({"bind_mounts": ["/a"], "ephemeral_mounts": "/b /c"},
                       {"CUSTOM_BIND_MOUNTS": "/d  /e", "CUSTOM_EPHEMERAL_MOUNTS": ""},
                       {"CUSTOM_BIND_MOUNTS": "/a"})
    assert user.binds == (Entry("/a", "install.bind_mounts"), Entry("/d", "CUSTOM_BIND_MOUNTS"),
                          Entry("/e", "CUSTOM_BIND_MOUNTS"), Entry("/a", "CUSTOM_BIND_MOUNTS"))
    assert [e.value for e in user.ephemerals] == ["/b", "/c"]
    plan = make_plan(parse_cmdline(ACTIVE), {}, user)
    assert [b.path for b in plan.binds if b.user] == ["/a", "/d", "/e"]  # /a once
    # not a list at all: one line naming the key
    odd = make_plan(parse_cmdline(ACTIVE), {}, user_mounts({"bind_mounts": {"x": 1}}))
    assert odd.warnings == ("install.bind_mounts entry {'x': 1} skipped: it is not a path but "
                            "dict",)


def test_a_runaway_list_is_cut() -> None:
    plan = plan_for([f"/data/d{i}" for i in range(MAX_ENTRIES + 5)])
    assert len([b for b in plan.binds if b.user]) == MAX_ENTRIES
    assert plan.warnings == (f"bind_mounts: 5 entries past the first {MAX_ENTRIES} skipped",)


def test_normalise() -> None:
    assert normalise("/opt/scratch/") == ("/opt/scratch", "")
    assert normalise("/opt/scratch//")[0] == "/opt/scratch"
    assert normalise("//opt")[0] == ""


# ------------------------------------------------------------------ reading them at boot

def _root(tmp_path: Path, cmdline: str = ACTIVE) -> Path:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text(cmdline + "\n")
    (tmp_path / "oem").mkdir()
    (tmp_path / "run/cos").mkdir(parents=True)
    return tmp_path


def test_early_init_reads_the_installed_config_and_kairos_env_files(tmp_path: Path) -> None:
    from kairos.early.main import find_user_mounts, plan_boot

    root = _root(tmp_path)
    # what `kairos install` / `kairos disk` put in /oem: the install config as is
    (root / "oem/90_custom.yaml").write_text(
        "#cloud-config\ninstall:\n  device: auto\n  bind_mounts:\n    - /var/lib/ceph\n"
        "  ephemeral_mounts:\n    - /opt/scratch/\n")
    # what Kairos's installer hook (and its docs, for later additions) write in rootfs
    (root / "run/cos/custom-layout.env").write_text('CUSTOM_BIND_MOUNTS="/var/lib/docker"\n')
    (root / "run/cos/cos-layout.env").write_text('RW_PATHS="/var /etc /srv"\n')
    params = parse_cmdline(ACTIVE)
    user = find_user_mounts(params, {}, root)
    assert [e.value for e in user.binds] == ["/var/lib/ceph", "/var/lib/docker"]
    assert [e.value for e in user.ephemerals] == ["/opt/scratch/"]
    plan = plan_boot(params, root)
    assert {b.path for b in plan.binds if b.user} == {"/var/lib/ceph", "/var/lib/docker"}
    assert [o.path for o in plan.ephemerals] == ["/opt/scratch"]
    assert [o.path for o in plan.overlays] == ["/var", "/etc", "/srv"]
    # a recovery boot does not even look
    assert not find_user_mounts(parse_cmdline(RECOVERY), {}, root)


def test_a_key_added_to_oem_later_and_on_the_command_line(tmp_path: Path) -> None:
    from kairos.early.main import installed_config

    root = _root(tmp_path, ACTIVE + " install.ephemeral_mounts=/scratch")
    (root / "oem/95_later.yaml").write_text("#cloud-config\ninstall:\n  bind_mounts: [/data]\n")
    assert installed_config(root) == {"bind_mounts": ["/data"], "ephemeral_mounts": "/scratch"}


def test_configs_without_the_keys_are_not_collected(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import kairos.config.collect as collect_mod
    from kairos.early.main import installed_config

    root = _root(tmp_path)
    (root / "oem/90_custom.yaml").write_text("#cloud-config\ninstall: {device: auto}\n")

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("collected")

    monkeypatch.setattr(collect_mod, "collect", boom)
    assert installed_config(root) == {}


def test_a_config_that_cannot_be_merged_still_boots(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from kairos.early.main import plan_boot

    root = _root(tmp_path)
    # a map in one file, a list in the next: a merge conflict for the collector
    (root / "oem/90_a.yaml").write_text("#cloud-config\ninstall:\n  bind_mounts: [/data]\n")
    (root / "oem/91_b.yaml").write_text("#cloud-config\ninstall: [1]\n")
    (root / "run/cos/custom-layout.env").write_text("CUSTOM_EPHEMERAL_MOUNTS=/scratch\n")
    with caplog.at_level(logging.INFO, logger="kairos.early"):
        plan = plan_boot(parse_cmdline(ACTIVE), root)
    assert [o.path for o in plan.ephemerals] == ["/scratch"]
    assert not [b for b in plan.binds if b.user]
    assert any("cloud-config cannot be read" in r.getMessage() for r in caplog.records)


def test_each_skipped_entry_is_one_warning_in_the_boot_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from kairos.early.main import plan_boot

    root = _root(tmp_path)
    (root / "oem/90_custom.yaml").write_text(
        "#cloud-config\ninstall:\n  bind_mounts: [/proc/x, ../etc, /data]\n"
        "  ephemeral_mounts: [/var/tmp]\n")
    with caplog.at_level(logging.INFO, logger="kairos.early"):
        plan = plan_boot(parse_cmdline(ACTIVE), root)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["install.bind_mounts entry /proc/x skipped: it is under /proc, which "
                        "the boot owns",
                        "install.bind_mounts entry ../etc skipped: it is not an absolute path"]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "install.ephemeral_mounts entry /var/tmp: already ephemeral, under /var" in infos
    assert [b.path for b in plan.binds if b.user] == ["/data"]


def test_kairos_docs_way_of_adding_a_path_later(tmp_path: Path) -> None:
    """Kairos's docs (and its installer hook, /oem/10_user_custom_mounts.yaml) add paths with
    a rootfs stage writing /run/cos/custom-layout.env: the rootfs stage runs, then the plan
    has them."""
    from kairos.early.main import plan_boot
    from kairos.early.stage import run_and_record

    root = _root(tmp_path)
    (root / "oem/10_user_custom_mounts.yaml").write_text(
        "#cloud-config\nstages:\n  rootfs:\n    - name: user_custom_mounts\n"
        "      environment_file: /run/cos/custom-layout.env\n      environment:\n"
        '        CUSTOM_BIND_MOUNTS: "/var/lib/docker /var/lib/ceph"\n'
        '        CUSTOM_EPHEMERAL_MOUNTS: "/opt/scratch"\n')
    assert run_and_record("rootfs", root) is not None
    assert "CUSTOM_BIND_MOUNTS" in (root / "run/cos/custom-layout.env").read_text()
    plan = plan_boot(parse_cmdline(ACTIVE), root)
    assert [b.path for b in plan.binds if b.user] == ["/var/lib/ceph", "/var/lib/docker"]
    assert [o.path for o in plan.ephemerals] == ["/opt/scratch"]
