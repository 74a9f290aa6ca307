"""Kairos's merge rules for cloud-config documents, with a record of who set what.

Rules (K:sdk/collector DeepMerge): maps merge key by key; scalars: the overlay wins; a list
whose first item is a map gets the overlay's items appended; other lists get the overlay's
items that are not already there (order kept); `null` in the overlay clears the value to
its empty form ({} / [] / "" / 0 / false); a map, a list and a scalar never merge with each
other (MergeConflict naming both sources). Scalars of different types (1 vs "1") do not
conflict here: the overlay wins, which is friendlier than Kairos and loses nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kairos.config.paths import KeyPath, format_path
from kairos.config.yamlsrc import MAX_DEPTH
from kairos.errors import BadInput


class MergeConflict(BadInput):
    """Two sources give one key different shapes (e.g. a map and a list)."""

    def __init__(self, path: KeyPath, base: Any, base_src: str, overlay: Any,
                 overlay_src: str) -> None:
        where = format_path(path) or "the top level"
        super().__init__(
            f"cannot merge {where}: {base_src} has {_kind(base)}, {overlay_src} has "
            f"{_kind(overlay)}",
            f"make {where} {_kind(base)} in {overlay_src}, or {_kind(overlay)} in {base_src}")
        self.path = path
        self.base_src = base_src
        self.overlay_src = overlay_src


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    return "a single value"


def _shape(value: Any) -> type:
    return dict if isinstance(value, dict) else list if isinstance(value, list) else object


def _same(a: Any, b: Any) -> bool:
    """Equality for the list union; True and 1 are different values here (as in Go)."""
    return type(a) is type(b) and bool(a == b)


def _cleared(value: Any) -> Any:
    """What `null` leaves behind: the empty value of the same type (Kairos's reflect.Zero)."""
    if value is None:
        return None
    return type(value)()


@dataclass
class Layer:
    """A document and, for every key path in it, the source that set it."""

    data: Any
    sources: dict[KeyPath, str] = field(default_factory=dict)
    default: str = ""  # the source of paths that `sources` does not name

    @classmethod
    def single(cls, data: Any, source: str) -> Layer:
        return cls(data, {}, source)

    def source_of(self, path: KeyPath) -> str:
        return self.sources.get(path, self.default)


class _Merger:
    def __init__(self, sources: dict[KeyPath, str], overlay: Layer) -> None:
        self.sources = sources  # the result's record, updated in place
        self.overlay = overlay

    def base_source(self, path: KeyPath) -> str:
        return self.sources.get(path, "an earlier source")

    def stamp(self, value: Any, rpath: KeyPath, opath: KeyPath, depth: int) -> None:
        """Record the overlay's sources for a value copied in whole at rpath."""
        _check_depth(depth, rpath)
        self.sources[rpath] = self.overlay.source_of(opath)
        if isinstance(value, dict):
            for key, item in value.items():
                self.stamp(item, (*rpath, key), (*opath, key), depth + 1)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.stamp(item, (*rpath, index), (*opath, index), depth + 1)

    def forget(self, rpath: KeyPath) -> None:
        """Drop the records below rpath (its old children are gone)."""
        n = len(rpath)
        for path in [p for p in self.sources if len(p) > n and p[:n] == rpath]:
            del self.sources[path]

    def merge(self, base: Any, over: Any, rpath: KeyPath, opath: KeyPath, depth: int) -> Any:
        _check_depth(depth, rpath)
        if base is None and over is not None:
            self.forget(rpath)
            self.stamp(over, rpath, opath, depth)
            return copy.deepcopy(over)
        if over is None:
            self.forget(rpath)
            self.sources[rpath] = self.overlay.source_of(opath)
            return _cleared(base)
        if _shape(base) is not _shape(over):
            raise MergeConflict(rpath, base, self.base_source(rpath), over,
                                self.overlay.source_of(opath))
        self.sources[rpath] = self.overlay.source_of(opath)
        if isinstance(base, dict):
            for key, item in over.items():
                child, ochild = (*rpath, key), (*opath, key)
                if key in base:
                    base[key] = self.merge(base[key], item, child, ochild, depth + 1)
                else:
                    self.stamp(item, child, ochild, depth + 1)
                    base[key] = copy.deepcopy(item)
            return base
        if isinstance(base, list):
            if not base:
                self.stamp(over, rpath, opath, depth)
                return copy.deepcopy(over)
            concat = isinstance(base[0], dict)
            for index, item in enumerate(over):
                if concat or not any(_same(item, have) for have in base):
                    self.stamp(item, (*rpath, len(base)), (*opath, index), depth + 1)
                    base.append(copy.deepcopy(item))
            return base
        return over


def _check_depth(depth: int, path: KeyPath) -> None:
    if depth > MAX_DEPTH:
        raise BadInput(f"the config is nested more than {MAX_DEPTH} levels deep at "
                       f"{format_path(path[:5])}…", "flatten the structure")


def merge_layer(result: Any, sources: dict[KeyPath, str], overlay: Layer) -> Any:
    """Merge `overlay` into `result` (changed in place where possible) and update `sources`.

    Returns the merged value. `result` must be owned by the caller; the overlay is copied.
    """
    return _Merger(sources, overlay).merge(result, overlay.data, (), (), 0)


def merge_layers(base: Layer, overlay: Layer) -> Layer:
    """A new layer: `overlay` merged over `base` (neither is changed)."""
    sources = dict(base.sources)
    if base.default:
        _fill_defaults(base.data, (), base.default, sources, 0)
    data = merge_layer(copy.deepcopy(base.data), sources, overlay)
    return Layer(data, sources, base.default or overlay.default)


def _fill_defaults(value: Any, path: KeyPath, source: str, out: dict[KeyPath, str],
                   depth: int) -> None:
    _check_depth(depth, path)
    out.setdefault(path, source)
    items: Mapping[Any, Any] | None = None
    if isinstance(value, dict):
        items = value
    elif isinstance(value, list):
        items = dict(enumerate(value))
    for key, item in (items or {}).items():
        _fill_defaults(item, (*path, key), source, out, depth + 1)


def merge(base: Any, overlay: Any, base_src: str = "base", overlay_src: str = "overlay") -> Any:
    """`overlay` merged over `base` by Kairos's rules; neither input is changed.

    Raises MergeConflict (a BadInput) when a key is a map in one and a list or value in the
    other, naming both sources.
    """
    return merge_layers(Layer.single(base, base_src), Layer.single(overlay, overlay_src)).data
