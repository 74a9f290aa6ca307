"""A NoCloud `cidata` volume: how a test or a person hands cloud-config to a guest."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from kairos.errors import BadInput, MissingTool
from kairos.run import run

LABEL = "cidata"


def meta_data(user_data: bytes, hostname: str) -> str:
    # The instance id is a hash of the user-data: the same config is the same instance
    # across runs, a changed config is a new one (cloud-init's per-instance semantics).
    iid = hashlib.sha256(user_data).hexdigest()[:16]
    return f"instance-id: iid-{iid}\nlocal-hostname: {hostname}\n"


def _iso_tool() -> list[str]:
    if shutil.which("xorriso"):
        return ["xorriso", "-as", "mkisofs"]
    if shutil.which("genisoimage"):
        return ["genisoimage"]
    raise MissingTool("neither xorriso nor genisoimage is installed",
                      "install one with: apt-get install xorriso")


def build_cidata(cloud_config: Path, out: Path, *, hostname: str = "kairos-vm") -> Path:
    """Write an ISO9660 volume labelled `cidata` with `user-data` (as is) and `meta-data`."""
    if not cloud_config.is_file():
        raise BadInput(f"cloud-config {cloud_config} does not exist",
                       "give the path of a #cloud-config YAML file")
    user_data = cloud_config.read_bytes()
    staging = Path(tempfile.mkdtemp(prefix="kairos-cidata-"))
    try:
        (staging / "user-data").write_bytes(user_data)
        (staging / "meta-data").write_text(meta_data(user_data, hostname), encoding="utf-8")
        out.unlink(missing_ok=True)
        # -J (Joliet) and -r (Rock Ridge) keep the lower-case, dashed file names intact.
        run([*_iso_tool(), "-quiet", "-V", LABEL, "-J", "-r", "-o", str(out), str(staging)])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
