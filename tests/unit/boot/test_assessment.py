"""Boot assessment (boot/assessment.py): the state machine, its env block against the real
grub-editenv, the rendered GRUB script against its Python mirror, and the agent/GRUB write
sequences of docs/lifecycle.md cut after every single write."""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from kairos.artifacts.bootid import render_boot_cfg
from kairos.boot import assessment, grubenv
from kairos.boot.assessment import (
    DEFAULT_TRIES,
    ENV_FILE,
    MAX_TRIES,
    REFUSED_MARK,
    TRY_MARK,
    Flags,
    arm,
    from_env,
    grub_boot,
    is_failed,
    mark_good,
    to_env,
)
from kairos.boot.grubcfg import render_grub_cfg
from kairos.errors import BadInput
from kairos.run import run

needs_editenv = pytest.mark.skipif(shutil.which("grub-editenv") is None,
                                   reason="grub-editenv (grub-common) not installed")

A, B, C = "a" * 32, "b" * 32, "c" * 32
BOOT_ID = "d" * 32


# --- GRUB's tool: the same envblk code as GRUB's own save_env -----------------------------

def editenv(path: Path, *args: str) -> str:
    return run(["grub-editenv", str(path), *args]).stdout


def editenv_list(path: Path) -> dict[str, str]:
    """The variables as GRUB loads them (None of ours involved). `grub-editenv list` would
    create a missing file: GRUB sees none, so this sees none."""
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in editenv(path, "list").splitlines())


def grub_save(path: Path, names: tuple[str, ...], values: dict[str, str]) -> None:
    """GRUB's `save_env --file path names…`: the named variables rewritten in place."""
    editenv(path, "set", *(f"{n}={values[n]}" for n in names))


# --- the state machine ----------------------------------------------------------------------

def test_flags_hold_only_what_grub_can_compare_and_count() -> None:
    assert Flags() == Flags("", 0, "")
    assert Flags(A, 9, B).tries == MAX_TRIES == 9 and DEFAULT_TRIES == 1
    for bad in ({"tentative": "A" * 32}, {"failed": "x"}, {"tries": 10}, {"tries": -1}):
        with pytest.raises(BadInput):
            Flags(**bad)  # type: ignore[arg-type]


def test_arm_starts_a_clean_trial() -> None:
    # whatever an earlier upgrade left: a failed image, a stale tentative one
    for before in (Flags(), Flags("", 0, B), Flags(C, 3, B), Flags(A, 0, A)):
        assert arm(before, A, 3) == Flags(A, 3, "")
    assert arm(Flags(), A, DEFAULT_TRIES) == Flags(A, 1, "")
    with pytest.raises(BadInput, match="tries 0"):
        arm(Flags(), A, 0)  # a trial without a boot would refuse the image at once
    with pytest.raises(BadInput, match="tries 10"):
        arm(Flags(), A, 10)
    with pytest.raises(BadInput, match="not an image id"):
        arm(Flags(), "A" * 32, 1)


@pytest.mark.parametrize("flags,image,want", [
    # an image without an id is not assessed, whatever the flags say
    (Flags(A, 0, A), None, (True, Flags(A, 0, A))),
    (Flags(A, 0, A), "", (True, Flags(A, 0, A))),
    # nothing about this image: boot, nothing written
    (Flags(), A, (True, Flags())),
    (Flags(B, 2, C), A, (True, Flags(B, 2, C))),
    (Flags(B, 0, C), A, (True, Flags(B, 0, C))),
    # failed: refused, nothing written, whatever else is set
    (Flags("", 0, A), A, (False, Flags("", 0, A))),
    (Flags(B, 3, A), A, (False, Flags(B, 3, A))),
    # tentative with tries left: boot and count
    (Flags(A, 1, ""), A, (True, Flags(A, 0, ""))),
    (Flags(A, 9, ""), A, (True, Flags(A, 8, ""))),
    (Flags(A, 5, B), A, (True, Flags(A, 4, B))),
    # tentative without: marked failed (replacing another verdict), tentative cleared
    (Flags(A, 0, ""), A, (False, Flags("", 0, A))),
    (Flags(A, 0, B), A, (False, Flags("", 0, A))),
])
def test_grub_boot(flags: Flags, image: str | None, want: tuple[bool, Flags]) -> None:
    assert grub_boot(flags, image) == want


