"""Package layering and overrides on folder sysroots, through the CLI.

The machine is a copy of the template sysroot (test/os 1.0, tests/deploy/conftest.py); its
administrator points the deployment's /etc/apt at a signed test repository served over
loopback HTTP, as they would on a real machine. Every change must rebuild from the base:
checked through `status --json`, the deployed trees, commit metadata and `ostree fsck`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.aptrepo import AptRepo
from tests.support.debian import SUITE
from tests.support.debs import DebSpec, build_deb
from tests.support.httpd import Server
from tests.support.images import hello_deb
from tests.support.sysroots import Machine, cli, ok, ostree

pytestmark = [pytest.mark.slow]

LAYER_DEBS = [
    DebSpec(
        name="htop-aot",
        version="3.2",
        depends="libhtop-aot",
        files={"/usr/bin/htop-aot": "#!/bin/sh\necho htop\n"},
    ),
    DebSpec(name="libhtop-aot", version="3.2", files={"/usr/lib/libhtop-aot.so": "lib\n"}),
    DebSpec(
        name="state-aot",
        files={
            "/usr/bin/state-aot": "#!/bin/sh\n",
            "/var/lib/state-aot/db": "initial\n",
            "/opt/state-aot/share/readme": "opt\n",
        },
    ),
    DebSpec(name="conflict-aot", conflicts="hello-aot"),
    DebSpec(name="newer-base-aot", depends="hello-aot (>= 9.0)"),
    DebSpec(name="failing-aot", postinst="#!/bin/sh\necho configuring >&2\nexit 3\n"),
    hello_deb("1.1"),
]


@dataclass
class Layered:
    machine: Machine
    apt: AptRepo
    server: Server

    def args(self) -> list[str]:
        return self.machine.args()

    def deployment(self, index: int = 0) -> Path:
        checksum = self.machine.status()[index]["checksum"]
        found = self.machine.path.glob(f"ostree/deploy/test/deploy/{checksum}.*")
        [path] = [p for p in found if p.is_dir()]
        return path


def point_apt_at(deployment: Path, apt: AptRepo, url: str) -> None:
    """What an administrator does: the machine's /etc/apt names their repository."""
    sources = deployment / "etc/apt/sources.list.d"
    for old in sources.iterdir():
        old.unlink()
    keyrings = deployment / "etc/apt/keyrings"
    keyrings.mkdir(parents=True, exist_ok=True)
    (keyrings / "test.gpg").write_bytes(apt.keyring.read_bytes())
    (sources / "test.sources").write_text(
        apt.deb822_source(url, signed_by=Path("/etc/apt/keyrings/test.gpg"))
    )


@pytest.fixture
def layered(machine: Machine, tmp_path: Path, http_server: Callable[[Path], Server]) -> Layered:
    apt = AptRepo(tmp_path / "layer-apt", suite=SUITE, key=machine.served.images.gpg_key)
    apt.add_debs(machine.served.images.apt.debs())
    apt.add(*LAYER_DEBS)
    apt.publish()
    server = http_server(apt.path)
    result = Layered(machine, apt, server)
    for deployment in machine.path.glob("ostree/deploy/test/deploy/*"):
        if deployment.is_dir():
            point_apt_at(deployment, apt, server.url)
    return result


def base_trees(layered: Layered) -> Path:
    return layered.machine.path / "ostree/deploy/test/var/cache/apt-ostree/base"


def metadata(layered: Layered, key: str) -> str:
    checksum = str(layered.machine.status()[0]["checksum"])
    repo = layered.machine.path / "ostree/repo"
    return ostree(f"--repo={repo}", "show", f"--print-metadata-key={key}", checksum).strip()


def test_install_layers_a_package_with_its_dependency(layered: Layered) -> None:
    base = str(layered.machine.status()[0]["checksum"])
    result = ok("install", *layered.args(), "htop-aot")
    assert "Added:" in result.stdout and "htop-aot" in result.stdout
    # the deployment of the base is the overlay's lower: no checkout
    assert "Checking out base" not in result.stdout
    assert not base_trees(layered).exists()
    [new, old] = layered.machine.status()
    assert new["requested-packages"] == ["htop-aot"]
    assert new["base-checksum"] == base and old["checksum"] == base
    root = layered.deployment()
    assert (root / "usr/bin/htop-aot").read_text() == "#!/bin/sh\necho htop\n"
    assert (root / "usr/lib/libhtop-aot.so").exists()
    status = (root / "usr/lib/sysimage/dpkg/status").read_text()
    assert "Package: htop-aot" in status and "Package: libhtop-aot" in status
    # apt's marks: the dependency is automatic, the request not; the base's marks stay
    states = (root / "usr/lib/sysimage/apt/extended_states").read_text()
    assert "Package: libhtop-aot\nArchitecture: " in states and "Package: htop-aot\n" not in states
    repo = layered.machine.path / "ostree/repo"
    base_states = ostree(f"--repo={repo}", "cat", base, "/usr/lib/sysimage/apt/extended_states")
    assert "Auto-Installed: 1" in base_states
    assert all(block in states for block in base_states.split("\n\n"))
    assert metadata(layered, "aptostree.clientlayer") == "true"
    assert metadata(layered, "aptostree.base-checksum") == f"'{base}'"
    assert "LayeredPackages: htop-aot" in ok("status", *layered.args()).stdout
    layered.machine.fsck()
    # asking again is an error, unless --idempotent
    again = cli("install", *layered.args(), "htop-aot")
    assert again.returncode == 1 and "already requested" in again.error_line
    assert (
        cli(
            "install", *layered.args(), "htop-aot", "--idempotent", "--unchanged-exit-77"
        ).returncode
        == 77
    )


