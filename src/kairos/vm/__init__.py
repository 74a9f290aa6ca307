"""QEMU (TCG) guests for `kairos vm` and the VM tests: start, serial, SSH, power."""

from kairos.vm.config import VMConfig
from kairos.vm.keys import ensure_keypair
from kairos.vm.machine import BOOT_MARKER, VM, qemu_available

__all__ = ["BOOT_MARKER", "VM", "VMConfig", "ensure_keypair", "qemu_available"]
