"""Cloud-config from the kernel command line."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairos.config.cmdline import parse_cmdline, scalar

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("kernel junk only", "BOOT_IMAGE=/vmlinuz root=LABEL=COS_STATE console=ttyS0 quiet ro", {}),
    ("dotted known key", "console=tty0 install.device=/dev/vda", {"install": {"device": "/dev/vda"}}),
    ("bools and numbers are YAML scalars",
     "install.auto=true install.reboot=False uki-max-entries=3",
     {"install": {"auto": True, "reboot": False}, "uki-max-entries": 3}),
    ("leading zero stays text", "kairos.config=hostname=0123", {"hostname": "0123"}),
    ("bare known key means true", "debug install.auto", {"debug": True, "install": {"auto": True}}),
    ("unknown first segment is ignored", "rd.neednet=1 systemd.unit=x foo.bar=1", {}),
    ("kairos.config with numeric index",
     "kairos.config=users.0.name=kairos kairos.config=users.0.passwd=kairos",
     {"users": [{"name": "kairos", "passwd": "kairos"}]}),
    ("kairos.config with bracket index",
     "kairos.config=stages.boot[0].commands[0]=x kairos.config=stages.boot[0].commands[1]=y",
     {"stages": {"boot": [{"commands": ["x", "y"]}]}}),
    ("generic token with brackets",
     "stages.boot[0].authorized_keys.root[0]=github:mudler",
     {"stages": {"boot": [{"authorized_keys": {"root": ["github:mudler"]}}]}}),
    ("kairos.config may set any key", "kairos.config=foo.bar=1", {"foo": {"bar": 1}}),
    ("bare kairos.config stanza means true", "kairos.config=install.auto",
     {"install": {"auto": True}}),
    ("quoted value with spaces", '"kairos.config=hostname=my box"', {"hostname": "my box"}),
    ("value keeps '=' signs", "kairos.config=install.grub_options.extra_cmdline=a=b c",
     {"install": {"grub_options": {"extra_cmdline": "a=b"}}}),
    ("config_url forms",
     "config_url=http://a/x kairos.config_url=http://b/y?x=1", {"config_url": "http://b/y?x=1"}),
    ("legacy cos.setup url", "cos.setup=http://c/z", {"config_url": "http://c/z"}),
    ("legacy cos.setup key=value", "cos.setup=hostname=h1", {"hostname": "h1"}),
    ("later token wins", "kairos.config=hostname=a kairos.config=hostname=b", {"hostname": "b"}),
    ("kairos-owned wins over generic", "kairos.config=hostname=owned hostname=generic",
     {"hostname": "owned"}),
    ("owned and generic merge deeply", "install.device=/dev/sda kairos.config=install.auto=true",
     {"install": {"device": "/dev/sda", "auto": True}}),
    ("shape clash: owned one wins", "install=x kairos.config=install.auto=true",
     {"install": {"auto": True}}),
    ("unbalanced quote does not crash", 'quiet "install.device=/dev/vda',
     {"install": {"device": "/dev/vda"}}),
    ("empty values are skipped", "kairos.config= kairos.config_url= kairos.config==x", {}),
    ("huge index is skipped", "kairos.config=users.100000000.name=x", {}),
    ("bad path is skipped", "kairos.config=users[x].name=y", {}),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_cmdline(text: str, expected: dict[str, Any]) -> None:
    assert parse_cmdline(text) == expected


def test_missing_index_leaves_a_hole_like_kairos() -> None:
    assert parse_cmdline("kairos.config=users.1.name=x") == {"users": [None, {"name": "x"}]}


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("FALSE", False), ("12", 12), ("-3", -3), ("1.5", 1.5), ("0", 0),
    ("0755", "0755"), ("yes", "yes"), ("null", "null"), ("1e5", "1e5"), ("/dev/vda", "/dev/vda"),
])
def test_scalar(text: str, value: Any) -> None:
    assert scalar(text) == value and type(scalar(text)) is type(value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.lists(st.sampled_from(
    ["kairos.config=", "users", ".", "0", "[1]", "=", "x", " ", '"', "install", "debug",
     "cos.setup=", "kairos.config_url=", "stages.boot[", "]"]), max_size=20).map("".join))
def test_never_raises(text: str) -> None:
    assert isinstance(parse_cmdline(text), dict)
