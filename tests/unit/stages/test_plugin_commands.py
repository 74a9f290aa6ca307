from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kairos.stages.context import Context, PluginError
from kairos.stages.plugins import commands

from .helpers import make_step


def test_commands_run_in_order_with_root_set(ctx: Context) -> None:
    commands.apply(make_step(commands=['echo one > "$ROOT/out"', 'echo two >> "$ROOT/out"',
                                       'pwd >> "$ROOT/out"']), ctx)
    assert (ctx.root / "out").read_text().split() == ["one", "two", str(ctx.root)]


def test_failure_is_reported_and_the_rest_still_run(ctx: Context) -> None:
    with pytest.raises(PluginError, match=r"'echo oops >&2; exit 4' exited 4: oops"):
        commands.apply(make_step(commands=["echo oops >&2; exit 4", 'touch "$ROOT/after"']),
                       ctx)
    assert (ctx.root / "after").exists()


def test_templates_are_rendered(ctx: Context) -> None:
    commands.apply(make_step(commands=['echo {{ .Values.os.version }} > "$ROOT/v"']), ctx)
    assert (ctx.root / "v").read_text() == "12\n"


def test_env_is_passed(root: Path) -> None:
    ctx = Context(root=root, env={"GREETING": "hello"}, host_commands=True)
    commands.apply(make_step(commands=['echo "$GREETING" > "$ROOT/g"']), ctx)
    assert (root / "g").read_text() == "hello\n"


def test_scratch_root_refuses_host_commands_by_default(root: Path) -> None:
    ctx = Context(root=root)  # no /bin/sh in the tree, host fallback not allowed
    with pytest.raises(PluginError, match="has no /bin/sh to chroot into"):
        commands.apply(make_step(commands=["touch /should-not-exist"]), ctx)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("busybox") is None,
                    reason="needs root and a static busybox")
def test_real_tree_is_chrooted(root: Path) -> None:
    busybox = Path(shutil.which("busybox") or "")
    (root / "bin").mkdir()
    shutil.copy(busybox, root / "bin/busybox")
    for tool in ("sh", "echo"):
        (root / "bin" / tool).symlink_to("busybox")
    ctx = Context(root=root)
    assert ctx.shell is not None and ctx.shell.chroot
    commands.apply(make_step(commands=["echo inside > /proof"]), ctx)
    assert (root / "proof").read_text() == "inside\n"
