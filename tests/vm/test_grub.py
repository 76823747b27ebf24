"""`compose image --bootloader grub` of the Debian 12 example: the disk's GRUB parts, and a
BIOS boot (SeaBIOS, no OVMF) that follows libostree's deployments through
/boot/loader/syslinux.cfg."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from apt_ostree import ostree
from apt_ostree.compose import grub, image
from apt_ostree.ostree import remove_sysroot as remove_tree
from apt_ostree.progress import Progress
from tests.support import vm
from tests.support.debian import BOOKWORM_REF
from tests.vm.test_image import debugfs

pytestmark = [pytest.mark.network, pytest.mark.slow]

REF = BOOKWORM_REF  # of the session's `bookworm_example` (tests/support/plugin.py)


class BiosVM(vm.VM):
    """The harness's guest with qemu's default firmware (SeaBIOS) instead of OVMF."""

    def _argv(self) -> list[str]:
        argv = super()._argv()
        pflash = {i for i, arg in enumerate(argv) if arg.startswith("if=pflash")}
        return [a for i, a in enumerate(argv) if i not in pflash and i + 1 not in pflash]


@contextlib.contextmanager
def bios_boot(disk: Path, workdir: Path) -> Iterator[BiosVM]:
    guest = BiosVM(disk, workdir)
    try:
        guest.start()
        guest.wait_ready(300)
        yield guest
    finally:
        guest.stop()


@pytest.fixture(scope="module")
def grub_image(bookworm_example: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw grub image of the minimal example, with the VM agent in its /etc."""
    output = tmp_path_factory.mktemp("grub") / "grub.raw"
    opts = image.ImageOptions(
        repo=bookworm_example,
        ref=REF,
        output=output,
        bootloader=image.Bootloader.GRUB,
        etc_files=vm.GUEST_ETC_FILES,
    )
    image.build_image(opts, Progress())
    return output


def parts(repo: Path, disk: Path) -> list[image.Partition]:
    return image.layout(image.ImageOptions(repo=repo, ref=REF, output=disk))