def test_grub_boot_refuses_a_boot_it_cannot_count() -> None:
    """A save_env that fails leaves the block as it was; an image GRUB cannot count would
    boot, panic and boot again forever, so it is refused (GRUB falls back)."""
    for flags in (Flags(A, 1, ""), Flags(A, 0, "")):
        assert grub_boot(flags, A, can_write=False) == (False, flags)
    for flags, image in ((Flags(), A), (Flags(B, 1, ""), A), (Flags(A, 1, ""), None)):
        assert grub_boot(flags, image, can_write=False) == (True, flags)  # nothing to write
    assert grub_boot(Flags("", 0, A), A, can_write=False) == (False, Flags("", 0, A))


def test_countdown_spends_exactly_the_tries() -> None:
    for tries in range(1, MAX_TRIES + 1):
        flags, booted = arm(Flags(), A, tries), 0
        while True:
            ok, flags = grub_boot(flags, A)
            if not ok:
                break
            booted += 1
        assert booted == tries and flags == Flags("", 0, A)
        assert grub_boot(flags, A) == (False, flags)  # and it stays refused


@pytest.mark.parametrize("flags,booted,slots,want", [
    # the booted image's trial ends; its verdict on another image stays
    (Flags(A, 0, ""), A, {A, B}, Flags()),
    (Flags(A, 2, B), A, {A, B}, Flags("", 0, B)),
    # another image's trial, that image still in a slot: kept (it has not booted yet)
    (Flags(B, 1, ""), A, {A, B}, Flags(B, 1, "")),
    (Flags(B, 1, C), A, {A, B}, Flags(B, 1, C)),
    # a trial of an image no slot holds (an upgrade cut before its flip; Kairos #4303): ends
    (Flags(C, 1, ""), A, {A, B}, Flags()),
    (Flags(C, 3, B), A, {A, B}, Flags("", 0, B)),
    # an image without an id booted: only a stale trial ends
    (Flags(B, 1, ""), None, {B}, Flags(B, 1, "")),
    (Flags(C, 1, ""), None, {B}, Flags()),
    # no trial: tries left over without one are dropped, failed kept
    (Flags("", 4, B), A, {A, B}, Flags("", 0, B)),
    (Flags(), A, set(), Flags()),
])
def test_mark_good(flags: Flags, booted: str | None, slots: set[str], want: Flags) -> None:
    assert mark_good(flags, booted, slots) == want


def test_is_failed() -> None:
    assert is_failed(Flags("", 0, A), A)
    assert not is_failed(Flags("", 0, A), B)
    assert not is_failed(Flags(A, 1, ""), A)
    assert not is_failed(Flags(), None) and not is_failed(Flags(), "")


# --- the env block, against grub-editenv ----------------------------------------------------

@pytest.mark.parametrize("env,want", [
    ({}, Flags()),
    ({"kairos_tentative": A, "kairos_tries": "3", "kairos_failed": B}, Flags(A, 3, B)),
    # GRUB counts down only 1-9 and gives up on anything else: that is 0
    *(({"kairos_tentative": A, "kairos_tries": v}, Flags(A, 0, ""))
      for v in ("", "x", "10", "-1", " 1", "1 ", "01", "٣")),
    ({"kairos_tentative": A}, Flags(A, 0, "")),
    # GRUB compares ids as strings with a 32-hex image id: nothing else can ever match
    *(({"kairos_tentative": v, "kairos_tries": "2", "kairos_failed": v}, Flags("", 2, ""))
      for v in (A.upper(), A + " ", A[:31], "x", "")),
])
def test_from_env_reads_values_as_grub_compares_them(env: dict[str, str], want: Flags) -> None:
    assert from_env(env) == want


def test_a_missing_or_foreign_file_is_no_flags(tmp_path: Path) -> None:
    assert assessment.read(tmp_path) == Flags()
    (tmp_path / ENV_FILE).write_bytes(b"not an env block\n")
    assert assessment.read(tmp_path) == Flags()  # GRUB's load_env fails on it too
    assessment.write(tmp_path, Flags(A, 1, ""))  # and the next write replaces it
    assert assessment.read(tmp_path) == Flags(A, 1, "")


