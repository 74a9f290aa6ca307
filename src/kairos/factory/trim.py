"""Making an image smaller, mkosi's way (KernelModulesExclude/Include, RemoveFiles=): kernel
modules nobody needs and files matched by in-image globs are removed from the tree, before
kairosify builds the initrd from the modules that are left.

The tree is hostile input: globs are expanded by listing directories and descend only into
real directories (never through a link), matches are removed without following links, and
module directories are found with `resolve_in_root`, so nothing outside the tree is touched.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from kairos.artifacts.initrd import module_index, resolve_modules
from kairos.disk.mounts import remove_tree, tempdir
from kairos.errors import BadInput
from kairos.factory.cache import input_key
from kairos.run import run
from kairos.safefs import resolve_in_root

log = logging.getLogger("kairos.factory")
MODULE_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")
MODULE_DIRS = ("usr/lib/modules", "lib/modules")  # one directory in a merged-/usr tree


@dataclass(frozen=True)
class Trim:
    """What to remove from the tree; checked when made (a bad pattern is BadInput)."""

    modules_exclude: tuple[str, ...] = ()
    modules_include: tuple[str, ...] = ()
    remove_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        compile_patterns(self.modules_exclude, "--modules-exclude")
        compile_patterns(self.modules_include, "--modules-include")
        for pattern in self.remove_files:
            glob_parts(pattern)

    @property
    def empty(self) -> bool:
        return not (self.modules_exclude or self.modules_include or self.remove_files)

    @property
    def key(self) -> str:
        """A short hash of the options (their order and repeats do not matter)."""
        return input_key("trim", *(sorted(set(v)) for v in asdict(self).values()))[:12]

    def as_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class TrimReport:
    modules_removed: int = 0
    files_removed: int = 0  # files and links removed by --remove-files (also inside dirs)
    bytes_freed: int = 0

    def summary(self) -> str:
        return (f"trimmed: {self.modules_removed} modules, {self.files_removed} files, "
                f"{self.bytes_freed / 2**20:.1f} MiB")


def compile_patterns(patterns: tuple[str, ...], option: str) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise BadInput(f"{option} '{pattern}' is not a valid regular expression ({exc})",
                           "give a Python regex matched against paths like "
                           "drivers/gpu/drm/i915/i915, e.g. '^sound/'") from None
    return compiled


def glob_parts(pattern: str) -> list[str]:
    """The components of an absolute in-image glob; BadInput for a relative one, one with
    `..`, or one that names the root itself."""
    hint = "give an absolute path as seen inside the image, e.g. /usr/share/doc"
    if not pattern.startswith("/"):
        raise BadInput(f"--remove-files '{pattern}' is not an absolute path", hint)
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(f"--remove-files '{pattern}' contains '..'", hint)
    if not parts:
        raise BadInput(f"--remove-files '{pattern}' would remove the whole image", hint)
    return parts


def trim_tree(tree: Path, trim: Trim) -> TrimReport:
    """Remove what `trim` names from `tree`: files first, then modules (whose kernels get
    fresh modules.dep and indexes from depmod)."""
    files, file_bytes, removed = remove_files(tree, trim.remove_files)
    modules, module_bytes = trim_modules(tree, trim, removed)
    return TrimReport(modules, files, file_bytes + module_bytes)


# --- --remove-files ---------------------------------------------------------------------

def expand_glob(tree: Path, pattern: str) -> list[Path]:
    """What `pattern` matches in `tree`, component by component (fnmatch: `*` also matches
    names starting with a dot), descending only into real directories."""
    parts = glob_parts(pattern)
    current = [tree]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        current = [d / name for d in current for name, is_dir in _listing(d)
                   if (last or is_dir) and fnmatch.fnmatchcase(name, part)]
    return sorted(current)


def _listing(directory: Path) -> list[tuple[str, bool]]:
    """Names in a directory, each with whether it is a real directory (not a link to one)."""
    try:
        with os.scandir(directory) as it:
            return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    except (FileNotFoundError, NotADirectoryError):
        return []


def remove_files(tree: Path, patterns: tuple[str, ...]) -> tuple[int, int, list[Path]]:
    """Remove every match of `patterns`: (files removed, bytes freed, paths removed)."""
    count = size = 0
    removed: list[Path] = []
    for pattern in patterns:
        matches = expand_glob(tree, pattern)
        if not matches:
            log.debug("--remove-files %s matches nothing", pattern)
        for path in matches:
            n, b = _usage(path)
            remove_tree(path)  # a link is unlinked; a directory is emptied without following
            count, size = count + n, size + b
            removed.append(path)
    return count, size, removed


def _usage(path: Path) -> tuple[int, int]:
    """Files (and links) below `path` and the bytes of the regular ones; no link followed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0, 0
    if not stat.S_ISDIR(st.st_mode):
        return 1, st.st_size if stat.S_ISREG(st.st_mode) else 0
    count = size = 0
    for name, _ in _listing(path):
        n, b = _usage(path / name)
        count, size = count + n, size + b
    return count, size


