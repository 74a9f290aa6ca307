"""`unpack_images`: parsed, not applied yet (OCI unpacking into a directory)."""

from __future__ import annotations

from dataclasses import dataclass

from kairos.stages.context import Context
from kairos.stages.fields import as_map_list, as_str
from kairos.stages.model import Step

KEYS = ("unpack_images",)


@dataclass
class UnpackImage:
    source: str
    target: str
    platform: str = ""


def parse(step: Step) -> list[UnpackImage]:
    out = []
    for i, raw in enumerate(as_map_list(step.payloads.get("unpack_images"), "unpack_images")):
        w = f"unpack_images[{i}]"
        out.append(UnpackImage(source=as_str(raw.get("source"), f"{w}.source"),
                               target=as_str(raw.get("target"), f"{w}.target"),
                               platform=as_str(raw.get("platform"), f"{w}.platform")))
    return out


def apply(step: Step, ctx: Context) -> None:
    for image in parse(step):
        ctx.logger.warning("unpack_images: not supported yet; %s was not unpacked to %s",
                           image.source or "(no source)", image.target or "(no target)")
