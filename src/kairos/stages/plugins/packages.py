"""`packages` and `package_pins`: parsed, not applied.

The OS image is immutable: software comes with the image (or a sysext), not from a package
manager at boot, so these keys are reported and skipped rather than half-applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kairos.stages.context import Context
from kairos.stages.fields import as_bool, as_map, as_str_list, as_str_map
from kairos.stages.model import Step

KEYS = ("package_pins", "packages")


@dataclass
class Packages:
    install: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    refresh: bool = False
    upgrade: bool = False
    pins: dict[str, str] = field(default_factory=dict)


def parse(step: Step) -> Packages:
    raw = as_map(step.payloads.get("packages"), "packages")
    return Packages(install=as_str_list(raw.get("install"), "packages.install"),
                    remove=as_str_list(raw.get("remove"), "packages.remove"),
                    refresh=as_bool(raw.get("refresh"), "packages.refresh"),
                    upgrade=as_bool(raw.get("upgrade"), "packages.upgrade"),
                    pins=as_str_map(step.payloads.get("package_pins"), "package_pins"))


def apply(step: Step, ctx: Context) -> None:
    spec = parse(step)
    if spec.install or spec.remove or spec.refresh or spec.upgrade or spec.pins:
        ctx.logger.warning("packages: not supported on an immutable image; skipped "
                           "(install %s, remove %s); build them into the image instead",
                           spec.install or "-", spec.remove or "-")
