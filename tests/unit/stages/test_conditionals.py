from __future__ import annotations

from pathlib import Path

import pytest

from kairos.stages.conditionals import skip_reason
from kairos.stages.context import Context

from .conftest import make_root
from .helpers import make_step


def reason(ctx: Context, **raw: object) -> str | None:
    return skip_reason(make_step(**raw).conditions, ctx)


def test_no_conditions_runs(ctx: Context) -> None:
    assert reason(ctx) is None


def test_if_runs_a_shell_in_the_root(ctx: Context) -> None:
    (ctx.root / "flag").write_text("")
    assert reason(ctx, if_='[ -e "$ROOT/flag" ]') is None
    assert "exited 1" in str(reason(ctx, if_='[ -e "$ROOT/other" ]'))


def test_node_matches_the_root_hostname(ctx: Context) -> None:
    (ctx.root / "etc/hostname").write_text("edge-042\n")
    assert reason(ctx, node="^edge-0") is None
    assert "does not match" in str(reason(ctx, node="^core-"))


def test_only_os_and_version_read_os_release(ctx: Context) -> None:
    assert reason(ctx, only_os="Ubuntu.*|Debian.*") is None
    assert "does not match" in str(reason(ctx, only_os="Fedora.*"))
    assert reason(ctx, only_os_version="^12$") is None
    assert reason(ctx, only_os_version="^11") is not None
    (ctx.root / "etc/os-release").unlink()
    assert "unknown" in str(reason(ctx, only_os=".*"))


def test_only_arch_uses_go_names(ctx: Context) -> None:
    ctx.arch = "arm64"
    assert reason(ctx, only_arch="arm64") is None
    assert "architecture 'arm64'" in str(reason(ctx, only_arch="amd64"))


def test_bad_regex_skips_with_reason(ctx: Context) -> None:
    assert "invalid" in str(reason(ctx, only_os="(unclosed"))


def test_service_manager(tmp_path: Path) -> None:
    systemd = Context(root=make_root(tmp_path / "s", systemd=True))
    openrc = Context(root=make_root(tmp_path / "o", systemd=False))
    (openrc.root / "sbin").mkdir()
    (openrc.root / "sbin/openrc").write_text("")
    assert reason(systemd, only_service_manager="systemd") is None
    assert reason(systemd, only_service_manager="openrc") is not None
    assert reason(openrc, only_service_manager="OpenRC") is None
    assert "not supported" in str(reason(openrc, only_service_manager="runit"))
    (openrc.root / "bin").mkdir()
    (openrc.root / "bin/systemctl").write_text("")
    assert "both" in str(reason(openrc, only_service_manager="openrc"))


@pytest.mark.parametrize(("check", "paths", "runs"), [
    ("all", ["/a", "/b"], True), ("all", ["/a", "/missing"], False),
    ("any", ["/missing", "/b"], True), ("any", ["/missing"], False),
    ("none", ["/missing"], True), ("none", ["/missing", "/a"], False),
    ("all", [], True),
])
def test_if_files(ctx: Context, check: str, paths: list[str], runs: bool) -> None:
    (ctx.root / "a").write_text("")
    (ctx.root / "b").mkdir()
    result = reason(ctx, if_files={check: paths})
    assert (result is None) == runs, result


def test_if_files_unknown_check(ctx: Context) -> None:
    assert "unknown if_files check" in str(reason(ctx, if_files={"some": ["/a"]}))


def test_if_files_follow_symlinks_inside_the_root(ctx: Context) -> None:
    (ctx.root / "real").write_text("")
    (ctx.root / "link").symlink_to("/real")  # absolute: must resolve inside the root
    assert reason(ctx, if_files={"all": ["/link"]}) is None
