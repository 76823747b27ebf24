"""The client's image verbs on folder sysroots, run as a user runs them.

Commits come from `apt-ostree compose tree` (tests/support/images.py), served by a loopback
HTTP server from a hard-linked copy of the session's repository, so each test can move refs
and break things. `ostree admin status` and `ostree fsck` are the independent checkers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.images import remove_sysroot
from tests.support.sysroots import APT_OSTREE, Machine, Served, cli, init, ok, ostree

pytestmark = [pytest.mark.slow]

# ---------------------------------------------------------------------------------------------
# init and status


def test_init_deploys_and_status_shows_it(served: Served, tmp_path: Path) -> None:
    m = init(tmp_path / "sysroot", served)
    try:
        [d] = m.status()
        assert d["version"] == "1.1"
        assert d["checksum"] == served.images.checksum("1.1")
        assert d["origin"] == "origin:test/os"
        assert d["osname"] == "test"
        assert d["booted"] is False and d["staged"] is False
        for key in (
            "id",
            "base-checksum",
            "timestamp",
            "pinned",
            "packages",
            "requested-packages",
            "requested-local-packages",
            "base-removals",
            "requested-base-removals",
            "base-local-replacements",
            "requested-base-local-replacements",
            "unlocked",
        ):
            assert key in d
        human = ok("status", *m.args()).stdout
        assert "origin:test/os [default]" in human
        assert "Version: 1.1" in human and served.images.checksum("1.1") in human
        verbose = ok("status", *m.args(), "-v").stdout
        assert "KernelArgs: console=ttyS0" in verbose
        # libostree agrees, and the deployment holds the composed tree
        admin = ostree("admin", "status", f"--sysroot={m.path}")
        assert served.images.checksum("1.1") in admin
        root = next(m.path.glob("ostree/deploy/test/deploy/*.0"))
        assert (root / "usr/bin/hello-aot").read_text() == "#!/bin/sh\necho hello 1.1\n"
        assert (root / "etc/hello-aot.conf").exists()  # /etc made from /usr/etc
    finally:
        remove_sysroot(m.path)


def test_init_bad_input_leaves_nothing(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "sysroot"
    result = cli(
        "init", "--sysroot", path, "--os", "test", "--remote", f"origin={served.url}",
        "--no-gpg-verify", "test/nope",
    )  # fmt: skip
    assert result.returncode == 1
    assert "test/nope" in result.error_line
    assert not path.exists()
    result = cli("init", "--sysroot", path, "--os", "test", "--remote", "origin", "test/os")
    assert result.returncode == 2


def test_status_without_sysroot_on_a_machine_not_booted_from_ostree() -> None:
    # an empty /run (bubblewrap): no /run/ostree-booted, whatever this machine is
    argv = ["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/run", "--",
            sys.executable, "-m", "apt_ostree.cli.main", "status"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "not booted from OSTree" in result.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------
# upgrade


def test_check_and_preview_report_without_deploying(machine: Machine) -> None:
    before = machine.snapshot()
    result = ok("upgrade", *machine.args(), "--check")
    assert "Update available" in result.stdout and "1.1" in result.stdout
    preview = ok("upgrade", *machine.args(), "--preview").stdout
    assert "hello-aot 1.0 -> 1.1" in preview
    assert "legacy-aot" in preview.split("Removed:")[1]
    assert "extra-aot" in preview.split("Added:")[1]
    assert machine.snapshot()[0] == before[0]  # no new deployment
    assert machine.versions() == ["1.0"]


def test_upgrade_deploys_keeps_rollback_and_then_reports_nothing(machine: Machine) -> None:
    result = ok("upgrade", *machine.args())
    assert "Deployed" in result.stdout and "hello-aot 1.0 -> 1.1" in result.stdout
    assert "receiving objects" in result.stderr or "received" in result.stderr
    assert machine.versions() == ["1.1", "1.0"]
    again = ok("upgrade", *machine.args())
    assert "No upgrade available" in again.stdout
    assert cli("upgrade", *machine.args(), "--unchanged-exit-77").returncode == 77
    assert cli("upgrade", *machine.args(), "--check").returncode == 77
    assert cli("upgrade", *machine.args(), "--preview").returncode == 77
    machine.fsck()


def test_download_only_then_cache_only_without_network(machine: Machine) -> None:
    ok("upgrade", *machine.args(), "--download-only")
    assert machine.versions() == ["1.0"]
    machine.served.server.stop()
    result = ok("upgrade", *machine.args(), "--cache-only")
    assert "Deployed" in result.stdout
    assert machine.versions() == ["1.1", "1.0"]


def test_cache_only_with_nothing_downloaded_fails(machine: Machine) -> None:
    before = machine.snapshot()
    ok("upgrade", *machine.args(), "--check")  # fetches the commit object only
    result = cli("upgrade", *machine.args(), "--cache-only")
    assert result.returncode == 1
    assert "--download-only" in result.error_line
    assert machine.snapshot() == before


def test_upgrade_refuses_an_older_commit(machine: Machine) -> None:
    ok("upgrade", *machine.args())
    machine.served.set_ref("1.0")
    before = machine.snapshot()
    result = cli("upgrade", *machine.args())
    assert result.returncode == 1
    assert "older" in result.error_line and "--allow-downgrade" in result.error_line
    assert machine.snapshot() == before
    ok("upgrade", *machine.args(), "--allow-downgrade")
    assert machine.versions()[0] == "1.0"


def test_upgrade_uses_static_deltas(machine: Machine) -> None:
    served = machine.served
    ostree(
        "static-delta", "generate", f"--repo={served.repo}",
        f"--from={served.images.checksum('1.0')}", f"--to={served.images.checksum('1.1')}",
    )  # fmt: skip
    ostree("summary", "-u", f"--repo={served.repo}")
    served.server.reset_stats()
    result = ok("upgrade", *machine.args())
    assert "delta parts" in result.stderr
    paths = served.server.stats.paths
    assert any("/deltas/" in p for p in paths)
    assert not any(p.endswith(".filez") for p in paths)
    machine.fsck()


# ---------------------------------------------------------------------------------------------
# deploy, rebase, rollback


def test_deploy_version_pins_and_upgrade_says_so(machine: Machine) -> None:
    m, images = machine, machine.served.images
    ok("upgrade", *m.args())
    result = ok("deploy", *m.args(), "1.0")
    assert "hello-aot 1.1 -> 1.0" in result.stdout
    [new, old] = m.status()
    assert new["version"] == "1.0" and old["version"] == "1.1"
    assert new["override-commit"] == images.checksum("1.0")
    assert "Pinned to" in ok("status", *m.args()).stdout
    pinned = cli("upgrade", *m.args(), "--unchanged-exit-77")
    assert pinned.returncode == 77 and "Pinned" in pinned.stderr
    ok("deploy", *m.args(), f"revision={images.checksum('1.1')}")
    assert m.versions()[0] == "1.1"
    before = m.snapshot()
    bad = cli("deploy", *m.args(), "9.9")
    assert bad.returncode == 1 and "version 9.9 not found" in bad.error_line
    assert cli("deploy", *m.args(), "revision=abc").returncode == 2
    assert m.snapshot() == before
    # rebase back onto the ref unpins
    ok("rebase", *m.args(), "origin:test/os")
    assert m.status()[0]["override-commit"] is None


def test_rebase_to_another_ref_and_bad_refs(machine: Machine) -> None:
    m = machine
    before = m.snapshot()
    bad = cli("rebase", *m.args(), "origin:test/nope")
    assert bad.returncode == 1 and "test/nope" in bad.error_line
    bad = cli("rebase", *m.args(), "elsewhere:test/os")
    assert bad.returncode == 1 and "unknown remote 'elsewhere'" in bad.error_line
    assert m.snapshot() == before
    result = ok("rebase", *m.args(), "origin:test/other")
    assert "other-aot" in result.stdout
    [new, old] = m.status()
    assert new["origin"] == "origin:test/other" and new["version"] == "2.0"
    assert old["origin"] == "origin:test/os"
    # pin with REMOTE:REF:CHECKSUM
    pin = m.served.images.checksum("1.1")
    ok("rebase", *m.args(), f"origin:test/os:{pin}")
    assert m.status()[0]["override-commit"] == pin


def test_rollback_is_a_reorder_and_needs_two_deployments(machine: Machine) -> None:
    before = machine.snapshot()
    bad = cli("rollback", *machine.args())
    assert bad.returncode == 1 and "no rollback deployment" in bad.error_line
    assert machine.snapshot() == before
    ok("upgrade", *machine.args())
    dirs = machine.snapshot()[2]
    result = ok("rollback", *machine.args())
    assert "hello-aot 1.1 -> 1.0" in result.stdout
    assert machine.versions() == ["1.0", "1.1"]
    assert machine.snapshot()[2] == dirs  # no deployment written or removed
    admin = ostree("admin", "status", f"--sysroot={machine.path}")
    first = next(line for line in admin.splitlines() if line.strip().startswith("test "))
    assert machine.served.images.checksum("1.0") in first  # libostree's default is 1.0 now
    ok("rollback", *machine.args())
    assert machine.versions() == ["1.1", "1.0"]


# ---------------------------------------------------------------------------------------------
# kargs, cleanup, finalize


def test_kargs(machine: Machine) -> None:
    assert ok("kargs", *machine.args()).stdout.strip() == "console=ttyS0"
    ok("kargs", *machine.args(), "--append", "quiet", "--append", "loglevel=3")
    assert machine.status()[0]["kernel-arguments"] == ["console=ttyS0", "quiet", "loglevel=3"]
    assert len(machine.status()) == 2  # a new deployment: the old arguments stay for rollback
    ok("kargs", *machine.args(), "--replace", "loglevel=3=7", "--delete", "quiet")
    assert machine.status()[0]["kernel-arguments"] == ["console=ttyS0", "loglevel=7"]
    unchanged = cli(
        "kargs", *machine.args(), "--append-if-missing", "console=ttyS0",
        "--delete-if-present", "nosuch", "--unchanged-exit-77",
    )  # fmt: skip
    assert unchanged.returncode == 77
    before = machine.snapshot()
    bad = cli("kargs", *machine.args(), "--delete", "nosuch")
    assert bad.returncode == 1 and "nosuch" in bad.error_line
    assert machine.snapshot() == before
    entries = "".join(p.read_text() for p in (machine.path / "boot/loader/entries").glob("*"))
    assert "loglevel=7" in entries
    ok("kargs", *machine.args(), "--deploy-index", "1", "--append", "x=1")
    assert machine.status()[0]["kernel-arguments"] == [
        "console=ttyS0",
        "quiet",
        "loglevel=3",
        "x=1",
    ]
    assert cli("kargs", *machine.args(), "--deploy-index", "7", "--append", "y").returncode == 2


def test_cleanup_rollback_and_base(machine: Machine) -> None:
    ok("upgrade", *machine.args())
    assert len(machine.status()) == 2
    result = ok("cleanup", *machine.args(), "-r")
    assert "Removed rollback deployment" in result.stdout
    assert machine.versions() == ["1.1"]
    assert len([d for d in machine.snapshot()[2] if not d.endswith(".origin")]) == 1
    ok("cleanup", *machine.args(), "-b", "-m")
    machine.fsck()
    assert cli("cleanup", *machine.args()).returncode == 2
    assert cli("cleanup", *machine.args(), "-p", "--unchanged-exit-77").returncode == 77


def test_finalize_deployment_needs_a_staged_one(machine: Machine) -> None:
    result = cli("finalize-deployment", *machine.args())
    assert result.returncode == 1 and "no staged deployment" in result.error_line


# ---------------------------------------------------------------------------------------------
# /etc


def test_local_etc_changes_are_carried_to_the_new_deployment(machine: Machine) -> None:
    [root] = machine.path.glob("ostree/deploy/test/deploy/*.0")
    (root / "etc/hello-aot.conf").write_text("greeting=local edit\n")
    (root / "etc/local-only.conf").write_text("mine\n")
    ok("upgrade", *machine.args())
    checksum = machine.status()[0]["checksum"]
    [new] = [p for p in machine.path.glob(f"ostree/deploy/test/deploy/{checksum}.*") if p.is_dir()]
    assert (new / "etc/hello-aot.conf").read_text() == "greeting=local edit\n"
    assert (new / "etc/local-only.conf").read_text() == "mine\n"
    # a file the admin did not touch follows the image
    assert (new / "usr/bin/hello-aot").read_text().endswith("hello 1.1\n")


# ---------------------------------------------------------------------------------------------
# db


def test_db_diff_list_version(machine: Machine) -> None:
    ok("upgrade", *machine.args())
    diff = ok("db", "diff", *machine.args()).stdout
    assert "hello-aot 1.0 -> 1.1" in diff
    c10, c11 = machine.served.images.checksum("1.0"), machine.served.images.checksum("1.1")
    doc = json.loads(ok("db", "diff", *machine.args(), c11, c10, "--json").stdout)
    assert doc["from"] == c11 and doc["to"] == c10
    assert [c["name"] for c in doc["downgraded"]] == ["hello-aot"]
    assert [c["name"] for c in doc["added"]] == ["legacy-aot"]
    assert [c["name"] for c in doc["removed"]] == ["extra-aot"]
    listing = ok("db", "list", *machine.args(), "origin:test/os").stdout
    assert "hello-aot 1.1" in listing and "dpkg " in listing
    assert "dpkg database: dpkg" in ok("db", "version", *machine.args()).stdout
    bad = cli("db", "diff", *machine.args(), "nosuchref", c10)
    assert bad.returncode == 1 and "nosuchref" in bad.error_line


# ---------------------------------------------------------------------------------------------
# verification and faults


def test_wrong_signing_key_is_refused(machine: Machine, tmp_path: Path) -> None:
    m = machine
    # the remote now trusts only another key
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    other = tmp_path / "other.gpg"
    try:
        subprocess.run(
            ["gpg", "--batch", "--homedir", str(home), "--quick-gen-key", "--passphrase",
             "", "other <o@example.invalid>"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            ["gpg", "--homedir", str(home), "--export", "-o", str(other)],
            check=True,
            capture_output=True,
        )
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    repo = m.path / "ostree/repo"
    (repo / "origin.trustedkeys.gpg").write_bytes(other.read_bytes())
    before = m.snapshot()
    bad = cli("upgrade", *m.args())
    assert bad.returncode == 1
    assert "signature" in bad.error_line.lower() or "gpg" in bad.error_line.lower()
    assert m.snapshot() == before
    m.fsck()


def test_unsigned_commit_is_refused(machine: Machine) -> None:
    served = machine.served
    ostree(
        "commit", f"--repo={served.repo}", "-b", "test/os", "--tree=ref=test/os",
        "--add-metadata-string=version=1.2", "-s", "unsigned",
    )  # fmt: skip
    ostree("summary", "-u", f"--repo={served.repo}")
    before = machine.snapshot()
    bad = cli("upgrade", *machine.args())
    assert bad.returncode == 1 and "signature" in bad.error_line.lower()
    assert machine.snapshot() == before
    machine.fsck()


def test_tampered_object_is_refused(machine: Machine, tmp_path: Path) -> None:
    served = machine.served
    extra = tmp_path / "extra"
    (extra / "usr/share/extra").mkdir(parents=True)
    (extra / "usr/share/extra/new-file").write_text("content the client does not have\n" * 50)
    checksum = ostree(
        "commit", f"--repo={served.repo}", "-b", "test/os", "--tree=ref=test/os",
        f"--tree=dir={extra}", "--add-metadata-string=version=1.2",
        f"--gpg-sign={served.images.gpg_key.fingerprint}",
        f"--gpg-homedir={served.images.gpg_key.homedir}",
    ).strip()  # fmt: skip
    ostree("summary", "-u", f"--repo={served.repo}")
    assert checksum
    # corrupt the new file's object on the server (a copy: the object files are hard links)
    line = ostree("ls", f"--repo={served.repo}", "-C", "test/os", "/usr/share/extra/new-file")
    obj = line.split()[4]
    path = served.repo / "objects" / obj[:2] / f"{obj[2:]}.filez"
    data = bytearray(path.read_bytes())
    path.unlink()
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    before = machine.snapshot()
    bad = cli("upgrade", *machine.args())
    assert bad.returncode == 1
    assert machine.snapshot() == before
    machine.fsck()


def test_unreachable_server(machine: Machine) -> None:
    machine.served.server.stop()
    before = machine.snapshot()
    bad = cli("upgrade", *machine.args())
    assert bad.returncode == 1 and "cannot pull test/os from origin" in bad.error_line
    assert machine.snapshot() == before


@pytest.mark.parametrize("kill_after", [0.5, 1.5, 2.5, 4.0])
def test_killed_upgrade_leaves_deployments_intact(machine: Machine, kill_after: float) -> None:
    """SIGKILL at several points of an upgrade (pull, deploy): the old deployment stays, the
    sysroot checks clean, and the next upgrade succeeds."""
    machine.served.server.throttle(30_000)  # the update's ~75 kB take a few seconds
    proc = subprocess.Popen(
        [*APT_OSTREE, "upgrade", *machine.args()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(kill_after)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    admin = ostree("admin", "status", f"--sysroot={machine.path}")
    assert machine.served.images.checksum("1.0") in admin
    machine.fsck()
    machine.served.server.throttle(None)
    ok("upgrade", *machine.args())
    assert machine.versions()[:2] == ["1.1", "1.0"]
    machine.fsck()
