"""Bases other than debootstrap: a dir, a tar and OCI images (archive and layout) come in
whole, and a base that is not a root filesystem, or not Debian-like, is refused clearly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kairos.errors import BadInput
from kairos.factory.base import acquire, install_packages
from kairos.factory.bases import parse_base
from kairos.oci.image import ImageConfig, write_image
from kairos.oci.layer import write_layer

pytestmark = pytest.mark.integration


def _tree(root: Path) -> Path:
    for d in ("etc", "usr/bin", "var/lib"):
        (root / d).mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    (root / "usr/bin/tool").chmod(0o755)
    os.symlink("usr/bin", root / "bin")
    return root


def _same(a: Path, b: Path) -> None:
    listing = [str(p.relative_to(a)) for p in sorted(a.rglob("*"))]
    assert listing == [str(p.relative_to(b)) for p in sorted(b.rglob("*"))]
    assert (b / "usr/bin/tool").stat().st_mode & 0o777 == 0o755
    assert os.readlink(b / "bin") == "usr/bin"


@pytest.mark.parametrize("kind", ["dir", "tar", "ocifile", "oci-layout"])
def test_each_base_kind_arrives_whole(kind: str, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    if kind == "dir":
        spec = parse_base(f"dir:{src}")
    elif kind == "tar":
        subprocess.run(["tar", "-cf", str(tmp_path / "root.tar"), "-C", str(src), "."], check=True)
        spec = parse_base(f"tar:{tmp_path / 'root.tar'}")
    else:
        layer = write_layer(src, tmp_path / "layer.tar.gz", mtime=1_700_000_000)
        write_image([layer], tmp_path / "layout", ref="base",
                    config=ImageConfig(created_epoch=1_700_000_000),
                    archive=tmp_path / "base.oci.tar")
        spec = parse_base(f"ocifile:{tmp_path / 'base.oci.tar'}" if kind == "ocifile"
                          else f"oci-layout:{tmp_path / 'layout'}")
    dest = tmp_path / "dest"
    dest.mkdir()
    acquire(spec, dest, mirror=None, packages=[])
    _same(src, dest)


def test_a_tree_that_is_not_a_root_filesystem_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/hello").write_text("hi")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BadInput, match="does not look like a root filesystem"):
        acquire(parse_base(f"dir:{tmp_path / 'src'}"), dest, mirror=None, packages=[])


def test_a_non_debian_base_missing_packages_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    (root / "etc/os-release").write_text("ID=alpine\n")
    with pytest.raises(BadInput, match="'alpine' is not supported yet") as err:
        install_packages(root, ["openssh-server"])
    assert "Debian or Ubuntu" in err.value.hint
