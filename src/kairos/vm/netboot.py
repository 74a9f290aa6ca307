"""Netbooting a guest (`kairos vm --netboot DIR`): QEMU's own PXE firmware, slirp's TFTP and
DHCP, and DIR served over HTTP from this process on 127.0.0.1 only.

How a boot goes: the NIC's iPXE option ROM (Debian's ipxe-qemu, BIOS and EFI in one ROM)
gets a lease and the boot file name from slirp's DHCP, fetches a two-line script over TFTP
that sets `base-url` to our HTTP server and chains DIR's `kairos netboot` script. slirp
maps the guest's connections to 10.0.2.2 onto the host's 127.0.0.1, so nothing listens on
any other address.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from kairos.errors import BadInput

log = logging.getLogger("kairos.vm")

# iPXE for QEMU's virtio NIC from the ipxe-qemu package (legacy PXE and EFI images in one),
# the ROM QEMU loads by default for virtio-net-pci: checked for a clear error when missing.
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")
# The host as the guest sees it under slirp (its connections land on the host's loopback).
GUEST_HOST_ADDR = "10.0.2.2"
BOOTFILE = "kairos-chain.ipxe"
SCRIPT_SUFFIX = ".ipxe"
ROOTFS_SUFFIX = ".squashfs"
MiB = 1 << 20


@dataclass(frozen=True)
class NetbootWiring:
    """What QEMU's argv needs to netboot: slirp's TFTP root and boot file, the NIC's ROM."""

    tftp_dir: Path
    bootfile: str
    rom: Path
    http_port: int


def find_script(directory: Path) -> Path:
    """The one iPXE script of a `kairos netboot` directory; BadInput when there is none."""
    if not directory.is_dir():
        raise BadInput(f"netboot directory {directory} does not exist",
                       "make one with: kairos netboot IMAGE_DIR -o DIR")
    scripts = sorted(p for p in directory.iterdir() if p.name.endswith(SCRIPT_SUFFIX)
                     and p.is_file())
    if len(scripts) != 1:
        found = "no" if not scripts else f"{len(scripts)}"
        raise BadInput(f"netboot directory {directory} has {found} *{SCRIPT_SUFFIX} scripts",
                       "give the output directory of 'kairos netboot' (exactly one script)")
    return scripts[0]


def check_rom(rom: Path = IPXE_ROM) -> Path:
    if not rom.is_file():
        raise BadInput(f"QEMU's iPXE ROM {rom} is missing", "install it with: apt-get install "
                       "ipxe-qemu")
    return rom


def min_memory(directory: Path) -> int:
    """MiB a guest needs to netboot DIR: the initrd keeps the image in a tmpfs (at most half
    the RAM by default), plus room for the running system."""
    images = [p.stat().st_size for p in directory.glob(f"*{ROOTFS_SUFFIX}") if p.is_file()]
    image_mib = -(-max(images, default=0) // MiB)
    return 2 * image_mib + 512


def chain_script(port: int, script: str) -> str:
    """The TFTP boot file: point base-url at our HTTP server, then run DIR's script."""
    return (f"#!ipxe\nset base-url http://{GUEST_HOST_ADDR}:{port}\n"
            f"chain ${{base-url}}/{script}\n")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("netboot http: %s", format % args)

    def list_directory(self, path: Any) -> None:
        # the guest fetches named files only
        self.send_error(403, "no directory listings")
        return None


class DirServer:
    """DIR over HTTP on 127.0.0.1 (a free port), served from a daemon thread until close()."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_Quiet, directory=str(directory))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="netboot-http",
                                        daemon=True)
        self._thread.start()
        log.debug("serving %s on http://127.0.0.1:%d", directory, self.port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)

    def __enter__(self) -> DirServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def prepare(directory: Path, workdir: Path, server: DirServer, rom: Path = IPXE_ROM
            ) -> NetbootWiring:
    """Write the TFTP boot file for `server` into workdir/tftp."""
    script = find_script(directory)
    tftp = workdir / "tftp"
    tftp.mkdir(exist_ok=True)
    (tftp / BOOTFILE).write_text(chain_script(server.port, script.name))
    return NetbootWiring(tftp_dir=tftp, bootfile=BOOTFILE, rom=check_rom(rom),
                         http_port=server.port)
