"""Every real Kairos config in ../shared/compat/kairos-configs, validated in place.

What must happen (../shared/compat/README.md): valid files validate with no error (unknown
keys may warn, as in Kairos); invalid files are rejected naming the file and line, with a
hint, never with a traceback. The bundled /system/oem files have no #cloud-config header
on purpose: they are stage files and are validated as such.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kairos.config.collect import collect
from kairos.config.merge import MergeConflict
from kairos.config.validate import CLOUD_CONFIG, STAGE, validate_file

CORPUS = Path(__file__).resolve().parents[3] / "shared/compat/kairos-configs"

if not CORPUS.is_dir():
    pytest.skip(f"the compat corpus is not there ({CORPUS}): it lives next to the repository "
                "in ../shared/compat", allow_module_level=True)

FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))

# Each invalid file, the line of its first error, a piece of that error, and why Kairos
# rejects it too (read by hand; keep this list exact: the test fails on any drift).
INVALID: dict[str, tuple[int, str]] = {
    # Not YAML: the value's quotes end at `variant="` and the rest cannot be parsed.
    "docs/examples__core__1.yaml": (8, "expected <block end>"),
    # Not YAML: `homedir: "/home/foo` never closes its quote.
    "docs/reference__stage_modules__10.yaml": (9, "never closed"),
    # The docs show this file as the example of a failing `kairos validate`: 007 is a number.
    "docs/reference__configuration__2.yaml": (3, "users[0].name: expected a string"),
    # install.bundles takes maps ({targets: [...]}); Go cannot decode a string there.
    "docs/examples__openamt__0.yaml": (5, "install.bundles[0]: expected a map"),
    # p2p.vpn.env is a map of variables; the doc has a "....." placeholder string.
    "docs/installation__p2p__2.yaml": (33, "p2p.vpn.env: expected a map"),
}


def _id(path: Path) -> str:
    return str(path.relative_to(CORPUS))


def test_the_corpus_is_all_there() -> None:
    names = {_id(p) for p in FILES}
    assert len(FILES) > 100
    assert set(INVALID) <= names
    assert {p.parent.name for p in FILES} == {"bundled", "docs", "examples"}


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_config_file(path: Path) -> None:
    result = validate_file(path)
    rel = _id(path)
    for diag in result.diagnostics:
        assert diag.file == str(path)
        assert diag.hint, f"no hint: {diag}"
    if rel in INVALID:
        line, text = INVALID[rel]
        assert not result.ok, f"{rel} should be rejected"
        first = result.errors[0]
        assert first.line == line and first.column > 0, str(first)
        assert text in str(first)
        assert str(first).startswith(f"{path}:{line}:{first.column}: ")
        return
    assert result.ok, "\n".join(str(d) for d in result.errors)
    assert result.kind == (STAGE if path.parent.name == "bundled" else CLOUD_CONFIG)
    for warning in result.warnings:  # only what Kairos would silently ignore
        assert warning.message == "unknown key" or "decimal number" in warning.message, \
            str(warning)


def test_strict_mode_flags_the_known_typos_in_kairos_own_files() -> None:
    grub = validate_file(CORPUS / "bundled/08_grub.yaml", strict=True)
    assert not grub.ok
    assert {d.hint for d in grub.errors} == {"did you mean 'permissions'?"}


def test_collecting_the_docs_folder_reports_the_real_clash() -> None:
    # All doc snippets merged as one machine's config: the p2p placeholder string (invalid
    # file above) meets a real env map in the next file. Kairos fails the same way.
    with pytest.raises(MergeConflict) as info:
        collect(Path("/"), cmdline="", dirs=[str(CORPUS / "docs")], fetch=False)
    assert "p2p.vpn.env" in str(info.value)
    assert "installation__p2p__2.yaml" in str(info.value)


def test_collecting_examples_and_bundled() -> None:
    merged = collect(Path("/"), cmdline="", dirs=[str(CORPUS / "examples")], fetch=False,
                     validate=True)
    assert len(merged.files) == len(list((CORPUS / "examples").glob("*.yaml")))
    assert merged.data["k3s"]["enabled"] is True
    assert not [d for d in merged.warnings if d.is_error]
    # The bundled stage files have no header: the config collector skips them (Kairos #2737).
    bundled = collect(Path("/"), cmdline="", dirs=[str(CORPUS / "bundled")], fetch=False)
    assert bundled.data == {} and bundled.files == []
    assert all("no #cloud-config header" in d.message for d in bundled.warnings)
