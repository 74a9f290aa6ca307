"""A slot image whose kernel never reaches userspace, for the lifecycle VM test (step 3).

Made on the host from a good slot image: unsquashed, its initrd replaced by a tiny one whose
/init cannot run (the kernel finds no working init and panics; `panic=5` reboots), its
/etc/kairos-release version bumped (so it is another image with another image id),
/boot/kairos-boot.cfg recomputed, squashed again. Not yet exercised in a VM.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from kairos.artifacts.bootid import write_boot_cfg
from kairos.artifacts.rootfs import make_squashfs


def _panic_initrd(dest: Path) -> None:
    tree = dest.with_name(dest.name + ".d")
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    init = tree / "init"
    init.write_text("#!/nonexistent-interpreter\n")
    init.chmod(0o755)
    with open(dest, "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"],
                       input=b"init\n", stdout=out, cwd=tree, check=True)
    shutil.rmtree(tree)


def build_panic_slot(good: Path, dest: Path, version: str, *, mtime: int = 0) -> Path:
    """A slot image from `good` with an initrd that panics and KAIROS_VERSION=`version`."""
    tree = dest.with_name(dest.name + ".tree")
    shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["unsquashfs", "-q", "-n", "-d", str(tree), str(good)], check=True)
    boot = tree / "boot"
    initrds = [p for p in boot.iterdir() if p.name.startswith("initrd")
               and (p.is_file() or p.is_symlink())]
    assert initrds, f"no initrd in {boot}"
    for p in initrds:
        if p.is_symlink():
            continue
        _panic_initrd(p)
    release = tree / "etc/kairos-release"
    text = release.read_text()
    text, n = re.subn(r'^KAIROS_VERSION=.*$', f'KAIROS_VERSION="{version}"', text, flags=re.M)
    assert n == 1, "no KAIROS_VERSION line in /etc/kairos-release"
    release.write_text(text)
    write_boot_cfg(tree)
    dest.unlink(missing_ok=True)
    make_squashfs(tree, dest, mtime=mtime)
    shutil.rmtree(tree)
    return dest


__all__ = ["build_panic_slot"]
