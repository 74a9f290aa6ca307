"""The power-cut matrix: an upgrade cut at every phase (and at random instants) still boots.

One upgrade runs in the guest in step mode (KAIROS_UPGRADE_STEP=1, every phase paused until
SIGUSR1); the source is a plain registry without auth. At each pause, and at a random
instant during the slot write, the test takes an internal snapshot of
the boot disk through QMP: the disk exactly as a power cut at that moment would leave it
(what the guest had not written yet is lost; what QEMU had, stays). Then, for each moment,
the disk is reverted to that snapshot and cold-booted: GRUB, the initrd and early-init must
bring up a complete slot (old or new, never neither or a mix), `kairos state` must say what
booted, and the persistent files must be intact. At some moments the upgrade is then run
again and must converge. The cut after `done` is that upgrade's reboot: it is checked as
test_upgrade.py checks its reboots (slot digests and bytes, no failed unit or stage step,
the whole layer pulled once). The table of moments and outcomes is printed and written to
`upgrade-powercut.md` beside the test's disk (and kept in docs/upgrade.md).
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kairos.agent.phases import PHASES
from kairos.vm.config import VMConfig
from kairos.vm.machine import VM
from tests.helpers import BOOT_TIMEOUT, GUEST_CPUS, state
from tests.registry import push, registry
from tests.vm.conftest import assert_no_failed_steps
from tests.vm.stepping import step_through

# One upgrade and 12 cold boots: the longest VM test, in its own share of scripts/test.
pytestmark = pytest.mark.vm

# The moments: every phase from the pull on, and random instants between them.
CUT_PHASES = ("pull-partial", "pulled", "slot-writing", "slot-written",
              "slot-synced", "records-written", "staged", "flipped", "checkpointed",
              "after-upgrade", "done")
# The upgrade pauses at every phase (KAIROS_UPGRADE_PAUSE=all); `unpacked` is not cut, it
# only starts the random instant after it.
PAUSES = PHASES
# After these phases a random instant is cut too (while the next step is under way): after
# the unpack, the instant lands in the slot write, the longest step that writes COS_STATE.
RANDOM_AFTER = ("unpacked",)
# Where the upgrade is run again after the cut boot, and must converge.
CONVERGE_AT = ("slot-writing", "staged")
# Up to `staged` the old image must boot; from `checkpointed` on the new one. `flipped` (the
# journal committed, not yet checkpointed) may boot either, as a whole.
OLD_UNTIL = CUT_PHASES.index("staged")
NEW_FROM = CUT_PHASES.index("checkpointed")
PERSISTENT_FILES = ("/usr/local/powercut.txt", "/home/kairos/powercut.txt",
                    "/etc/ssh/ssh_host_ed25519_key.pub", "/oem/90_custom.yaml")
GUEST_HOST = "10.0.2.2"  # the host's 127.0.0.1 as QEMU's user network shows it


@dataclass
class Cut:
    name: str
    expect: str  # "old", "new" or "either"
    booted_version: str = ""
    boot: str = ""
    active_version: str = ""
    passive_version: str = ""
    files_intact: bool = False
    converged: str = ""
    note: str = ""
    problems: list[str] = field(default_factory=list)


def _hashes(vm: VM) -> str:
    return vm.ssh("sudo -n sha256sum " + " ".join(PERSISTENT_FILES)).stdout


def _images(st: dict[str, Any]) -> dict[str, Any]:
    images = st.get("images") or {}
    assert isinstance(images, dict), st
    return images


def _version(record: Any) -> str:
    return str(record.get("version", "")) if isinstance(record, dict) else ""


@pytest.fixture(scope="module")
def v2_ref(v2_image: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("powercut-registry")
    with registry(work) as reg:
        push(work, f"oci-archive:{v2_image['oci_archive']}", f"{reg.host}/kairos/core:v2")
        port = reg.host.rsplit(":", 1)[1]
        yield f"{GUEST_HOST}:{port}/kairos/core:v2"


def _boot(disk: Path, keypair: tuple[Path, Path], log: Path) -> VM:
    vm = VM(VMConfig(disk=disk, ssh_key=keypair[0], ssh_user="kairos", cpus=GUEST_CPUS,
                     serial_log=log, reboot="restart")).start()
    vm.wait_for_ssh(BOOT_TIMEOUT)
    return vm


def _step_upgrade(vm: VM, ref: str, rng: random.Random) -> tuple[list[str], dict[str, Any]]:
    """Run the upgrade in step mode, snapshotting the disk at each moment; returns the cuts
    in the order they were taken, and the upgrade's JSON result."""
    run = step_through(
        vm, f"kairos upgrade --source oci:{ref} --allow-insecure-registries --json",
        {"KAIROS_UPGRADE_PAUSE": "all", "KAIROS_UPGRADE_STEP": "1"}, "kairos-upgrade",
        PAUSES, CUT_PHASES, "cut",
        random_after={phase: rng.uniform(0.5, 6.0) for phase in RANDOM_AFTER})
    assert run.returncode == 0, run.stderr[-3000:]
    return run.taken, json.loads(run.stdout)


def _expect(name: str) -> str:
    if name.startswith("random-"):
        return "either"
    i = CUT_PHASES.index(name)
    return "old" if i <= OLD_UNTIL else "new" if i >= NEW_FROM else "either"


