"""Apply a MountPlan on the booting system (PID 1, before the distribution's init)."""

from __future__ import annotations

import ctypes
import logging
import os
import stat
import time
import uuid
from pathlib import Path

from kairos.early.plan import Bind, MountPlan, Overlay, Volume
from kairos.run import run

log = logging.getLogger("kairos.early")


def is_mounted(path: str) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return any(line.split()[4] == target for line in fh)


MS_RDONLY = 1
MS_BIND = 4096
# Options that are mount flags, not fs data (mount(8) splits them the same way).
_FLAGS = {"ro": MS_RDONLY, "rw": 0, "bind": MS_BIND, "nosuid": 2, "nodev": 4, "noexec": 8,
          "noatime": 1024, "relatime": 1 << 21, "strictatime": 1 << 24}


def _syscall_mount(source: str, target: str, fstype: str | None, options: str) -> bool | None:
    """mount(2) directly: early boot makes dozens of mounts, and starting mount(8) for each
    costs seconds on a slow CPU. None when mount(8) must decide (an unknown fs type)."""
    opts = [o for o in options.split(",") if o]
    flags = 0
    data = []
    for opt in opts:
        if opt in _FLAGS:
            flags |= _FLAGS[opt]
        else:
            data.append(opt)
    if fstype is None and not flags & MS_BIND:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(source.encode(), target.encode(), (fstype or "").encode() or None,
                    ctypes.c_ulong(flags), ",".join(data).encode() or None)
    if rc != 0:
        err = ctypes.get_errno()
        log.warning("mount %s on %s failed: %s", source, target, os.strerror(err))
        return False
    log.debug("mounted %s on %s (%s %s)", source, target, fstype or "bind", options)
    return True


def mount(source: str, target: str, fstype: str | None = None, options: str = "") -> bool:
    """Mount and report success; early boot logs failures instead of raising."""
    os.makedirs(target, exist_ok=True)
    done = _syscall_mount(source, target, fstype, options)
    if done is not None:
        return done
    argv = ["mount"]
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", options]
    res = run([*argv, source, target], check=False)
    if res.returncode != 0:
        log.warning("mount %s on %s failed: %s", source, target, res.stderr.strip())
        return False
    return True


def find_label(label: str, timeout: float = 0.0) -> str | None:
    """The device with this filesystem label, polling (there is no udev yet)."""
    deadline = time.monotonic() + timeout
    while True:
        res = run(["blkid", "-c", "/dev/null", "-L", label], check=False)
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip().splitlines()[0]
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def resolve_source(source: str, timeout: float = 5.0) -> str | None:
    if source.startswith("LABEL="):
        return find_label(source[len("LABEL="):], timeout)
    if source.startswith("UUID="):
        res = run(["blkid", "-c", "/dev/null", "-U", source[5:]], check=False)
        return res.stdout.strip() or None
    return source if os.path.exists(source) else None


def mount_overlay_base(plan: MountPlan) -> bool:
    if plan.overlay_source == "tmpfs":
        return mount("tmpfs", plan.overlay_base, "tmpfs", f"size={plan.overlay_size},mode=755")
    dev = resolve_source(plan.overlay_source)
    if dev is None:
        log.warning("overlay device %s not found; using tmpfs", plan.overlay_source)
        return mount("tmpfs", plan.overlay_base, "tmpfs", "size=25%,mode=755")
    return mount(dev, plan.overlay_base)


def user_mount_point(path: str) -> bool:
    """Make sure a user's path is a directory reached from / through no symbolic link
    (one planted in a persistent path, e.g. a home, must not move a mount onto the host's
    files), making the missing ones, as Kairos makes a mount point that is not in the
    image. Under the read-only root that fails: one line, and the path is skipped.
    early-init runs alone (PID 1, before init), so nothing can swap a link in afterwards."""
    from kairos.safefs import UnsafePath, open_dir  # only when there are user paths

    try:
        with open_dir(Path("/"), path, create=True, follow="none"):
            return True
    except UnsafePath as exc:
        log.warning("custom mount %s skipped: %s", path, exc.message.partition(": ")[2])
    except OSError as exc:
        log.warning("custom mount %s skipped: cannot make it a directory (%s); add it to "
                    "the image", path, exc.strerror or exc)
    return False


def mount_overlay(ov: Overlay) -> bool:
    if ov.user:
        if not user_mount_point(ov.path):
            return False
    elif not os.path.isdir(ov.path):
        log.warning("rw path %s does not exist in the image; skipped", ov.path)
        return False
    os.makedirs(ov.upper, exist_ok=True)
    os.makedirs(ov.work, exist_ok=True)
    return mount("overlay", ov.path, "overlay",
                 f"lowerdir={ov.path},upperdir={ov.upper},workdir={ov.work}")


