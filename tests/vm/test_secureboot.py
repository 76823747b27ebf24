"""`compose image --secure-boot` of the minimal example with apt-ostree inside: the disk's
signed chain (shim, GRUB, the fixed ESP config) and libostree's generated GRUB config on
/boot, then boots under OVMF with Microsoft's keys and Secure Boot enforced that follow
libostree's deployments: an upgrade (staged, finalized at shutdown by the guest's libostree,
whose grub2 backend runs apt-ostree's generator) and a rollback (a reordered list)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from apt_ostree import ostree
from apt_ostree.boot import grubenv
from apt_ostree.compose import efi, image
from apt_ostree.progress import TerminalProgress
from tests.support import vm
from tests.support.httpd import serve_directory
from tests.vm.conftest import ComposedRepo, serve_next
from tests.vm.test_image import debugfs

pytestmark = [pytest.mark.network, pytest.mark.slow]

BOOT_TIMEOUT = 900  # a Secure Boot boot under TCG took 2-3 min here; shim and GRUB verify


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


def _deployments(guest: vm.VM) -> list[dict[str, Any]]:
    deployments: list[dict[str, Any]] = json.loads(guest.check("apt-ostree status --json"))[
        "deployments"
    ]
    return deployments


def _booted(guest: vm.VM) -> dict[str, Any]:
    return next(d for d in _deployments(guest) if d["booted"])


def _check_secure_boot(guest: vm.VM) -> None:
    """Enforced: the firmware's SecureBoot variable (its last byte) and the kernel's log."""
    state = guest.check("od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-*").split()
    assert state[-1] == "1", state
    assert "Secure boot enabled" in guest.check("journalctl -k -b -q | grep -i 'secure boot'")
    assert "ostree=/ostree/boot." in guest.check("cat /proc/cmdline")


@pytest.mark.vm
def test_secure_boot_upgrade_and_rollback(
    apt_ostree_repo: ComposedRepo, secure_image: SecureImage, tmp_path: Path
) -> None:
    composed = apt_ostree_repo
    first, second = composed.checksum, composed.next_checksum
    version = ostree.Repo.open(secure_image.repo).read_commit(second).version
    serve_next(secure_image.repo)  # the host publishes the next version
    with vm.boot(
        secure_image.disk, tmp_path / "vm", timeout=BOOT_TIMEOUT, secure_boot=True
    ) as guest:
        # boot 1: the image's deployment, through shim, GRUB and the signed kernel
        _check_secure_boot(guest)
        assert f"origin:{composed.ref}" in guest.check("ostree admin status")
        assert f"Commit: {first}" in guest.check("apt-ostree status")
        assert _booted(guest)["checksum"] == first
        upgraded = guest.check("apt-ostree upgrade", timeout=900)
        assert f"Staged {second}" in upgraded

        guest.reboot(timeout=BOOT_TIMEOUT)
        # boot 2: the guest's libostree wrote the staged deployment and its GRUB config at
        # shutdown; GRUB's first entry is the update
        _check_secure_boot(guest)
        booted = _booted(guest)
        assert booted["checksum"] == second and booted["version"] == version
        assert guest.check("cat /usr/share/apt-ostree-test/marker") == "version two\n"
        assert guest.check("grep -c '^menuentry ' /boot/loader/grub.cfg").strip() == "2"
        guest.check("apt-ostree rollback")
        assert _deployments(guest)[0]["checksum"] == first

        guest.reboot(timeout=BOOT_TIMEOUT)
        # boot 3: the rollback's reordered list is GRUB's
        _check_secure_boot(guest)
        assert _booted(guest)["checksum"] == first
        assert "apt-ostree-test" not in guest.check("ls /usr/share")
        assert len(guest.boot_seconds) == 3
