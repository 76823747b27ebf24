"""The example treefiles against the real Debian archive, through the host's apt sources."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.compose.test_compose import cli, metadata, ostree
from tests.support.debian import CACHE, EXAMPLE_VERSION, EXAMPLES, MINIMAL_REF
from tests.support.httpd import serve_directory
from tests.support.images import remove_sysroot

REF = MINIMAL_REF

pytestmark = [pytest.mark.network]


@pytest.mark.slow
def test_minimal_example_is_a_bootable_tree(minimal_example: Path, tmp_path: Path) -> None:
    repo = minimal_example  # composed (successfully) from the archive by the session fixture
    assert metadata(repo, REF, "version") == f"'{EXAMPLE_VERSION}.0'"
    packages = str(metadata(repo, REF, "aptostree.packages"))
    for name in ("linux-image-cloud-amd64", "systemd-sysv", "dracut", "ostree-boot", "apt"):
        assert f"('{name}'," in packages
    modules = ostree(repo, "ls", "-R", REF, "/usr/lib/modules")
    assert "/vmlinuz" in modules and "/initramfs.img" in modules
    assert ostree(repo, "ls", REF, "/boot").split()[-1] == "/boot"  # empty: libostree fills it
    wants = ostree(repo, "ls", REF, "/usr/etc/systemd/system/multi-user.target.wants")
    assert "systemd-networkd.service" in wants
    default = ostree(repo, "ls", REF, "/usr/etc/systemd/system/default.target")
    assert "multi-user.target" in default
    # apt's own timers would run apt-get against a read-only /usr: masked in the image
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        masked = ostree(repo, "ls", REF, f"/usr/etc/systemd/system/{unit}")
        assert "-> /dev/null" in masked, masked
    # libostree accepts it as an OS tree: deploy it into a scratch sysroot and check the entry
    sysroot = tmp_path / "sysroot"
    sysroot.mkdir()
    try:
        subprocess.run(
            ["ostree", "admin", "init-fs", str(sysroot)], check=True, capture_output=True
        )
        subprocess.run(
            ["ostree", "admin", "os-init", "--sysroot", str(sysroot), "debian"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["ostree", f"--repo={sysroot}/ostree/repo", "pull-local", str(repo), REF],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["ostree", "admin", "deploy", "--sysroot", str(sysroot), "--os", "debian", REF],
            check=True,
            capture_output=True,
        )
        entries = list((sysroot / "boot/loader/entries").iterdir())
        assert len(entries) == 1
        entry = entries[0].read_text()
        assert "linux /ostree/debian-" in entry and "initrd /ostree/debian-" in entry
    finally:
        remove_sysroot(sysroot)
    # and the client's own verbs, pulling it over loopback HTTP
    client = tmp_path / "client"
    try:
        with serve_directory(repo) as server:
            result = cli(
                "init", "--sysroot", client, "--os", "debian", "--remote",
                f"origin={server.url}/", "--no-gpg-verify", REF, "--karg", "console=ttyS0",
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
        status = json.loads(cli("status", "--sysroot", client, "--json").stdout)
        [deployment] = status["deployments"]
        assert deployment["version"] == f"{EXAMPLE_VERSION}.0"
        assert deployment["origin"] == f"origin:{REF}"
        listing = cli("db", "list", "--sysroot", client).stdout
        assert "linux-image-cloud-amd64" in listing and "systemd-sysv" in listing
        assert cli("kargs", "--sysroot", client, "--append", "quiet").returncode == 0
        assert cli("rollback", "--sysroot", client).returncode == 0
        versions = json.loads(cli("status", "--sysroot", client, "--json").stdout)
        assert [d["kernel-arguments"] for d in versions["deployments"]] == [
            ["console=ttyS0"],
            ["console=ttyS0", "quiet"],
        ]
        subprocess.run(["ostree", "fsck", f"--repo={client}/ostree/repo"], check=True)
        _layer_real_packages(client)
    finally:
        remove_sysroot(client)


def _layer_real_packages(client: Path) -> None:
    """Real Debian packages layered from the archive (the image's own apt sources): htop, and
    chrony (a system user made by its postinst through the image's adduser, and a systemd
    service enabled by deb-systemd-helper, with state under /var)."""
    result = cli("install", "--sysroot", client, "htop", "chrony")
    assert result.returncode == 0, result.stderr
    [new, *_] = json.loads(cli("status", "--sysroot", client, "--json").stdout)["deployments"]
    assert sorted(new["requested-packages"]) == ["chrony", "htop"]
    root = client / "ostree/deploy/debian/deploy" / str(new["id"]).removeprefix("debian-")
    assert (root / "usr/bin/htop").is_file()
    assert (root / "usr/lib/systemd/system/chrony.service").is_file()
    wants = root / "usr/etc/systemd/system/multi-user.target.wants/chrony.service"
    assert wants.is_symlink()
    for etc in ("etc", "usr/etc"):  # the image's, and the machine's merged /etc
        assert "\n_chrony:" in (root / etc / "passwd").read_text()
    tmpfiles = "\n".join(p.read_text() for p in (root / "usr/lib/tmpfiles.d").glob("*.conf"))
    assert "/var/lib/chrony" in tmpfiles
    diff = cli("db", "diff", "--sysroot", client).stdout
    assert "htop" in diff and "chrony" in diff
    subprocess.run(["ostree", "fsck", f"--repo={client}/ostree/repo"], check=True)


def test_server_example_resolves_from_the_archive(tmp_path: Path) -> None:
    result = cli(
        "compose",
        "tree",
        EXAMPLES / "server.yaml",
        "--repo",
        tmp_path / "repo",
        "--cachedir",
        CACHE / "compose",
        "--dry-run",
    )
    assert result.returncode == 0, result.stderr
    names = {line.split()[0] for line in result.stdout.splitlines() if len(line.split()) == 3}
    assert {"openssh-server", "htop", "linux-image-cloud-amd64", "sudo"} <= names
    assert not (tmp_path / "repo").exists()


def test_unknown_packages_in_the_archive_are_all_named(tmp_path: Path) -> None:
    tf = tmp_path / "t.yaml"
    tf.write_text(
        "ref: x/y\nsuite: bookworm\npackages: [bash, nonexistent-pkg-one, " "nonexistent-pkg-two]\n"
    )
    result = cli(
        "compose", "tree", tf, "--repo", tmp_path / "repo", "--cachedir", CACHE / "compose"
    )
    assert result.returncode == 1
    assert "nonexistent-pkg-one" in result.error_line
    assert "nonexistent-pkg-two" in result.error_line
    assert not (tmp_path / "repo").exists()
