"""The GRUB configuration: the early config embedded in GRUB images and COS_STATE's grub.cfg.

The early config (built into core.img and BOOTX64.EFI) only finds the COS_STATE filesystem and
hands over to `/grub2/grub.cfg` there, so upgrades can change the menu without reinstalling GRUB.
Runtime choices live in COS_OEM's `/grubenv` with Kairos's variable names: `next_entry`
(one-shot), `saved_entry`, `default_fallback`, `default_menu_entry`, `extra_cmdline` and
`extra_{active,passive,recovery}_cmdline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from kairos.boot import assessment
from kairos.errors import BadInput

STATE_LABEL = "COS_STATE"
OEM_LABEL = "COS_OEM"
RECOVERY_LABEL = "COS_RECOVERY"
# Printed on the serial console as soon as grub.cfg runs: tests and people watching a serial
# log can tell "GRUB found its config" apart from "GRUB never got that far".
CFG_MARKER = "kairos-grub: cfg loaded"

ENV_VARS = (
    "next_entry", "saved_entry", "default_fallback", "default_menu_entry",
    "extra_cmdline", "extra_active_cmdline", "extra_passive_cmdline", "extra_recovery_cmdline",
)

# Set by sourcing the image's /boot/kairos-boot.cfg (artifacts/bootid.py): the boot id is
# passed to the initrd as kairos.boot_id= so it can tell which file the kernel was loaded
# from; the image id is what the boot assessment judges (boot/assessment.py).
BOOT_CFG = "boot/kairos-boot.cfg"
BOOT_ID_VAR = "kairos_boot_id"
IMAGE_ID_VAR = assessment.IMAGE_ID_VAR
BOOT_ARG_VAR = "kairos_boot_arg"

COMMON_CMDLINE = ("console=tty1 console=ttyS0,115200 panic=5 rd.emergency=reboot "
                  "rd.cos.oemlabel=COS_OEM net.ifnames=1")


@dataclass(frozen=True)
class MenuEntry:
    """One boot entry: which image on which filesystem, with which root label."""

    id: str
    title_suffix: str
    fs_var: str  # grub.cfg variable holding the filesystem found by label
    image: str  # path of the slot image on that filesystem
    root_label: str
    extra_vars: tuple[str, ...]
    extra_args: str = ""
    # Slot entries refuse a failed image and count a tentative one's boots; the recovery
    # entries never refuse: they are what is left when both slots are.
    assessed: bool = False


ENTRIES: tuple[MenuEntry, ...] = (
    MenuEntry("cos", "", "state", "/cOS/active.img", "COS_ACTIVE", ("extra_active_cmdline",),
              assessed=True),
    MenuEntry("fallback", " (fallback)", "state", "/cOS/passive.img", "COS_PASSIVE",
              ("extra_passive_cmdline",), assessed=True),
    MenuEntry("recovery", " recovery", "recovery", "/cOS/recovery.squashfs", "COS_SYSTEM",
              ("extra_recovery_cmdline",)),
    MenuEntry("statereset", " state reset (auto)", "recovery", "/cOS/recovery.squashfs",
              "COS_SYSTEM", ("extra_recovery_cmdline",), "kairos.reset"),
)
ENTRY_IDS = tuple(e.id for e in ENTRIES)


@dataclass(frozen=True)
class GrubCfgOptions:
    """What may be tuned in the generated grub.cfg (everything else is the boot contract)."""

    timeout: int = 1  # seconds the menu waits; -1 waits for a key
    serial_unit: int = 0
    serial_speed: int = 115200
    title: str = "Kairos"  # shown unless grubenv sets default_menu_entry
    default_fallback: str = "fallback recovery"  # used unless grubenv sets default_fallback

    def __post_init__(self) -> None:
        if self.timeout < -1:
            raise BadInput(f"GRUB timeout {self.timeout} is invalid",
                           "use seconds >= 0, or -1 to wait for a key")
        if not 0 <= self.serial_unit <= 3:
            raise BadInput(f"serial unit {self.serial_unit} is invalid", "use 0-3 (ttyS0-3)")
        if self.serial_speed <= 0:
            raise BadInput(f"serial speed {self.serial_speed} is invalid", "use e.g. 115200")
        for text in (self.title, self.default_fallback):
            if any(c in text for c in '"$\\\n`'):
                raise BadInput(f"{text!r} cannot be put in grub.cfg",
                               "avoid quotes, '$', backslashes and newlines")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> GrubCfgOptions:
        """Build options from a plain mapping (config file or CLI), rejecting unknown keys."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise BadInput(f"unknown GRUB config option(s): {', '.join(unknown)}",
                           f"known: {', '.join(known)}")
        kwargs: dict[str, object] = {}
        for key, value in values.items():
            want_int = known[key] in ("int", int)
            try:
                kwargs[key] = int(str(value)) if want_int else str(value)
            except ValueError:
                raise BadInput(f"GRUB option {key}={value!r} must be a number",
                               f"e.g. {key}=1") from None
        return cls(**kwargs)  # type: ignore[arg-type]


def render_early_cfg(state_label: str = STATE_LABEL, serial_unit: int = 0,
                     serial_speed: int = 115200) -> str:
    """The config built into core.img/BOOTX64.EFI.

    GRUB runs it with its rescue parser (no `if`), so it is plain commands: the serial console
    first, so a failure to find COS_STATE is visible on headless machines too.
    """
    return (
        f"serial --unit={serial_unit} --speed={serial_speed}\n"
        "terminal_input --append serial\n"
        "terminal_output --append serial\n"
        f"search --no-floppy --label --set=root {state_label}\n"
        "set prefix=($root)/grub2\n"
        "configfile ($root)/grub2/grub.cfg\n"
    )


