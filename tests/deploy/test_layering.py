"""Package layering and overrides on folder sysroots.

The machine is a copy of the template sysroot (test/os 1.0, tests/deploy/conftest.py); its
administrator points the deployment's /etc/apt at a signed test repository served over
loopback HTTP, as they would on a real machine. The verbs run through the typed core
(`Machine.change`), and a few through the CLI for what a user sees. Every change must rebuild
from the base: checked through the deployments' status, the deployed trees, commit metadata
and `ostree fsck`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from apt_ostree import debconf
from apt_ostree.cli.render import render_status
from apt_ostree.errors import AptOstreeError, LayeringError, PackageError
from apt_ostree.progress import Progress
from apt_ostree.system.requests import (
    Cleanup,
    DbDiff,
    Initramfs,
    Install,
    OverrideRemove,
    OverrideReplace,
    OverrideReset,
    Rebase,
    Request,
    Reset,
    Search,
    Uninstall,
    Upgrade,
)
from apt_ostree.system.results import CommitDiff, Outcome
from tests.support.aptrepo import AptRepo
from tests.support.debian import SUITE
from tests.support.debs import DebSpec, build_deb, debconf_deb
from tests.support.httpd import Server
from tests.support.images import hello_deb
from tests.support.sysroots import Machine, Recorder, cli, ok, ostree

pytestmark = [pytest.mark.slow]

TYPES = ", ".join(sorted(debconf.TYPES))

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
    debconf_deb("asks-aot", {"pet": "none", "food": "none"}),
]


@dataclass
class Layered:
    machine: Machine
    apt: AptRepo
    server: Server

    def args(self) -> list[str]:
        return self.machine.args()

    def deployment(self, index: int = 0) -> Path:
        return self.machine.root(index)

    def change(self, request: Request, progress: Progress | None = None) -> Outcome:
        return self.machine.change(request, progress)


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
    checksum = layered.machine.deployments()[0].checksum
    repo = layered.machine.path / "ostree/repo"
    return ostree(f"--repo={repo}", "show", f"--print-metadata-key={key}", checksum).strip()


def status_text(layered: Layered) -> str:
    """What `status` prints (the CLI's renderer, on the core's deployments)."""
    return "\n".join(render_status(layered.machine.deployments(), verbose=False))


def added(outcome: Outcome) -> list[str]:
    assert outcome.diff is not None, outcome
    return [c.name for c in outcome.diff.added]


HTOP = Install(packages=("htop-aot",))


def test_install_layers_a_package_with_its_dependency(layered: Layered) -> None:
    m = layered.machine
    base = m.deployments()[0].checksum
    progress = Recorder()
    outcome = layered.change(HTOP, progress)
    assert outcome.changed and added(outcome) == ["htop-aot", "libhtop-aot"]
    assert outcome.lines == (f"Deployed {outcome.checksum} (version 1.0)",)
    # the deployment of the base is the overlay's lower: no checkout
    assert "Checking out base" not in progress.steps
    assert not base_trees(layered).exists()
    [new, old] = m.deployments()
    assert new.checksum == outcome.checksum and new.requested_packages == ("htop-aot",)
    assert new.base_checksum == base and old.checksum == base
    root = layered.deployment()
    assert (root / "usr/bin/htop-aot").read_text() == "#!/bin/sh\necho htop\n"
    assert (root / "usr/lib/libhtop-aot.so").exists()
    status = (root / "usr/lib/sysimage/dpkg/status").read_text()
    assert "Package: htop-aot" in status and "Package: libhtop-aot" in status
    # apt's marks: the dependency is automatic, the request not; the base's marks stay
    states = (root / "usr/lib/sysimage/apt/extended_states").read_text()
    assert "Package: libhtop-aot\nArchitecture: " in states and "Package: htop-aot\n" not in states
    repo = m.path / "ostree/repo"
    base_states = ostree(f"--repo={repo}", "cat", base, "/usr/lib/sysimage/apt/extended_states")
    assert "Auto-Installed: 1" in base_states
    assert all(block in states for block in base_states.split("\n\n"))
    assert metadata(layered, "aptostree.clientlayer") == "true"
    assert metadata(layered, "aptostree.base-checksum") == f"'{base}'"
    assert "LayeredPackages: htop-aot" in status_text(layered)
    m.fsck()
    # the layered origin names its ref as baserefspec (rpm-ostree's key): libostree then does
    # not check the client-built, unsigned commit against the remote's GPG keys
    assert "baserefspec=origin:test/os" in (root.parent / f"{root.name}.origin").read_text()
    # asking again is an error, unless --idempotent; neither deploys (`ostree admin status`
    # shows the layered deployment)
    before = m.snapshot()
    with pytest.raises(LayeringError, match="htop-aot is already requested"):
        m.run(HTOP)
    again = layered.change(Install(packages=("htop-aot",), idempotent=True))
    assert not again.changed and again.lines == ("No change.",)
    assert m.snapshot() == before


def test_upgrade_reapplies_layers_onto_the_new_base(layered: Layered) -> None:
    layered.change(HTOP)
    progress = Recorder()
    layered.change(Upgrade(), progress)
    new = layered.machine.deployments()[0]
    assert new.version == "1.1"
    assert new.base_checksum == layered.machine.served.images.checksum("1.1")
    assert new.requested_packages == ("htop-aot",)
    root = layered.deployment()
    assert (root / "usr/bin/htop-aot").exists()
    assert (root / "usr/bin/hello-aot").read_text().endswith("hello 1.1\n")
    layered.machine.fsck()
    # no deployment of the new base: its checkout is kept for the next change, made once
    assert "Checking out base" in progress.steps
    assert [p.name for p in base_trees(layered).iterdir()] == [new.base_checksum]
    more = Recorder()
    layered.change(Install(packages=("state-aot",)), more)
    assert "Checking out base" not in more.steps
    assert (layered.deployment() / "usr/bin/state-aot").exists()
    assert (layered.deployment() / "usr/bin/htop-aot").exists()
    cleaned = layered.change(Cleanup(base=True))
    assert "Removed the cached checkout of the base" in cleaned.lines
    assert not base_trees(layered).exists()
    layered.machine.fsck()


def test_uninstall_and_reset(layered: Layered) -> None:
    # a relative --sysroot, as in the README's demo
    path = layered.machine.path
    relative = cli("install", "--sysroot", path.name, "htop-aot", "state-aot", cwd=path.parent)
    assert relative.returncode == 0, relative.stderr
    assert layered.machine.deployments()[0].requested_packages == ("htop-aot", "state-aot")
    layered.change(Uninstall(packages=("htop-aot",)))
    assert layered.machine.deployments()[0].requested_packages == ("state-aot",)
    assert not (layered.deployment() / "usr/bin/htop-aot").exists()
    with pytest.raises(LayeringError, match="nosuch-aot is not a layered package"):
        layered.machine.run(Uninstall(packages=("nosuch-aot",)))
    layered.change(Reset())
    new = layered.machine.deployments()[0]
    assert new.requested_packages == ()
    assert new.checksum == layered.machine.served.images.checksum("1.0")  # the base again


def test_var_and_opt_content_is_translated(layered: Layered) -> None:
    layered.change(Install(packages=("state-aot",)))
    root = layered.deployment()
    tmpfiles = "".join(p.read_text() for p in (root / "usr/lib/tmpfiles.d").glob("*.conf"))
    assert "/var/lib/state-aot" in tmpfiles
    assert (root / "usr/lib/opt/state-aot/share/readme").read_text() == "opt\n"


def test_package_already_in_the_base_needs_allow_inactive(layered: Layered) -> None:
    before = layered.machine.snapshot()
    with pytest.raises(PackageError, match="--allow-inactive"):
        layered.machine.run(Install(packages=("hello-aot",)))
    assert layered.machine.snapshot() == before
    layered.change(Install(packages=("hello-aot",), allow_inactive=True))
    assert layered.machine.deployments()[0].requested_packages == ("hello-aot",)


@pytest.mark.parametrize(
    ("packages", "error", "expected"),
    [
        (["nosuch-one", "nosuch-two"], PackageError, ["nosuch-one", "nosuch-two"]),
        (["conflict-aot"], PackageError, ["conflict-aot", "hello-aot"]),
        (["newer-base-aot"], PackageError, ["hello-aot"]),
        (["failing-aot"], LayeringError, ["failing-aot", "postinst"]),
    ],
)
def test_bad_requests_change_nothing(
    layered: Layered, packages: list[str], error: type[AptOstreeError], expected: list[str]
) -> None:
    before = layered.machine.snapshot()
    with pytest.raises(error) as caught:
        layered.machine.run(Install(packages=tuple(packages)))
    for word in expected:
        assert word in str(caught.value)
    assert "\n" not in str(caught.value)  # one line for the CLI's `error:`
    assert layered.machine.snapshot() == before
    layered.machine.fsck()


def test_local_deb(layered: Layered, tmp_path: Path) -> None:
    deb = build_deb(
        DebSpec(name="local-aot", depends="libhtop-aot", files={"/usr/bin/local-aot": "x\n"}),
        tmp_path,
    )
    layered.change(Install(packages=(str(deb),)))
    new = layered.machine.deployments()[0]
    assert new.requested_local_packages == ("local-aot_1.0_all.deb",)
    assert (layered.deployment() / "usr/bin/local-aot").exists()
    assert (layered.deployment() / "usr/lib/libhtop-aot.so").exists()  # its dependency
    corrupt = tmp_path / "corrupt_1.0_all.deb"
    corrupt.write_bytes(b"not a deb")
    with pytest.raises(LayeringError, match="corrupt_1.0_all.deb"):
        layered.machine.run(Install(packages=(str(corrupt),)))


def test_overrides(layered: Layered) -> None:
    with pytest.raises(PackageError, match="hello-aot"):  # hello-aot needs it
        layered.machine.run(OverrideRemove(packages=("hello-aot-data",)))
    with pytest.raises(LayeringError, match="nosuch-aot"):
        layered.machine.run(OverrideRemove(packages=("nosuch-aot",)))
    layered.change(OverrideRemove(packages=("legacy-aot",)))
    new = layered.machine.deployments()[0]
    assert new.requested_base_removals == ("legacy-aot",)
    status = (layered.deployment() / "usr/lib/sysimage/dpkg/status").read_text()
    assert "Package: legacy-aot" not in status
    layered.change(OverrideReplace(packages=("hello-aot=1.1",)))
    assert (layered.deployment() / "usr/bin/hello-aot").read_text().endswith("hello 1.1\n")
    assert "ReplacedBasePackages: hello-aot=1.1" in status_text(layered)
    layered.change(OverrideReset(all_=True))
    new = layered.machine.deployments()[0]
    assert new.requested_base_removals == () and new.requested_base_replacements == ()
    assert new.checksum == layered.machine.served.images.checksum("1.0")


def test_db_diff_shows_layered_changes_and_search(layered: Layered) -> None:
    layered.change(HTOP)
    diff = layered.machine.run(DbDiff(from_rev="1", to_rev="0"))
    assert isinstance(diff, CommitDiff)
    assert "htop-aot" in [c.name for c in diff.diff.added]
    found = layered.machine.run(Search(patterns=("htop",)))
    assert isinstance(found, tuple)
    assert ("htop-aot", "3.2") in [(m.name, m.version) for m in found]
    assert layered.machine.status()[0]["packages"] == ["htop-aot"]


def test_users_from_scripts_reach_an_edited_etc_passwd(layered: Layered, tmp_path: Path) -> None:
    """The admin added a user (so libostree's merge keeps their /etc/passwd as it is); a
    layered package's script adds a system account: the new deployment has both."""
    root = layered.deployment()
    for db, line in (("passwd", "localadmin:x:1500:1500::/home/localadmin:/bin/sh"),
                     ("group", "localadmin:x:1500:")):  # fmt: skip
        with (root / "etc" / db).open("a") as f:
            f.write(line + "\n")
    group = root / "etc/group"  # and made localadmin a member of users
    group.write_text(group.read_text().replace("\nusers:*:100:\n", "\nusers:*:100:localadmin\n"))
    assert "\nusers:*:100:localadmin\n" in group.read_text()
    deb = build_deb(
        DebSpec(
            name="svc-aot",
            # what adduser --system does to the account files, without needing adduser
            postinst=(
                "#!/bin/sh\nset -e\n"
                "grep -q '^svcaot:' /etc/passwd || "
                "echo 'svcaot:x:990:990::/nonexistent:/usr/sbin/nologin' >> /etc/passwd\n"
                "grep -q '^svcaot:' /etc/group || echo 'svcaot:x:990:' >> /etc/group\n"
                "sed -i '/^users:/ s/$/svcaot/' /etc/group\n"  # adduser svcaot users
            ),
        ),
        tmp_path,
    )
    progress = Recorder()
    layered.change(Install(packages=(str(deb),)), progress)
    assert any("svcaot" in m for m in progress.messages)  # said what it added
    new = layered.deployment()
    passwd = (new / "etc/passwd").read_text()
    assert "localadmin:x:1500" in passwd and "svcaot:x:990" in passwd
    assert "svcaot:x:990:" in (new / "etc/group").read_text()
    # the image has no etc-group-members: a group keeps its local members, gets the image's
    assert "\nusers:*:100:localadmin,svcaot\n" in (new / "etc/group").read_text()
    # and the boot-time merge is in the image for staged deployments
    assert (
        new / "usr/lib/systemd/system/sysinit.target.wants/apt-ostree-accounts.service"
    ).exists()


def test_layered_packages_take_the_machines_debconf_answers(layered: Layered) -> None:
    m = layered.machine
    answers = layered.deployment() / "etc/apt-ostree/debconf.d"
    answers.mkdir(parents=True)
    (answers / "bad.conf").write_text("# the pet\nasks-aot asks-aot/pet strnig dog\n")
    before = m.snapshot()
    with pytest.raises(LayeringError) as error:
        m.run(Install(packages=("asks-aot",)))
    assert str(error.value) == (
        "debconf answers: /etc/apt-ostree/debconf.d/bad.conf: line 2: "
        f"'asks-aot asks-aot/pet strnig dog': type 'strnig' is not one of {TYPES}"
    )
    assert m.snapshot() == before
    (answers / "bad.conf").unlink()
    (answers / "pets.conf").write_text("# the pet\nasks-aot asks-aot/pet string dog\n")
    layered.change(Install(packages=("asks-aot",)))
    # the package wrote its configuration from the answer (and the default for the other)
    assert (layered.deployment() / "etc/asks-aot.conf").read_text() == "pet=dog\nfood=none\n"
    m.fsck()


def test_initramfs_regenerated_on_the_client_and_kept_across_upgrades(layered: Layered) -> None:
    kver = layered.machine.served.images.kernel_version
    layered.change(Initramfs(enable=True, arg=("--add-drivers", "virtio_blk")))
    new = layered.machine.deployments()[0]
    assert new.regenerate_initramfs is True
    assert new.initramfs_args == ("--add-drivers", "virtio_blk")
    image = layered.deployment() / f"usr/lib/modules/{kver}/initramfs.img"
    assert "--add-drivers virtio_blk" in image.read_text()  # the test dracut records its args
    shown = layered.change(Initramfs())
    assert not shown.changed
    assert shown.lines == ("Initramfs regeneration: enabled (arguments: --add-drivers virtio_blk)",)
    layered.change(Upgrade())
    upgraded = layered.deployment() / f"usr/lib/modules/{kver}/initramfs.img"
    assert "--add-drivers virtio_blk" in upgraded.read_text()
    assert layered.machine.deployments()[0].version == "1.1"
    layered.change(Initramfs(disable=True))
    assert (
        "--add-drivers"
        not in (layered.deployment() / f"usr/lib/modules/{kver}/initramfs.img").read_text()
    )
    with pytest.raises(LayeringError, match="not enabled"):
        layered.machine.run(Initramfs(disable=True))
    layered.machine.fsck()


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_install(layered: Layered) -> None:
    result = ok("install", *layered.args(), "htop-aot")
    assert "Added:" in result.stdout and "htop-aot" in result.stdout.split("Added:")[1]
    assert "==> Resolving layered packages" in result.stderr  # progress on stderr
    assert "Checking out base" not in result.stderr
    assert "LayeredPackages: htop-aot" in ok("status", *layered.args()).stdout
    again = cli("install", *layered.args(), "htop-aot")
    assert again.returncode == 1 and "already requested" in again.error_line
    idempotent = cli("install", *layered.args(), "htop-aot", "--idempotent",
                     "--unchanged-exit-77")  # fmt: skip
    assert idempotent.returncode == 77


def test_cli_refusals_search_and_initramfs(layered: Layered) -> None:
    before = layered.machine.snapshot()
    bad = cli("install", *layered.args(), "nosuch-one", "nosuch-two")
    assert bad.returncode == 1 and "nosuch-one" in bad.error_line
    bad = cli("override", "remove", *layered.args(), "nosuch-aot")
    assert bad.returncode == 1 and "nosuch-aot" in bad.error_line
    bad = cli("initramfs", *layered.args(), "--disable")
    assert bad.returncode == 1 and "not enabled" in bad.error_line
    assert cli("initramfs", *layered.args(), "--arg=x").returncode == 2
    assert ok("initramfs", *layered.args()).stdout == "Initramfs regeneration: disabled\n"
    found = ok("search", *layered.args(), "htop").stdout
    assert found.startswith("htop-aot 3.2: ")
    assert layered.machine.snapshot() == before


def test_layering_on_a_container_image_base(layered: Layered, layout: Path) -> None:
    """Layered packages on an image origin: the same rebuild from the base, and the image
    stays the origin (an upgrade follows its tag and keeps the packages)."""
    m = layered.machine
    image = f"ostree-unverified-image:oci:{layout}:1.1"
    m.change(Rebase(refspec=image))
    outcome = layered.change(HTOP)
    assert added(outcome) == ["htop-aot", "libhtop-aot"]
    new = m.deployments()[0]
    assert new.requested_packages == ("htop-aot",) and new.container_image_reference == image
    assert new.base_checksum == m.served.images.checksum("1.1")
    assert (layered.deployment() / "usr/bin/htop-aot").exists()
    origin = Path(f"{layered.deployment()}.origin").read_text()
    assert f"container-image-reference={image}" in origin and "requested=htop-aot;" in origin
    assert "No upgrade available." in m.change(Upgrade(check=True)).lines
    m.fsck()
