"""Find the Debian mirror the host already uses: never a hard-coded host."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kairos.errors import BadInput

APT_DIR = Path("/etc/apt")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str = ""  # a keyring path; "" when none is named (or the key is inline)


def _deb822_sources(text: str) -> list[AptSource]:
    found: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        signed_by = fields.get("signed-by", "")
        for uri in fields.get("uris", "").split():
            found.append(AptSource(uri, tuple(fields.get("suites", "").split()),
                                   tuple(fields.get("components", "").split()),
                                   signed_by if signed_by.startswith("/") else ""))
    return found


def _one_line_sources(text: str) -> list[AptSource]:
    found: list[AptSource] = []
    for raw in text.splitlines():
        raw = raw.split("#", 1)[0]
        options = re.search(r"\[([^]]*)\]", raw)
        words = re.sub(r"\[[^]]*\]", "", raw).split()
        signed_by = ""
        for opt in options.group(1).split() if options else []:
            key, _, value = opt.partition("=")
            if key.lower() == "signed-by" and value.startswith("/"):
                signed_by = value
        if len(words) >= 3 and words[0] == "deb":
            found.append(AptSource(words[1], (words[2],), tuple(words[3:]), signed_by))
    return found


def host_sources(apt_dir: Path = APT_DIR) -> list[AptSource]:
    sources: list[AptSource] = []
    main = apt_dir / "sources.list"
    if main.is_file():
        sources += _one_line_sources(main.read_text(errors="replace"))
    d = apt_dir / "sources.list.d"
    if d.is_dir():
        for f in sorted(d.iterdir()):
            if f.suffix == ".list":
                sources += _one_line_sources(f.read_text(errors="replace"))
            elif f.suffix == ".sources":
                sources += _deb822_sources(f.read_text(errors="replace"))
    return sources


def debian_mirror(apt_dir: Path = APT_DIR) -> str:
    """The URI of the host's Debian archive (the source carrying a release suite + main)."""
    return debian_source(apt_dir).uri.rstrip("/")


def debian_source(apt_dir: Path = APT_DIR) -> AptSource:
    """The host's Debian archive entry (the source carrying a release suite + main)."""
    for src in host_sources(apt_dir):
        plain = [s for s in src.suites if "-" not in s and "/" not in s]
        if plain and "main" in src.components and "security" not in src.uri:
            return src
    raise BadInput(
        "found no Debian archive in the host's apt sources",
        "pass --mirror URL, or add the Debian archive to /etc/apt/sources.list.d/",
    )
