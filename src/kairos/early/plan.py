"""The mount plan of early boot, as data: computed from the kernel command line and the
layout env that the `rootfs` stage writes (/run/cos/cos-layout.env), applied by apply.py.

A live boot (the ISO: `root=live:CDLABEL=…`) keeps everything in RAM: what an installed
system makes writable (its overlays, its persistent volume and binds) becomes tmpfs overlays,
and no disk is mounted unless the kernel command line itself names one.

A user's own paths (`install.bind_mounts`, `install.ephemeral_mounts`: early/custom.py) join
an installed system's plan: binds with the built-in ones, ephemeral paths as overlays mounted
with the binds in one depth order, so a parent is always mounted before what is below it.
As in Kairos, they are not applied on live, recovery and autoreset boots."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

from kairos.boot.live import live_label
from kairos.early.custom import CustomPaths, Layout, UserMounts, custom_paths
from kairos.envfile import parse_env as parse_env  # re-exported for early/main.py

# Kairos's defaults (its bundled 00_rootfs.yaml): ephemeral overlays and persistent binds.
DEFAULT_RW_PATHS = ("/var", "/etc", "/srv")
IMMUCORE_RW_PATHS = ("/etc", "/root", "/home", "/opt", "/srv", "/usr/local", "/var")
DEFAULT_PERSISTENT_PATHS = (
    "/etc/cni", "/etc/init.d", "/etc/iscsi", "/etc/k0s", "/etc/kubernetes", "/etc/modprobe.d",
    "/etc/pwx", "/etc/rancher", "/etc/runlevels", "/etc/ssh", "/etc/ssl/certs",
    "/etc/sysconfig", "/etc/systemd", "/etc/zfs", "/home", "/opt", "/root", "/usr/libexec",
    "/var/cores", "/var/lib/ca-certificates", "/var/lib/cni", "/var/lib/containerd",
    "/var/lib/calico", "/var/lib/dbus", "/var/lib/etcd", "/var/lib/extensions",
    "/var/lib/confexts", "/var/lib/k0s", "/var/lib/kubelet", "/var/lib/longhorn", "/var/lib/osd",
    "/var/lib/rancher", "/var/lib/rook", "/var/lib/tailscale", "/var/lib/wicked",
    "/var/lib/kairos", "/var/log",
)
DEFAULT_VOLUMES = (("LABEL=COS_PERSISTENT", "/usr/local"),)
DEFAULT_OVERLAY = "tmpfs:25%"
STATE_TARGET = "/usr/local/.state"
MODES = ("active", "passive", "recovery", "autoreset", "live", "unknown")
# Where the initrd records the slot image it mounted (cos-img/filename unless the kernel's
# kairos.boot_id said the kernel came from another file: initrd-init.sh, mount_slot).
BOOTED_IMAGE = "/run/cos/booted-image"
# The mode of each slot file on COS_STATE. transition.img is mounted only when the initrd
# found that GRUB loaded the kernel from the file now named so (a flip interrupted between
# a rename's journal commit and its checkpoint): not the active image, and a complete one
# with a persistent state like any slot, so it boots as passive.
SLOT_MODES = {"/cOS/active.img": "active", "/cOS/passive.img": "passive",
              "/cOS/transition.img": "passive"}


@dataclass(frozen=True)
class BootParams:
    """What the kernel command line says about this boot."""

    mode: str = "unknown"
    image: str = ""
    overlay: str | None = None
    extra_mounts: tuple[tuple[str, str], ...] = ()
    debugrw: bool = False
    oem_label: str = "COS_OEM"
    oem_timeout: float = 10.0
    init: str = "/sbin/init"


def _mode_for(label: str, tokens: set[str], live: str | None) -> str:
    """Kairos's order (agent/state.py's boot_from_cmdline follows it too): a live medium
    labelled as a slot (`root=live:LABEL=COS_RECOVERY`, a squashfs recovery in Kairos) is
    that slot's boot; any other `root=live:` or `netboot` is a live boot."""
    name = label or live or ""
    if "kairos.reset" in tokens:
        return "autoreset"
    if name == "COS_ACTIVE":
        return "active"
    if name == "COS_PASSIVE":
        return "passive"
    if name in ("COS_RECOVERY", "COS_SYSTEM") or "recovery-mode" in tokens:
        return "recovery"
    if live is not None or "netboot" in tokens:
        return "live"
    return "unknown"


