"""Version tags, newest first: `v1.2.3`, `1.2.3`, `v1.2.3-rc1`, Kairos's `v3.1.0-<flavor…>`.

A tag is `[v]MAJOR[.MINOR[.PATCH]][-SUFFIX][+BUILD]`. Strict semver calls every suffix a
pre-release, but Kairos-style tags carry a flavour in it (`v3.1.0-core-amd64-generic`,
`v3.1.0-k3sv1.30.2-k3s1`). So a suffix is a pre-release only when its first identifier is a
pre-release word (alpha, beta, rc, pre, preview, dev, snapshot, nightly, optionally with a
number: `rc1`, `rc.1`); any other suffix is a *variant* of the release. Identifiers compare
naturally (`rc2` < `rc10`). Tags that are not versions (`latest`, `main`) are left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_VERSION_RE = re.compile(
    r"^[vV]?(?P<major>0|[1-9][0-9]*)(?:\.(?P<minor>[0-9]+))?(?:\.(?P<patch>[0-9]+))?"
    r"(?:-(?P<suffix>[0-9A-Za-z.-]+))?(?:\+(?P<build>[0-9A-Za-z.+-]+))?$"
)
_PRE_RE = re.compile(r"^(?:alpha|beta|rc|pre|preview|dev|snapshot|nightly)[0-9]*$", re.I)
_RUN_RE = re.compile(r"[0-9]+|[^0-9.-]+")  # separators only separate: rc.1 ~ rc1

NatKey = tuple[tuple[int, int, str], ...]


@dataclass(frozen=True)
class Version:
    tag: str
    major: int
    minor: int
    patch: int
    pre: str  # "" for a release
    variant: str  # the non-pre-release suffix ("core-amd64-generic"), "" if none
    build: str

    @property
    def prerelease(self) -> bool:
        return bool(self.pre)

    def sort_key(self) -> tuple[int, int, int, int, NatKey, NatKey, str]:
        # A release sorts after its pre-releases (1 > 0); the tag text breaks remaining ties.
        return (self.major, self.minor, self.patch, 0 if self.pre else 1,
                _natural(self.pre), _natural(self.variant), self.tag)


def _natural(text: str) -> NatKey:
    """Numbers compare as numbers; a number sorts before a word (semver's rule)."""
    return tuple((0, int(run), "") if run.isdigit() else (1, 0, run.lower())
                 for run in _RUN_RE.findall(text))


def parse_version(tag: str) -> Version | None:
    m = _VERSION_RE.match(tag)
    if m is None:
        return None
    suffix = m.group("suffix") or ""
    first = re.split(r"[.-]", suffix, maxsplit=1)[0] if suffix else ""
    is_pre = bool(first) and bool(_PRE_RE.match(first))
    return Version(
        tag=tag,
        major=int(m.group("major")),
        minor=int(m.group("minor") or 0),
        patch=int(m.group("patch") or 0),
        pre=suffix if is_pre else "",
        variant="" if is_pre else suffix,
        build=m.group("build") or "",
    )


def sort_tags(tags: Iterable[str], *, pre: bool = False) -> list[str]:
    """Version tags newest first; pre-releases only with `pre`; non-versions dropped."""
    versions = [v for v in (parse_version(t) for t in tags) if v is not None]
    if not pre:
        versions = [v for v in versions if not v.prerelease]
    versions.sort(key=Version.sort_key, reverse=True)
    return [v.tag for v in versions]