@needs_editenv
def test_grub_reads_ours_and_we_read_grubs(tmp_path: Path) -> None:
    path = tmp_path / ENV_FILE
    editenv(path, "create")
    assert assessment.read(tmp_path) == Flags()
    editenv(path, "set", f"kairos_tentative={A}", "kairos_tries=2", "kairos_failed=")
    assert assessment.read(tmp_path) == Flags(A, 2, "")
    assessment.write(tmp_path, Flags("", 0, B))
    assert editenv_list(path) == {"kairos_tentative": "", "kairos_tries": "0",
                                  "kairos_failed": B}
    assert path.stat().st_size == 1024


@needs_editenv
def test_write_keeps_other_variables_after_ours(tmp_path: Path) -> None:
    path = tmp_path / ENV_FILE
    editenv(path, "create")
    editenv(path, "set", "kairos_note=x", "kairos_failed=" + C, "z=1\\2")
    assessment.write(tmp_path, Flags(A, 3, ""))
    env = editenv_list(path)
    assert list(env) == ["kairos_tentative", "kairos_tries", "kairos_failed", "kairos_note", "z"]
    assert env["kairos_note"] == "x" and env["kairos_failed"] == ""
    assert grubenv.read(path)["z"] == "1\\2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [ENV_FILE]  # no temp file left


@needs_editenv
def test_grubs_in_place_writes_touch_only_the_first_sector(tmp_path: Path) -> None:
    """save_env writes the block sector by sector: with ours at the head, every GRUB write
    (a count, giving up) changes the first 512 bytes only, so a cut inside it tears
    nothing, even with other long variables in the block."""
    path = tmp_path / ENV_FILE
    grubenv.write(path, {"other": "o" * 600})
    assessment.write(tmp_path, arm(assessment.read(tmp_path), A, MAX_TRIES))
    data = path.read_bytes()
    assert data.index(b"kairos_failed=\n") + len(b"kairos_failed=\n") + 32 <= 512
    tail = data[512:]
    flags = assessment.read(tmp_path)
    for _ in range(MAX_TRIES + 1):
        ok, after = grub_boot(flags, A)
        grub_save(path, assessment.VARS, to_env(after))
        assert path.stat().st_size == 1024 and path.read_bytes()[512:] == tail
        assert assessment.read(tmp_path) == after
        flags = after
    assert flags == Flags("", 0, A) and not ok


# --- the rendered GRUB script, run -------------------------------------------------------

Word = list[tuple[str, str]]  # ("lit", text) | ("qvar", name) | ("var", name)
Node = tuple[str, object]
KEYWORDS = ("if", "then", "elif", "else", "fi")
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def tokenize(text: str) -> list[Word | None]:
    """Words and separators (None) of GRUB script, for the subset the entries use: no single
    quotes, escapes or functions (the interpreter fails on anything it does not know)."""
    out: list[Word | None] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c in " \t":
            i += 1
        elif c in ";\n":
            out.append(None)
            i += 1
        elif c == "#":
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
        else:
            word: Word = []
            while i < len(text) and text[i] not in " \t;\n":
                assert text[i] not in "'\\|&<>`", f"unsupported GRUB syntax at {text[i:i + 20]!r}"
                if text[i] == '"':
                    end = text.index('"', i + 1)
                    word.append(("lit", ""))  # "" is still a word
                    word += _quoted(text[i + 1:end])
                    i = end + 1
                else:
                    m = _VAR.match(text, i)
                    if m:
                        word.append(("var", m[1] or m[2]))
                        i = m.end()
                    else:
                        word.append(("lit", text[i]))
                        i += 1
            out.append(word)
    return out


def _quoted(text: str) -> Word:
    """A double-quoted part: its variables expand to exactly one word."""
    out: Word = []
    pos = 0
    for m in _VAR.finditer(text):
        out += [("lit", text[pos:m.start()]), ("qvar", m[1] or m[2])]
        pos = m.end()
    return [*out, ("lit", text[pos:])]


def parse(tokens: list[Word | None]) -> list[Node]:
    nodes, rest = _block(tokens, ())
    assert not rest, "unbalanced if/fi"
    return nodes


def _keyword(word: Word | None) -> str | None:
    if word and all(kind == "lit" for kind, _ in word):
        text = "".join(t for _, t in word)
        return text if text in KEYWORDS else None
    return None


