"""Boot assessment: GRUB refuses a failed image and counts the boots of a tentative one.

The state is three variables in their own GRUB env block on COS_STATE, `/boot_assessment`
(docs/lifecycle.md has the whole design):

- `kairos_tentative`: the image id of an image that has not yet completed a good boot,
- `kairos_tries`: how many more boots it gets (`0`-`9`),
- `kairos_failed`: the image id GRUB refuses to boot from a slot entry.

Image ids come from each image's /boot/kairos-boot.cfg (artifacts/bootid.py), so a verdict
follows the image, whichever slot file it is in.

GRUB's side is the fragment `render_fragment` puts in the `cos` and `fallback` entries of
grub.cfg; `grub_boot` is the same logic in Python, and the unit tests run the rendered script
against it for every state. The agent's side is `arm` and `mark_good`, written with `write`.

Values are read the way GRUB compares them, so a damaged block can never make GRUB and the
agent disagree: GRUB compares ids as strings with the image's id (always 32 lowercase hex
digits), so an id value of any other form matches nothing and reads as "" here; GRUB counts
down only the values `1`-`9` and gives up on anything else, so any other tries value reads as
0. A block without its header is what GRUB cannot load at all: it reads as `Flags()`, no
assessment, which is what GRUB does with it too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from kairos.boot import grubenv
from kairos.errors import BadInput

log = logging.getLogger("kairos.assessment")

ENV_FILE = "boot_assessment"  # at COS_STATE's root, the name Kairos uses for the same job
TENTATIVE_VAR = "kairos_tentative"
TRIES_VAR = "kairos_tries"
FAILED_VAR = "kairos_failed"
# In this order at the head of the block: see `write`.
VARS = (TENTATIVE_VAR, TRIES_VAR, FAILED_VAR)
MAX_TRIES = 9  # one digit: GRUB script has no arithmetic, the countdown is spelled out
DEFAULT_TRIES = 1

# grub.cfg variables: the block's path (empty when COS_STATE has none), the id the image's
# boot cfg states (bootid.IMAGE_ID_VAR), and the entry's verdict (empty = refused).
FILE_VAR = "kairos_assess_file"
IMAGE_ID_VAR = "kairos_image_id"
BOOT_VAR = "kairos_boot"

# What GRUB prints on the serial console (tests and people read the log for these).
REFUSED_MARK = "kairos-grub: refusing"
TRY_MARK = "kairos-grub: counting a boot"

_ID = re.compile(r"[0-9a-f]{32}")
_TRIES = re.compile(r"[0-9]")


@dataclass(frozen=True)
class Flags:
    """The assessment variables as GRUB sees them (see the module doc for odd values)."""

    tentative: str = ""
    tries: int = 0
    failed: str = ""

    def __post_init__(self) -> None:
        for name, value in (("tentative", self.tentative), ("failed", self.failed)):
            if value and not _ID.fullmatch(value):
                raise BadInput(f"{value!r} is not an image id ({name})",
                               "32 lowercase hex digits, or empty")
        if not 0 <= self.tries <= MAX_TRIES:
            raise BadInput(f"{self.tries} boot tries cannot be counted by GRUB",
                           f"use 0-{MAX_TRIES}")


def _id_value(value: str | None) -> str:
    return value if value is not None and _ID.fullmatch(value) else ""


def from_env(env: Mapping[str, str]) -> Flags:
    """The flags the variables of an env block stand for, the way GRUB's fragment reads them
    (any env: ours via grubenv, or `grub-editenv list`)."""
    tries = env.get(TRIES_VAR, "")
    return Flags(_id_value(env.get(TENTATIVE_VAR)),
                 int(tries) if _TRIES.fullmatch(tries) else 0,
                 _id_value(env.get(FAILED_VAR)))


def to_env(flags: Flags) -> dict[str, str]:
    """The variables for `flags`, in block order. All three are always written: GRUB's
    save_env then rewrites them in place and never has to append one."""
    return {TENTATIVE_VAR: flags.tentative, TRIES_VAR: str(flags.tries),
            FAILED_VAR: flags.failed}


def read(state_root: Path) -> Flags:
    """The flags in `state_root`/boot_assessment; a missing file is `Flags()`, so is a file
    that is not an env block (GRUB cannot load it either; the next `write` replaces it)."""
    try:
        env = grubenv.read(state_root / ENV_FILE)
    except grubenv.EnvBlockError as exc:
        log.warning("%s (treated as no assessment flags)", exc.message)
        return Flags()
    return from_env(env)


def write(state_root: Path, flags: Flags) -> None:
    """Replace `state_root`/boot_assessment atomically (temp, fsync, rename: grubenv.write).

    Other variables in the block are kept, after ours. Ours come first because GRUB's save_env
    rewrites the block in place, sector by sector: at the head, all three fit in the first
    512-byte sector (137 bytes), and none of GRUB's writes changes their total length (the
    countdown keeps one digit; giving up empties `kairos_tentative` and fills
    `kairos_failed`, 32 characters each), so the rest of the block keeps its bytes and a cut
    in GRUB's write cannot tear anything.

    GRUB reads COS_STATE without replaying its journal and save_env writes the sectors where
    it found the file: the caller checkpoints the journal right after this (slotfile), or
    GRUB would read, and write into, the blocks of the file this one replaced."""
    path = state_root / ENV_FILE
    try:
        old = grubenv.read(path)
    except grubenv.EnvBlockError as exc:
        log.warning("%s (replaced)", exc.message)
        old = {}
    env = to_env(flags)
    env.update((name, value) for name, value in old.items() if name not in VARS)
    grubenv.write(path, env)


def arm(flags: Flags, image_id: str, tries: int) -> Flags:
    """The flags an upgrade writes just before its new image becomes bootable as active: the
    image is tentative with `tries` boots, and no earlier verdict is left behind."""
    del flags  # nothing of an earlier upgrade survives: no stale flag can cause a fallback
    if not _ID.fullmatch(image_id):
        raise BadInput(f"{image_id!r} is not an image id", "32 lowercase hex digits")
    if not 1 <= tries <= MAX_TRIES:
        raise BadInput(f"boot_assessment tries {tries} is invalid", f"use 1-{MAX_TRIES}")
    return Flags(image_id, tries, "")


def grub_boot(flags: Flags, image_id: str | None, *, can_write: bool = True
              ) -> tuple[bool, Flags]:
    """What the fragment in a slot entry does: (may the image boot, the flags it leaves).

    An image without an id is not assessed. A failed image is refused. A tentative image with
    tries left boots and spends one; without, it is marked failed and refused. `can_write`
    False is a save_env that fails: the boot cannot be counted, so it is refused (an image
    that GRUB cannot count would otherwise boot, panic and boot again forever) and the block
    stays as it was."""
    if not image_id:
        return True, flags
    if image_id == flags.failed:
        return False, flags
    if image_id != flags.tentative:
        return True, flags
    if not can_write:
        return False, flags
    if flags.tries >= 1:
        return True, Flags(flags.tentative, flags.tries - 1, flags.failed)
    return False, Flags("", 0, image_id)


def mark_good(flags: Flags, booted_id: str | None, slot_ids: Collection[str]) -> Flags:
    """The flags after a good boot of `booted_id`: the trial ends when it was this image's,
    or when no slot holds the tentative image any more (a stale flag of an upgrade that was
    cut). A tentative image still in a slot keeps its trial; `failed` is kept (GRUB still
    refuses that image; the next `arm` clears it)."""
    if flags.tentative and flags.tentative != booted_id and flags.tentative in slot_ids:
        return flags
    return Flags("", 0, flags.failed)


def is_failed(flags: Flags, image_id: str | None) -> bool:
    """Whether GRUB refuses `image_id` in a slot entry."""
    return bool(image_id) and image_id == flags.failed


def render_fragment(entry_id: str, indent: str = "  ") -> str:
    """The GRUB 2.06 script a slot entry runs after sourcing its image's boot cfg: it sets
    `kairos_boot` to 1 (load the kernel) or empty (refused: the entry loads nothing and GRUB's
    fallback chain takes the next entry). `grub_boot` is this logic; keep them together.

    The entry reads the block itself rather than grub.cfg once at the top: an entry refused
    before it may have just written it. GRUB script has no arithmetic, so the countdown is one
    branch per value."""
    t, n, f, img, ok, file = (f"${{{v}}}" for v in (*VARS, IMAGE_ID_VAR, BOOT_VAR, FILE_VAR))
    countdown = [f'if [ "{n}" = {MAX_TRIES} ]; then', f"  set {TRIES_VAR}={MAX_TRIES - 1}"]
    for value in range(MAX_TRIES - 1, 0, -1):
        countdown += [f'elif [ "{n}" = {value} ]; then', f"  set {TRIES_VAR}={value - 1}"]
    countdown += ["else", f"  set {BOOT_VAR}=", "fi"]
    lines = [
        f"set {BOOT_VAR}=1",
        f'if [ -n "{img}" ]; then',
        *(f"  set {v}=" for v in VARS),
        f'  if [ -n "{file}" ]; then',
        f'    load_env --file "{file}" {" ".join(VARS)}',
        "  fi",
        f'  if [ "{img}" = "{f}" ]; then',
        f"    set {BOOT_VAR}=",
        f'    echo "{REFUSED_MARK} {entry_id}: image {img} failed its boot assessment"',
        f'  elif [ "{img}" = "{t}" ]; then',
        *(f"    {line}" for line in countdown),
        f'    if [ -n "{ok}" ]; then',
        f'      if save_env --file "{file}" {TRIES_VAR}; then',
        f'        echo "{TRY_MARK} of tentative image {img} in {entry_id}: {n} left"',
        "      else",
        f"        set {BOOT_VAR}=",
        f'        echo "{REFUSED_MARK} {entry_id}: cannot count the boot in {file}"',
        "      fi",
        "    else",
        f"      set {TENTATIVE_VAR}=",
        f"      set {TRIES_VAR}=0",
        f'      set {FAILED_VAR}="{img}"',
        f'      save_env --file "{file}" {" ".join(VARS)}',
        f'      echo "{REFUSED_MARK} {entry_id}: image {img} used its boots without a good'
        ' one: marked failed"',
        "    fi",
        "  fi",
        "fi",
    ]
    return "".join(f"{indent}{line}\n" for line in lines)
