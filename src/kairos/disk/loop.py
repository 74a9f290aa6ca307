"""Loop devices as context managers: attached on entry, partitions shown, detached on exit."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from kairos.run import run

log = logging.getLogger("kairos.loop")


@contextlib.contextmanager
def loop_device(image: Path, *, read_only: bool = False) -> Iterator[Path]:
    """Attach `image` to a free loop device and detach it on every exit path.

    Partition nodes are not awaited here (without udev they need `partx --add`): callers that
    need them use kairos.disk.blockdev.reread_partitions.
    """
    argv = ["losetup", "--find", "--show"]
    if read_only:
        argv.append("--read-only")
    dev = Path(run([*argv, str(image)]).stdout.strip())
    try:
        yield dev
    finally:
        run(["partx", "--delete", str(dev)], check=False)
        res = run(["losetup", "--detach", str(dev)], check=False)
        if res.returncode != 0:
            log.warning("could not detach %s: %s", dev, res.stderr.strip())
