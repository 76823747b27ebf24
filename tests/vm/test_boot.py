"""Scenarios of issue 6 on real boots: the minimal example with apt-ostree inside, under qemu
(TCG, OVMF, systemd-boot reading libostree's entries through rEFInd's ext4 driver). In the
guest everything goes through apt-ostreed, started by D-Bus activation (no --sysroot), as root
and without polkitd (root needs no authorization).

One guest session covers the scenarios in four boots (each costs about a minute here):
boot 1 checks the image and `status` (scenario 1), stages an upgrade (2) and layers a package
from a repository on the host (3); boot 2 checks all three and rolls back (5) with a kernel
argument; boot 3 checks the rollback and the argument, then unlocks /usr for good
(`usroverlay --hotfix`, scenario 6's other half); boot 4 checks that the hotfix stayed.

Then container images (issue 14): the guest rebases to the image of the first version in
Debian's docker-registry on the host's loopback, boots it (boot 5), upgrades by tag to the
image of the second version, fetching only the layers that changed, boots it (boot 6) and
rolls back; then, under a containers-policy.json that requires a GPG signature, it refuses
an unsigned image and rebases to a signed one (Debian 13's skopeo checks the policy)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from apt_ostree import ostree
from apt_ostree.compose.image import UpdateRemote
from tests.support import vm
from tests.support.aptrepo import AptRepo, GpgKey
from tests.support.debs import DebSpec, File
from tests.support.httpd import serve_directory
from tests.support.registry import Registry, registry
from tests.support.sysroots import cli
from tests.vm.conftest import ComposedRepo, build, serve_next

pytestmark = [pytest.mark.vm, pytest.mark.network, pytest.mark.slow]

# a package that creates a system user in its postinst and ships a command using it
HELLO = DebSpec(
    "aptotest-hello",
    "1.0",
    files={
        "/usr/bin/aptotest-hello": File('#!/bin/sh\necho "hello from $(id -un aptotest)"\n', 0o755)
    },
    postinst=(
        "if ! getent passwd aptotest >/dev/null; then\n"
        "  useradd --system --no-create-home --home-dir /nonexistent"
        " --shell /usr/sbin/nologin aptotest\n"
        "fi"
    ),
)
KEYRING = "/etc/apt/keyrings/apt-ostree-test.gpg"
IMAGE_KEY = "/etc/apt-ostree-test/image-key.gpg"


def _deployments(guest: vm.VM) -> list[dict[str, Any]]:
    deployments: list[dict[str, Any]] = json.loads(guest.check("apt-ostree status --json"))[
        "deployments"
    ]
    return deployments


def _booted(guest: vm.VM) -> dict[str, Any]:
    return next(d for d in _deployments(guest) if d["booted"])


def _use_host_repository(guest: vm.VM, apt: AptRepo, port: int) -> None:
    """The guest's apt sources: only the host's test repository (10.0.2.2), signed."""
    key = base64.b64encode(apt.keyring.read_bytes()).decode()
    source = apt.deb822_source(f"http://{vm.HOST_FROM_GUEST}:{port}/", signed_by=Path(KEYRING))
    guest.check(
        f"echo {key} | base64 -d > {KEYRING} && rm -f /etc/apt/sources.list.d/*"
        f" && printf '%s' '{source}' > /etc/apt/sources.list.d/apt-ostree-test.sources"
    )


def _check_image(guest: vm.VM) -> None:
    """First boot: multi-user, machine-id, /etc writable, /usr read-only, /boot, the loader."""
    assert guest.check("systemctl is-system-running").strip() == "running"
    assert re.fullmatch(r"[0-9a-f]{32}\n", guest.check("cat /etc/machine-id"))
    assert guest.run("touch /etc/apt-ostree-test-written").returncode == 0
    usr = guest.run("touch /usr/apt-ostree-test-written")
    assert usr.returncode != 0 and "Read-only file system" in usr.output
    assert guest.check("findmnt -no FSTYPE /boot").strip() == "ext4"
    assert "ostree=/ostree/boot." in guest.check("cat /proc/cmdline")
    assert "systemd-boot" in guest.check("cat /sys/firmware/efi/efivars/LoaderInfo-* | tr -d '\\0'")


def _check_status(guest: vm.VM, composed: ComposedRepo, version: str | None) -> None:
    """Scenario 1: `apt-ostree status` through the daemon, which D-Bus activation started."""
    assert guest.run("systemctl is-active apt-ostreed.service").output.strip() == "inactive"
    status = guest.check("apt-ostree status")
    assert re.search(rf"^● origin:{re.escape(composed.ref)} \[booted\]$", status, re.M), status
    assert f"Version: {version} " in status and f"Commit: {composed.checksum}" in status
    assert guest.check("systemctl is-active apt-ostreed.service").strip() == "active"
    assert guest.check("dpkg-query -W -f '${Version}' apt-ostree") in composed.deb.name
    (booted,) = _deployments(guest)
    assert booted["booted"] and booted["checksum"] == composed.checksum
    assert booted["version"] == version and booted["origin"] == f"origin:{composed.ref}"


def _check_apt_guard(guest: vm.VM) -> None:
    """apt and dpkg refuse to change the read-only /usr before they start, naming what to run
    instead; what only reads (apt-get download too) works as ever."""
    refused = guest.run(f"apt-get install -y {HELLO.name}", timeout=300)
    assert refused.returncode != 0 and "apt-ostree install PKG" in refused.output, refused
    # apt-ostree resolves with lists of its own: apt's are fetched here (into /var)
    guest.check(f"apt-get update -q && cd /tmp && apt-get download {HELLO.name}", timeout=300)
    refused = guest.run(f"dpkg -i /tmp/{HELLO.name}_*.deb")
    assert refused.returncode != 0 and "apt-ostree install PKG" in refused.output, refused
    assert "Read-only file system" not in refused.output  # stopped before dpkg wrote anything
    assert HELLO.name in guest.check(f"apt-cache policy {HELLO.name}")
    assert "dbus" in guest.check("dpkg -l dbus") and guest.check("apt list --installed apt")
    guest.check(f"rm /tmp/{HELLO.name}_*.deb")


def test_status_upgrade_install_rollback_kargs(
    apt_ostree_repo: ComposedRepo, gpg_test_key: GpgKey, tmp_path: Path
) -> None:
    composed = apt_ostree_repo
    repo = tmp_path / "repo"
    subprocess.run(["cp", "-al", str(composed.path), str(repo)], check=True)
    first, second = composed.checksum, composed.next_checksum
    versions = {c: ostree.Repo.open(repo).read_commit(c).version for c in (first, second)}
    apt = AptRepo(tmp_path / "apt", key=gpg_test_key)
    apt.add(HELLO)
    apt.publish()
    with serve_directory(repo) as updates, serve_directory(apt.path) as packages:
        remote = UpdateRemote("origin", f"http://{vm.HOST_FROM_GUEST}:{updates.port}/")
        disk, _ = build(repo, tmp_path / "disk.raw", ref=composed.ref, remote=remote)
        serve_next(repo)  # the host publishes the next version
        with vm.boot(disk, tmp_path / "vm") as guest:
            # boot 1: the image, scenario 1, then stage an upgrade (2) and a layered package (3)
            _check_image(guest)
            _check_status(guest, composed, versions[first])
            guest.check("echo kept > /etc/apt-ostree-test-edit && echo '# local' >> /etc/hosts")
            upgraded = guest.check("apt-ostree upgrade", timeout=900)
            assert f"Staged {second}" in upgraded
            staged = _deployments(guest)[0]
            assert staged["staged"] and staged["checksum"] == second
            _use_host_repository(guest, apt, packages.port)
            installed = guest.check(f"apt-ostree install {HELLO.name}", timeout=900)
            assert f"{HELLO.name}-{HELLO.version}" in installed
            staged = _deployments(guest)[0]
            assert staged["staged"] and staged["base-checksum"] == second
            assert staged["requested-packages"] == [HELLO.name]
            assert guest.run(f"command -v {HELLO.name}").returncode != 0  # not live
            _check_apt_guard(guest)

            guest.reboot()
            # boot 2: the update and the layered package are booted, /etc edits kept
            booted = _booted(guest)
            assert booted["base-checksum"] == second and booted["version"] == versions[second]
            assert booted["requested-packages"] == [HELLO.name]
            assert guest.check("cat /usr/share/apt-ostree-test/marker") == "version two\n"
            assert guest.check("cat /etc/apt-ostree-test-edit") == "kept\n"
            assert "# local" in guest.check("cat /etc/hosts")
            assert guest.check(HELLO.name) == "hello from aptotest\n"
            assert guest.check("getent passwd aptotest").endswith(
                ":/nonexistent:/usr/sbin/nologin\n"
            )
            # scenario 5: rollback makes the first deployment the default again; kargs on it
            # (--deploy-index 0: without it kargs starts from the booted one, as rpm-ostree)
            guest.check("apt-ostree rollback")
            pending = _deployments(guest)[0]
            assert pending["checksum"] == first and not pending["booted"]
            guest.check("apt-ostree kargs --deploy-index=0 --append=apt_ostree_test=1")

            guest.reboot()
            # boot 3: the first version, with the new kernel argument, without the package
            booted = _booted(guest)
            assert booted["checksum"] == first and booted["version"] == versions[first]
            assert "apt_ostree_test=1" in guest.check("cat /proc/cmdline").split()
            assert "apt_ostree_test=1" in booted["kernel-arguments"]
            assert guest.run(f"command -v {HELLO.name}").returncode != 0
            assert guest.check("cat /etc/apt-ostree-test-edit") == "kept\n"

            # a hotfix: /usr writable across reboots; libostree keeps the deployment as it
            # was as the rollback target
            out = guest.check("apt-ostree usroverlay --hotfix", timeout=600)
            assert "stays so across reboots" in out, out
            guest.check("touch /usr/apt-ostree-test-hotfix")
            checksums = [d["checksum"] for d in _deployments(guest)]
            assert checksums.count(first) == 2, checksums
            assert _booted(guest)["unlocked"] == "hotfix"

            guest.reboot()
            # boot 4: still unlocked, the file still there
            assert guest.run("test -e /usr/apt-ostree-test-hotfix").returncode == 0
            assert _booted(guest)["unlocked"] == "hotfix"
            again = guest.run("apt-ostree usroverlay --unchanged-exit-77", timeout=300)
            assert again.returncode == 77 and "already unlocked (hotfix)" in again.output

            # boots 5 and 6 (issue 14): the machine follows an image in the host's registry
            with registry(tmp_path / "registry") as reg:
                _follow_an_image(guest, repo, reg, first, second, versions)
                _encapsulate(repo, second, f"oci:{tmp_path / 'layout'}:image", reg)
                _signed_images(guest, tmp_path / "layout", reg, gpg_test_key, tmp_path)
            assert len(guest.boot_seconds) == 6


def _encapsulate(repo: Path, checksum: str, image: str, reg: Registry) -> None:
    pushed = cli("compose", "container-encapsulate", "--repo", repo, checksum, image, env=reg.env)
    assert pushed.returncode == 0, pushed.stderr


def _follow_an_image(
    guest: vm.VM,
    repo: Path,
    reg: Registry,
    first: str,
    second: str,
    versions: dict[str, str | None],
) -> None:
    """Rebase to the registry's image of the first version, boot it, upgrade by tag to the
    second (only the layers that changed), boot it, then roll back."""
    port = reg.host.rpartition(":")[2]
    image = f"ostree-unverified-registry:{vm.HOST_FROM_GUEST}:{port}/test/os:stable"
    _encapsulate(repo, first, f"docker://{reg.host}/test/os:stable", reg)
    conf = f'[[registry]]\nlocation = "{vm.HOST_FROM_GUEST}:{port}"\ninsecure = true\n'
    guest.check(
        "mkdir -p /etc/containers/registries.conf.d && printf '%s' '"
        + conf
        + "' > /etc/containers/registries.conf.d/apt-ostree-test.conf"
    )
    rebased = guest.check(f"apt-ostree rebase {image}", timeout=1800)
    assert "layers to fetch" in rebased, rebased
    guest.reboot()
    # boot 5: the same commit as from the ostree remote, now from the image
    booted = _booted(guest)
    assert booted["checksum"] == first and booted["container-image-reference"] == image
    assert booted["container-image-reference-digest"].startswith("sha256:")
    assert "Digest: sha256:" in guest.check("apt-ostree status")
    assert guest.check("findmnt -no OPTIONS /usr").startswith("ro")  # no hotfix: a new tree

    _encapsulate(repo, second, f"docker://{reg.host}/test/os:stable", reg)
    check = guest.check("apt-ostree upgrade --check", timeout=600)
    assert f"Update available: {second}" in check, check
    upgraded = guest.check("apt-ostree upgrade", timeout=1200)
    fetched, _, total = next(
        line.split()[:3] for line in upgraded.splitlines() if "layers to fetch" in line
    )
    assert 0 < int(fetched) < int(total) / 2, upgraded
    guest.reboot()
    # boot 6: the second version, from the image's new tag
    booted = _booted(guest)
    assert booted["checksum"] == second and booted["version"] == versions[second]
    assert guest.check("cat /usr/share/apt-ostree-test/marker") == "version two\n"
    guest.check("apt-ostree rollback")
    pending = _deployments(guest)[0]
    assert pending["checksum"] == first and pending["container-image-reference"] == image


def _signed_images(guest: vm.VM, layout: Path, reg: Registry, signer: GpgKey, work: Path) -> None:
    """ostree-image-signed: with Debian 13's skopeo, whose image proxy checks the machine's
    containers-policy.json: a `signedBy` requirement refuses an unsigned image (nothing
    changes) and takes one signed with the key (simple signing, signatures served from a
    lookaside folder on the host)."""
    port = reg.host.rpartition(":")[2]
    guest_host = f"{vm.HOST_FROM_GUEST}:{port}"
    staging = work / "registries.d"
    staging.mkdir()
    (staging / "push.yaml").write_text(
        f"docker:\n  {reg.host}:\n    lookaside-staging: file://{work / 'lookaside'}\n"
    )
    source = f"oci:{layout}:image"
    for name, sign in (("signed", ["--sign-by", signer.fingerprint]), ("unsigned", [])):
        subprocess.run(
            ["skopeo", "--registries-conf", str(reg.registries_conf), "--registries.d",
             str(staging), "--insecure-policy", "copy", "--quiet", *sign, source,
             f"docker://{reg.host}/test/{name}:1"],
            check=True, env={"GNUPGHOME": str(signer.homedir), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    with serve_directory(work / "lookaside") as lookaside:
        requirement = {
            "type": "signedBy", "keyType": "GPGKeys", "keyPath": IMAGE_KEY,
            # the signature names the registry as the host pushed to it
            "signedIdentity": {"type": "remapIdentity", "prefix": guest_host,
                               "signedPrefix": reg.host},
        }  # fmt: skip
        policy = {
            "default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {f"{guest_host}/test": [requirement]}},
        }
        registries_d = f"docker:\n  {guest_host}:\n    lookaside: http://{vm.HOST_FROM_GUEST}:{lookaside.port}/\n"
        for path, data in (
            (IMAGE_KEY, signer.keyring.read_bytes()),
            ("/etc/containers/policy.json", json.dumps(policy).encode()),
            ("/etc/containers/registries.d/apt-ostree-test.yaml", registries_d.encode()),
        ):
            encoded = base64.b64encode(data).decode()
            guest.check(f"mkdir -p {Path(path).parent} && echo {encoded} | base64 -d > {path}")
        before = _deployments(guest)
        refused = guest.run(
            f"apt-ostree rebase ostree-image-signed:docker://{guest_host}/test/unsigned:1",
            timeout=600,
        )
        assert refused.returncode == 1, refused.output
        assert "A signature was required" in refused.output, refused.output
        assert _deployments(guest) == before
        signed = f"ostree-image-signed:docker://{guest_host}/test/signed:1"
        guest.check(f"apt-ostree rebase {signed}", timeout=900)
        staged = _deployments(guest)[0]
        assert staged["container-image-reference"] == signed and staged["staged"]