def _block(tokens: list[Word | None], stop: tuple[str, ...]) -> tuple[list[Node], list[Word | None]]:
    nodes: list[Node] = []
    while tokens:
        head = tokens[0]
        if head is None:
            tokens = tokens[1:]
            continue
        kw = _keyword(head)
        if kw in stop:
            return nodes, tokens
        if kw == "if":
            branches: list[tuple[list[Word], list[Node]]] = []
            else_body: list[Node] = []
            while True:  # at "if" or "elif"
                cond, tokens = _command(tokens[1:])
                assert _keyword(tokens[0]) == "then", "expected then"
                body, tokens = _block(tokens[1:], ("elif", "else", "fi"))
                branches.append((cond, body))
                kw = _keyword(tokens[0])
                if kw == "elif":
                    continue
                if kw == "else":
                    else_body, tokens = _block(tokens[1:], ("fi",))
                tokens = tokens[1:]  # fi
                break
            nodes.append(("if", (branches, else_body)))
        else:
            assert kw is None, f"unexpected {kw}"
            cmd, tokens = _command(tokens)
            nodes.append(("cmd", cmd))
    assert not stop, f"missing {stop}"
    return nodes, tokens


def _command(tokens: list[Word | None]) -> tuple[list[Word], list[Word | None]]:
    words: list[Word] = []
    while tokens and tokens[0] is not None:
        words.append(tokens[0])
        tokens = tokens[1:]
    while tokens and tokens[0] is None:
        tokens = tokens[1:]
    return words, tokens


@dataclass
class Grub:
    """GRUB running one menu entry: variables, files GRUB can read (`-f`, `source`), env
    blocks (GRUB path -> real file, loaded and saved with grub-editenv), what was printed and
    what was loaded. Exactly the commands the entries use; anything else fails the test."""

    env: dict[str, str]
    files: dict[str, str]
    blocks: dict[str, Path]
    writable: bool = True
    printed: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)

    def run(self, text: str) -> None:
        self.block(parse(tokenize(text)))

    def block(self, nodes: list[Node]) -> bool:
        ok = True
        for kind, value in nodes:
            if kind == "if":
                branches, else_body = value  # type: ignore[misc]
                for cond, body in branches:
                    if self.command(cond):
                        ok = self.block(body)
                        break
                else:
                    ok = self.block(else_body)
            else:
                ok = self.command(value)  # type: ignore[arg-type]
        return ok

    def expand(self, word: Word) -> list[str]:
        fields: list[str] = []
        cur: str | None = None
        for kind, text in word:
            if kind == "lit":
                cur = (cur or "") + text
            elif kind == "qvar":
                cur = (cur or "") + self.env.get(text, "")
            else:  # unquoted: split into words, an empty value gives none
                parts = self.env.get(text, "").split()
                if parts:
                    cur = (cur or "") + parts[0]
                    if len(parts) > 1:
                        fields.append(cur)
                        fields += parts[1:-1]
                        cur = parts[-1]
        return [*fields, cur] if cur is not None else fields

    def command(self, words: list[Word]) -> bool:
        argv = [a for w in words for a in self.expand(w)]
        name, args = argv[0], argv[1:]
        if name == "[":
            assert args[-1] == "]"
            return self.test(args[:-1])
        if name == "set":
            assert len(args) == 1 and "=" in args[0], args
            var, value = args[0].split("=", 1)
            self.env[var] = value
            return True
        if name == "echo":
            self.printed.append(" ".join(args))
            return True
        if name in ("load_env", "save_env"):
            assert args[0] == "--file"
            path = self.blocks.get(args[1])
            if path is None or not path.exists():
                return False
            if name == "save_env":
                if not self.writable:
                    return False
                grub_save(path, tuple(args[2:]), self.env)
                return True
            try:
                found = editenv_list(path)
            except Exception:  # GRUB: "invalid environment block", nothing loaded
                return False
            self.env.update((k, v) for k, v in found.items() if k in args[2:])
            return True
        if name == "source":
            self.run(self.files[args[0]])
            return True
        if name in ("loopback", "linux", "initrd"):
            self.loaded.append(" ".join(argv))
            return True
        raise AssertionError(f"the interpreter does not know {name!r}")

    def test(self, args: list[str]) -> bool:
        if len(args) == 3 and args[1] == "=":
            return args[0] == args[2]
        assert len(args) == 2, args
        op, arg = args
        if op in ("-n", "-z"):
            return bool(arg) == (op == "-n")
        if op == "-f":
            return arg in self.files
        assert op == "-d", op
        return False  # no loop device is left over from an earlier entry here


