"""The identity of a slot image: `/boot/kairos-boot.cfg`.

GRUB reads COS_STATE without replaying its journal, the kernel replays it: after a power cut
between a rename's journal commit and its checkpoint, GRUB may load the kernel and initrd of
the file a slot name had *before* the rename while the initrd mounts the file it has *after*.
Each image therefore names its boot files: the line `set kairos_boot_id=<id>`, where id is
the first 32 hex digits of sha256 over /boot/vmlinuz followed by /boot/initrd. grub.cfg
sources it from the same loop device it loads the kernel from and passes
`kairos.boot_id=<id>`; the initrd mounts the slot file whose id matches (docs/boot-path.md).

The second line, `set kairos_image_id=<id>`, names the image as a whole (the boot id, then
/etc/kairos-release and /etc/os-release): the boot assessment refuses a failed *image*
whatever slot it is in (boot/assessment.py, docs/lifecycle.md). Files of older images have
only the first line; they boot, but are never assessed.

Two images with the same kernel and initrd share a boot id, and that is fine: booting either's
boot files is the same thing. Two builds with the same boot id and release files share an
image id: the assessment treats them as one image.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kairos import safefs
from kairos.errors import BadInput

BOOT_CFG = "boot/kairos-boot.cfg"
BOOT_FILES = ("boot/vmlinuz", "boot/initrd")  # what grub.cfg loads, in this order
# What makes one image another: its boot files (by their id) and its release files.
IMAGE_FILES = ("etc/kairos-release", "etc/os-release")
# Hashed first, so an image id can never equal the hash of anything else we compute.
IMAGE_ID_PREFIX = b"kairos image id v1\n"
BOOT_ID_VAR = "kairos_boot_id"
IMAGE_ID_VAR = "kairos_image_id"
ID_LEN = 32
_ID = re.compile(rf"[0-9a-f]{{{ID_LEN}}}")
_HEX = rf"([0-9a-f]{{{ID_LEN}}})"
# The whole file, exactly as render_boot_cfg writes it (the final newline may be missing).
_CFG = re.compile(rf"set {BOOT_ID_VAR}={_HEX}(?:\nset {IMAGE_ID_VAR}={_HEX})?\n?")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BootIds:
    """What an image's /boot/kairos-boot.cfg states."""

    boot_id: str  # of /boot/vmlinuz then /boot/initrd
    image_id: str | None  # of the image; None in a file written before image ids existed


def _chunks(tree: Path, rel: str) -> Iterator[bytes]:
    # Links inside the tree are followed there (GRUB follows them inside the image too);
    # none leads out of it, and the file itself is opened without following a link.
    missing = BadInput(f"/{rel} is missing or not a regular file in the image tree",
                       "the image needs a kernel and initrd in /boot (kairos build)")
    with contextlib.ExitStack() as stack:
        try:
            dfd, name, st = stack.enter_context(safefs.open_parent(tree, rel, follow="all"))
        except (FileNotFoundError, NotADirectoryError):
            raise missing from None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise missing
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dfd)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise safefs.UnsafePath(f"/{rel}", "is not a regular file")
            while chunk := fh.read(_CHUNK):
                yield chunk


def _check_id(value: str, what: str) -> None:
    if not _ID.fullmatch(value):
        raise BadInput(f"{value!r} is not {what}", f"{ID_LEN} lowercase hex digits")


def compute_boot_id(tree: Path) -> str:
    """The id of the kernel and initrd in `tree` (an image tree, as GRUB sees it)."""
    h = hashlib.sha256()
    for rel in BOOT_FILES:
        for chunk in _chunks(tree, rel):
            h.update(chunk)
    return h.hexdigest()[:ID_LEN]


def _release_file(tree: Path, rel: str) -> bytes:
    """A release file of `tree`, read inside it (Debian's /etc/os-release is a link to
    /usr/lib/os-release); a missing one, or a link to nothing, counts as empty."""
    try:
        data = safefs.read_bytes(tree, rel, follow="all")
    except (FileNotFoundError, NotADirectoryError):
        return b""
    except safefs.UnsafePath:  # a fifo or a device: never opened, it could hang the build
        raise BadInput(f"/{rel} in the image tree is not a regular file",
                       "make it a file (or remove it)") from None
    return data or b""


