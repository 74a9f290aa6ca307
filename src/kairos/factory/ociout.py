"""The factory's OCI output: the image tree as one reproducible layer, in a layout and an archive."""

from __future__ import annotations

from pathlib import Path

from kairos.factory.release import Release
from kairos.oci.image import ImageConfig, write_image
from kairos.oci.layer import write_layer


def write_oci(tree: Path, out: Path, *, release: Release, mtime: int) -> str:
    """Write `out/oci` (layout), `out/image.oci.tar` (archive) and `out/digest`."""
    layer = write_layer(tree, out / "layer.tar.gz", mtime=mtime)
    labels = {
        "org.opencontainers.image.title": release.name,
        "org.opencontainers.image.version": release.version,
        "io.kairos.flavor": release.flavor,
        "io.kairos.flavor-release": release.flavor_release,
        "io.kairos.variant": release.variant,
        "io.kairos.model": release.model,
    }
    software = release.fields()
    if software["KAIROS_SOFTWARE_VERSION"]:  # a standard image's Kubernetes (none on core)
        labels["io.kairos.software-version"] = software["KAIROS_SOFTWARE_VERSION"]
        labels["io.kairos.software-version-prefix"] = software["KAIROS_SOFTWARE_VERSION_PREFIX"]
    ref = write_image([layer], out / "oci", ref=release.version,
                      config=ImageConfig(created_epoch=mtime, labels=labels,
                                         cmd=["/sbin/init"]),
                      archive=out / "image.oci.tar")
    (out / "layer.tar.gz").unlink(missing_ok=True)
    (out / "digest").write_text(ref.digest + "\n")
    return ref.digest