CFG = render_grub_cfg()


def entry_body(entry_id: str) -> str:
    m = re.search(rf"menuentry .*? --id {entry_id} \{{\n(.*?)\n\}}", CFG, re.S)
    assert m
    return m[1]


def assess_file_setup() -> str:
    """The lines of grub.cfg's head that find the block (run too, not assumed)."""
    m = re.search(r"^set kairos_assess_file=\n.*?^fi\n", CFG, re.S | re.M)
    assert m
    return m[0]


@dataclass
class EntryRun:
    loaded: bool
    flags: Flags
    printed: list[str]


def run_entry(tmp_path: Path, entry_id: str, image_cfg: str | None, *, block: bool = True,
              writable: bool = True) -> EntryRun:
    """Run grub.cfg's block lookup and then entry `entry_id` over COS_STATE's block in
    tmp_path (if `block`), with the image's /boot/kairos-boot.cfg `image_cfg`."""
    files = {f"({fs})/boot_assessment": "" for fs in ("STATE",) if block}
    if image_cfg is not None:
        files["(loop0)/boot/kairos-boot.cfg"] = image_cfg
    grub = Grub({"state": "STATE", "recovery": "RECOVERY"}, files,
                {"(STATE)/boot_assessment": tmp_path / ENV_FILE}, writable)
    grub.run(assess_file_setup())
    grub.run(entry_body(entry_id))
    loaded = [line.split()[0] for line in grub.loaded if not line.startswith("loopback")]
    assert loaded in ([], ["linux", "initrd"])  # never a kernel without its initrd
    after = assessment.read(tmp_path) if block else Flags()  # GRUB's writes, read by ours
    return EntryRun(bool(loaded), after, grub.printed)


def flag_states() -> Iterator[Flags]:
    ids = ("", A, B)
    for tentative, failed in itertools.product(ids, ids):
        for tries in (range(MAX_TRIES + 1) if tentative == A else (0, 1, 5)):
            yield Flags(tentative, tries, failed)


@needs_editenv
@pytest.mark.parametrize("entry_id", ["cos", "fallback"])
def test_the_rendered_entry_does_what_grub_boot_says(tmp_path: Path, entry_id: str) -> None:
    """Every interesting state, through the text of the entry that grub.cfg really has."""
    cases = 0
    for flags in flag_states():
        for image, writable in itertools.product((A, None), (True, False)):
            if image is None and not writable:
                continue
            assessment.write(tmp_path, flags)
            cfg = render_boot_cfg(BOOT_ID, image)  # an image without its id: the old file
            got = run_entry(tmp_path, entry_id, cfg, writable=writable)
            want_ok, want_flags = grub_boot(flags, image, can_write=writable)
            assert (got.loaded, got.flags) == (want_ok, want_flags), (flags, image, writable)
            marks = [p for p in got.printed if p.startswith("kairos-grub: ")
                     and not p.startswith("kairos-grub: booting")]
            refused = [p for p in marks if p.startswith(f"{REFUSED_MARK} {entry_id}: ")]
            counted = [p for p in marks if p.startswith(TRY_MARK)]
            assert len(refused) == (not want_ok), marks
            assert len(counted) == (want_ok and want_flags != flags), marks
            if counted:
                assert counted[0].endswith(f"{A} in {entry_id}: {want_flags.tries} left")
            cases += 1
    assert cases == 3 * (MAX_TRIES + 1 + 2 * 3) * 3  # failed × tentative, tries × image


@needs_editenv
@pytest.mark.parametrize("raw", [
    {"kairos_tentative": A, "kairos_tries": v} for v in ("x", "10", "", "01", " 1")
] + [
    {"kairos_tentative": A.upper(), "kairos_tries": "1"},
    {"kairos_failed": A + " "},
    {"kairos_tentative": A, "kairos_tries": "2", "kairos_failed": A},
    {"kairos_tentative": A, "kairos_tries": "2", "saved_entry": "recovery"},
    {},
])
def test_odd_blocks_read_as_grub_reads_them(tmp_path: Path, raw: dict[str, str]) -> None:
    path = tmp_path / ENV_FILE
    editenv(path, "create")
    if raw:
        editenv(path, "set", *(f"{k}={v}" for k, v in raw.items()))
    flags = assessment.read(tmp_path)
    got = run_entry(tmp_path, "cos", render_boot_cfg(BOOT_ID, A))
    ok, after = grub_boot(flags, A)
    assert (got.loaded, got.flags) == (ok, after)


