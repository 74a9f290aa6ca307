"""The provider's part of the merged cloud-config: which Kubernetes block is on, and its keys.

Kairos's blocks, each `{enabled, args, env, replace_args, replace_env}` (`k3s` also
`embedded_registry`):

| block        | role here | what runs                                              |
|--------------|-----------|--------------------------------------------------------|
| `k3s`        | server    | etcd, apiserver, controller-manager, scheduler, kubelet, kube-proxy, Traefik |
| `k3s-agent`  | agent     | kubelet and kube-proxy, joined to `server` with `token` |
| `k0s`        | server    | as `k3s` (a k0s controller that is also a worker)      |
| `k0s-worker` | agent     | as `k3s-agent`                                         |

Ours: `kubernetes: {token, server, version}` — the shared join secret, the server to join
(`https://HOST:6443`, or `HOST`), and the Kubernetes version this config was written for
(`kairos state` shows it beside the image's). The same values may come the k3s way instead:
`--token`/`--server` in `args`, `K3S_TOKEN`/`K3S_URL` in `env`; two places that disagree are
an error, never a silent choice. Exactly one block may be enabled.

Nothing here reads the system: the caller passes the merged config (config/collect.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kairos.errors import BadInput

BLOCKS = ("k3s", "k3s-agent", "k0s", "k0s-worker")
ROLES = {"k3s": "server", "k3s-agent": "agent", "k0s": "server", "k0s-worker": "agent"}
DISTROS = {"k3s": "k3s", "k3s-agent": "k3s", "k0s": "k0s", "k0s-worker": "k0s"}
BLOCK_KEYS = {"enabled", "args", "env", "replace_args", "replace_env", "embedded_registry"}
KUBERNETES_KEYS = {"token", "server", "version"}
HINT = "see docs/kubernetes.md for the keys this provider reads"


@dataclass(frozen=True)
class DistroBlock:
    """One enabled block of cloud-config."""

    key: str  # k3s, k3s-agent, k0s, k0s-worker
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    replace_args: bool = False
    replace_env: bool = False
    embedded_registry: bool = False
    source: str = ""  # the file the block's `enabled` came from

    @property
    def role(self) -> str:
        return ROLES[self.key]

    @property
    def distro(self) -> str:
        return DISTROS[self.key]


@dataclass(frozen=True)
class KubernetesKeys:
    token: str = ""
    server: str = ""
    version: str = ""

    def __repr__(self) -> str:  # the token is a secret: never in a log or a traceback
        return f"KubernetesKeys(token={'***' if self.token else ''!r}, " \
               f"server={self.server!r}, version={self.version!r})"


@dataclass(frozen=True)
class ProviderConfig:
    block: DistroBlock | None = None
    kubernetes: KubernetesKeys = KubernetesKeys()
    p2p: bool = False  # a p2p: block is there (not handled yet: the role comes from config)

    @property
    def enabled(self) -> bool:
        return self.block is not None


def _bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    # The kernel command line and some tools give strings.
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    raise BadInput(f"{where}: expected true or false, got {value!r}", HINT)


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise BadInput(f"{where}: expected a single value, got {type(value).__name__}", HINT)


def _args(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # one string: the flags in it, as Kairos joins them anyway
        return (value,)
    if not isinstance(value, list):
        raise BadInput(f"{where}: expected a list of flags, got {type(value).__name__}", HINT)
    return tuple(_scalar(item, f"{where}[{i}]") for i, item in enumerate(value))


def _env(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise BadInput(f"{where}: expected a map of NAME: value, got {type(value).__name__}",
                       HINT)
    return tuple((str(k), _scalar(v, f"{where}.{k}")) for k, v in value.items())


def _source(sources: Mapping[str, str], key: str) -> str:
    for path in (f"{key}.enabled", key):
        if path in sources:
            return sources[path]
    return ""


def _checked_map(raw: Any, key: str, example: str, allowed: set[str]
                 ) -> Mapping[Any, Any]:
    """`raw` as a map whose keys are all in `allowed`; BadInput naming the first other."""
    if not isinstance(raw, Mapping):
        raise BadInput(f"{key}: expected a map such as {example}, got "
                       f"{type(raw).__name__}", HINT)
    unknown = sorted(set(map(str, raw)) - allowed)
    if unknown:
        raise BadInput(f"{key}.{unknown[0]}: unknown key",
                       f"{key} takes {', '.join(sorted(allowed))}")
    return raw


def parse_block(key: str, raw: Any, source: str = "") -> DistroBlock | None:
    """The block when it is enabled, None when it is absent or disabled."""
    if raw is None:
        return None
    raw = _checked_map(raw, key, "{enabled: true}", BLOCK_KEYS)
    if not _bool(raw.get("enabled"), f"{key}.enabled"):
        return None
    registry = _bool(raw.get("embedded_registry"), f"{key}.embedded_registry")
    if registry and key.startswith("k0s"):
        raise BadInput(f"{key}.embedded_registry: only the k3s blocks have this key", HINT)
    return DistroBlock(key=key, args=_args(raw.get("args"), f"{key}.args"),
                       env=_env(raw.get("env"), f"{key}.env"),
                       replace_args=_bool(raw.get("replace_args"), f"{key}.replace_args"),
                       replace_env=_bool(raw.get("replace_env"), f"{key}.replace_env"),
                       embedded_registry=registry, source=source)


def parse_kubernetes(raw: Any) -> KubernetesKeys:
    if raw is None:
        return KubernetesKeys()
    raw = _checked_map(raw, "kubernetes", "{token: ..., server: ...}", KUBERNETES_KEYS)
    values = {k: "" if raw.get(k) is None else _scalar(raw.get(k), f"kubernetes.{k}")
              for k in KUBERNETES_KEYS}
    return KubernetesKeys(token=values["token"].strip(), server=values["server"].strip(),
                          version=values["version"].strip())


def from_cloud_config(data: Mapping[str, Any],
                      sources: Mapping[str, str] | None = None) -> ProviderConfig:
    """The provider config of a merged cloud-config (`MergedConfig.data` and `.sources`)."""
    sources = sources or {}
    enabled = [b for b in (parse_block(key, data.get(key), _source(sources, key))
                           for key in BLOCKS) if b is not None]
    if len(enabled) > 1:
        names = " and ".join(b.key for b in enabled)
        raise BadInput(f"{names} are both enabled: a node has one role",
                       "enable one block (k3s for a server, k3s-agent for an agent) and set "
                       "enabled: false on the other")
    return ProviderConfig(block=enabled[0] if enabled else None,
                          kubernetes=parse_kubernetes(data.get("kubernetes")),
                          p2p=isinstance(data.get("p2p"), Mapping) and bool(data.get("p2p")))
