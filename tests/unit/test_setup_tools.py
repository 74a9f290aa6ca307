"""Every executable the code and the tests name is installed by `scripts/setup`.

A fresh CI machine has only what `scripts/setup` installs; a tool installed here by hand makes
the suite pass here and fail (or silently skip) there. So every program named in `require()`,
`which()`, or as the first word of a command list, must come from a package that setup names,
or from one every Debian system has (Essential or Priority: required).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCAN = ("src", "tests", "benchmarks")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Named in the code but run only on a device (inside the built image), never on the host.
DEVICE_ONLY = {
    "xfs_growfs": "layout plugin, growing an XFS partition on a device",
    "systemctl": "systemctl plugin, on a device with systemd",
    "hostname": "hostname plugin, on a device",
    "rc-service": "OpenRC services, on a device",
    "rc-update": "OpenRC services, on a device",
    "kubectl": "Kubernetes provider, in the standard image",
    "ip": "Kubernetes provider's node address, on a device (skipped where missing)",
    # Not in Debian 12, PyPI or npm: its interop test runs only where someone installed it.
    "cosign": "cosign interop test, skipped without a cosign binary",
}
# First words of command lists that are not programs.
NOT_PROGRAMS = {"show"}  # `git show` split over lines

_NAME = r'"([A-Za-z0-9][A-Za-z0-9._+-]*)"'
_PATTERNS = (
    re.compile(r'(?:require|which)\(\s*' + _NAME),
    re.compile(r'\brun(?:_ok|_stream)?\(\s*\[\s*' + _NAME),
    re.compile(r'subprocess\.(?:run|Popen|check_output|call)\(\s*\[\s*' + _NAME),
)
_REQUIRE_ARGS = re.compile(r'require\(([^)]*)\)')
_TUPLES = re.compile(r'^(?:TOOLS|QEMU)\s*=\s*\(?([^)\n]*(?:\n[^)\n]*)*?)\)?\s*$', re.M)


def named_tools() -> dict[str, str]:
    """program -> first file naming it."""
    found: dict[str, str] = {}
    for top in SCAN:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.name == Path(__file__).name:
                continue
            text = path.read_text(encoding="utf-8")
            names: list[str] = []
            for pattern in _PATTERNS:
                names += pattern.findall(text)
            for args in _REQUIRE_ARGS.findall(text):
                names += re.findall(_NAME, args)
            for body in _TUPLES.findall(text):
                names += re.findall(_NAME, body)
            for name in names:
                found.setdefault(name, str(path.relative_to(ROOT)))
    return {k: v for k, v in found.items() if k not in NOT_PROGRAMS and k not in DEVICE_ONLY}


def setup_packages() -> set[str]:
    text = (ROOT / "scripts/setup").read_text()
    block = re.search(r"PACKAGES=\((.*?)\)", text, re.S)
    assert block, "scripts/setup has no PACKAGES=( … ) list"
    return set(block.group(1).split())


def owning_package(exe: str) -> str | None:
    """The Debian package that ships `exe` (usrmerge: try /bin and /usr/bin spellings)."""
    real = os.path.realpath(exe)
    candidates = {exe, real}
    for p in list(candidates):
        if p.startswith("/usr/"):
            candidates.add(p[4:])
        else:
            candidates.add("/usr" + p)
    for cand in sorted(candidates):
        res = subprocess.run(["dpkg-query", "-S", cand], capture_output=True, text=True)
        if res.returncode == 0:
            return res.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def always_present(package: str) -> bool:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Essential} ${Priority}", package],
                         capture_output=True, text=True)
    return res.returncode == 0 and (res.stdout.startswith("yes") or "required" in res.stdout)


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian host")
def test_every_named_tool_comes_from_setup() -> None:
    tools = named_tools()
    assert {"mksquashfs", "qemu-system-x86_64", "isoinfo", "skopeo"} <= set(tools)
    packages = setup_packages()
    problems = []
    for tool, where in sorted(tools.items()):
        exe = shutil.which(tool, path=SBIN_PATH)
        if exe is None:
            problems.append(f"{tool} (named in {where}) is not installed")
            continue
        pkg = owning_package(exe)
        if pkg is None:
            problems.append(f"{tool} ({exe}) belongs to no Debian package")
        elif pkg not in packages and not always_present(pkg):
            problems.append(f"{tool} comes from package {pkg}, which scripts/setup does not name")
    assert not problems, "add these to PACKAGES in scripts/setup:\n" + "\n".join(problems)


def test_scan_finds_the_forms_we_use() -> None:
    sample = 'require("a", "b")\nrun(["c", x])\nshutil.which("d")\nsubprocess.run(["e"])\n'
    names = []
    for pattern in _PATTERNS:
        names += pattern.findall(sample)
    for args in _REQUIRE_ARGS.findall(sample):
        names += re.findall(_NAME, args)
    assert set(names) == {"a", "b", "c", "d", "e"}