def parse_cmdline(text: str) -> BootParams:
    tokens = text.split()
    label, image, overlay, init = "", "", None, "/sbin/init"
    mounts: list[tuple[str, str]] = []
    debugrw = False
    oem_label, oem_timeout = "COS_OEM", 10.0
    for tok in tokens:
        key, _, value = tok.partition("=")
        if key == "root" and value.startswith("LABEL="):
            label = value[len("LABEL="):]
        elif key == "cos-img/filename":
            image = value
        elif key in ("rd.immucore.overlay", "rd.cos.overlay"):
            overlay = value
        elif key in ("rd.immucore.mount", "rd.cos.mount"):
            # LABEL=<label>:<mountpoint> (the source may itself contain '=')
            src, sep, target = value.rpartition(":")
            if sep and target.startswith("/"):
                mounts.append((src, target))
        elif key in ("rd.immucore.debugrw", "rd.cos.debugrw") and value in ("", "1", "true"):
            debugrw = True
        elif key in ("rd.immucore.oemlabel", "rd.cos.oemlabel") and value:
            oem_label = value
        elif key in ("rd.immucore.oemtimeout", "rd.cos.oemtimeout") and value:
            with contextlib.suppress(ValueError):
                oem_timeout = float(value)
        elif key == "init" and value.startswith("/"):
            init = value
    return BootParams(_mode_for(label, set(tokens), live_label(text)), image, overlay,
                      tuple(mounts), debugrw, oem_label, oem_timeout, init)


def booted_params(params: BootParams, booted_image: str) -> BootParams:
    """`params` for the image the initrd actually mounted (the content of BOOTED_IMAGE).

    The mode follows the file mounted, not the label GRUB's entry put on the command line:
    `passive.img` booted from the `cos` entry is a passive boot. Anything else (no record,
    the image the command line names, a recovery boot, an unknown file) leaves `params` as
    they are."""
    booted = booted_image.strip()
    mode = SLOT_MODES.get(booted)
    if mode is None or booted == params.image or params.mode not in ("active", "passive"):
        return params
    return dataclasses.replace(params, mode=mode, image=booted)


@dataclass(frozen=True)
class Overlay:
    path: str
    upper: str  # under the base overlay tmpfs
    work: str
    user: bool = False  # a user's path: reached through no symbolic link, made if missing


@dataclass(frozen=True)
class Volume:
    source: str  # LABEL=... or /dev/...
    target: str
    writable: bool


@dataclass(frozen=True)
class Bind:
    path: str  # where it shows up
    store: str  # where it lives on the persistent volume
    user: bool = False  # a user's path: reached through no symbolic link, made if missing


@dataclass(frozen=True)
class MountPlan:
    overlay_base: str = "/run/overlay"
    overlay_source: str = "tmpfs"  # tmpfs, or LABEL=... of a block device
    overlay_size: str = "25%"
    overlays: tuple[Overlay, ...] = ()
    volumes: tuple[Volume, ...] = ()
    binds: tuple[Bind, ...] = ()
    persistent: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)
    # A user's ephemeral paths: overlays mounted after the volumes, in depth order with
    # the binds (one may sit inside a persistent path, or hold one).
    ephemerals: tuple[Overlay, ...] = ()
    warnings: tuple[str, ...] = ()  # entries of the user's lists that were skipped

    def late_mounts(self, persistent_ok: bool = True) -> tuple[Bind | Overlay, ...]:
        """Binds (when the persistent volume is there) and ephemeral overlays, parents
        before children."""
        mounts: list[Bind | Overlay] = [*(self.binds if persistent_ok else ()),
                                        *self.ephemerals]
        return tuple(sorted(mounts, key=lambda m: (m.path.count("/"), m.path)))


def dashed(path: str) -> str:
    """/var/lib/foo → var-lib-foo, as immucore names its overlay and bind stores."""
    return path.strip("/").replace("/", "-")


