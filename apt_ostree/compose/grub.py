"""BIOS boot through Debian's GRUB 2.06 (grub-pc-bin) for `compose image --bootloader grub`.

GRUB 2.06 on Debian has no `blscfg`, so it cannot read libostree's BLS entries. libostree can
also maintain a syslinux config, and GRUB can translate one at boot (`syslinux_configfile`):

- the sysroot repository gets `sysroot.bootloader=syslinux`, so every deployment write (deploy,
  a staged deployment finalized at shutdown, a reordered list for a rollback, kargs edits)
  rewrites `/boot/loader.N/syslinux.cfg` beside the BLS entries and swaps `/boot/loader`;
- libostree's syslinux writer reads the previous `loader/syslinux.cfg` and keeps its lines that
  are not ostree entries, so /boot is seeded before the first deployment with `loader ->
  loader.0` and a `loader.0/syslinux.cfg` holding a `TIMEOUT` line (GRUB's translation of a
  config without one never runs `boot` and stops at the `grub>` prompt), and
  `syslinux/syslinux.cfg -> ../loader/syslinux.cfg`, syslinux's own place for it;
- a fixed `/boot/grub/grub.cfg`, never regenerated, runs `syslinux_configfile` on that file;
- GRUB's core image (`grub-mkimage`, with the modules to find the /boot partition by its label
  and read that config) goes into the GPT's BIOS boot partition and boot.img into the MBR.

No loop device and no mount: `grub-bios-setup` insists on guessing the root device from the
filesystem its module folder lives on, so what it does for a GPT disk with a BIOS boot
partition (grub-2.06 util/setup.c, the embedding path, as `grub-install --no-rs-codes`) is done
here on the image file: boot.img keeps the disk's protective MBR partition table, and points at
the core image's first sector; the blocklist at the end of that sector (diskboot.img) names the
rest of the core image, contiguous in the partition.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path

from apt_ostree.errors import ImageError
from apt_ostree.run import run

GRUB_PC_DIR = Path("/usr/lib/grub/i386-pc")  # Debian's grub-pc-bin
SECTOR = 512

# Built into the core image: enough to find /boot by label and run grub.cfg. Everything else
# (commands grub.cfg or the translated syslinux config use) is loaded from /boot/grub/i386-pc.
CORE_MODULES = (
    "biosdisk",
    "part_gpt",
    "ext2",
    "search_label",
    "normal",
    "configfile",
    "syslinuxcfg",
    "linux",
    "serial",
    "terminal",
)

# Offsets in boot.img (grub-2.06 include/grub/i386/pc/boot.h)
BPB_START, BPB_END = 0x3, 0x5A
KERNEL_SECTOR = 0x5C
BOOT_DRIVE = 0x64
DRIVE_CHECK = 0x66
WINDOWS_NT_MAGIC, PART_END = 0x1B8, 0x1FE
# diskboot.img (the core image's first sector) ends with blocklists of 12 bytes: start sector
# (u64), sector count (u16), load segment (u16); the rest of core.img loads at 0x820:0
BLOCKLIST = struct.Struct("<QHH")
CORE_SEGMENT = 0x820

# A whole syslinux timeout is in tenths of a second: 1 s to pick another deployment
SYSLINUX_SEED = "# apt-ostree: libostree adds its entries below at every deployment\nTIMEOUT 10\n"

GRUB_CFG = """\
# Written once by apt-ostree compose image and never regenerated: libostree
# (sysroot.bootloader=syslinux) rewrites /loader/syslinux.cfg at every deployment change,
# and GRUB translates it into menu entries. The first entry is the default deployment.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
syslinux_configfile /syslinux/syslinux.cfg
"""

# as grub-install's load.cfg, by label (the image has no UUIDs to track)
EARLY_CFG = """\
search.fs_label {label} root
set prefix=($root)/grub
"""


def check_available() -> str | None:
    """Why GRUB cannot be set up on this machine, or None."""
    if not (GRUB_PC_DIR / "boot.img").is_file() or shutil.which("grub-mkimage") is None:
        return f"--bootloader grub needs grub-pc-bin ({GRUB_PC_DIR}) and grub-mkimage"
    return None


def seed_boot(boot: Path) -> None:
    """Before the first deployment: what libostree's syslinux writer reads and rewrites."""
    (boot / "loader.0").mkdir(parents=True)
    (boot / "loader.0" / "syslinux.cfg").write_text(SYSLINUX_SEED)
    (boot / "loader").symlink_to("loader.0")
    (boot / "syslinux").mkdir()
    (boot / "syslinux" / "syslinux.cfg").symlink_to("../loader/syslinux.cfg")


def install_files(boot: Path) -> None:
    """/boot/grub: the fixed grub.cfg and GRUB's modules (what grub-install copies there)."""
    modules = boot / "grub" / "i386-pc"
    modules.mkdir(parents=True)
    for source in sorted(GRUB_PC_DIR.iterdir()):
        if source.suffix in (".mod", ".lst"):
            shutil.copyfile(source, modules / source.name)
    (boot / "grub" / "grub.cfg").write_text(GRUB_CFG)


def make_core(boot_label: str) -> bytes:
    """GRUB's core image: finds the filesystem labelled `boot_label` and runs its grub.cfg."""
    with tempfile.TemporaryDirectory(prefix="apt-ostree-grub-") as tmp:
        early = Path(tmp) / "early.cfg"
        early.write_text(EARLY_CFG.format(label=boot_label))
        core = Path(tmp) / "core.img"
        run(
            ["grub-mkimage", "-O", "i386-pc", "-d", GRUB_PC_DIR, "-o", core, "-c", early,
             "-p", "/grub", *CORE_MODULES],
            what="grub-mkimage",
        )  # fmt: skip
        return core.read_bytes()


def write_boot_code(raw: Path, bios_start: int, bios_size: int, core: bytes) -> None:
    """boot.img into the MBR of the GPT disk `raw`, `core` into its BIOS boot partition."""
    first = bios_start // SECTOR
    sectors = -(-len(core) // SECTOR)
    if sectors * SECTOR > bios_size:
        raise ImageError(
            f"GRUB's core image ({len(core)} bytes) does not fit its BIOS boot partition"
        )
    boot = bytearray((GRUB_PC_DIR / "boot.img").read_bytes())
    fd = os.open(raw, os.O_RDWR)
    try:
        mbr = os.pread(fd, SECTOR, 0)
        boot[BPB_START:BPB_END] = mbr[BPB_START:BPB_END]
        # a hard disk: no check of the drive number the BIOS passed (the jmp becomes nops)
        boot[DRIVE_CHECK : DRIVE_CHECK + 2] = b"\x90\x90"
        boot[WINDOWS_NT_MAGIC:PART_END] = mbr[WINDOWS_NT_MAGIC:PART_END]  # the protective MBR
        struct.pack_into("<Q", boot, KERNEL_SECTOR, first)
        boot[BOOT_DRIVE] = 0xFF  # the drive the BIOS booted from
        image = bytearray(core.ljust(sectors * SECTOR, b"\0"))
        # one blocklist (the partition is contiguous), then a terminator before it
        last = SECTOR - BLOCKLIST.size
        BLOCKLIST.pack_into(image, last, first + 1, sectors - 1, CORE_SEGMENT)
        BLOCKLIST.pack_into(image, last - BLOCKLIST.size, 0, 0, 0)
        os.pwrite(fd, bytes(image), bios_start)
        os.pwrite(fd, bytes(boot), 0)
    finally:
        os.close(fd)