def test_grub_image_layout(bookworm_example: Path, grub_image: Path) -> None:
    bios, esp, boot, root = parts(bookworm_example, grub_image)
    with grub_image.open("rb") as f:
        mbr = f.read(512)
        f.seek(bios.start)
        core = f.read(bios.size)
    boot_img = (grub.GRUB_PC_DIR / "boot.img").read_bytes()
    # GRUB's boot.img code around the protective MBR's partition table, pointing at the core
    assert mbr[0x66:0x1B8] == b"\x90\x90" + boot_img[0x68:0x1B8]
    assert int.from_bytes(mbr[0x5C:0x64], "little") == bios.start // 512
    assert mbr[0x1C2] == 0xEE and mbr[0x1FE:] == b"\x55\xaa"
    diskboot = (grub.GRUB_PC_DIR / "diskboot.img").read_bytes()
    assert core[:0x1E0] == diskboot[:0x1E0]
    start, count, segment = grub.BLOCKLIST.unpack_from(core, 500)
    assert (start, segment) == (bios.start // 512 + 1, 0x820)
    assert core[512 * count : 512 * (count + 1)].strip(b"\0")  # the core's last sector
    assert not core[512 * (count + 1) :].strip(b"\0")

    assert "syslinux_configfile /syslinux/syslinux.cfg" in debugfs(
        grub_image, boot, "cat /grub/grub.cfg"
    )
    assert "normal.mod" in debugfs(grub_image, boot, "ls /grub/i386-pc")
    link = debugfs(grub_image, boot, "stat /syslinux/syslinux.cfg")
    assert 'Fast link dest: "../loader/syslinux.cfg"' in link
    syslinux = debugfs(grub_image, boot, "cat /loader/syslinux.cfg")
    assert "TIMEOUT 10" in syslinux and "DEFAULT " in syslinux
    assert "APPEND root=LABEL=root rw console=tty0 console=ttyS0,115200 ostree=" in syslinux
    assert "bootloader=syslinux" in debugfs(grub_image, root, "cat /ostree/repo/config")
    esp_files = subprocess.run(
        ["mdir", "-b", "-i", f"{grub_image}@@{esp.start}", "::/"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert esp_files.stdout.strip() == ""  # formatted, empty


def grub_default(syslinux_cfg: Path) -> str:
    """What GRUB boots from `syslinux_cfg`: the linux line of its translated default entry."""
    out = subprocess.run(
        ["grub-syslinux2cfg", syslinux_cfg], capture_output=True, text=True, check=True
    ).stdout
    default = out.split("default='", 1)[1].split("'", 1)[0]
    entry = out.split(f"menuentry '{default}'", 1)[1].split("}", 1)[0]
    return next(line for line in entry.splitlines() if "linux$linux_suffix" in line)


def test_syslinux_cfg_follows_deploys_and_a_rollback(
    bookworm_example: Path, tmp_path: Path
) -> None:
    """A folder sysroot set up as in a grub image: each deployment write (a deploy, a rollback
    as a reordered list) leaves a syslinux.cfg whose GRUB default is the first deployment."""
    path = tmp_path / "sysroot"
    try:
        sysroot = ostree.Sysroot.initialize(path, "debian")
        sysroot.repo.set_config("sysroot", "bootloader", "syslinux")
        grub.seed_boot(path / "boot")
        checksum = sysroot.repo.pull_local(bookworm_example, REF, remote=None)
        origin = f"[origin]\nrefspec={REF}\n"
        with sysroot.locked():
            sysroot.deploy("debian", checksum, origin, merge=None, kargs=["k=a"], stage=False)
            first = sysroot.deployments()[0]
            sysroot.deploy("debian", checksum, origin, merge=first, kargs=["k=b"], stage=False)
            cfg = path / "boot" / "loader" / "syslinux.cfg"
            assert " k=b ostree=" in grub_default(cfg)
            assert "TIMEOUT 10" in cfg.read_text()
            new, old = sysroot.deployments()
            sysroot.write_order([old, new])  # what `apt-ostree rollback` writes
            assert " k=a ostree=" in grub_default(cfg)
        assert (path / "boot" / "syslinux" / "syslinux.cfg").read_text() == cfg.read_text()
    finally:
        remove_tree(path)


@pytest.mark.vm
def test_grub_boots_under_bios_and_follows_a_new_deployment(
    grub_image: Path, tmp_path: Path
) -> None:
    with bios_boot(grub_image, tmp_path / "vm") as guest:
        assert guest.run("test -d /sys/firmware/efi").returncode == 1  # not UEFI
        assert guest.check("systemctl is-system-running --wait").strip() == "running"
        cmdline = guest.check("cat /proc/cmdline")
        assert "ostree=/ostree/boot." in cmdline and "root=LABEL=root" in cmdline
        # a second deployment of the booted commit with one more karg, staged: at shutdown
        # ostree-finalize-staged writes it and libostree rewrites /boot/loader/syslinux.cfg
        # (a new loader.N); GRUB's fixed grub.cfg must follow it
        guest.check(
            "ostree admin deploy --stage --karg-append=apt_ostree_grub=1"
            " $(ostree admin status | sed -n 's/^\\* debian \\([0-9a-f]*\\)\\..*/\\1/p')"
        )
        assert "apt_ostree_grub=1" not in guest.check("cat /boot/loader/syslinux.cfg")
        guest.reboot()
        cmdline = guest.check("cat /proc/cmdline")
        assert "apt_ostree_grub=1" in cmdline
        status = guest.check("ostree admin status")
        assert status.count("debian ") == 2
    console = (tmp_path / "vm" / "console.log").read_bytes().decode(errors="replace")
    assert "SeaBIOS" in console or "GNU GRUB" in console