def compute_image_id(tree: Path, boot_id: str) -> str:
    """The id of the image in `tree` whose boot files have `boot_id`.

    sha256 over IMAGE_ID_PREFIX, the boot id and a newline, then for each of IMAGE_FILES its
    length in decimal, a newline and its bytes (the lengths keep two different splits of the
    same bytes apart); the first 32 hex digits."""
    _check_id(boot_id, "a boot id")
    h = hashlib.sha256(IMAGE_ID_PREFIX)
    h.update(boot_id.encode() + b"\n")
    for rel in IMAGE_FILES:
        data = _release_file(tree, rel)
        h.update(f"{len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()[:ID_LEN]


def render_boot_cfg(boot_id: str, image_id: str | None = None) -> str:
    """The content of /boot/kairos-boot.cfg: one GRUB command per id. The boot id comes
    first, on its own line: the initrd reads only that line (initrd-init.sh, boot_id_of)."""
    _check_id(boot_id, "a boot id")
    text = f"set {BOOT_ID_VAR}={boot_id}\n"
    if image_id is not None:
        _check_id(image_id, "an image id")
        text += f"set {IMAGE_ID_VAR}={image_id}\n"
    return text


def parse_boot_cfg(text: str) -> BootIds:
    """The ids a /boot/kairos-boot.cfg states: exactly what render_boot_cfg writes, or the
    one-line file of older images (image_id None). Anything else is refused (BadInput):
    GRUB would source it as commands and the initrd would not read it."""
    m = _CFG.fullmatch(text)
    if not m:
        raise BadInput(f"/{BOOT_CFG} in the image is not 'set {BOOT_ID_VAR}=<id>' "
                       f"(then 'set {IMAGE_ID_VAR}=<id>')",
                       "rebuild the image with kairos build")
    return BootIds(m.group(1), m.group(2))


def read_boot_ids(tree: Path) -> BootIds | None:
    """The ids `tree`'s /boot/kairos-boot.cfg states; None when the image has none."""
    try:
        data = safefs.read_bytes(tree, BOOT_CFG, follow="all")
    except FileNotFoundError:  # a link to nothing
        data = None
    if data is None:
        return None
    return parse_boot_cfg(data.decode("utf-8", "replace"))


def read_boot_id(tree: Path) -> str | None:
    """The boot id `tree`'s /boot/kairos-boot.cfg states; None when the image has none."""
    ids = read_boot_ids(tree)
    return ids.boot_id if ids is not None else None


def write_boot_cfg(tree: Path) -> str:
    """(Re)write /boot/kairos-boot.cfg for the boot and release files in `tree`; the boot id."""
    boot_id = compute_boot_id(tree)
    _write(tree, boot_id, compute_image_id(tree, boot_id))
    return boot_id


def _write(tree: Path, boot_id: str, image_id: str) -> None:
    # The file is ours: whatever is at its name (a link too) is replaced, nothing followed.
    with safefs.open_parent(tree, BOOT_CFG, follow="all", follow_last=False) as (dfd, name, _):
        safefs.write_at(dfd, name, render_boot_cfg(boot_id, image_id).encode(), mode=0o644,
                        shown=f"/{BOOT_CFG}")


def ensure_boot_cfg(tree: Path) -> str:
    """The boot id of `tree`'s boot files, with /boot/kairos-boot.cfg stating both ids.

    Written when the image has none (a foreign image), completed when it has only the boot
    id (an image built before image ids), and its image id line rewritten when it does not
    match the tree: an image derived from ours inherits our file, and a stale image id would
    make GRUB treat it as its parent (refuse it, when the parent failed). An image that states
    another *boot* id than its files have is refused (BadInput): GRUB would pass that id and
    no initrd could match it."""
    boot_id = compute_boot_id(tree)
    stated = read_boot_ids(tree)
    if stated is not None and stated.boot_id != boot_id:
        raise BadInput(f"the image's /{BOOT_CFG} says boot id {stated.boot_id}, its kernel and "
                       f"initrd have {boot_id}",
                       "the image was changed after it was built; rebuild it with kairos build")
    image_id = compute_image_id(tree, boot_id)
    if stated is None or stated.image_id != image_id:
        _write(tree, boot_id, image_id)
    return boot_id