def _check_cut(cut: Cut, vm: VM, versions: tuple[str, str], before: str, ref: str) -> None:
    st = state(vm)
    cut.boot = str(st["boot"])
    kairos_section: dict[str, Any] = st["kairos"]  # type: ignore[assignment]
    cut.booted_version = str(kairos_section.get("version", ""))
    images = _images(st)
    cut.active_version = _version(images.get("active"))
    cut.passive_version = _version(images.get("passive"))
    cut.files_intact = _hashes(vm) == before
    if cut.name in CONVERGE_AT:
        out = vm.ssh(f"sudo -n kairos upgrade --source oci:{ref} --allow-insecure-registries "
                     "--json", timeout=1800).stdout
        result = json.loads(out)
        after = _images(state(vm))
        cut.converged = _version(after.get("active"))
        cut.note = f"re-run downloaded {result['layer_bytes_downloaded']} layer bytes"


def _check_upgraded(cut: Cut, vm: VM, v1_image: dict[str, Any], v2_image: dict[str, Any],
                    result: dict[str, Any]) -> None:
    """The cut after `done` is the anonymous-registry upgrade's reboot: check it as the
    upgrade tests check theirs (test_upgrade.py). Problems go into `cut.problems`."""
    images = _images(state(vm))
    for role, built in (("active", v2_image), ("passive", v1_image)):
        got = {k: (images.get(role) or {}).get(k) for k in ("version", "digest", "sha256")}
        want = {"version": built["version"], "digest": built["oci_digest"],
                "sha256": built["rootfs_sha256"]}
        if got != want:
            cut.problems.append(f"{role} slot holds {got}, expected {want}")
    if result.get("slot_sha256") != v2_image["rootfs_sha256"]:
        cut.problems.append("the device's slot image is not the bytes `kairos build` made")
    layout = Path(str(v2_image["oci_layout"]))
    manifest = json.loads((layout / "blobs/sha256" / str(v2_image["oci_digest"]).split(":")[1])
                          .read_bytes())
    layer = sum(int(entry["size"]) for entry in manifest["layers"])
    if result.get("layer_bytes_downloaded") != layer:
        cut.problems.append(f"a fresh blob cache pulled {result.get('layer_bytes_downloaded')}"
                            f" layer bytes, not the layer's {layer}")
    failed = vm.ssh("systemctl --failed --no-legend --plain").stdout.strip()
    if failed:
        cut.problems.append(f"failed units: {failed}")
    try:
        assert_no_failed_steps(vm)
    except AssertionError as exc:
        cut.problems.append(str(exc).splitlines()[0])


def _table(cuts: list[Cut]) -> str:
    rows = ["| moment | expected | booted | `state` boot | active | passive | persistent "
            "files | re-run |", "|---|---|---|---|---|---|---|---|"]
    for c in cuts:
        rows.append(f"| {c.name} | {c.expect} | {c.booted_version} | {c.boot} | "
                    f"{c.active_version} | {c.passive_version} | "
                    f"{'intact' if c.files_intact else 'CHANGED'} | "
                    f"{c.converged + ' (' + c.note + ')' if c.converged else '-'} |")
    return "\n".join(rows)


def test_power_cut_at_every_moment_boots_a_whole_slot(
        v1_disk: Path, keypair: tuple[Path, Path], v2_ref: str, v2_image: dict[str, Any],
        v1_image: dict[str, Any], tmp_path: Path) -> None:
    versions = (str(v1_image["version"]), str(v2_image["version"]))
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    str(v1_disk), str(disk)], check=True)
    seed = int(time.time())
    rng = random.Random(seed)
    vm = _boot(disk, keypair, tmp_path / "serial-step.log")
    try:
        vm.ssh("echo kept | sudo -n tee /usr/local/powercut.txt >/dev/null; "
               "echo kept > /home/kairos/powercut.txt; sync")
        before = _hashes(vm)
        taken, result = _step_upgrade(vm, v2_ref, rng)
    finally:
        vm.kill()
        vm.close()
    cuts: list[Cut] = []
    for i, name in enumerate(taken):
        subprocess.run(["qemu-img", "snapshot", "-a", f"cut-{name}", str(disk)], check=True)
        cut = Cut(name, _expect(name))
        cuts.append(cut)
        vm = _boot(disk, keypair, tmp_path / f"serial-cut-{i}.log")
        try:
            _check_cut(cut, vm, versions, before, v2_ref)
            if name == "done":
                _check_upgraded(cut, vm, v1_image, v2_image, result)
        finally:
            vm.kill()
            vm.close()
    table = _table(cuts)
    (tmp_path / "upgrade-powercut.md").write_text(f"seed {seed}\n\n{table}\n")
    print(f"\npower-cut matrix (random seed {seed}):\n{table}")
    old, new = versions
    for c in cuts:
        assert c.boot in ("active_boot", "passive_boot"), (c, table)
        assert c.booted_version in versions, (c, table)
        if c.expect == "old":
            assert (c.booted_version, c.boot) == (old, "active_boot"), (c, table)
        elif c.expect == "new":
            assert (c.booted_version, c.boot) == (new, "active_boot"), (c, table)
        # state matches what booted
        slot_version = c.active_version if c.boot == "active_boot" else c.passive_version
        assert slot_version == c.booted_version, (c, table)
        assert c.files_intact, (c, table)
        if c.name in CONVERGE_AT:
            assert c.converged == new, (c, table)
        assert not c.problems, (c, table)
    assert len(cuts) >= 12