def test_upgrade_reapplies_layers_onto_the_new_base(layered: Layered) -> None:
    ok("install", *layered.args(), "htop-aot")
    ok("upgrade", *layered.args())
    new = layered.machine.status()[0]
    assert new["version"] == "1.1"
    assert new["base-checksum"] == layered.machine.served.images.checksum("1.1")
    assert new["requested-packages"] == ["htop-aot"]
    root = layered.deployment()
    assert (root / "usr/bin/htop-aot").exists()
    assert (root / "usr/bin/hello-aot").read_text().endswith("hello 1.1\n")
    layered.machine.fsck()
    # no deployment of the new base: its checkout is kept for the next change, made once
    assert [p.name for p in base_trees(layered).iterdir()] == [new["base-checksum"]]
    more = ok("install", *layered.args(), "state-aot")
    assert "Checking out base" not in more.stdout
    assert (layered.deployment() / "usr/bin/state-aot").exists()
    assert (layered.deployment() / "usr/bin/htop-aot").exists()
    cleaned = ok("cleanup", *layered.args(), "-b")
    assert "Removed the cached checkout of the base" in cleaned.stdout
    assert not base_trees(layered).exists()
    layered.machine.fsck()


def test_uninstall_and_reset(layered: Layered) -> None:
    # a relative --sysroot, as in the README's demo
    path = layered.machine.path
    relative = cli("install", "--sysroot", path.name, "htop-aot", "state-aot", cwd=path.parent)
    assert relative.returncode == 0, relative.stderr
    ok("uninstall", *layered.args(), "htop-aot")
    assert layered.machine.status()[0]["requested-packages"] == ["state-aot"]
    assert not (layered.deployment() / "usr/bin/htop-aot").exists()
    bad = cli("uninstall", *layered.args(), "nosuch-aot")
    assert bad.returncode == 1 and "not a layered package" in bad.error_line
    ok("reset", *layered.args())
    new = layered.machine.status()[0]
    assert new["requested-packages"] == []
    assert new["checksum"] == layered.machine.served.images.checksum("1.0")  # the base again


def test_var_and_opt_content_is_translated(layered: Layered) -> None:
    ok("install", *layered.args(), "state-aot")
    root = layered.deployment()
    tmpfiles = "".join(p.read_text() for p in (root / "usr/lib/tmpfiles.d").glob("*.conf"))
    assert "/var/lib/state-aot" in tmpfiles
    assert (root / "usr/lib/opt/state-aot/share/readme").read_text() == "opt\n"


def test_package_already_in_the_base_needs_allow_inactive(layered: Layered) -> None:
    before = layered.machine.snapshot()
    bad = cli("install", *layered.args(), "hello-aot")
    assert bad.returncode == 1 and "--allow-inactive" in bad.error_line
    assert layered.machine.snapshot() == before
    ok("install", *layered.args(), "hello-aot", "--allow-inactive")
    assert layered.machine.status()[0]["requested-packages"] == ["hello-aot"]


@pytest.mark.parametrize(
    ("packages", "expected"),
    [
        (["nosuch-one", "nosuch-two"], ["nosuch-one", "nosuch-two"]),
        (["conflict-aot"], ["conflict-aot", "hello-aot"]),
        (["newer-base-aot"], ["hello-aot"]),
        (["failing-aot"], ["failing-aot", "postinst"]),
    ],
)
def test_bad_requests_change_nothing(
    layered: Layered, packages: list[str], expected: list[str]
) -> None:
    before = layered.machine.snapshot()
    bad = cli("install", *layered.args(), *packages)
    assert bad.returncode == 1
    for word in expected:
        assert word in bad.error_line
    assert layered.machine.snapshot() == before
    layered.machine.fsck()


def test_local_deb(layered: Layered, tmp_path: Path) -> None:
    deb = build_deb(
        DebSpec(name="local-aot", depends="libhtop-aot", files={"/usr/bin/local-aot": "x\n"}),
        tmp_path,
    )
    ok("install", *layered.args(), str(deb))
    new = layered.machine.status()[0]
    assert new["requested-local-packages"] == ["local-aot_1.0_all.deb"]
    assert (layered.deployment() / "usr/bin/local-aot").exists()
    assert (layered.deployment() / "usr/lib/libhtop-aot.so").exists()  # its dependency
    corrupt = tmp_path / "corrupt_1.0_all.deb"
    corrupt.write_bytes(b"not a deb")
    bad = cli("install", *layered.args(), str(corrupt))
    assert bad.returncode == 1 and "corrupt_1.0_all.deb" in bad.error_line


