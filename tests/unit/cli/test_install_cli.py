"""`kairos install` / `manual-install`: parsing, the install: keys of the config, and the
refusals that come before any disk is looked at. No root, no disks written."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import kairos.cli as cli
import kairos.config as config_pkg
from kairos.agent import installer
from kairos.agent.devices import Disk, Inventory
from kairos.agent.install import ExtraPartition, LayoutOptions, plan_install
from kairos.agent.installer import Request, options
from kairos.cli.install_cmd import request
from kairos.config.fetch import fetch_text
from kairos.disk.sizes import GiB
from kairos.errors import BadInput
from kairos.run import run

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def kairos(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.setattr(cli, "VERB_MODULES", ("kairos.cli.install_cmd",))

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser(list(argv)).parse_args(list(argv))


def cfg(text: str, tmp: Path, name: str = "cc.yaml") -> Path:
    path = tmp / name
    path.write_text("#cloud-config\n" + text)
    return path


# ------------------------------------------------------------------------------ parsing

def test_install_is_registered_with_its_own_module() -> None:
    assert cli.VERB_OWNERS["install"] == "kairos.cli.install_cmd"
    assert cli.VERB_OWNERS["manual-install"] == "kairos.cli.install_cmd"
    assert "kairos.cli.install_cmd" in cli.VERB_MODULES
    cli.build_parser()  # every verb module together: no verb is registered twice


def test_install_flags() -> None:
    args = parse("install", "--device", "/dev/disk/by-id/x", "--cloud-config",
                 "https://example.org/c.yaml", "--source", "oci:reg/kairos:v1", "--reboot",
                 "--yes", "--json", "--grub-option", "extra_cmdline=quiet",
                 "--allow-insecure-registries")
    req = request(args)
    assert req == Request(device="/dev/disk/by-id/x", cloud_config="https://example.org/c.yaml",
                          source="oci:reg/kairos:v1", reboot=True, yes=True,
                          grub_options={"extra_cmdline": "quiet"}, insecure=True)
    assert args.json and args.func.__name__ == "install_cmd"


def test_install_defaults_come_from_the_config() -> None:
    req = request(parse("install"))
    assert req == Request()
    assert req.device is None and req.reboot is None and req.poweroff is None
    assert req.root == Path("/") and not req.auto and not req.yes


def test_manual_install_is_the_kairos_spelling(tmp_path: Path) -> None:
    args = parse("manual-install", str(tmp_path / "c.yaml"), "--device", "auto", "--poweroff")
    req = request(args)
    assert req.cloud_config == str(tmp_path / "c.yaml") and req.device == "auto"
    assert req.poweroff is True and req.reboot is None
    assert args.func.__name__ == "install_cmd"


@pytest.mark.parametrize("argv", [
    ("install", "--reboot", "--poweroff"),
    ("install", "--source", "file:/x", "--image", "/y"),
    ("manual-install",),
    ("manual-install", "c.yaml", "--cloud-config", "d.yaml"),
    ("install", "--grub-timeout", "x"),
])
def test_bad_arguments_exit_2(argv: tuple[str, ...], kairos: Run) -> None:
    with pytest.raises(SystemExit) as exit_:
        kairos(*argv)
    assert exit_.value.code == 2


def test_bad_grub_option(kairos: Run) -> None:
    code, _, err = kairos("install", "--device", "auto", "--grub-option", "novalue")
    assert code == 2 and "--grub-option 'novalue' is not KEY=VALUE" in err


# ------------------------------------------------------------------------------ options

def test_options_from_the_install_block() -> None:
    data = {"install": {
        "device": "script:///usr/local/bin/pick", "reboot": True, "auto": True,
        "grub_options": {"extra_cmdline": "console=ttyS0", "default_fallback": 2,
                         "debug": True},
        "partitions": {"oem": {"size": 128, "fs": "ext4"}, "persistent": {"size": 0},
                       "efi": {"size": 100}},
        "extra-partitions": [{"name": "data", "size": 0, "fs": "ext4", "label": "DATA"},
                             {"name": "raw", "size": 16, "fs": "none"},
                             {"name": "old", "size": 32}],
        "system": {"size": 3000}, "passive": {"size": 2500},
        "recovery-system": {"size": 4000}}}
    opts = options(data, Request())
    assert opts.device == "script:///usr/local/bin/pick"
    assert opts.reboot and not opts.poweroff and opts.auto and opts.source == ""
    assert opts.grub_options == {"extra_cmdline": "console=ttyS0", "default_fallback": "2",
                                 "debug": "true"}
    assert opts.layout == LayoutOptions(
        sizes={"oem": 128, "persistent": 0, "efi": 100},
        extra=(ExtraPartition("data", 0, "ext4", "DATA"), ExtraPartition("raw", 16, "none"),
               ExtraPartition("old", 32, "ext2")),
        system_mib=3000, passive_mib=2500, recovery_mib=4000)


def test_the_command_line_wins() -> None:
    data = {"install": {"device": "/dev/vda", "reboot": True,
                        "grub_options": {"extra_cmdline": "a"}, "source": "file:/a"}}
    opts = options(data, Request(device="/dev/vdb", poweroff=True, source="file:/b",
                                 grub_options={"extra_cmdline": "b"}))
    assert (opts.device, opts.reboot, opts.poweroff, opts.source) == \
        ("/dev/vdb", False, True, "file:/b")
    assert opts.grub_options == {"extra_cmdline": "b"}


@pytest.mark.parametrize(("install", "source"), [
    ({"system": {"source": "oci:a/b:1"}, "source": "file:/x", "image": "c/d"}, "oci:a/b:1"),
    ({"system": {"uri": "dir:/t"}}, "dir:/t"),
    ({"source": "ocifile:/i.tar", "image": "c/d"}, "ocifile:/i.tar"),
    ({"image": "quay.io/kairos/core:v1"}, "oci:quay.io/kairos/core:v1"),
    ({"image": "docker:quay.io/kairos/core:v1"}, "docker:quay.io/kairos/core:v1"),
    ({}, ""),
])
def test_source_keys(install: dict[str, object], source: str) -> None:
    assert options({"install": {"device": "auto", **install}}, Request()).source == source


def test_auto_defaults_the_device_to_auto() -> None:
    assert options({"install": {"auto": True}}, Request(auto=True)).device == "auto"
    with pytest.raises(BadInput, match="no device to install to"):
        options({"install": {"auto": True}}, Request())


@pytest.mark.parametrize(("install", "message"), [
    ({"reboot": True, "poweroff": True}, "install.reboot and install.poweroff are both true"),
    ({"reboot": "yes"}, "install.reboot is 'yes'"),
    ({"device": 3}, "install.device is 3"),
    ({"no-format": True}, "install.no-format is set, but installing onto existing "
     "partitions is not supported yet"),
    ({"encrypted_partitions": ["COS_PERSISTENT"]}, "encrypted partitions is not supported"),
    ({"partitions": {"bios": {"size": 2}}}, "install.partitions.bios is not a partition"),
    ({"partitions": {"state": {"fs": "xfs"}}}, "install.partitions.state.fs 'xfs' is not "
     "supported"),
    ({"partitions": {"oem": {"size": -1}}}, "install.partitions.oem.size is -1"),
    ({"partitions": {"oem": {"size": True}}}, "install.partitions.oem.size is True"),
    ({"extra-partitions": [{"size": 10}]}, "install.extra-partitions[0] has no name"),
    ({"extra-partitions": [{"name": "a b", "size": 10}]}, "is not a name of 1-36"),
    ({"extra-partitions": [{"name": "x" * 37, "size": 10}]}, "is not a name of 1-36"),
    ({"extra-partitions": [{"name": "State", "size": 10}]}, "one of Kairos's own"),
    ({"extra-partitions": [{"name": "d", "size": 10, "fs": "btrfs"}]}, "fs 'btrfs' is not "
     "supported"),
    ({"extra-partitions": [{"name": "d", "size": 10, "label": "COS_STATE"}]},
     "looks like one the boot searches for"),
    ({"extra-partitions": [{"name": "d", "size": 10, "fs": "vfat", "label": "TWELVECHARSX"}]},
     "is not a name of 1-11"),
    ({"extra-partitions": [{"name": "d", "size": 10, "label": "$(reboot)"}]},
     "is not a name of"),
    ({"extra-partitions": "data"}, "install.extra-partitions is 'data'"),
    ({"grub_options": {"extra_cmdline": ["a"]}}, "is not a single value"),
])
def test_install_keys_that_are_refused(install: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput) as err:
        options({"install": {"device": "auto", **install}}, Request())
    assert message in err.value.message


def test_install_keys_that_are_ignored_say_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        options({"install": {"device": "auto", "nousers": True, "bundles": [{"targets": []}]}},
                Request())
    assert "install.nousers is not supported yet: ignored" in caplog.text
    assert "install.bundles is not supported yet: ignored" in caplog.text


# ------------------------------------------------------------------------------ config

def test_a_config_file_is_used_as_is(tmp_path: Path) -> None:
    path = cfg("install: {device: /dev/vdb}\nhostname: x\n", tmp_path)
    loaded = installer.load_config(Request(cloud_config=str(path)), tmp_path)
    assert loaded.path == path and loaded.name == str(path)
    assert loaded.data == {"install": {"device": "/dev/vdb"}, "hostname": "x"}


def test_a_config_url_is_fetched(tmp_path: Path) -> None:
    served = cfg("install: {device: auto}\n", tmp_path, "served.yaml")
    work = tmp_path / "work"
    work.mkdir()
    loaded = installer.load_config(Request(cloud_config=f"file://{served}"), work)
    assert loaded.path == work / installer.CONFIG_NAME
    assert loaded.path.read_text() == served.read_text()
    assert loaded.data["install"] == {"device": "auto"}


@pytest.mark.parametrize(("text", "message"), [
    ("users:\n- name: kairos\n  groups: admin\n", "users[0].groups"),
    ('hostname: "x\n', "cc.yaml"),
])
def test_a_bad_config_is_refused(text: str, message: str, tmp_path: Path) -> None:
    path = cfg(text, tmp_path)
    with pytest.raises(BadInput) as err:
        installer.load_config(Request(cloud_config=str(path)), tmp_path)
    assert message in err.value.message


def test_a_config_without_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text("install: {device: auto}\n")
    with pytest.raises(BadInput, match="missing the #cloud-config header"):
        installer.load_config(Request(cloud_config=str(path)), tmp_path)


def test_a_missing_config_and_a_dead_url(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        installer.load_config(Request(cloud_config=str(tmp_path / "nope.yaml")), tmp_path)
    with pytest.raises(BadInput, match="cannot fetch file://"):
        installer.load_config(Request(cloud_config=f"file://{tmp_path}/nope.yaml"), tmp_path)


def fake_root(tmp: Path, *files: tuple[str, str], cmdline: str = "") -> Path:
    root = tmp / "root"
    for rel, text in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc/cmdline").write_text(cmdline)
    return root


def test_the_collected_config_is_installed_merged(tmp_path: Path) -> None:
    root = fake_root(tmp_path, ("run/initramfs/live/config.yaml",
                                "#cloud-config\ninstall: {auto: true, device: auto}\n"
                                "users:\n- name: kairos\n"),
                     ("oem/95_userdata/userdata.yaml", "#cloud-config\nhostname: edge\n"),
                     cmdline="quiet install.reboot=true")
    work = tmp_path / "work"
    work.mkdir()
    loaded = installer.load_config(Request(root=root), work)
    assert loaded.name == "collected"
    assert loaded.data["install"] == {"auto": True, "device": "auto", "reboot": True}
    assert loaded.path is not None
    text = loaded.path.read_text()
    assert text.startswith("#cloud-config\n# collected by `kairos install` from: ")
    assert "hostname: edge" in text and "name: kairos" in text


def test_nothing_collected_installs_no_config(tmp_path: Path) -> None:
    loaded = installer.load_config(Request(root=fake_root(tmp_path)), tmp_path)
    assert loaded.data == {} and loaded.path is None


def once(url: str) -> str:
    """fetch_text with one try and no delay."""
    return fetch_text(url, tries=1, delay=0)


def test_auto_waits_for_a_config_url(tmp_path: Path) -> None:
    """A config_url that does not answer yet is tried again until it does."""
    served = cfg("install: {auto: true, device: auto}\n", tmp_path, "late.yaml")
    later = tmp_path / "late-copy.yaml"
    root = fake_root(tmp_path, cmdline=f"config_url=file://{later}")
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds
        if len(sleeps) == 3:  # the server answers after half a minute
            later.write_text(served.read_text())

    merged = installer.collect_config(root, wait=300, sleep=sleep, clock=lambda: now[0],
                                      fetch=once)
    assert merged.get("install.auto") is True
    assert sleeps == [10.0, 10.0, 10.0]


def test_auto_gives_up_on_a_config_url_after_the_wait(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    root = fake_root(tmp_path, cmdline=f"config_url=file://{tmp_path}/never.yaml")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with caplog.at_level(logging.WARNING):
        merged = installer.collect_config(root, wait=300, sleep=sleep, clock=lambda: now[0],
                                          fetch=once)
    assert merged.get("install.auto") is None
    assert now[0] == 300.0
    assert "did not answer: installing without it" in caplog.text


# ------------------------------------------------------------------------------ run

def test_auto_without_install_auto_does_nothing(kairos: Run, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    root = fake_root(tmp_path, ("oem/90_custom.yaml", "#cloud-config\nhostname: x\n"))
    with caplog.at_level(logging.INFO):
        code, out, _ = kairos("install", "--auto", "--config-root", str(root))
    assert (code, out) == (0, "")
    assert "install.auto is not true in the collected config: no automatic install" \
        in caplog.text


def test_auto_with_no_disk_to_take_says_why(tmp_path: Path) -> None:
    root = fake_root(tmp_path, ("oem/90_custom.yaml",
                                "#cloud-config\ninstall: {auto: true, device: auto}\n"))
    inv = Inventory((Disk("vda", 20 * GiB, boot=True, mounts=("/",)),
                     Disk("vdb", 20 * GiB, partitions=("vdb1",))), {"vdb1": "vdb"})
    with pytest.raises(BadInput) as err:
        installer.run_install(Request(auto=True, root=root), inventory=lambda: inv)
    assert err.value.message == ("device: auto found no disk to install to: vda: the boot "
                                 "medium (the running system is on it); vdb: has partitions "
                                 "(vdb1)")


def test_no_live_medium_and_no_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_root(tmp_path)
    monkeypatch.setattr(installer, "LIVE_SLOT_IMAGE", tmp_path / "live/rootfs.squashfs")
    inv = Inventory((Disk("vdb", 20 * GiB),))
    with pytest.raises(BadInput, match=r"no slot image at .*/live/rootfs\.squashfs: this is "
                       "not a live system"):
        installer.run_install(Request(device="auto", root=root), inventory=lambda: inv)


def test_no_device_exits_2(kairos: Run, tmp_path: Path) -> None:
    code, _, err = kairos("install", "--config-root", str(fake_root(tmp_path)))
    assert code == 2 and "no device to install to" in err


def test_confirmation() -> None:
    with pytest.raises(BadInput, match="refusing to erase /dev/vdb without confirmation"):
        installer.confirm("plan", Path("/dev/vdb"), interactive=False)
    with pytest.raises(BadInput, match="installation cancelled"):
        installer.confirm("plan", Path("/dev/vdb"), interactive=True, ask=lambda _: "y\n")
    installer.confirm("plan", Path("/dev/vdb"), interactive=True, ask=lambda _: " YES\n")


# ------------------------------------------------------------------------------ sources

@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs squashfs-tools")
def test_a_dir_source_is_squashed_like_a_build(tmp_path: Path) -> None:
    """dir: (like oci: and ocifile:) goes through the upgrade's fetchers into scratch space;
    the slot made there is what the plan installs, and the records name the source."""
    tree = tmp_path / "tree"
    for rel, text in (("etc/kairos-release", 'KAIROS_VERSION="v9"\n'),
                      ("boot/vmlinuz", "kernel"), ("boot/initrd", "initrd"),
                      ("usr/lib/kairos/early-init", "#!/bin/sh\n")):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    req = Request(source=f"dir:{tree}", scratch=scratch)
    opts = options({"install": {"device": "auto"}}, req)
    with installer.slot_images(opts, req) as images:
        assert images.source == f"dir:{tree}" and images.recovery is None
        assert images.slot.parent.parent == scratch
        listing = run(["unsquashfs", "-l", str(images.slot)]).stdout
        assert "squashfs-root/boot/kairos-boot.cfg" in listing  # the boot id, as a build adds
        assert "squashfs-root/usr/lib/kairos/early-init" in listing
        assert not (tree / "boot/kairos-boot.cfg").exists()  # the user's tree is untouched
        plan = plan_install(images.slot, recovery_image=None, disk_size=None,
                            cloud_configs=[], grub_options={})
        plan = installer._records_from(plan, images)
        assert {r.source for r in plan.records.values()} == {f"dir:{tree}"}
        assert plan.records["active"].version == "v9"
    assert list(scratch.iterdir()) == []  # the scratch space goes with the install


def test_a_tree_source_that_is_no_kairos_image(tmp_path: Path) -> None:
    (tmp_path / "tree/etc").mkdir(parents=True)
    req = Request(source=f"dir:{tmp_path}/tree", scratch=tmp_path)
    opts = options({"install": {"device": "auto"}}, req)
    with pytest.raises(BadInput, match="the image has no /etc/kairos-release"), \
            installer.slot_images(opts, req):
        pass


@pytest.mark.parametrize(("source", "message"), [
    ("rootfs.squashfs", "is not of the form KIND:VALUE"),
    ("file:relative.squashfs", "is not absolute"),
    ("file:/nonexistent/rootfs.squashfs", "does not exist"),
])
def test_bad_sources(source: str, message: str) -> None:
    req = Request(source=source)
    with pytest.raises(BadInput, match=message), \
            installer.slot_images(options({"install": {"device": "auto"}}, req), req):
        pass


@pytest.mark.parametrize(("after", "ran"), [("reboot", ["reboot"]), ("poweroff", ["poweroff"]),
                                            ("", [""])])
def test_reboot_or_poweroff_when_done(after: str, ran: list[str]) -> None:
    seen: list[str] = []
    result = installer.Result("/dev/vdb", "auto", None, "file:/x", after)  # type: ignore[arg-type]
    installer.after_install(result, run_action=seen.append)
    assert seen == ran


def test_every_install_key_of_the_schema_is_decided() -> None:
    """Each install: key is honoured, refused (nothing written) or ignored with a warning."""
    schema = json.loads((Path(config_pkg.__file__).parent / "schema.json").read_text())
    keys = set(schema["$defs"]["install"]["properties"])
    lists = [set(installer.HONOURED_KEYS), set(installer.REFUSED_KEYS),
             set(installer.IGNORED_KEYS)]
    assert sum(len(x) for x in lists) == len(set().union(*lists))  # no key in two lists
    assert set().union(*lists) == keys
