"""`kairos iso` without root: the live grub.cfg, xorriso's arguments, the overlay walk (links
stay inside it) and the refusals that come before any work."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kairos.artifacts import iso
from kairos.boot.grubcfg import CFG_MARKER, GrubCfgOptions, render_early_cfg
from kairos.cli import main
from kairos.errors import BadInput
from kairos.run import run

CONFIG = "#cloud-config\nusers:\n  - name: kairos\n    groups: [admin]\n"


def test_live_grub_cfg_boots_the_isos_kernel_in_live_mode() -> None:
    cfg = iso.render_live_grub_cfg()
    assert CFG_MARKER in cfg and "set default=live" in cfg and "set timeout=1" in cfg
    linux = next(line.split() for line in cfg.splitlines() if line.strip().startswith("linux"))
    assert linux[1] == "/boot/kernel"
    args = linux[2:]
    assert args[:4] == ["root=live:CDLABEL=COS_LIVE", "rd.live.dir=/",
                        "rd.live.squashimg=rootfs.squashfs", "console=tty1"]
    assert "console=ttyS0,115200" in args and "panic=5" in args
    assert not [a for a in args if a.startswith("rd.cos.oemlabel")]  # nothing on a disk
    assert "  initrd /boot/initrd" in cfg.splitlines()
    titled = iso.render_live_grub_cfg(GrubCfgOptions(title="Edge", timeout=5), "quiet")
    assert 'menuentry "Edge (live)" --id live' in titled and "set timeout=5" in titled
    assert iso.live_cmdline("quiet").endswith(" quiet")
    with pytest.raises(BadInput, match=r"cannot be put in grub\.cfg"):
        iso.render_live_grub_cfg(extra_cmdline='x"; reboot')


def test_the_grub_images_find_the_iso_by_its_label() -> None:
    early = render_early_cfg(iso.LIVE_LABEL)
    assert "search --no-floppy --label --set=root COS_LIVE" in early
    assert "configfile ($root)/grub2/grub.cfg" in early and iso.ISO_GRUB_CFG == "grub2/grub.cfg"


@pytest.mark.skipif(shutil.which("grub-script-check") is None, reason="needs grub-common")
def test_grub_parser_accepts_the_live_cfg(tmp_path: Path) -> None:
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(iso.render_live_grub_cfg())
    run(["grub-script-check", str(cfg)])


def test_xorriso_makes_a_hybrid_bios_and_uefi_iso(tmp_path: Path) -> None:
    argv = iso.xorriso_argv(tmp_path / "out.iso", ["/a=/b"])
    joined = " ".join(argv)
    assert argv[:3] == ["xorriso", "-as", "mkisofs"]
    assert "-V COS_LIVE" in joined and "-J" not in argv  # GRUB searches the ISO9660 label
    assert ("-b boot/eltorito.img -no-emul-boot -boot-load-size 4 -boot-info-table "
            "--grub2-boot-info --grub2-mbr /usr/lib/grub/i386-pc/boot_hybrid.img") in joined
    assert "-eltorito-alt-boot -e boot/efi.img -no-emul-boot -efi-boot-part --efi-boot-image" \
        in joined
    assert argv[-2:] == ["-graft-points", "/a=/b"]


def test_graft_points_escape_and_list_every_file(tmp_path: Path) -> None:
    specs = iso.graft_points({"rootfs.squashfs": Path("/img/rootfs.squashfs"),
                              "odd=name\\x": Path("/src/a=b")}, ["oem"], tmp_path)
    assert specs == [f"/oem/={tmp_path}", "/odd\\=name\\\\x=/src/a\\=b",
                     "/rootfs.squashfs=/img/rootfs.squashfs"]


def _overlay(tmp_path: Path) -> Path:
    top = tmp_path / "overlay"
    (top / "oem").mkdir(parents=True)
    (top / "oem/10_extra.yaml").write_text("#cloud-config\nhostname: x\n")
    (top / "empty").mkdir()
    (top / "docs").mkdir()
    (top / "docs/README").write_text("hello")
    (top / "readme-link").symlink_to("docs/README")
    (top / "abs-link").symlink_to("/docs/README")  # absolute: taken inside the overlay
    (top / "docs-link").symlink_to("docs")
    return top


def test_overlay_files_links_followed_inside(tmp_path: Path) -> None:
    top = _overlay(tmp_path)
    files, dirs = iso.overlay_tree(top)
    readme = (top / "docs/README").resolve()
    assert files == {"abs-link": readme, "docs-link/README": readme, "docs/README": readme,
                     "oem/10_extra.yaml": (top / "oem/10_extra.yaml").resolve(),
                     "readme-link": readme}
    assert sorted(dirs) == ["docs", "docs-link", "empty", "oem"]


@pytest.mark.parametrize("target", ["/etc/hostname", "../../../../../../etc/hostname"])
def test_overlay_links_never_lead_outside(tmp_path: Path, target: str) -> None:
    top = _overlay(tmp_path)
    (top / "escape").symlink_to(target)
    with pytest.raises(BadInput, match="link to nothing inside"):
        iso.overlay_tree(top)
    (top / "etc").mkdir()
    (top / "etc/hostname").write_text("inside")
    files, _ = iso.overlay_tree(top)
    assert files["escape"] == (top / "etc/hostname").resolve()  # re-rooted, not the host's


def test_overlay_loops_and_special_files_are_refused(tmp_path: Path) -> None:
    top = _overlay(tmp_path)
    (top / "docs/up").symlink_to("..")
    with pytest.raises(BadInput, match="links back"):
        iso.overlay_tree(top)
    (top / "docs/up").unlink()
    os.mkfifo(top / "fifo")
    with pytest.raises(BadInput, match="not a regular file or directory"):
        iso.overlay_tree(top)
    with pytest.raises(BadInput, match="does not exist"):
        iso.overlay_tree(tmp_path / "nowhere")


def test_overlay_cannot_replace_the_isos_own_files(tmp_path: Path) -> None:
    top = _overlay(tmp_path)
    (top / "rootfs.squashfs").write_text("not the slot")
    with pytest.raises(BadInput, match=r"/rootfs\.squashfs, which is the ISO.s own file"):
        iso._check_overlay(top, None)
    (top / "rootfs.squashfs").unlink()
    (top / "grub2").write_text("a file where the ISO has a directory")
    with pytest.raises(BadInput, match="has /grub2"):
        iso._check_overlay(top, None)
    (top / "grub2").unlink()
    (top / "boot").mkdir()
    (top / "boot/extra.txt").write_text("beside the ISO's boot files")
    assert "boot/extra.txt" in iso._check_overlay(top, None)[0]
    (top / "config.yaml").write_text(CONFIG)
    cfg = tmp_path / "cc.yaml"
    cfg.write_text(CONFIG)
    with pytest.raises(BadInput, match="--cloud-config gives it"):
        iso._check_overlay(top, cfg)
    files, _ = iso._check_overlay(top, None)  # the overlay's own config.yaml, validated
    assert "config.yaml" in files
    (top / "config.yaml").write_text("#cloud-config\nusers: 5\n")
    with pytest.raises(BadInput, match="users"):
        iso._check_overlay(top, None)


def test_bad_image_dirs_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        iso.check_inputs(tmp_path / "missing")
    with pytest.raises(BadInput, match=r"has no rootfs\.squashfs"):
        iso.check_inputs(tmp_path)
    (tmp_path / "rootfs.squashfs").write_bytes(b"not a squashfs image" * 10)
    with pytest.raises(BadInput, match="is not a squashfs image"):
        iso.check_inputs(tmp_path)
    with pytest.raises(BadInput, match="does not exist"):
        iso.check_output(tmp_path / "nodir" / "out.iso")
    with pytest.raises(BadInput, match="is a directory"):
        iso.check_output(tmp_path)


def test_cli_refuses_bad_input_with_exit_2_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.iso"
    assert main(["iso", str(tmp_path / "missing"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kairos: error: image directory") and "hint:" in err
    assert len(err.strip().splitlines()) == 2
    with pytest.raises(SystemExit) as exc:
        main(["iso", str(tmp_path)])  # no -o
    assert exc.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []
