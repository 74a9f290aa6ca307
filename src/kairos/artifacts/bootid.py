"""The identity of a slot image's boot files: `/boot/kairos-boot.cfg`.

GRUB reads COS_STATE without replaying its journal, the kernel replays it: after a power cut
between a rename's journal commit and its checkpoint, GRUB may load the kernel and initrd of
the file a slot name had *before* the rename while the initrd mounts the file it has *after*.
Each image therefore names its boot files: one GRUB line, `set kairos_boot_id=<id>`, where id
is the first 32 hex digits of sha256 over /boot/vmlinuz followed by /boot/initrd. grub.cfg
sources it from the same loop device it loads the kernel from and passes
`kairos.boot_id=<id>`; the initrd mounts the slot file whose id matches (docs/boot-path.md).

Two images with the same kernel and initrd share an id, and that is fine: booting either's
boot files is the same thing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from kairos import safefs
from kairos.errors import BadInput

BOOT_CFG = "boot/kairos-boot.cfg"
BOOT_FILES = ("boot/vmlinuz", "boot/initrd")  # what grub.cfg loads, in this order
ID_LEN = 32
_ID = re.compile(rf"[0-9a-f]{{{ID_LEN}}}")
_LINE = re.compile(rf"set kairos_boot_id=([0-9a-f]{{{ID_LEN}}})\n?")
_CHUNK = 1 << 20


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


def compute_boot_id(tree: Path) -> str:
    """The id of the kernel and initrd in `tree` (an image tree, as GRUB sees it)."""
    h = hashlib.sha256()
    for rel in BOOT_FILES:
        for chunk in _chunks(tree, rel):
            h.update(chunk)
    return h.hexdigest()[:ID_LEN]


def render_boot_cfg(boot_id: str) -> str:
    """The content of /boot/kairos-boot.cfg: one GRUB command."""
    if not _ID.fullmatch(boot_id):
        raise BadInput(f"{boot_id!r} is not a boot id", f"{ID_LEN} lowercase hex digits")
    return f"set kairos_boot_id={boot_id}\n"


def read_boot_id(tree: Path) -> str | None:
    """The id `tree`'s /boot/kairos-boot.cfg states; None when the image has none.

    A file that is there but not exactly one `set kairos_boot_id=<id>` line is refused: the
    initrd would not read it either."""
    try:
        data = safefs.read_bytes(tree, BOOT_CFG, follow="all")
    except FileNotFoundError:  # a link to nothing
        data = None
    if data is None:
        return None
    m = _LINE.fullmatch(data.decode("utf-8", "replace"))
    if not m:
        raise BadInput(f"/{BOOT_CFG} in the image is not one 'set kairos_boot_id=<id>' line",
                       "rebuild the image with kairos build")
    return m.group(1)


def write_boot_cfg(tree: Path) -> str:
    """(Re)write /boot/kairos-boot.cfg for the boot files in `tree`; the id."""
    boot_id = compute_boot_id(tree)
    _write(tree, boot_id)
    return boot_id


def _write(tree: Path, boot_id: str) -> None:
    # The file is ours: whatever is at its name (a link too) is replaced, nothing followed.
    with safefs.open_parent(tree, BOOT_CFG, follow="all", follow_last=False) as (dfd, name, _):
        safefs.write_at(dfd, name, render_boot_cfg(boot_id).encode(), mode=0o644,
                        shown=f"/{BOOT_CFG}")


def ensure_boot_cfg(tree: Path) -> str:
    """The id of `tree`'s boot files, writing /boot/kairos-boot.cfg when the image has none.
    An image that states another id than its files have is refused (BadInput): GRUB would
    pass that id and no initrd could match it."""
    boot_id = compute_boot_id(tree)
    stated = read_boot_id(tree)
    if stated is None:
        _write(tree, boot_id)
    elif stated != boot_id:
        raise BadInput(f"the image's /{BOOT_CFG} says boot id {stated}, its kernel and "
                       f"initrd have {boot_id}",
                       "the image was changed after it was built; rebuild it with kairos build")
    return boot_id
