"""Image references as registries know them: HOST[:PORT]/repo/path[:tag][@sha256:…].

No registry host is ever assumed: a reference without one takes the caller's default registry
(from config) or is refused with a hint to name the registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kairos.errors import BadInput
from kairos.oci.media import is_digest

DEFAULT_TAG = "latest"
HINT_FORM = "write it as HOST[:PORT]/REPOSITORY:TAG or HOST[:PORT]/REPOSITORY@sha256:DIGEST"

# The distribution spec's grammar: lowercase path components joined by '/'.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST_RE = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]{1,5})?$"
)


@dataclass(frozen=True)
class Reference:
    """A parsed image reference; `digest` wins over `tag` when both are given."""

    registry: str  # host[:port], as written
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after /manifests/ in the URL."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def with_reference(self, ref: str) -> Reference:
        """The same repository at another tag or digest."""
        if is_digest(ref):
            return Reference(self.registry, self.repository, None, ref)
        return Reference(self.registry, self.repository, ref, None)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def _looks_like_host(first: str) -> bool:
    """Docker's rule: the first component is a host if it has a dot, a port, or is localhost."""
    return "." in first or ":" in first or first == "localhost" or first.startswith("[")


def parse_reference(text: str, default_registry: str | None = None) -> Reference:
    """Parse `text`; without a registry host use `default_registry` or refuse."""
    raw = text.strip()
    if not raw:
        raise BadInput("empty image reference", HINT_FORM)
    digest: str | None = None
    rest = raw
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not is_digest(digest):
            raise BadInput(f"image reference {raw!r} has an invalid digest {digest!r}",
                           "a digest is sha256: and 64 lowercase hex digits")
    tag: str | None = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last and "]" not in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise BadInput(f"image reference {raw!r} has an invalid tag {tag!r}",
                           "a tag is up to 128 letters, digits, '_', '.' or '-'")
    first, _, path = rest.partition("/")
    if path and _looks_like_host(first):
        registry, repository = first, path
    elif default_registry:
        registry, repository = default_registry, rest
    else:
        raise BadInput(f"image reference {raw!r} names no registry",
                       f"{HINT_FORM}, or set a default registry")
    if not _HOST_RE.match(registry):
        raise BadInput(f"image reference {raw!r} has an invalid registry host {registry!r}",
                       HINT_FORM)
    if not _REPO_RE.match(repository):
        raise BadInput(f"image reference {raw!r} has an invalid repository {repository!r}",
                       "repository names are lowercase letters, digits and . _ - separators")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest)
