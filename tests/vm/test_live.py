"""Scenarios 4 and 6 of issue 6 on a real boot of an image with apt-ostree inside, through
apt-ostreed (the CLI without --sysroot on a booted machine goes over the system bus):

- 4: `install PKG` then `apply-live`: the package's command works at once, `status` shows the
  live commit, /usr stays read-only for the system; after a reboot the same (pending, now
  booted) deployment runs, the command still works, and no live state is left;
- 6: `usroverlay`: /usr writable (a file written), `status` says unlocked; after a reboot
  /usr is read-only again and the file is gone.

Then, on the same boot: an uninstall is refused live without --allow-replacement and applied
with it, and `install --apply-live` brings the package back (a diff from the live commit).

One boot session, in that order: apply-live's transient unlock and usroverlay's development
unlock exclude each other within one boot, so scenario 6 runs after the first reboot.
`usroverlay --hotfix` (unlocked across reboots) ends test_boot.py's session.
"""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path

import pytest

from tests.support import vm
from tests.support.aptrepo import AptRepo
from tests.support.debs import DebSpec, File
from tests.support.httpd import serve_directory

pytestmark = [pytest.mark.vm, pytest.mark.network, pytest.mark.slow]

PACKAGE = DebSpec(
    "hello-live",
    files={
        "/usr/bin/hello-live": File("#!/bin/sh\necho hello from a live package\n", 0o755),
        "/usr/share/hello-live/data": "data\n",
    },
)
COMMAND = "hello-live"
SAYS = "hello from a live package\n"
INSTALL_TIMEOUT = 1200  # layering under TCG: resolution, dpkg in bubblewrap, commit, staging


def put(guest: vm.VM, path: str, data: bytes) -> None:
    encoded = base64.b64encode(data).decode()
    guest.check(f"mkdir -p {shlex.quote(str(Path(path).parent))}")
    guest.check(f"echo {encoded} | base64 -d > {shlex.quote(path)}")


def point_apt_at(guest: vm.VM, apt: AptRepo, url: str) -> None:
    """The guest's only apt source is the test repository (the image's own Debian sources
    would be fetched over the network under TCG, for nothing)."""
    guest.check(
        "mkdir -p /etc/apt/disabled && for f in /etc/apt/sources.list"
        ' /etc/apt/sources.list.d/*; do [ -e "$f" ] && mv "$f" /etc/apt/disabled/; done;'
        " true"
    )
    put(guest, "/etc/apt/keyrings/apt-ostree-test.gpg", apt.keyring.read_bytes())
    source = apt.deb822_source(url, signed_by=Path("/etc/apt/keyrings/apt-ostree-test.gpg"))
    put(guest, "/etc/apt/sources.list.d/apt-ostree-test.sources", source.encode())


def status(guest: vm.VM) -> list[dict[str, object]]:
    deployments: list[dict[str, object]] = json.loads(
        guest.check("apt-ostree status --json", timeout=300)
    )["deployments"]
    return deployments


def booted(guest: vm.VM) -> dict[str, object]:
    [d] = [d for d in status(guest) if d["booted"]]
    return d


def test_apply_live_then_reboot_then_usroverlay(apt_ostree_image: Path, tmp_path: Path) -> None:
    apt = AptRepo(tmp_path / "apt")
    apt.add(PACKAGE)
    apt.publish()
    with serve_directory(apt.path) as server, vm.boot(apt_ostree_image, tmp_path / "vm") as guest:
        url = f"http://{vm.HOST_FROM_GUEST}:{server.port}/"
        point_apt_at(guest, apt, url)
        first = booted(guest)
        assert first["live-commit"] is None and first["unlocked"] == "none"

        # refusals on the booted system, nothing changed
        nothing = guest.run("apt-ostree apply-live", timeout=300)
        assert nothing.returncode == 1, nothing.output
        assert "error: no pending deployment to apply" in nothing.output

        # scenario 4
        guest.check(f"apt-ostree install {PACKAGE.name}", timeout=INSTALL_TIMEOUT)
        assert guest.run(f"command -v {COMMAND}").returncode != 0  # not live yet
        pending = status(guest)[0]
        assert pending["staged"] is True and pending["requested-packages"] == [PACKAGE.name]
        applied = guest.check("apt-ostree apply-live", timeout=600)
        assert f"Applied {pending['checksum']} live" in applied, applied
        assert guest.check(COMMAND) == SAYS
        assert guest.check(f"cat /usr/share/{PACKAGE.name}/data") == "data\n"
        assert guest.check(f"dpkg -s {PACKAGE.name} | grep ^Status") == (
            "Status: install ok installed\n"
        )
        now = booted(guest)
        assert now["checksum"] == first["checksum"]
        assert now["live-commit"] == pending["checksum"] and now["live-replaced"] is False
        assert now["unlocked"] == "transient"
        assert f"LiveCommit: {pending['checksum']}" in guest.check("apt-ostree status")
        # the transient overlay is read-only for everyone but apply-live
        usr = guest.run("touch /usr/apt-ostree-test-written")
        assert usr.returncode != 0 and "Read-only file system" in usr.output
        again = guest.run("apt-ostree apply-live --unchanged-exit-77", timeout=300)
        assert again.returncode == 77, again.output

        guest.reboot()
        after = booted(guest)
        assert after["checksum"] == pending["checksum"], after
        assert after["live-commit"] is None and after["unlocked"] == "none"
        assert guest.check(COMMAND) == SAYS
        assert "LiveCommit" not in guest.check("apt-ostree status")

        # scenario 6
        guest.check("apt-ostree usroverlay", timeout=300)
        guest.check("touch /usr/apt-ostree-test-written && test -f /usr/apt-ostree-test-written")
        assert booted(guest)["unlocked"] == "development"
        assert "Unlocked: development" in guest.check("apt-ostree status")
        guest.reboot()
        assert guest.run("test -e /usr/apt-ostree-test-written").returncode == 1
        usr = guest.run("touch /usr/apt-ostree-test-written")
        assert usr.returncode != 0 and "Read-only file system" in usr.output
        final = booted(guest)
        assert final["unlocked"] == "none" and final["checksum"] == pending["checksum"]

        # the first boot's apply-live left its ref: the next change drops it (no live commit
        # on this boot), so the old commit can be pruned
        refs = "ostree refs --repo=/sysroot/ostree/repo"
        assert "aptostree/live-apply" in guest.check(refs)
        # a removal needs --allow-replacement; install --apply-live diffs from the live commit
        guest.check(f"apt-ostree uninstall {PACKAGE.name}", timeout=INSTALL_TIMEOUT)
        assert "aptostree/live-apply" not in guest.check(refs)
        refused = guest.run("apt-ostree apply-live", timeout=300)
        assert refused.returncode == 1, refused.output
        assert f"packages would change or go: {PACKAGE.name} 1.0 removed" in refused.output
        assert guest.check(COMMAND) == SAYS  # nothing changed
        guest.check("apt-ostree apply-live --allow-replacement", timeout=600)
        assert guest.run(f"command -v {COMMAND}").returncode != 0
        assert guest.run(f"test -e /usr/share/{PACKAGE.name}").returncode == 1
        assert booted(guest)["live-replaced"] is True
        guest.check(f"apt-ostree install --apply-live {PACKAGE.name}", timeout=INSTALL_TIMEOUT)
        assert guest.check(COMMAND) == SAYS
        assert booted(guest)["live-commit"] == status(guest)[0]["checksum"]
