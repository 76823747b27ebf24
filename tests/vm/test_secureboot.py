"""`compose image --secure-boot` of the minimal example with apt-ostree inside: the disk's
signed chain (shim, GRUB, the fixed ESP config) and libostree's generated GRUB config on
/boot. Its boots under OVMF with Microsoft's keys and Secure Boot enforced, following
libostree's deployments through upgrades (staged, finalized at shutdown by the guest's
libostree, whose grub2 backend runs apt-ostree's generator), trials and a rollback, are in
tests/vm/test_trial.py's session: one guest serves both."""

from __future__ import annotations

import io
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from apt_ostree.boot import grubenv
from apt_ostree.compose import efi, image
from apt_ostree.progress import TerminalProgress
from tests.support import vm
from tests.support.httpd import serve_directory
from tests.vm.conftest import ComposedRepo
from tests.vm.test_image import debugfs

pytestmark = [pytest.mark.network, pytest.mark.slow]


@dataclass(frozen=True)
class SecureImage:
    disk: Path
    repo: Path  # the `cp -al` copy the host serves to the guest
    parts: list[image.Partition]
    output: str  # the build's progress lines
    seconds: float


@pytest.fixture(scope="module")
def secure_image(
    apt_ostree_repo: ComposedRepo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureImage]:
    """A --secure-boot raw image with the VM agent, whose update remote is served from the
    host's loopback for as long as the module runs."""
    work = tmp_path_factory.mktemp("secureboot")
    repo = work / "repo"
    subprocess.run(["cp", "-al", str(apt_ostree_repo.path), str(repo)], check=True)
    with serve_directory(repo) as updates:
        url = f"http://{vm.HOST_FROM_GUEST}:{updates.port}/"
        opts = image.ImageOptions(
            repo=repo,
            ref=apt_ostree_repo.ref,
            output=work / "secure.raw",
            remote=image.UpdateRemote("origin", url),
            bootloader=image.Bootloader.GRUB_EFI,
            secure_boot=True,
            etc_files=vm.GUEST_ETC_FILES,
            cachedir=work / "cache",
        )
        out = io.StringIO()
        started = time.monotonic()
        image.build_image(opts, TerminalProgress(out))
        seconds = time.monotonic() - started
        yield SecureImage(opts.output, repo, image.layout(opts), out.getvalue(), seconds)


def mtools(tool: str, raw: Path, part: image.Partition, *args: str) -> str:
    argv = [tool, "-i", f"{raw}@@{part.start}", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_secure_boot_image_layout(secure_image: SecureImage, tmp_path: Path) -> None:
    disk, (_, esp, boot, root) = secure_image.disk, secure_image.parts
    # the progress names each signed piece and where it came from (this trixie image has no
    # shim or signed GRUB installed: the .debs of this machine's apt sources)
    for what in ("shim", "GRUB", "MokManager"):
        assert re.search(rf"^    {what}: signed \(\S+\.deb ", secure_image.output, re.M)
    assert re.search(
        r"^    kernel: signed \(/usr/lib/modules/\S+/vmlinuz\)$", secure_image.output, re.M
    )
    assert "deployed with the image's own libostree" in secure_image.output
    # the ESP: shim on the removable-media path, GRUB and MokManager beside it, no fallback
    listing = mtools("mdir", disk, esp, "-b", "::/EFI/BOOT").split()
    assert sorted(listing) == [f"::/EFI/BOOT/{b.esp_name}" for b in efi.BINARIES]
    for binary in efi.BINARIES:
        copy = tmp_path / binary.esp_name
        mtools("mcopy", disk, esp, f"::/EFI/BOOT/{binary.esp_name}", str(copy))
        assert efi.authenticode_signature(copy.read_bytes()) is not None, binary
    cfg = mtools("mtype", disk, esp, f"::/{efi.ESP_GRUB_CFG_PATH}")
    assert cfg == efi.ESP_GRUB_CFG.format(label="boot")
    # /boot: libostree's loader.N with the generated config, and GRUB's environment block
    assert re.search(r'Fast link dest: "loader\.\d"', debugfs(disk, boot, "stat /loader"))
    generated = debugfs(disk, boot, "cat /loader/grub.cfg")
    assert generated.count("menuentry ") == 1, generated
    linux = re.search(r"^  linux '(/ostree/\S+/vmlinuz-\S+)' (.*)$", generated, re.M)
    assert linux and "'root=LABEL=root'" in linux.group(2), generated
    assert re.search(r"'ostree=/ostree/boot\.\d/debian/\S+/0'", linux.group(2)), generated
    env = tmp_path / "grubenv"
    subprocess.run(
        ["debugfs", "-R", f"dump /grub/grubenv {env}", f"{disk}?offset={boot.start}"],
        capture_output=True,
        check=True,
    )
    assert env.stat().st_size == grubenv.SIZE and grubenv.read(env) == {}
    config = debugfs(disk, root, "cat /ostree/repo/config")
    assert re.search(r"^bootloader=grub2$", config, re.M), config
