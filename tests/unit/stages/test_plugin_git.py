from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kairos.stages.context import Context, PluginError
from kairos.stages.plugins import git

from .helpers import make_step

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def make_repo(path: Path) -> None:
    env = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run(["git", *env, "init", "-q", str(path)], check=True)
    (path / "config.yaml").write_text("v1\n")
    subprocess.run(["git", "-C", str(path), "add", "."], check=True)
    subprocess.run(["git", *env, "-C", str(path), "commit", "-qm", "one"], check=True)


def test_clone_then_update(ctx: Context, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo)
    step = make_step(git={"url": repo.as_uri(), "path": "/oem/cloud-config-files",
                          "branch": "main"})
    git.apply(step, ctx)
    target = ctx.root / "oem/cloud-config-files"
    assert (target / "config.yaml").read_text() == "v1\n"
    (repo / "config.yaml").write_text("v2\n")
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qam", "two"], check=True)
    git.apply(step, ctx)
    assert (target / "config.yaml").read_text() == "v2\n"


def test_bad_url_fails_cleanly(ctx: Context, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="git clone failed"):
        git.apply(make_step(git={"url": (tmp_path / "none").as_uri(), "path": "/x"}), ctx)
