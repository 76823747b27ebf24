"""The composed test images are what later tests rely on: deployable, signed, with a summary."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from apt_ostree.errors import RepoError
from apt_ostree.ostree import Repo
from apt_ostree.pkgdiff import diff_packages
from tests.support.httpd import Server
from tests.support.images import (
    KERNEL_VERSION,
    Images,
    compose_next,
    copy_repo,
    hello_deb,
    make_ed25519_key,
    ostree,
)

pytestmark = [pytest.mark.slow]


def admin(sysroot: Path, *args: str) -> str:
    return subprocess.run(
        ["ostree", "admin", *args, f"--sysroot={sysroot}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def packages(images: Images, version: str) -> list[tuple[str, str, str]]:
    text = ostree(
        images.repo, "show", "--print-metadata-key=aptostree.packages", images.versions[version]
    )
    return re.findall(r"\('([^']*)', '([^']*)', '([^']*)'\)", text)


def test_refs_versions_and_summary(images: Images) -> None:
    assert set(images.versions) == {"1.0", "1.1", "2.0"}
    assert ostree(images.repo, "rev-parse", images.ref).strip() == images.versions["1.1"]
    assert ostree(images.repo, "rev-parse", images.other_ref).strip() == images.versions["2.0"]
    parent = ostree(images.repo, "rev-parse", f"{images.ref}^").strip()
    assert parent == images.versions["1.0"]
    summary = ostree(images.repo, "summary", "--view")
    assert images.ref in summary and images.other_ref in summary
    assert "mode=archive" in (images.repo / "config").read_text().replace(" ", "")


def test_commits_are_gpg_signed(images: Images) -> None:
    for checksum in images.versions.values():
        # libostree trusts the *.gpg keyrings in --gpg-homedir: the key's public.gpg
        out = ostree(images.repo, "show", f"--gpg-homedir={images.gpg_key.homedir}", checksum)
        assert "Good signature" in out and images.gpg_key.fingerprint[-16:] in out


def test_commits_are_ed25519_signed(images: Images, tmp_path: Path) -> None:
    if images.ed25519_signed:
        for checksum in images.versions.values():
            out = ostree(images.repo, "sign", "--verify", checksum, images.ed25519_public)
            assert "ed25519" in out
        return
    # a libostree without the sign-ed25519 feature (Debian 12's): signing fails with one clear
    # error naming the commit and libostree's reason, and the commit stays as it was
    repo = copy_repo(images.repo, tmp_path / "repo")
    checksum = images.versions["1.0"]
    before = ostree(repo, "show", checksum)
    key = make_ed25519_key(tmp_path)
    with pytest.raises(
        RepoError,
        match=rf"^cannot sign {checksum} with .*: this libostree .* is built without ed25519",
    ):
        Repo.open(repo).ed25519_sign_commit(checksum, key.secret_file)
    assert ostree(repo, "show", checksum) == before
    assert "no errors found" in ostree(repo, "fsck")


def test_kernel_and_initramfs_in_place(images: Images) -> None:
    moddir = f"/usr/lib/modules/{KERNEL_VERSION}"
    listing = ostree(images.repo, "ls", images.ref, moddir)
    assert "vmlinuz" in listing and "initramfs.img" in listing
    initramfs = ostree(images.repo, "cat", images.ref, f"{moddir}/initramfs.img")
    assert f"kver={KERNEL_VERSION}" in initramfs and "--add ostree" in initramfs
    assert ostree(images.repo, "ls", images.ref, "/boot").count("\n") == 1  # empty


def test_package_changes_between_versions(images: Images) -> None:
    diff = diff_packages(packages(images, "1.0"), packages(images, "1.1"))
    assert [(c.name, c.old_version, c.new_version) for c in diff.upgraded] == [
        ("hello-aot", "1.0", "1.1")
    ]
    assert [c.name for c in diff.added] == ["extra-aot"]
    assert [c.name for c in diff.removed] == ["legacy-aot"]
    assert diff.downgraded == ()
    other = {p[0] for p in packages(images, "2.0")}
    assert "other-aot" in other and "hello-aot" not in other


def test_deploys_from_http(
    images: Images, sysroot: Path, http_server: Callable[[Path], Server]
) -> None:
    server = http_server(images.repo)
    repo = sysroot / "ostree/repo"
    ostree(repo, "remote", "add", "--set=gpg-verify=false", "origin", f"{server.url}/", images.ref)
    ostree(repo, "pull", "origin", images.ref)
    admin(sysroot, "deploy", "--os=test", f"origin:{images.ref}")
    status = admin(sysroot, "status")
    assert images.versions["1.1"] in status
    assert "Version: 1.1" in status
    (deployment,) = (sysroot / "ostree/deploy/test/deploy").glob("*.0")
    assert (deployment / "usr/bin/hello-aot").read_text() == "#!/bin/sh\necho hello 1.1\n"
    assert (deployment / "etc/hello-aot.conf").read_text() == "greeting=hello\n"
    boot = list((sysroot / "boot/ostree").glob("test-*/vmlinuz-*"))
    assert boot, "libostree copied no kernel to /boot"


def test_compose_next_into_a_copy(images: Images, tmp_path: Path) -> None:
    before = ostree(images.repo, "refs")
    summary = (images.repo / "summary").read_bytes()
    nxt = compose_next(images, tmp_path / "next", add=[hello_deb("1.2")])
    assert nxt.version == "1.2"
    assert ostree(nxt.repo, "rev-parse", f"{images.ref}^").strip() == images.versions["1.1"]
    assert images.ref in ostree(nxt.repo, "summary", "--view")
    assert (
        ostree(nxt.repo, "cat", images.ref, "/usr/bin/hello-aot") == "#!/bin/sh\necho hello 1.2\n"
    )
    # the shared images are untouched
    assert ostree(images.repo, "refs") == before
    assert (images.repo / "summary").read_bytes() == summary
    assert ostree(images.repo, "rev-parse", images.ref).strip() == images.versions["1.1"]
    assert not any(d.name.startswith("hello-aot_1.2") for d in images.apt.debs())