def mount_volume(vol: Volume, timeout: float = 5.0) -> bool:
    dev = resolve_source(vol.source, timeout)
    if dev is None:
        log.warning("volume %s not found; %s stays as in the image", vol.source, vol.target)
        return False
    return mount(dev, vol.target, options="rw" if vol.writable else "ro")


def _sync_fs(path: Path) -> None:
    """Flush the filesystem holding `path` (syncfs(2): that one only, cheap in early boot)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def seed_store(store: Path, source: str) -> bool:
    """Make the persistent store `store` a copy of the image's `source` directory (which may
    be missing: an empty store). The copy goes to STORE.new, is synced, and only then renamed
    into place: a failed copy or a power cut leaves no store, so the next boot seeds again."""
    tmp = store.with_name(store.name + ".new")
    run(["rm", "-rf", str(tmp)], check=False)  # a partial copy from an interrupted boot
    try:
        tmp.mkdir(parents=True)
        if os.path.isdir(source):
            res = run(["cp", "-a", f"{source}/.", str(tmp)], check=False)
            if res.returncode != 0:
                why = res.stderr.strip().splitlines()[-1:] or [f"exit code {res.returncode}"]
                log.warning("cannot seed the persistent %s from the image: %s; not bound this "
                            "boot, the next boot tries again", source, why[0])
                run(["rm", "-rf", str(tmp)], check=False)
                return False
        _sync_fs(tmp)
        # Only a complete, synced seed becomes the store. Should the rename itself be lost
        # to a power cut, the next boot finds no store and seeds again.
        tmp.rename(store)
    except OSError as exc:
        log.warning("cannot seed the persistent %s: %s; not bound this boot", source, exc)
        run(["rm", "-rf", str(tmp)], check=False)
        return False
    return True


def _bind_point(bind: Bind) -> bool:
    if bind.user:
        return user_mount_point(bind.path)
    try:
        os.makedirs(bind.path, exist_ok=True)
    except OSError as exc:
        log.warning("cannot create %s for a persistent bind: %s", bind.path, exc)
        return False
    return True


def store_state(store: Path) -> str:
    """"dir", "missing", or why the store cannot be used: it and its parent are on the
    persistent partition, where a link must never be followed."""
    for path in (store.parent, store):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            return f"{path} cannot be read ({exc.strerror})"
        if not stat.S_ISDIR(st.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
            return f"{path} is {what}"
    return "dir"


def apply_bind(bind: Bind) -> bool:
    """Bind a persistent store over a path; the first time, seed it from the image. When the
    seed fails nothing is bound: the path stays as the image has it for this boot."""
    if not _bind_point(bind):
        return False
    store = Path(bind.store)
    found = store_state(store)
    if found == "missing":
        if not seed_store(store, bind.path):
            return False
    elif found != "dir":
        log.warning("persistent %s not bound this boot: %s", bind.path, found)
        return False
    return mount(str(store), bind.path, options="bind")


def apply_plan(plan: MountPlan) -> dict[str, bool]:
    """Mount overlays, then volumes, then binds and the user's ephemeral paths (parents
    first); report each result by target."""
    results: dict[str, bool] = {}
    if plan.overlays or plan.ephemerals:
        results[plan.overlay_base] = mount_overlay_base(plan)
        for ov in plan.overlays:
            results[ov.path] = mount_overlay(ov)
    persistent_ok = False
    for vol in plan.volumes:
        ok = mount_volume(vol)
        results[vol.target] = ok
        if ok and "COS_PERSISTENT" in vol.source:
            persistent_ok = True
    if plan.binds and not persistent_ok:
        log.warning("persistent partition not mounted: persistent paths are ephemeral this boot")
    for item in plan.late_mounts(persistent_ok):
        results[item.path] = apply_bind(item) if isinstance(item, Bind) else mount_overlay(item)
    return results


def ensure_machine_id(persistent: bool, store: str = "/usr/local/etc/machine-id") -> str:
    """A machine-id stable across reboots: kept on the persistent partition."""
    mid = ""
    if persistent and os.path.isfile(store):
        mid = Path(store).read_text().strip()
    if len(mid) != 32:
        mid = uuid.uuid4().hex
        if persistent:
            os.makedirs(os.path.dirname(store), exist_ok=True)
            Path(store + ".tmp").write_text(mid + "\n")
            os.replace(store + ".tmp", store)
    try:
        Path("/etc/machine-id").write_text(mid + "\n")
    except OSError as exc:
        log.warning("cannot write /etc/machine-id: %s", exc)
    return mid