@needs_editenv
def test_no_block_no_cfg_or_a_foreign_block_boots_unassessed(tmp_path: Path) -> None:
    cfg = render_boot_cfg(BOOT_ID, A)
    assert run_entry(tmp_path, "cos", cfg, block=False).loaded  # COS_STATE without the file
    assert run_entry(tmp_path, "cos", None, block=False).loaded  # an image without its cfg
    (tmp_path / ENV_FILE).write_bytes(b"garbage")  # load_env fails: GRUB boots it
    assert assessment.read(tmp_path) == Flags()
    got = run_entry(tmp_path, "cos", cfg)
    assert got.loaded


@needs_editenv
def test_an_image_without_an_id_does_not_inherit_one(tmp_path: Path) -> None:
    """kairos_image_id is emptied before the image's cfg is sourced: an old image's
    one-line cfg cannot be judged by a variable some earlier script left set."""
    assessment.write(tmp_path, Flags("", 0, A))
    grub = Grub({"state": "STATE", "kairos_image_id": A},
                {"(STATE)/boot_assessment": "", "(loop0)/boot/kairos-boot.cfg":
                 render_boot_cfg(BOOT_ID)}, {"(STATE)/boot_assessment": tmp_path / ENV_FILE})
    grub.run(assess_file_setup())
    grub.run(entry_body("cos"))
    assert any(line.startswith("linux ") for line in grub.loaded)


def test_the_recovery_entries_never_refuse(tmp_path: Path) -> None:
    for entry_id in ("recovery", "statereset"):
        grub = Grub({"state": "STATE", "recovery": "RECOVERY"},
                    {"(loop0)/boot/kairos-boot.cfg": render_boot_cfg(BOOT_ID, A)}, {})
        grub.run(entry_body(entry_id))
        assert [line.split()[0] for line in grub.loaded] == ["loopback", "linux", "initrd"]
        assert "kairos.boot_id=" + BOOT_ID in grub.loaded[1]


# --- agent and GRUB together, cut after every single write ---------------------------------

OLD, GOOD, NEW, W, RECOVERY = "1" * 32, "2" * 32, "3" * 32, "4" * 32, "5" * 32


class Cut(Exception):
    """The power goes: the write under way did not happen (each one is atomic)."""


@dataclass
class Device:
    """COS_STATE's block (a real file) and slots (role -> image id), the images that never
    complete a boot, and a power cut after `budget` more writes."""

    state: Path
    slots: dict[str, str]
    bad: frozenset[str] = frozenset()
    budget: int | None = None
    writes: list[str] = field(default_factory=list)
    boots: list[tuple[str, str, str]] = field(default_factory=list)  # entry, image, active
    arms: int = 0
    upgraded: bool = False

    def write(self, what: str, action: Callable[[], None]) -> None:
        if self.budget is not None:
            if self.budget == 0:
                raise Cut(what)
            self.budget -= 1
        action()
        self.writes.append(what)

    def swap(self) -> None:
        """RENAME_EXCHANGE of active.img and passive.img, checkpointed."""
        self.slots = {"active": self.slots["passive"], "passive": self.slots["active"]}


def grub_power_on(dev: Device) -> tuple[str, str]:
    """GRUB: cos, then the fallback chain (fallback, recovery); each slot entry loads and
    saves the block itself, as grub.cfg's entries do (through grub-editenv)."""
    path = dev.state / ENV_FILE
    for entry, role in (("cos", "active"), ("fallback", "passive")):
        image = dev.slots.get(role, "")
        if not image:
            continue  # no such file: loopback fails, GRUB falls back
        before = from_env(editenv_list(path))
        ok, after = grub_boot(before, image)
        if after != before:
            names = ((assessment.TRIES_VAR,) if after.tentative == before.tentative
                     else assessment.VARS)
            dev.write(f"grub {entry} {image}", partial(grub_save, path, names, to_env(after)))
        if ok:
            return entry, image
    return "recovery", RECOVERY


