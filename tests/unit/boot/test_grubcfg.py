"""grub.cfg and the early config follow the boot contract, and GRUB's own parser accepts them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from kairos.boot.assessment import render_fragment
from kairos.boot.grubcfg import (
    CFG_MARKER,
    GrubCfgOptions,
    render_early_cfg,
    render_grub_cfg,
)
from kairos.errors import BadInput
from kairos.run import run

COMMON = ("console=tty1 console=ttyS0,115200 panic=5 rd.emergency=reboot "
          "rd.cos.oemlabel=COS_OEM net.ifnames=1")


def entries(cfg: str) -> dict[str, str]:
    """id -> body of each menuentry."""
    return {m[1]: m[2] for m in re.finditer(r"menuentry .*? --id (\w+) \{\n(.*?)\n\}", cfg,
                                            re.S)}


def test_entries_and_their_kernel_arguments() -> None:
    found = entries(render_grub_cfg())
    assert list(found) == ["cos", "fallback", "recovery", "statereset"]
    want = {
        "cos": ("$state", "/cOS/active.img", "root=LABEL=COS_ACTIVE", "extra_active_cmdline"),
        "fallback": ("$state", "/cOS/passive.img", "root=LABEL=COS_PASSIVE",
                     "extra_passive_cmdline"),
        "recovery": ("$recovery", "/cOS/recovery.squashfs", "root=LABEL=COS_SYSTEM",
                     "extra_recovery_cmdline"),
        "statereset": ("$recovery", "/cOS/recovery.squashfs", "root=LABEL=COS_SYSTEM",
                       "extra_recovery_cmdline"),
    }
    for entry_id, (fs, image, root, extra) in want.items():
        body = found[entry_id]
        assert f'loopback loop0 "({fs}){image}"' in body
        linux = next(line for line in body.splitlines() if "linux " in line).split()
        assert linux[:4] == ["linux", "(loop0)/boot/vmlinuz", root, f"cos-img/filename={image}"]
        assert " ".join(linux[4:4 + len(COMMON.split())]) == COMMON
        assert linux[-3:] == ["${kairos_boot_arg}", "${extra_cmdline}", f"${{{extra}}}"]
        assert "initrd (loop0)/boot/initrd" in body
        # A stale loop0 from a failed entry is dropped before the next one uses the name.
        assert body.index("loopback -d loop0") < body.index("loopback loop0")
    assert "kairos.reset" in found["statereset"]
    assert "kairos.reset" not in found["recovery"]


def test_entries_pass_the_boot_id_of_the_image_they_loaded() -> None:
    """kairos.boot_id= comes from the image on loop0, the same loop device the kernel and
    initrd are loaded from, and only when that image states one."""
    for entry_id, body in entries(render_grub_cfg()).items():
        lines = [line.strip() for line in body.splitlines()]
        loop = next(i for i, line in enumerate(lines) if line.startswith("loopback loop0 "))
        linux = next(i for i, line in enumerate(lines) if line.startswith("linux "))
        assert lines[loop + 1:loop + 6] == [
            "set kairos_boot_id=",
            "set kairos_image_id=",  # an image without the line is not judged by another's id
            'if [ -f "(loop0)/boot/kairos-boot.cfg" ]; then '
            'source "(loop0)/boot/kairos-boot.cfg"; fi',
            "set kairos_boot_arg=",
            'if [ -n "${kairos_boot_id}" ]; then '
            'set kairos_boot_arg="kairos.boot_id=${kairos_boot_id}"; fi',
        ], entry_id
        # the recovery entries load right away; the slot entries first run the assessment
        assert (linux == loop + 6) == (entry_id in ("recovery", "statereset")), entry_id
        # before the grubenv extras: the initrd takes the last one, so they can override it
        assert lines[linux].split().index("${kairos_boot_arg}") \
            < lines[linux].split().index("${extra_cmdline}")
        assert "kairos.boot_id=" not in lines[linux]  # never an empty one


def test_slot_entries_load_only_an_image_the_assessment_lets_boot() -> None:
    found = entries(render_grub_cfg())
    for entry_id in ("cos", "fallback"):
        body = found[entry_id]
        fragment = render_fragment(entry_id, indent="  ")
        assert fragment in body
        assert body.index("source ") < body.index(fragment)
        guarded = ('  if [ -n "${kairos_boot}" ]; then\n    linux (loop0)/boot/vmlinuz ')
        assert body.index(fragment) + len(fragment) == body.index(guarded)
        assert body.count("linux ") == 1 and body.count("initrd ") == 1
        assert f"kairos-grub: refusing {entry_id}: " in body
    for entry_id in ("recovery", "statereset"):
        assert "kairos_boot}" not in found[entry_id]
        assert "save_env" not in found[entry_id] and "load_env" not in found[entry_id]


def test_the_assessment_block_path_is_found_once_and_exported() -> None:
    cfg = render_grub_cfg()
    head = cfg[:cfg.index("menuentry ")]
    assert 'if [ -f "($state)/boot_assessment" ]; then\n' \
           '  set kairos_assess_file="($state)/boot_assessment"\n' in head
    assert head.index("set kairos_assess_file=\n") < head.index('if [ -f "($state)/boot_a')
    # after grubenv: a variable there cannot point the entries at another block
    assert head.index('load_env --file "$env_file"') < head.index("set kairos_assess_file=")
    exported = " ".join(line for line in cfg.splitlines() if line.startswith("export "))
    assert "kairos_assess_file" in exported.split()
    # GRUB 2.06 script has no arithmetic: every number the entries write is spelled out
    assert "$((" not in cfg and "expr" not in cfg


def test_selection_one_shot_then_saved_then_cos() -> None:
    cfg = render_grub_cfg()
    assert 'load_env --file "$env_file"' in cfg
    one_shot = cfg.index('if [ -n "${next_entry}" ]')
    assert cfg.index('set default="${next_entry}"', one_shot) < cfg.index(
        'save_env --file "$env_file" next_entry', one_shot)
    assert 'set default="${saved_entry}"' in cfg
    assert "  set default=cos\n" in cfg
    assert "--label --set=oem COS_OEM" in cfg and "--label --set=state COS_STATE" in cfg


def test_fallback_ids_become_entry_numbers() -> None:
    cfg = render_grub_cfg()
    assert 'set fallback_ids="fallback recovery"' in cfg
    assert 'set fallback_ids="${default_fallback}"' in cfg
    for number, entry_id in enumerate(["cos", "fallback", "recovery", "statereset"]):
        assert f'if [ "$f" = {entry_id} ]; then set n={number}; fi' in cfg


def test_serial_console_marker_and_timeout() -> None:
    cfg = render_grub_cfg(GrubCfgOptions(timeout=7, serial_speed=9600))
    assert "serial --unit=0 --speed=9600\nterminal_input serial console\n" \
           "terminal_output serial console\n" in cfg
    assert f'echo "{CFG_MARKER}"' in cfg
    assert "set timeout=7\n" in cfg
    assert "set timeout=1\n" in render_grub_cfg()


def test_variables_used_in_entries_are_exported() -> None:
    cfg = render_grub_cfg()
    exported = " ".join(line for line in cfg.splitlines() if line.startswith("export "))
    for var in ("state", "recovery", "extra_cmdline", "extra_active_cmdline",
                "extra_passive_cmdline", "extra_recovery_cmdline"):
        assert var in exported.split()


def test_early_config_is_plain_commands() -> None:
    early = render_early_cfg()
    assert "search --no-floppy --label --set=root COS_STATE" in early
    assert "set prefix=($root)/grub2" in early
    assert early.rstrip().endswith("configfile ($root)/grub2/grub.cfg")
    # GRUB runs embedded configs with the rescue parser: no if/for/functions.
    assert not re.search(r"^\s*(if|for|function)\b", early, re.M)


@pytest.mark.skipif(shutil.which("grub-script-check") is None, reason="needs grub-common")
@pytest.mark.parametrize("text", [render_grub_cfg(), render_early_cfg(),
                                  render_grub_cfg(GrubCfgOptions(timeout=-1, title="My OS"))])
def test_grub_parser_accepts_it(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(text)
    run(["grub-script-check", str(cfg)])


def test_options_are_validated() -> None:
    with pytest.raises(BadInput, match="timeout"):
        GrubCfgOptions(timeout=-2)
    with pytest.raises(BadInput, match=r"cannot be put in grub\.cfg"):
        GrubCfgOptions(title='x"; reboot; "')
    with pytest.raises(BadInput, match="unknown GRUB config option"):
        GrubCfgOptions.from_mapping({"colour": "red"})
    with pytest.raises(BadInput, match="must be a number"):
        GrubCfgOptions.from_mapping({"timeout": "soon"})
    assert GrubCfgOptions.from_mapping({"timeout": "5", "title": "Edge"}) == GrubCfgOptions(
        timeout=5, title="Edge")