def _entry(entry: MenuEntry) -> str:
    extra = " ".join(f"${{{v}}}" for v in ("extra_cmdline", *entry.extra_vars))
    # The boot id comes before the extras: the initrd takes the last one, so grubenv can
    # override it (an empty `kairos.boot_id=` there turns the initrd's check off).
    args = (f"root=LABEL={entry.root_label} cos-img/filename={entry.image} {COMMON_CMDLINE}"
            + (f" {entry.extra_args}" if entry.extra_args else "")
            + f" ${{{BOOT_ARG_VAR}}} {extra}")
    load = f"linux (loop0)/boot/vmlinuz {args}\ninitrd (loop0)/boot/initrd\n"
    if entry.assessed:
        # A refused image loads no kernel: the entry fails and GRUB takes the next one of
        # `fallback` (cos, then fallback, then recovery).
        load = (assessment.render_fragment(entry.id, indent="")
                + f'if [ -n "${{{assessment.BOOT_VAR}}}" ]; then\n'
                + "".join(f"  {line}\n" for line in load.splitlines()) + "fi\n")
    return (
        f'menuentry "${{display_name}}{entry.title_suffix}" --id {entry.id} {{\n'
        f'  echo "kairos-grub: booting {entry.id} ({entry.image})"\n'
        # A failed entry leaves its loop0 behind; a fallback entry must not boot from it.
        "  if [ -d \"(loop0)/\" ]; then loopback -d loop0; fi\n"
        f'  loopback loop0 "(${entry.fs_var}){entry.image}"\n'
        # The id of the kernel and initrd read from this very loop device (artifacts/bootid):
        # `source` runs in the entry's own scope, so the variable is set right here.
        f"  set {BOOT_ID_VAR}=\n"
        f"  set {IMAGE_ID_VAR}=\n"
        f'  if [ -f "(loop0)/{BOOT_CFG}" ]; then source "(loop0)/{BOOT_CFG}"; fi\n'
        f"  set {BOOT_ARG_VAR}=\n"
        f'  if [ -n "${{{BOOT_ID_VAR}}}" ]; then '
        f'set {BOOT_ARG_VAR}="kairos.boot_id=${{{BOOT_ID_VAR}}}"; fi\n'
        + "".join(f"  {line}\n" for line in load.splitlines())
        + "}\n"
    )


def console_head(o: GrubCfgOptions) -> str:
    """The first lines of every menu we write: serial and screen, the marker tests wait
    for, the timeout."""
    return (f"serial --unit={o.serial_unit} --speed={o.serial_speed}\n"
            "terminal_input serial console\n"
            "terminal_output serial console\n"
            f'echo "{CFG_MARKER}"\n'
            f"set timeout={o.timeout}\n"
            "set timeout_style=menu\n")


def render_grub_cfg(options: GrubCfgOptions | None = None) -> str:
    """COS_STATE:/grub2/grub.cfg per the boot contract."""
    o = options or GrubCfgOptions()
    fallback_map = "".join(f'  if [ "$f" = {e.id} ]; then set n={i}; fi\n'
                           for i, e in enumerate(ENTRIES))
    head = f"""\
# Kairos boot menu, generated by kairos (lives on {STATE_LABEL}:/grub2/grub.cfg).
# Runtime choices come from {OEM_LABEL}:/grubenv; edit them with grub-editenv, not here.
{console_head(o)}
search --no-floppy --label --set=state {STATE_LABEL}
search --no-floppy --label --set=recovery {RECOVERY_LABEL}
set env_file=
if search --no-floppy --label --set=oem {OEM_LABEL}; then
  if [ -f "($oem)/grubenv" ]; then
    set env_file="($oem)/grubenv"
    load_env --file "$env_file"
  fi
fi

# One-shot selection first, then the saved default, then the active slot.
if [ -n "${{next_entry}}" ]; then
  set default="${{next_entry}}"
  set selected_entry="${{next_entry}}"
  set next_entry=
  if [ -n "$env_file" ]; then
    save_env --file "$env_file" next_entry
  fi
elif [ -n "${{saved_entry}}" ]; then
  set default="${{saved_entry}}"
else
  set default=cos
fi
if [ -n "${{default_fallback}}" ]; then
  set fallback_ids="${{default_fallback}}"
else
  set fallback_ids="{o.default_fallback}"
fi
# GRUB 2.06 reads `fallback` as entry numbers only (ids are silently ignored): translate.
set fallback=
for f in ${{fallback_ids}}; do
  set n="$f"
{fallback_map}  if [ -z "$fallback" ]; then set fallback="$n"; else set fallback="$fallback $n"; fi
done
if [ -n "${{default_menu_entry}}" ]; then
  set display_name="${{default_menu_entry}}"
else
  set display_name="{o.title}"
fi

# Boot assessment (boot/assessment.py): the slot entries read and write this block
# themselves (an entry refused before them may have just changed it).
set {assessment.FILE_VAR}=
if [ -f "($state)/{assessment.ENV_FILE}" ]; then
  set {assessment.FILE_VAR}="($state)/{assessment.ENV_FILE}"
fi

# Local hooks may adjust the selection from COS_STATE:/grubcustom.
if [ -f "($state)/grubcustom" ]; then
  source "($state)/grubcustom"
fi

# Menu entries run in their own scope: only exported variables reach them.
export state recovery selected_entry extra_cmdline extra_active_cmdline
export extra_passive_cmdline extra_recovery_cmdline {assessment.FILE_VAR}

"""
    return head + "\n".join(_entry(e) for e in ENTRIES)
