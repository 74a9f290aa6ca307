"""The provider's keys of the merged cloud-config."""

from __future__ import annotations

from typing import Any

import pytest

from kairos.config.validate import validate_data
from kairos.errors import BadInput
from kairos.provider.config import from_cloud_config


def test_nothing_enabled() -> None:
    cfg = from_cloud_config({"k3s": {"enabled": False, "args": ["--x"]}, "hostname": "a"})
    assert not cfg.enabled and cfg.block is None


@pytest.mark.parametrize("key,role,distro", [("k3s", "server", "k3s"),
                                             ("k3s-agent", "agent", "k3s"),
                                             ("k0s", "server", "k0s"),
                                             ("k0s-worker", "agent", "k0s")])
def test_each_block_gives_its_role(key: str, role: str, distro: str) -> None:
    cfg = from_cloud_config({key: {"enabled": True, "args": ["--a", 5], "env": {"X": 1}}},
                            {f"{key}.enabled": "/oem/90_custom.yaml"})
    assert cfg.block is not None
    assert (cfg.block.role, cfg.block.distro) == (role, distro)
    assert cfg.block.args == ("--a", "5") and cfg.block.env == (("X", "1"),)
    assert cfg.block.source == "/oem/90_custom.yaml"


def test_every_block_key() -> None:
    cfg = from_cloud_config({"k3s": {"enabled": "true", "args": "--node-ip 1.2.3.4",
                                     "replace_args": True, "replace_env": "yes",
                                     "embedded_registry": False},
                             "kubernetes": {"token": " s3cret ", "server": "10.0.0.1",
                                            "version": 1.20},
                             "p2p": {"network_token": "x"}})
    assert cfg.block is not None
    assert cfg.block.args == ("--node-ip 1.2.3.4",)
    assert cfg.block.replace_args and cfg.block.replace_env
    assert cfg.kubernetes.token == "s3cret" and cfg.kubernetes.server == "10.0.0.1"
    assert cfg.kubernetes.version == "1.2"  # YAML read 1.20 as a number: quote it
    assert cfg.p2p
    assert "s3cret" not in repr(cfg)


@pytest.mark.parametrize("data,words", [
    ({"k3s": {"enabled": True}, "k3s-agent": {"enabled": True}}, "both enabled"),
    ({"k3s": {"enabled": True, "argz": []}}, "k3s.argz: unknown key"),
    ({"k3s": {"enabled": "maybe"}}, "expected true or false"),
    ({"k3s": ["enabled"]}, "expected a map"),
    ({"k3s": {"enabled": True, "args": {"a": 1}}}, "expected a list of flags"),
    ({"k3s": {"enabled": True, "args": [["x"]]}}, "k3s.args[0]"),
    ({"k3s": {"enabled": True, "env": ["A=1"]}}, "expected a map of NAME"),
    ({"k0s": {"enabled": True, "embedded_registry": True}}, "only the k3s blocks"),
    ({"kubernetes": {"tokn": "x"}}, "kubernetes.tokn: unknown key"),
    ({"kubernetes": "x"}, "expected a map"),
])
def test_bad_config_is_one_line(data: dict[str, Any], words: str) -> None:
    with pytest.raises(BadInput) as err:
        from_cloud_config(data)
    assert words in err.value.message and "\n" not in err.value.message


def test_the_schema_knows_the_provider_keys() -> None:
    data = {"k3s": {"enabled": True, "args": ["--node-label=a=b"], "env": {"K3S_TOKEN": "x"},
                    "replace_args": False, "embedded_registry": False},
            "k3s-agent": {"enabled": False},
            "k0s-worker": {"enabled": False, "args": ["--labels=a=b"]},
            "kubernetes": {"token": "x", "server": "https://10.0.0.1:6443",
                           "version": "1.20.2"}}
    assert validate_data(data, "test.yaml") == []
    bad = validate_data({"kubernetes": {"token": "x", "servr": "y"}}, "test.yaml")
    assert bad and "servr" in str(bad[0])