def agent_on_boot(dev: Device, entry: str, image: str) -> None:
    """The agent after a boot that passes its checks (docs/lifecycle.md): settle, then mark
    the boot good. An image in `dev.bad` never gets here (it panics, or fails its checks
    and reboots: the same to GRUB)."""
    flags = assessment.read(dev.state)
    if entry == "fallback" and flags.failed and flags.failed == dev.slots["active"]:
        dev.write("settle", dev.swap)
    new = mark_good(flags, image, {i for i in dev.slots.values() if i})
    if new != flags:
        dev.write(f"mark good {image}", lambda: assessment.write(dev.state, new))


def power_on(dev: Device) -> None:
    active = dev.slots["active"]
    entry, image = grub_power_on(dev)
    dev.boots.append((entry, image, active))
    if image not in dev.bad:
        agent_on_boot(dev, entry, image)


def until_stable(dev: Device) -> None:
    """Power on until a boot writes nothing (the next one would be the same)."""
    for _ in range(3 * MAX_TRIES):
        before = len(dev.writes)
        power_on(dev)
        if len(dev.writes) == before and dev.boots[-1][1] not in dev.bad:
            return
    raise AssertionError(f"no stable state after {dev.boots}")


def upgrade(dev: Device, image: str, tries: int) -> None:
    """The agent's upgrade, booted from active (docs/upgrade.md): the new image staged as
    passive, armed, then flipped."""
    dev.upgraded = False

    def stage() -> None:
        dev.slots["passive"] = image

    def do_arm() -> None:
        assessment.write(dev.state, arm(assessment.read(dev.state), image, tries))
        dev.arms += 1

    dev.write(f"stage {image}", stage)
    dev.write(f"arm {image}", do_arm)
    dev.write(f"flip {image}", dev.swap)
    dev.upgraded = True


@dataclass(frozen=True)
class Outcome:
    cut: str | None
    dev: Device


def scenario(tmp_path: Path, *, good: bool, tries: int, start: Flags, rerun: bool,
             cut_after: int | None) -> Outcome:
    """An upgrade from GOOD (active, with W passive) to NEW, booted until stable, with a power
    cut after `cut_after` writes; after the cut the device boots again and, when the upgrade
    had not flipped, the upgrade is run again (`rerun`) or given up."""
    state = tmp_path / f"state-{cut_after}"
    state.mkdir()
    dev = Device(state, {"active": GOOD, "passive": W},
                 frozenset() if good else frozenset({NEW}))
    assessment.write(state, start)
    dev.budget = cut_after
    cut = None
    try:
        upgrade(dev, NEW, tries)
        until_stable(dev)
    except Cut as exc:
        cut = str(exc)
        dev.budget = None
        until_stable(dev)
        if not dev.upgraded and rerun:
            upgrade(dev, NEW, tries)
            until_stable(dev)
    dev.budget = None  # one cut per run
    return Outcome(cut, dev)


def check_always_boots_and_good_images_never_fall_back(dev: Device) -> None:
    for entry, image, active in dev.boots:
        # GOOD is in a slot all along: a slot always boots, recovery is never needed
        assert entry in ("cos", "fallback"), dev.boots
        # a fallback only ever leaves the image under trial, never a good one
        if entry == "fallback":
            assert (active, image) == (NEW, GOOD), dev.boots


def check_a_later_good_upgrade_sticks(dev: Device) -> None:
    """Whatever the cut left, no flag of it makes the next good image fall back."""
    dev.bad = frozenset()
    first = len(dev.boots)
    previous = dev.slots["active"]
    upgrade(dev, OLD, DEFAULT_TRIES)
    until_stable(dev)
    assert [b[:2] for b in dev.boots[first:]] == [("cos", OLD)] * (len(dev.boots) - first)
    assert dev.slots == {"active": OLD, "passive": previous}
    assert assessment.read(dev.state) == Flags()


def cut_points(run: Callable[[int | None], Outcome]) -> Iterator[Outcome]:
    """`run` cut after 0, 1, 2… writes, until a run ends before its cut."""
    for k in itertools.count():
        out = run(k)
        yield out
        if out.cut is None:
            return


STARTS = [Flags(), Flags("", 0, W)]  # clean, or W failed before (an earlier upgrade)


