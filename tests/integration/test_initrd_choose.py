"""The initrd's choice of slot file (initrd-init.sh, mount_slot), run for real: the host's
static busybox (the one the initrd carries) with only the initrd's applets on PATH, real
squashfs images on a scratch "COS_STATE", real loop mounts.

The case it exists for: GRUB reads COS_STATE without replaying its journal, the kernel
replays it, so after a power cut inside an upgrade's renames GRUB may load the kernel and
initrd of the file a name had before a rename while the initrd sees the file it has after.
The kernel's kairos.boot_id says which boot files GRUB loaded; the initrd must mount the
file that has them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kairos.artifacts.bootid import render_boot_cfg
from kairos.artifacts.initrd import APPLETS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static not installed"),
]

INIT = Path(__file__).resolve().parents[2] / "src/kairos/artifacts/data/initrd-init.sh"
OLD, NEW, OTHER = "a" * 32, "b" * 32, "c" * 32
DRIVER = """
. "$INIT"
say() { echo "kairos-initrd: $*"; }  # the console, here stdout
mount_slot "$1" "$2" "$3" "$4"
rc=$?
echo "rc=$rc booted=$booted"
[ "$rc" = 0 ] && echo "name=$(cat "$4/name")" && umount "$4"
"""


def image(path: Path, name: str, boot_id: str | None) -> None:
    """A tiny slot image: /name says which one it is, /boot/kairos-boot.cfg its boot id."""
    tree = path.parent.parent.parent / "trees" / path.name
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "boot").mkdir(parents=True)
    (tree / "name").write_text(name)
    if boot_id:
        (tree / "boot/kairos-boot.cfg").write_text(render_boot_cfg(boot_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mksquashfs", str(tree), str(path), "-noappend", "-quiet", "-no-progress"],
                   check=True, capture_output=True)


@pytest.fixture
def initrd(tmp_path: Path) -> dict[str, Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for applet in APPLETS:
        (bindir / applet).symlink_to("/bin/busybox")
    (tmp_path / "sysroot").mkdir()
    return {"bin": bindir, "state": tmp_path / "state", "to": tmp_path / "sysroot"}


def choose(initrd: dict[str, Path], img: str, want: str) -> tuple[str, list[str]]:
    """Run mount_slot; (what it reports, the console lines)."""
    try:
        proc = subprocess.run(["/bin/busybox", "sh", "-c", DRIVER, "sh", str(initrd["state"]),
                               img, want, str(initrd["to"])],
                              env={"PATH": str(initrd["bin"]), "KAIROS_INITRD_LIB": "1",
                                   "INIT": str(INIT)},
                              capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["umount", str(initrd["to"])], check=False, capture_output=True)
    lines = proc.stdout.splitlines()
    console = [line for line in lines if line.startswith("kairos-initrd:")]
    result = " ".join(line for line in lines if not line.startswith("kairos-initrd:"))
    # nothing is left mounted and no loop device still holds an image
    assert not any(str(initrd["to"]) in m for m in Path("/proc/mounts").read_text().splitlines())
    held = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert str(initrd["state"]) not in held, held
    return result, console


def slots(initrd: dict[str, Path], **ids: str | None) -> None:
    for name, boot_id in ids.items():
        image(initrd["state"] / f"cOS/{name}.img", name, boot_id)


def test_matching_id_or_none_boots_the_named_image_silently(initrd: dict[str, Path]) -> None:
    slots(initrd, active=NEW, passive=OLD)
    assert choose(initrd, "/cOS/active.img", NEW) == (
        "rc=0 booted=/cOS/active.img name=active", [])
    assert choose(initrd, "/cOS/passive.img", OLD) == (
        "rc=0 booted=/cOS/passive.img name=passive", [])
    # no kairos.boot_id (an older grub.cfg, or turned off in grubenv): no check
    assert choose(initrd, "/cOS/active.img", "") == (
        "rc=0 booted=/cOS/active.img name=active", [])


def test_names_exchanged_under_grub_boots_the_file_the_kernel_came_from(
        initrd: dict[str, Path]) -> None:
    """GRUB saw active.img before the exchange (OLD), the kernel after (NEW)."""
    slots(initrd, active=NEW, passive=OLD)
    assert choose(initrd, "/cOS/active.img", OLD) == (
        "rc=0 booted=/cOS/passive.img name=passive",
        [f"kairos-initrd: boot id mismatch: /cOS/active.img has {NEW}, the kernel came with "
         f"{OLD} from /cOS/passive.img: booting /cOS/passive.img"])
    # and the fallback entry the other way round
    result, console = choose(initrd, "/cOS/passive.img", NEW)
    assert result == "rc=0 booted=/cOS/active.img name=active"
    assert len(console) == 1 and console[0].endswith("booting /cOS/active.img")


def test_fixed_order_active_passive_transition(initrd: dict[str, Path]) -> None:
    slots(initrd, active=OLD, passive=NEW, transition=OLD)
    assert choose(initrd, "/cOS/passive.img", OLD)[0] == (
        "rc=0 booted=/cOS/active.img name=active")
    slots(initrd, active=OTHER)
    assert choose(initrd, "/cOS/passive.img", OLD)[0] == (
        "rc=0 booted=/cOS/transition.img name=transition")


def test_no_file_has_the_id_boots_the_named_one_with_a_warning(initrd: dict[str, Path]) -> None:
    slots(initrd, active=NEW, passive=None)  # passive: an image from before boot ids
    assert choose(initrd, "/cOS/active.img", OTHER) == (
        "rc=0 booted=/cOS/active.img name=active",
        [f"kairos-initrd: boot id mismatch: /cOS/active.img has {NEW}, the kernel came with "
         f"{OTHER} and no image here has it: warning: booting /cOS/active.img anyway"])
    result, console = choose(initrd, "/cOS/passive.img", OTHER)
    assert result == "rc=0 booted=/cOS/passive.img name=passive"
    assert console[0].startswith("kairos-initrd: boot id mismatch: /cOS/passive.img has no id")


def test_recovery_tries_its_transition_file(initrd: dict[str, Path]) -> None:
    """An upgrade of recovery exchanges transition.squashfs and recovery.squashfs."""
    image(initrd["state"] / "cOS/recovery.squashfs", "recovery", NEW)
    image(initrd["state"] / "cOS/transition.squashfs", "transition", OLD)
    slots(initrd, active=OTHER)  # on another partition in real life: never tried
    assert choose(initrd, "/cOS/recovery.squashfs", OLD) == (
        "rc=0 booted=/cOS/transition.squashfs name=transition",
        [f"kairos-initrd: boot id mismatch: /cOS/recovery.squashfs has {NEW}, the kernel "
         f"came with {OLD} from /cOS/transition.squashfs: booting /cOS/transition.squashfs"])
    assert choose(initrd, "/cOS/recovery.squashfs", OTHER)[0] == (
        "rc=0 booted=/cOS/recovery.squashfs name=recovery")


def test_an_image_with_no_other_file_goes_on(initrd: dict[str, Path]) -> None:
    image(initrd["state"] / "cOS/custom.img", "custom", NEW)
    slots(initrd, active=OLD)
    assert choose(initrd, "/cOS/custom.img", OLD) == (
        "rc=0 booted=/cOS/custom.img name=custom",
        [f"kairos-initrd: boot id mismatch: /cOS/custom.img has {NEW}, the kernel came "
         f"with {OLD}; no other image to try: booting /cOS/custom.img"])


def test_a_missing_named_file(initrd: dict[str, Path]) -> None:
    slots(initrd, active=NEW)
    result, console = choose(initrd, "/cOS/passive.img", NEW)
    assert result == "rc=0 booted=/cOS/active.img name=active"
    assert "/cOS/passive.img has no such file" in console[0]
    # nothing has the id and the named file is not there: the initrd's fail (reboot) path
    assert choose(initrd, "/cOS/passive.img", OTHER)[0] == "rc=1 booted="
    assert choose(initrd, "/cOS/passive.img", "")[0] == "rc=1 booted="


def test_a_damaged_candidate_is_skipped(initrd: dict[str, Path]) -> None:
    slots(initrd, active=NEW, transition=OLD)
    (initrd["state"] / "cOS/passive.img").write_bytes(b"\0" * 4096)  # not a squashfs
    assert choose(initrd, "/cOS/active.img", OLD)[0] == (
        "rc=0 booted=/cOS/transition.img name=transition")