def test_overrides(layered: Layered) -> None:
    bad = cli("override", "remove", *layered.args(), "hello-aot-data")
    assert bad.returncode == 1 and "hello-aot" in bad.error_line  # hello-aot needs it
    bad = cli("override", "remove", *layered.args(), "nosuch-aot")
    assert bad.returncode == 1 and "nosuch-aot" in bad.error_line
    ok("override", "remove", *layered.args(), "legacy-aot")
    new = layered.machine.status()[0]
    assert new["requested-base-removals"] == ["legacy-aot"]
    status = (layered.deployment() / "usr/lib/sysimage/dpkg/status").read_text()
    assert "Package: legacy-aot" not in status
    ok("override", "replace", *layered.args(), "hello-aot=1.1")
    assert (layered.deployment() / "usr/bin/hello-aot").read_text().endswith("hello 1.1\n")
    assert "ReplacedBasePackages: hello-aot=1.1" in ok("status", *layered.args()).stdout
    ok("override", "reset", *layered.args(), "--all")
    new = layered.machine.status()[0]
    assert new["requested-base-removals"] == []
    assert new["checksum"] == layered.machine.served.images.checksum("1.0")


def test_db_diff_shows_layered_changes_and_search(layered: Layered) -> None:
    ok("install", *layered.args(), "htop-aot")
    diff = ok("db", "diff", *layered.args(), "1", "0").stdout
    assert "htop-aot" in diff.split("Added:")[1]
    found = ok("search", *layered.args(), "htop").stdout
    assert "htop-aot 3.2" in found
    doc = json.loads(ok("status", *layered.args(), "--json").stdout)
    assert doc["deployments"][0]["packages"] == ["htop-aot"]


def test_users_from_scripts_reach_an_edited_etc_passwd(layered: Layered, tmp_path: Path) -> None:
    """The admin added a user (so libostree's merge keeps their /etc/passwd as it is); a
    layered package's script adds a system account: the new deployment has both."""
    root = layered.deployment()
    for db, line in (("passwd", "localadmin:x:1500:1500::/home/localadmin:/bin/sh"),
                     ("group", "localadmin:x:1500:")):  # fmt: skip
        with (root / "etc" / db).open("a") as f:
            f.write(line + "\n")
    deb = build_deb(
        DebSpec(
            name="svc-aot",
            # what adduser --system does to the account files, without needing adduser
            postinst=(
                "#!/bin/sh\nset -e\n"
                "grep -q '^svcaot:' /etc/passwd || "
                "echo 'svcaot:x:990:990::/nonexistent:/usr/sbin/nologin' >> /etc/passwd\n"
                "grep -q '^svcaot:' /etc/group || echo 'svcaot:x:990:' >> /etc/group\n"
            ),
        ),
        tmp_path,
    )
    result = ok("install", *layered.args(), str(deb))
    assert "svcaot" in result.stderr  # said what it added
    new = layered.deployment()
    passwd = (new / "etc/passwd").read_text()
    assert "localadmin:x:1500" in passwd and "svcaot:x:990" in passwd
    assert "svcaot:x:990:" in (new / "etc/group").read_text()
    # and the boot-time merge is in the image for staged deployments
    assert (
        new / "usr/lib/systemd/system/sysinit.target.wants/apt-ostree-accounts.service"
    ).exists()


def test_initramfs_regenerated_on_the_client_and_kept_across_upgrades(layered: Layered) -> None:
    kver = layered.machine.served.images.kernel_version
    ok("initramfs", *layered.args(), "--enable", "--arg=--add-drivers", "--arg=virtio_blk")
    new = layered.machine.status()[0]
    assert new["regenerate-initramfs"] is True
    assert new["initramfs-args"] == ["--add-drivers", "virtio_blk"]
    image = layered.deployment() / f"usr/lib/modules/{kver}/initramfs.img"
    assert "--add-drivers virtio_blk" in image.read_text()  # the test dracut records its args
    assert "Initramfs regeneration: enabled" in ok("initramfs", *layered.args()).stdout
    ok("upgrade", *layered.args())
    upgraded = layered.deployment() / f"usr/lib/modules/{kver}/initramfs.img"
    assert "--add-drivers virtio_blk" in upgraded.read_text()
    assert layered.machine.status()[0]["version"] == "1.1"
    ok("initramfs", *layered.args(), "--disable")
    assert (
        "--add-drivers"
        not in (layered.deployment() / f"usr/lib/modules/{kver}/initramfs.img").read_text()
    )
    bad = cli("initramfs", *layered.args(), "--disable")
    assert bad.returncode == 1 and "not enabled" in bad.error_line
    layered.machine.fsck()
