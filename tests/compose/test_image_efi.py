"""`compose image --bootloader grub-efi` and `--secure-boot` without a Debian kernel: the
Authenticode check on PE images made here, and the refusals on the session's test images,
whose kernels are a few unsigned bytes and which have no apt-ostree inside (fast). The real
chain (signed shim, GRUB and kernel, booted under OVMF with Secure Boot) is
tests/vm/test_secureboot.py."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from apt_ostree.compose import efi
from tests.support.images import Images

PE_OFFSET = 0x80


def pe_image(*, magic: int = 0x20B, cert: bytes | None = None, directories: int = 16) -> bytes:
    """A minimal PE32(+) image: DOS stub, PE signature, COFF header, an optional header whose
    certificate table points at `cert` (a WIN_CERTIFICATE) appended at the end."""
    before = 96 if magic == 0x10B else 112
    optional = bytearray(before + 8 * directories)
    struct.pack_into("<H", optional, 0, magic)
    struct.pack_into("<I", optional, before - 4, directories)
    head = bytearray(PE_OFFSET)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, PE_OFFSET)
    coff = struct.pack("<HHIIIHH", 0x8664, 0, 0, 0, 0, len(optional), 0x22)
    body = bytes(head) + b"PE\0\0" + coff
    if cert is not None and directories > 4:
        offset = len(body) + len(optional)
        struct.pack_into("<II", optional, before + 8 * 4, offset, len(cert))
    return body + bytes(optional) + (cert or b"")


def win_certificate(kind: int = 2, payload: bytes = b"\x30\x82" + b"\0" * 30) -> bytes:
    return struct.pack("<IHH", 8 + len(payload), 0x0200, kind) + payload


def test_authenticode_signature() -> None:
    signed = pe_image(cert=win_certificate())
    assert efi.authenticode_signature(signed) == (len(signed) - 40, 40)
    assert efi.authenticode_signature(pe_image(magic=0x10B, cert=win_certificate())) is not None
    assert efi.authenticode_signature(pe_image()) is None  # the table is empty
    assert efi.authenticode_signature(pe_image(cert=win_certificate(kind=1))) is None  # X.509
    # no certificate table among the data directories
    assert efi.authenticode_signature(pe_image(cert=win_certificate(), directories=4)) is None
    truncated = signed[:-10]  # the table runs past the end of the file
    assert efi.authenticode_signature(truncated) is None
    assert efi.authenticode_signature(b"fake vmlinuz 6.1.0-aot\n" * 100) is None
    assert efi.authenticode_signature(b"MZ") is None


def test_esp_config_finds_boot_and_runs_libostree_config() -> None:
    cfg = efi.ESP_GRUB_CFG.format(label="boot")
    assert "search --no-floppy --label boot --set root" in cfg
    assert cfg.rstrip().endswith("configfile ($root)/loader/grub.cfg")
    assert [b.esp_name for b in efi.BINARIES] == ["BOOTX64.EFI", "grubx64.efi", "mmx64.efi"]


def compose_image(*args: str | Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "apt_ostree.cli.main", "compose", "image", *map(str, args)]
    env = {"TMPDIR": str(tmpdir), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False)


@pytest.mark.slow
def test_unsigned_kernel_and_missing_generator_refused(images: Images, tmp_path: Path) -> None:
    """--secure-boot refuses the commit's unsigned kernel, naming it; grub-efi without it
    refuses a commit without apt-ostree's GRUB generator. Nothing is left behind."""
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    base = ("--repo", images.repo, "--ref", images.ref, "--cachedir", tmp_path / "cache")
    kernel = f"/usr/lib/modules/{images.kernel_version}/vmlinuz"
    refused = compose_image(*base, "--secure-boot", out / "disk.raw", tmpdir=tmp)
    assert refused.returncode == 1, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --secure-boot: {kernel} is not signed"), refused.stderr
    assert "Fetching" not in refused.stderr  # refused before anything was downloaded
    plain = compose_image(*base, "--bootloader", "grub-efi", out / "disk.raw", tmpdir=tmp)
    assert plain.returncode == 1, plain.stderr
    last = plain.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --bootloader grub-efi: the commit has no /{efi.GENERATOR}")
    assert list(out.iterdir()) == [] and list(tmp.iterdir()) == []
    mixed = compose_image(*base, "--bootloader", "grub", "--secure-boot", out / "x", tmpdir=tmp)
    assert mixed.returncode == 2 and "--secure-boot needs --bootloader grub-efi" in mixed.stderr