def _split(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    return tuple(p for p in value.split() if p.startswith("/"))


def _volumes(text: str | None) -> tuple[tuple[str, str], ...]:
    if text is None:
        return DEFAULT_VOLUMES
    out = []
    for item in text.split():
        src, sep, target = item.rpartition(":")
        if sep and target.startswith("/"):
            out.append((src, target))
    return tuple(out)


def cover(paths: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The fewest of `paths` whose subtrees hold all of them, shallowest first:
    (/etc, /etc/ssh, /var/log, /var) → (/etc, /var)."""
    out: list[str] = []
    for path in sorted(dict.fromkeys(paths), key=lambda p: (p.count("/"), p)):
        if not any(path == top or path.startswith(top.rstrip("/") + "/") for top in out):
            out.append(path)
    return tuple(out)


def _overlay_spec(overlay: str) -> tuple[str, str]:
    """(source, size) of the overlay base: tmpfs with a size, or a block device."""
    if overlay.startswith("tmpfs"):
        return "tmpfs", overlay.partition(":")[2] or "25%"
    return overlay, ""


def _overlay(path: str, base: str, *, user: bool = False) -> Overlay:
    return Overlay(path, f"{base}/{dashed(path)}/.overlay/upper",
                   f"{base}/{dashed(path)}/.overlay/work", user)


def _overlays(paths: tuple[str, ...], volumes: tuple[tuple[str, str], ...],
              base: str) -> tuple[Overlay, ...]:
    # Overlays must not hide a volume's mount point: skip rw paths that a volume owns.
    vol_targets = {t for _, t in volumes}
    return tuple(_overlay(p, base) for p in dict.fromkeys(paths) if p not in vol_targets)


def live_plan(params: BootParams, env: dict[str, str]) -> MountPlan:
    """A live boot's plan: RAM only. Every path an installed system makes writable (rw
    paths, the persistent volume's mount point, the persistent paths) gets a tmpfs overlay;
    the layout's volumes and persistent binds are not mounted (they would be an installed
    disk's), only the command line's own `rd.immucore.mount`s and overlay device."""
    rw = _split(env.get("RW_PATHS") or None, DEFAULT_RW_PATHS)
    persistent = _split(env.get("PERSISTENT_STATE_PATHS") or None, DEFAULT_PERSISTENT_PATHS)
    vol_targets = tuple(t for _, t in _volumes(env.get("VOLUMES") or None))
    writable = cover((*IMMUCORE_RW_PATHS, *rw, *vol_targets, *persistent))
    layout = env.get("OVERLAY") or ""
    src, size = _overlay_spec(params.overlay or (layout if layout.startswith("tmpfs") else "")
                              or DEFAULT_OVERLAY)
    base = "/run/overlay"
    vols = tuple(Volume(s, t, writable=False) for s, t in params.extra_mounts)
    return MountPlan(base, src, size, _overlays(writable, params.extra_mounts, base), vols,
                     (), persistent=False,
                     notes=("live boot: everything writable is in RAM",))


def _ignored(user: UserMounts, why: str) -> tuple[str, ...]:
    return (f"{len(user.binds) + len(user.ephemerals)} custom mount(s) not applied: {why}",) \
        if user else ()


def make_plan(params: BootParams, env: dict[str, str],
              user: UserMounts | None = None) -> MountPlan:
    """Compute every mount of early boot; no side effects. `user`: the custom paths found
    (early/custom.py), checked and merged here."""
    user = user or UserMounts()
    if params.mode == "live":
        plan = live_plan(params, env)
        return dataclasses.replace(plan, notes=plan.notes + _ignored(user, "live boot"))
    recoveryish = params.mode in ("recovery", "autoreset")
    overlay = params.overlay or env.get("OVERLAY") or DEFAULT_OVERLAY
    rw_default = IMMUCORE_RW_PATHS if recoveryish else DEFAULT_RW_PATHS
    rw_paths = _split(env.get("RW_PATHS") or None, rw_default)
    if recoveryish:
        persistent_paths: tuple[str, ...] = ()
        volumes: tuple[tuple[str, str], ...] = _volumes(env.get("VOLUMES", ""))
    else:
        persistent_paths = _split(env.get("PERSISTENT_STATE_PATHS") or None,
                                  DEFAULT_PERSISTENT_PATHS)
        volumes = _volumes(env.get("VOLUMES") or None)
    volumes = volumes + params.extra_mounts
    base = "/run/overlay"
    overlays = _overlays(rw_paths, volumes, base)
    target = env.get("PERSISTENT_STATE_TARGET") or STATE_TARGET
    custom = CustomPaths() if recoveryish else custom_paths(
        user, Layout(rw_paths, persistent_paths, tuple(t for _, t in volumes), target), dashed)
    notes = _ignored(user, f"{params.mode} boot") if recoveryish else custom.merged
    ordered = sorted(dict.fromkeys(persistent_paths), key=lambda p: (p.count("/"), p))
    binds = sorted([*(Bind(p, f"{target}/{dashed(p)}.bind") for p in ordered),
                    *(Bind(p, f"{target}/{dashed(p)}.bind", user=True) for p in custom.binds)],
                   key=lambda b: (b.path.count("/"), b.path))
    src, size = _overlay_spec(overlay)
    # As immucore: extra volumes are read-only, the persistent one read-write.
    vols = tuple(Volume(s, t, writable="COS_PERSISTENT" in s) for s, t in volumes)
    return MountPlan(base, src, size, overlays, vols, tuple(binds), persistent=bool(binds),
                     notes=notes,
                     ephemerals=tuple(_overlay(p, base, user=True) for p in custom.ephemerals),
                     warnings=custom.skipped)
