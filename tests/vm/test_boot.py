"""Scenarios of issue 6 on real boots: the composed minimal image under qemu (TCG, OVMF,
systemd-boot reading libostree's entries through rEFInd's ext4 driver)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from apt_ostree import ostree
from apt_ostree.compose.image import UpdateRemote
from tests.support import vm
from tests.support.httpd import serve_directory
from tests.vm.conftest import EXAMPLES, REF, build, compose_minimal

pytestmark = [pytest.mark.vm, pytest.mark.network, pytest.mark.slow]


def _booted_checksum(status: str) -> str:
    m = re.search(r"^\* \S+ ([0-9a-f]{64})\.\d+$", status, re.MULTILINE)
    assert m, status
    return m.group(1)


def test_minimal_image_boots_to_multi_user(booted: vm.VM, minimal_repo: Path) -> None:
    assert booted.check("systemctl is-system-running").strip() == "running"
    status = booted.check("ostree admin status")
    expected = ostree.resolve_ref(ostree.open_repo(minimal_repo), REF)
    assert _booted_checksum(status) == expected
    assert "Version: 12." in status
    # first boot: machine-id generated, /etc writable, /usr read-only, /boot mounted
    assert re.fullmatch(r"[0-9a-f]{32}\n", booted.check("cat /etc/machine-id"))
    assert booted.run("touch /etc/apt-ostree-test-written").returncode == 0
    usr = booted.run("touch /usr/apt-ostree-test-written")
    assert usr.returncode != 0 and "Read-only file system" in usr.output
    assert booted.check("findmnt -no FSTYPE /boot").strip() == "ext4"
    assert "ostree=/ostree/boot." in booted.check("cat /proc/cmdline")
    assert "systemd-boot" in booted.check(
        "cat /sys/firmware/efi/efivars/LoaderInfo-* | tr -d '\\0'"
    )


def _new_version_treefile(folder: Path) -> Path:
    """The minimal treefile plus one file, so that compose makes a new commit."""
    folder.mkdir()
    (folder / "marker").write_text("version two\n")
    treefile = folder / "minimal-next.yaml"
    treefile.write_text(
        f"include: {EXAMPLES / 'minimal.yaml'}\n"
        "add-files:\n  - [marker, /usr/share/apt-ostree-test/marker]\n"
    )
    return treefile


def test_upgrade_reboot_rollback_kargs(minimal_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["cp", "-al", str(minimal_repo), str(repo)], check=True)
    first = ostree.resolve_ref(ostree.open_repo(repo), REF)
    with serve_directory(repo) as server:
        remote = UpdateRemote("origin", f"http://{vm.HOST_FROM_GUEST}:{server.port}/")
        disk, _ = build(repo, tmp_path / "disk.raw", remote=remote)
        compose_minimal(repo, _new_version_treefile(tmp_path / "next"))
        second = ostree.resolve_ref(ostree.open_repo(repo), REF)
        assert second != first
        with vm.boot(disk, tmp_path / "vm") as guest:
            assert _booted_checksum(guest.check("ostree admin status")) == first
            guest.check("echo kept > /etc/apt-ostree-test-edit && echo '# local' >> /etc/hosts")
            # scenario 2 (`ostree admin upgrade` stands in for apt-ostree, not in the image)
            guest.check("ostree admin upgrade --stage", timeout=600)
            assert "(staged)" in guest.check("ostree admin status")
            guest.reboot()
            status = guest.check("ostree admin status")
            assert _booted_checksum(status) == second, status
            assert guest.check("cat /usr/share/apt-ostree-test/marker") == "version two\n"
            assert guest.check("cat /etc/apt-ostree-test-edit") == "kept\n"
            assert "# local" in guest.check("cat /etc/hosts")
            # scenario 5 (stand-in: libostree 2022.7 has no rollback verb and cannot undeploy
            # the booted deployment): the previous commit deployed again with a new karg
            guest.check(f"ostree admin deploy --retain --karg-append=apt_ostree_test=1 {first}")
            guest.reboot()
            assert _booted_checksum(guest.check("ostree admin status")) == first
            assert "apt_ostree_test=1" in guest.check("cat /proc/cmdline").split()