@needs_editenv
@pytest.mark.parametrize("tries", [1, 2])
@pytest.mark.parametrize("start", STARTS, ids=["clean", "earlier-failure"])
def test_good_upgrade_cut_anywhere(tmp_path: Path, tries: int, start: Flags) -> None:
    outcomes = list(cut_points(lambda k: scenario(tmp_path, good=True, tries=tries,
                                                  start=start, rerun=True, cut_after=k)))
    assert outcomes[-1].dev.writes == [f"stage {NEW}", f"arm {NEW}", f"flip {NEW}",
                                       f"grub cos {NEW}", f"mark good {NEW}"]
    for out in outcomes:
        dev = out.dev
        check_always_boots_and_good_images_never_fall_back(dev)
        # A cut in the first boot of NEW, before its checks passed, spends its try: with one
        # try GRUB goes back (docs/lifecycle.md says so); with two it does not.
        if tries == 1 and out.cut == f"mark good {NEW}":
            assert dev.slots == {"active": GOOD, "passive": NEW}
            assert assessment.read(dev.state) == Flags("", 0, NEW)
        else:
            assert dev.slots == {"active": NEW, "passive": GOOD}, out.cut
            assert assessment.read(dev.state) == Flags(), out.cut
            assert not [b for b in dev.boots if b[0] != "cos"], out.cut
        check_a_later_good_upgrade_sticks(dev)


@needs_editenv
@pytest.mark.parametrize("tries", [1, 3])
@pytest.mark.parametrize("start", STARTS, ids=["clean", "earlier-failure"])
@pytest.mark.parametrize("rerun", [True, False], ids=["rerun", "given-up"])
def test_bad_upgrade_cut_anywhere(tmp_path: Path, tries: int, start: Flags,
                                  rerun: bool) -> None:
    outcomes = list(cut_points(lambda k: scenario(tmp_path, good=False, tries=tries,
                                                  start=start, rerun=rerun, cut_after=k)))
    assert outcomes[-1].dev.writes == [f"stage {NEW}", f"arm {NEW}", f"flip {NEW}",
                                       *[f"grub cos {NEW}"] * (tries + 1), "settle"]
    for out in outcomes:
        dev = out.dev
        check_always_boots_and_good_images_never_fall_back(dev)
        new_boots = sum(1 for _, image, _ in dev.boots if image == NEW)
        assert new_boots <= tries * dev.arms, (out.cut, dev.boots)
        if not dev.upgraded:
            # cut before the flip and given up: the old image, never NEW
            assert dev.slots["active"] == GOOD and new_boots == 0
        else:
            # settled: GOOD active again, NEW passive and still refused, the failure kept
            assert dev.slots == {"active": GOOD, "passive": NEW}, out.cut
            assert assessment.read(dev.state) == Flags("", 0, NEW), out.cut
            assert new_boots == tries
            assert dev.boots[-1][:2] == ("cos", GOOD)
        check_a_later_good_upgrade_sticks(dev)


@needs_editenv
def test_bad_upgrade_writes_in_order(tmp_path: Path) -> None:
    """The sequence the cut tests cut: GRUB counts, gives up, the agent settles."""
    out = scenario(tmp_path, good=False, tries=2, start=Flags(), rerun=True, cut_after=None)
    assert out.dev.writes == [f"stage {NEW}", f"arm {NEW}", f"flip {NEW}",
                              f"grub cos {NEW}", f"grub cos {NEW}", f"grub cos {NEW}",
                              "settle"]
    assert [b[:2] for b in out.dev.boots] == [("cos", NEW), ("cos", NEW), ("fallback", GOOD),
                                               ("cos", GOOD)]


@needs_editenv
def test_when_both_slots_are_refused_recovery_boots(tmp_path: Path) -> None:
    """The running image applied again (same id in both slots) and failing: GRUB refuses
    both slot entries and the recovery entry boots, every time, without a loop."""
    dev = Device(tmp_path, {"active": NEW, "passive": NEW}, frozenset({NEW}))
    assessment.write(tmp_path, arm(Flags(), NEW, 1))
    for _ in range(4):
        power_on(dev)
    assert [b[:2] for b in dev.boots] == [("cos", NEW)] + [("recovery", RECOVERY)] * 3
    assert assessment.read(tmp_path) == Flags("", 0, NEW)
