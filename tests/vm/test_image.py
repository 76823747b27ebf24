"""`compose image` without booting: the disk's partitions and filesystems, and failures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from apt_ostree.compose import image
from tests.vm.conftest import ComposedRepo

pytestmark = [pytest.mark.network, pytest.mark.slow]


def cli(*args: str | Path, tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "apt_ostree.cli.main", "compose", "image", *map(str, args)]
    env = {**os.environ, "TMPDIR": str(tmpdir)} if tmpdir else None
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False)


def debugfs(raw: Path, part: image.Partition, request: str) -> str:
    out = subprocess.run(
        ["debugfs", "-R", request, f"{raw}?offset={part.start}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_qcow2_image_has_the_layout_remote_and_entries(
    apt_ostree_repo: ComposedRepo, tmp_path: Path
) -> None:
    repo, ref = apt_ostree_repo.path, apt_ostree_repo.ref
    disk = tmp_path / "disk.qcow2"
    result = cli(
        "--repo", repo, "--ref", ref, "--format", "qcow2", "--karg", "quiet",
        "--remote", "origin=http://updates.invalid/repo", "--no-gpg-verify", disk,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"Wrote {disk}" in result.stdout and "quiet" in result.stdout
    for step in ("Deploying", "Partitioning", "EFI system partition", "root filesystem", "qcow2"):
        assert step in result.stderr
    # the image's own libostree (its release's) made the deployment, not this host's
    assert "deployed with the image's own libostree" in result.stderr
    info = subprocess.run(["qemu-img", "info", disk], capture_output=True, text=True, check=True)
    assert "file format: qcow2" in info.stdout
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", disk, raw], check=True)
    table = subprocess.run(["sgdisk", "-p", raw], capture_output=True, text=True, check=True)
    codes = [line.split()[5] for line in table.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert codes == ["EF02", "EF00", "EA00", "8304"]
    parts = image.layout(image.ImageOptions(repo=repo, ref=ref, output=disk))
    entries = debugfs(raw, parts[2], "ls -l /loader/entries")
    # the image's own libostree wrote it: 2022.7 (Debian 12) names it ostree-1-OSNAME.conf,
    # 2025.2 (Debian 13, this image) ostree-1.conf
    [name] = re.findall(r"ostree-1(?:-debian)?\.conf", entries)
    entry = debugfs(raw, parts[2], f"cat /loader/entries/{name}")
    assert "options root=LABEL=root rw console=tty0 console=ttyS0,115200 quiet ostree=" in entry
    config = debugfs(raw, parts[3], "cat /ostree/repo/config")
    assert '[remote "origin"]' in config and "url=http://updates.invalid/repo" in config
    deploy = debugfs(raw, parts[3], "ls /ostree/deploy/debian/deploy").split()
    checkout = next(name for name in deploy if name.endswith(".0"))
    fstab = debugfs(raw, parts[3], f"cat /ostree/deploy/debian/deploy/{checkout}/etc/fstab")
    assert "LABEL=boot /boot ext4" in fstab
    origin = debugfs(raw, parts[3], f"cat /ostree/deploy/debian/deploy/{checkout}.origin")
    assert f"refspec=origin:{ref}" in origin


def test_failed_image_leaves_nothing_behind(apt_ostree_repo: ComposedRepo, tmp_path: Path) -> None:
    repo, ref = apt_ostree_repo.path, apt_ostree_repo.ref
    # a temporary folder of its own (other tests may build images meanwhile)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    result = cli("--repo", repo, "--ref", ref, "--size", "1100M", out / "disk.raw", tmpdir=tmp)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the sysroot needs")
    assert list(out.iterdir()) == []  # neither the image nor a partial one
    assert list(tmp.iterdir()) == []  # nor its scratch folder (apt-ostree-image-*)


def test_usage_errors(apt_ostree_repo: ComposedRepo, tmp_path: Path) -> None:
    repo, ref = apt_ostree_repo.path, apt_ostree_repo.ref
    disk = tmp_path / "disk.raw"
    no_verify = cli("--repo", repo, "--ref", ref, "--remote", "o=http://x/", disk)
    assert no_verify.returncode == 2 and "--no-gpg-verify" in no_verify.stderr
    no_ref = cli("--repo", repo, "--ref", "no/such/ref", disk)
    assert no_ref.returncode == 2 and "no/such/ref" in no_ref.stderr
    assert list(tmp_path.iterdir()) == []