# --- kernel modules ---------------------------------------------------------------------

def kernels(tree: Path) -> list[tuple[str, Path]]:
    """(version, module directory) of every kernel in the tree that has a modules.dep."""
    found: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for rel in MODULE_DIRS:
        top = resolve_in_root(tree, rel)  # links followed inside the tree only
        if top in seen or top.is_symlink() or not top.is_dir():
            continue
        seen.add(top)
        for name, is_dir in sorted(_listing(top)):
            dep = top / name / "modules.dep"
            if is_dir and dep.is_file() and not dep.is_symlink():
                found.append((name, top / name))
    return found


def match_name(rel: str) -> str:
    """`kernel/sound/core/snd.ko.xz` → `sound/core/snd`: what the patterns are matched to."""
    name = rel.removeprefix("kernel/")
    for suffix in MODULE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def module_files(moddir: Path) -> list[str]:
    """Module files (and links) below `kernel/`, relative to `moddir`; no link followed."""
    top = moddir / "kernel"
    if top.is_symlink() or not top.is_dir():
        return []
    found = []
    for dirpath, _dirs, files in os.walk(top):  # does not descend into linked directories
        for name in files:
            if name.endswith(MODULE_SUFFIXES):
                found.append(os.path.relpath(os.path.join(dirpath, name), moddir))
    return sorted(found)


def doomed_modules(moddir: Path, exclude: list[re.Pattern[str]],
                   include: list[re.Pattern[str]]) -> list[str]:
    """Module files to remove: excluded and not included, and needed by no kept module, by
    no module outside `kernel/` (updates/, extra/) and not by the initrd."""
    on_disk = module_files(moddir)
    _names, deps = module_index(moddir)
    kept = {rel for rel in on_disk
            if not any(p.search(match_name(rel)) for p in exclude)
            or any(p.search(match_name(rel)) for p in include)}
    kept.update(mod for mod in deps if not mod.startswith("kernel/"))
    kept.update(resolve_modules(moddir))  # WANTED_MODULES and their dependencies
    stack = list(kept)
    while stack:
        for dep in deps.get(stack.pop(), []):
            if dep not in kept:
                kept.add(dep)
                stack.append(dep)
    return [rel for rel in on_disk if rel not in kept]


def trim_modules(tree: Path, trim: Trim, removed: list[Path]) -> tuple[int, int]:
    """Remove the modules `trim` excludes from every kernel; (modules removed, bytes freed).
    A kernel whose modules --remove-files touched gets a fresh modules.dep too."""
    exclude = compile_patterns(trim.modules_exclude, "--modules-exclude")
    include = compile_patterns(trim.modules_include, "--modules-include")
    if include and not exclude:
        log.warning("--modules-include has no effect without --modules-exclude")
    count = size = 0
    for kver, moddir in kernels(tree):
        touched = any(moddir in p.parents for p in removed)
        if not exclude and not touched:
            continue
        for rel in doomed_modules(moddir, exclude, include) if exclude else []:
            st = os.lstat(moddir / rel)
            os.unlink(moddir / rel)  # a link is removed, never followed
            count += 1
            size += st.st_size if stat.S_ISREG(st.st_mode) else 0
        remove_empty_dirs(moddir / "kernel")
        depmod(moddir, kver)
    return count, size


def remove_empty_dirs(top: Path) -> None:
    """Remove the directories below `top` (not `top`) that are empty, deepest first."""
    if top.is_symlink() or not top.is_dir():
        return
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        if Path(dirpath) != top:
            try:
                os.rmdir(dirpath)
            except OSError:  # not empty
                continue


def depmod(moddir: Path, kver: str) -> None:
    """Write modules.dep, modules.alias and the binary indexes of `moddir` afresh.

    depmod reads the module files that are left (not the old modules.dep), so what it writes
    matches the tree. It is not given the tree as its base (`-b TREE`): it would open
    TREE/lib/modules through the host's filesystem, and an absolute link `/lib -> /usr/lib`
    in the tree would send it to the host's modules. Its base is a scratch directory whose
    lib/modules/KVER (and usr/lib/modules/KVER, for a kmod built for merged /usr) is a link
    we made to the directory resolved inside the tree. A module depmod cannot read (a test's
    fake) is warned about, not fatal: it is listed without dependencies."""
    with tempdir("kairos-depmod-") as scratch:  # removed without following our links
        for rel in ("lib/modules", "usr/lib/modules"):
            (scratch / rel).mkdir(parents=True)
            (scratch / rel / kver).symlink_to(moddir.absolute())
        run(["depmod", "-b", scratch, "--", kver])
