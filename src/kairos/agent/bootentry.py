"""`kairos bootentry`: list the boot entries and select one for the next boot only
(Kairos's `kairos-agent bootentry --select`): it sets `next_entry` in /oem/grubenv."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kairos.agent import slotfile
from kairos.boot import grubenv
from kairos.boot.grubcfg import ENTRY_IDS
from kairos.errors import BadInput

OEM_GRUBENV = Path("/oem/grubenv")


@dataclass(frozen=True)
class BootEntries:
    entries: tuple[str, ...]
    default: str  # saved_entry, else the first entry
    next: str | None  # the one-shot selection, if any


def list_entries(env_file: Path = OEM_GRUBENV) -> BootEntries:
    env = grubenv.read(env_file) if env_file.exists() else {}
    return BootEntries(ENTRY_IDS, env.get("saved_entry") or ENTRY_IDS[0],
                       env.get("next_entry") or None)


def select(entry: str, env_file: Path = OEM_GRUBENV) -> BootEntries:
    """Boot `entry` once, at the next boot; later boots go back to the default."""
    if entry not in ENTRY_IDS:
        raise BadInput(f"unknown boot entry '{entry}'", f"choose one of: {', '.join(ENTRY_IDS)}")
    if not env_file.parent.is_dir():
        raise BadInput(f"{env_file.parent} is not mounted", "run this on an installed system")
    if not env_file.exists():
        grubenv.create(env_file)
    grubenv.set_vars(env_file, {"next_entry": entry})
    # GRUB reads COS_OEM without replaying its journal: a power cut before the next
    # checkpoint would otherwise lose the selection, or show GRUB a half-committed block.
    slotfile.checkpoint(env_file.parent)
    return list_entries(env_file)
