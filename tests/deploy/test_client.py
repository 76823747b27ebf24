"""The client's image verbs on folder sysroots.

The verbs' logic is checked through the typed core (`execute`, in this process: `Machine.run`
and `Machine.change`), its results by their types; what a user sees (output lines, progress
on stderr, exit codes 0/1/2/77, one `error:` line) by a few runs of the CLI per verb, as a
user runs it. Commits come from `apt-ostree compose tree` (tests/support/images.py), served
by a loopback HTTP server from a hard-linked copy of the session's repository, so each test
can move refs and break things. `ostree admin status`, `ostree fsck` and `Machine.snapshot()`
are the independent checkers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from apt_ostree.errors import DeploymentError, RepoError, UsageError
from apt_ostree.system.requests import (
    Cleanup,
    DbDiff,
    DbList,
    Deploy,
    FinalizeDeployment,
    KernelArgs,
    Rebase,
    Rollback,
    Upgrade,
)
from apt_ostree.system.results import CommitDiff, Outcome, PackageChange, PackageDiff, PackageList
from tests.support.images import HELLO_CHANGES, remove_sysroot
from tests.support.sysroots import (
    APT_OSTREE,
    Machine,
    Recorder,
    Served,
    cli,
    init_args,
    ok,
    ostree,
)

pytestmark = [pytest.mark.slow]

Change = tuple[str, str | None, str | None]

# what 1.0 -> 1.1 changes (tests/support/images.py)
UPGRADE_1_1: dict[str, list[Change]] = {
    "upgraded": [("hello-aot", "1.0", "1.1")],
    "downgraded": [],
    "added": [("extra-aot", None, "1.0")],
    "removed": [("legacy-aot", "1.0", None)],
}
BACK_TO_1_0: dict[str, list[Change]] = {
    "upgraded": [],
    "downgraded": [("hello-aot", "1.1", "1.0")],
    "added": [("legacy-aot", None, "1.0")],
    "removed": [("extra-aot", "1.0", None)],
}


def changes(cs: Sequence[PackageChange]) -> list[Change]:
    return [(c.name, c.old_version, c.new_version) for c in cs]


def diff_of(outcome: Outcome) -> dict[str, list[Change]]:
    diff: PackageDiff | None = outcome.diff
    assert diff is not None, outcome
    return {
        "upgraded": changes(diff.upgraded),
        "downgraded": changes(diff.downgraded),
        "added": changes(diff.added),
        "removed": changes(diff.removed),
    }


def checksum(m: Machine, version: str) -> str:
    return m.served.images.checksum(version)


# ---------------------------------------------------------------------------------------------
# init and status


def test_cli_init_deploys_and_status_shows_it(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "sysroot"
    result = ok(*init_args(path, served))
    m = Machine(path, served)
    try:
        c11 = checksum(m, "1.1")
        assert result.stdout.splitlines() == [f"Deployed {c11} (version 1.1) in {path}"]
        assert "==> Pulling test/os from origin" in result.stderr  # progress on stderr
        [d] = m.deployments()
        assert d.version == "1.1" and d.checksum == c11
        assert d.origin == "origin:test/os" and d.osname == "test"
        assert d.booted is False and d.staged is False
        assert d.kernel_arguments == ("console=ttyS0",)
        # status --json prints the core's wire form, with rpm-ostree's keys
        doc = json.loads(ok("status", *m.args(), "--json").stdout)
        assert doc["deployments"] == m.status()
        [wire] = doc["deployments"]
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
            assert key in wire
        human = ok("status", *m.args()).stdout
        assert "origin:test/os [default]" in human
        assert "Version: 1.1" in human and c11 in human
        verbose = ok("status", *m.args(), "-v").stdout
        assert "KernelArgs: console=ttyS0" in verbose
        # libostree agrees, and the deployment holds the composed tree
        admin = ostree("admin", "status", f"--sysroot={m.path}")
        assert c11 in admin
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
    c11 = checksum(machine, "1.1")
    before = machine.snapshot()
    check = machine.change(Upgrade(check=True))
    assert check.changed and check.lines == (f"Update available: {c11} (version 1.1)",)
    assert check.checksum == c11 and check.version == "1.1" and check.diff is None
    preview = machine.change(Upgrade(preview=True))
    assert preview.changed and preview.lines == check.lines
    assert preview.checksum == c11 and preview.version == "1.1"
    assert diff_of(preview) == UPGRADE_1_1
    assert machine.snapshot()[0] == before[0]  # no new deployment
    assert machine.versions() == ["1.0"]


def test_upgrade_deploys_keeps_rollback_and_then_reports_nothing(machine: Machine) -> None:
    c11 = checksum(machine, "1.1")
    progress = Recorder()
    outcome = machine.change(Upgrade(), progress)
    assert outcome.changed and outcome.lines == (f"Deployed {c11} (version 1.1)",)
    assert outcome.checksum == c11 and outcome.version == "1.1"
    assert diff_of(outcome) == UPGRADE_1_1
    assert any("receiving objects" in t or "received" in t for t in progress.lives)
    assert machine.versions() == ["1.1", "1.0"]
    for request in (Upgrade(), Upgrade(check=True), Upgrade(preview=True)):
        again = machine.change(request)
        assert not again.changed and again.lines == ("No upgrade available.",)
    machine.fsck()


def test_download_only_then_cache_only_without_network(machine: Machine) -> None:
    c11 = checksum(machine, "1.1")
    downloaded = machine.change(Upgrade(download_only=True))
    assert downloaded.changed and downloaded.lines == (f"Downloaded {c11} (version 1.1)",)
    assert machine.versions() == ["1.0"]
    machine.served.server.stop()
    deployed = machine.change(Upgrade(cache_only=True))
    assert deployed.changed and deployed.lines == (f"Deployed {c11} (version 1.1)",)
    assert machine.versions() == ["1.1", "1.0"]
    with pytest.raises(UsageError, match="exclude each other"):
        Upgrade(cache_only=True, download_only=True)


def test_cache_only_with_nothing_downloaded_fails(machine: Machine) -> None:
    before = machine.snapshot()
    machine.change(Upgrade(check=True))  # fetches the commit object only
    with pytest.raises(DeploymentError, match="--download-only"):
        machine.run(Upgrade(cache_only=True))
    assert machine.snapshot() == before


def test_upgrade_refuses_an_older_commit(machine: Machine) -> None:
    machine.change(Upgrade())
    machine.served.set_ref("1.0")
    before = machine.snapshot()
    with pytest.raises(DeploymentError, match="older.*--allow-downgrade"):
        machine.run(Upgrade())
    assert machine.snapshot() == before
    downgraded = machine.change(Upgrade(allow_downgrade=True))
    assert downgraded.checksum == checksum(machine, "1.0")
    assert machine.versions()[0] == "1.0"


def test_upgrade_uses_static_deltas(machine: Machine) -> None:
    served = machine.served
    ostree(
        "static-delta", "generate", f"--repo={served.repo}",
        f"--from={served.images.checksum('1.0')}", f"--to={served.images.checksum('1.1')}",
    )  # fmt: skip
    ostree("summary", "-u", f"--repo={served.repo}")
    served.server.reset_stats()
    progress = Recorder()
    machine.change(Upgrade(), progress)
    assert any("delta parts" in t for t in progress.lives)
    paths = served.server.stats.paths
    assert any("/deltas/" in p for p in paths)
    assert not any(p.endswith(".filez") for p in paths)
    machine.fsck()


def test_cli_upgrade_output_progress_and_exit_codes(machine: Machine) -> None:
    m, c11 = machine, checksum(machine, "1.1")
    check = ok("upgrade", *m.args(), "--check")
    assert check.stdout == f"Update available: {c11} (version 1.1)\n"
    assert "==> Checking origin:test/os for updates" in check.stderr
    preview = ok("upgrade", *m.args(), "--preview")
    assert preview.stdout.splitlines() == [
        f"Update available: {c11} (version 1.1)",
        "Upgraded:",
        "  hello-aot 1.0 -> 1.1",
        "Removed:",
        "  legacy-aot-1.0",
        "Added:",
        "  extra-aot-1.0",
    ]
    result = ok("upgrade", *m.args())
    lines = result.stdout.splitlines()
    assert lines[0] == f"Deployed {c11} (version 1.1)" and "  hello-aot 1.0 -> 1.1" in lines
    assert "receiving objects" in result.stderr or "received" in result.stderr
    assert f"==> Deploying {c11[:12]}" in result.stderr
    assert m.versions() == ["1.1", "1.0"]
    unchanged = cli("upgrade", *m.args(), "--unchanged-exit-77")
    assert unchanged.returncode == 77
    assert unchanged.stdout == "" and "No upgrade available." in unchanged.stderr
    assert cli("upgrade", *m.args(), "--check").returncode == 77
    assert cli("upgrade", *m.args(), "--preview").returncode == 77
    usage = cli("upgrade", *m.args(), "--cache-only", "--download-only")
    assert usage.returncode == 2 and "exclude each other" in usage.error_line
    m.served.set_ref("1.0")
    older = cli("upgrade", *m.args())
    assert older.returncode == 1
    assert "older" in older.error_line and "--allow-downgrade" in older.error_line


# ---------------------------------------------------------------------------------------------
# deploy, rebase, rollback


def test_deploy_version_pins_and_upgrade_says_so(machine: Machine) -> None:
    m, c10, c11 = machine, checksum(machine, "1.0"), checksum(machine, "1.1")
    m.change(Upgrade())
    deployed = m.change(Deploy(revision="1.0"))
    assert deployed.changed and deployed.lines == (f"Deployed {c10} (version 1.0)",)
    assert deployed.checksum == c10 and deployed.version == "1.0"
    assert diff_of(deployed) == BACK_TO_1_0
    [new, old] = m.deployments()
    assert new.version == "1.0" and old.version == "1.1"
    assert new.override_commit == c10
    pinned = m.change(Upgrade())
    assert not pinned.changed and pinned.lines[0].startswith(f"Pinned to {c10}")
    again = m.change(Deploy(revision="1.0"))
    assert not again.changed and again.lines == (f"Already deployed: {c10}",)
    m.change(Deploy(revision=f"revision={c11}"))
    assert m.versions()[0] == "1.1"
    before = m.snapshot()
    with pytest.raises(DeploymentError, match="version 9.9 not found"):
        m.run(Deploy(revision="9.9"))
    with pytest.raises(UsageError, match="revision=abc: expected a 64-character checksum"):
        m.run(Deploy(revision="revision=abc"))
    assert m.snapshot() == before
    # rebase back onto the ref unpins
    m.change(Rebase(refspec="origin:test/os"))
    assert m.deployments()[0].override_commit is None


def test_rebase_to_another_ref_and_bad_refs(machine: Machine) -> None:
    m = machine
    before = m.snapshot()
    with pytest.raises(RepoError, match="test/nope"):
        m.run(Rebase(refspec="origin:test/nope"))
    with pytest.raises(DeploymentError, match="unknown remote 'elsewhere'"):
        m.run(Rebase(refspec="elsewhere:test/os"))
    assert m.snapshot() == before
    rebased = m.change(Rebase(refspec="origin:test/other"))
    assert rebased.checksum == checksum(m, "2.0") and rebased.version == "2.0"
    assert ("other-aot", None, "2.0") in diff_of(rebased)["added"]
    [new, old] = m.deployments()
    assert new.origin == "origin:test/other" and new.version == "2.0"
    assert old.origin == "origin:test/os"
    # pin with REMOTE:REF:CHECKSUM
    pin = checksum(m, "1.1")
    m.change(Rebase(refspec=f"origin:test/os:{pin}"))
    assert m.deployments()[0].override_commit == pin
    again = m.change(Rebase(refspec=f"origin:test/os:{pin}"))
    assert not again.changed and again.lines == (f"Already on origin:test/os at {pin}",)


def test_rollback_is_a_reorder_and_needs_two_deployments(machine: Machine) -> None:
    c10 = checksum(machine, "1.0")
    before = machine.snapshot()
    with pytest.raises(DeploymentError, match="no rollback deployment"):
        machine.run(Rollback())
    assert machine.snapshot() == before
    machine.change(Upgrade())
    dirs = machine.snapshot()[2]
    rolled = machine.change(Rollback())
    assert rolled.lines == (f"Moving {c10} (version 1.0) to be first deployment",)
    assert diff_of(rolled) == BACK_TO_1_0
    assert machine.versions() == ["1.0", "1.1"]
    assert machine.snapshot()[2] == dirs  # no deployment written or removed
    admin = ostree("admin", "status", f"--sysroot={machine.path}")
    first = next(line for line in admin.splitlines() if line.strip().startswith("test "))
    assert c10 in first  # libostree's default is 1.0 now
    machine.change(Rollback())
    assert machine.versions() == ["1.1", "1.0"]


def test_cli_deploy_and_rebase(machine: Machine) -> None:
    m, c10 = machine, checksum(machine, "1.0")
    m.change(Upgrade())
    result = ok("deploy", *m.args(), "1.0")
    lines = result.stdout.splitlines()
    assert lines[0] == f"Deployed {c10} (version 1.0)" and "  hello-aot 1.1 -> 1.0" in lines
    assert f"Pinned to: {c10}" in ok("status", *m.args()).stdout
    pinned = cli("upgrade", *m.args(), "--unchanged-exit-77")
    assert pinned.returncode == 77 and "Pinned" in pinned.stderr
    bad = cli("deploy", *m.args(), "9.9")
    assert bad.returncode == 1 and "version 9.9 not found" in bad.error_line
    usage = cli("deploy", *m.args(), "revision=abc")
    assert usage.returncode == 2 and "64-character" in usage.error_line
    bad = cli("rebase", *m.args(), "elsewhere:test/os")
    assert bad.returncode == 1 and "unknown remote 'elsewhere'" in bad.error_line
    rebased = ok("rebase", *m.args(), "origin:test/other")
    assert "other-aot" in rebased.stdout.split("Added:")[1]
    assert m.deployments()[0].origin == "origin:test/other"


def test_cli_rollback_cleanup_and_finalize(machine: Machine) -> None:
    m, c10 = machine, checksum(machine, "1.0")
    bad = cli("rollback", *m.args())
    assert bad.returncode == 1 and "no rollback deployment" in bad.error_line
    m.change(Upgrade())
    rolled = ok("rollback", *m.args()).stdout.splitlines()
    assert rolled[0] == f"Moving {c10} (version 1.0) to be first deployment"
    assert "  hello-aot 1.1 -> 1.0" in rolled
    assert m.versions() == ["1.0", "1.1"]
    assert cli("cleanup", *m.args()).returncode == 2
    nothing = cli("cleanup", *m.args(), "-p", "--unchanged-exit-77")
    assert nothing.returncode == 77 and "Nothing to clean up." in nothing.stderr
    cleaned = ok("cleanup", *m.args(), "-r")
    assert cleaned.stdout.startswith("Removed rollback deployment")
    assert m.versions() == ["1.0"]
    # finalize-deployment needs a staged deployment (a folder sysroot never has one)
    with pytest.raises(DeploymentError, match="no staged deployment"):
        m.run(FinalizeDeployment())
    result = cli("finalize-deployment", *m.args())
    assert result.returncode == 1 and "no staged deployment" in result.error_line


# ---------------------------------------------------------------------------------------------
# kargs, cleanup, finalize


def kernel_arguments(m: Machine) -> tuple[str, ...]:
    return m.deployments()[0].kernel_arguments


def test_kargs(machine: Machine) -> None:
    shown = machine.change(KernelArgs())
    assert not shown.changed and shown.lines == ("console=ttyS0",)
    appended = machine.change(KernelArgs(append=("quiet", "loglevel=3")))
    assert appended.changed
    assert appended.lines == ("Kernel arguments updated:", "console=ttyS0 quiet loglevel=3")
    assert kernel_arguments(machine) == ("console=ttyS0", "quiet", "loglevel=3")
    assert len(machine.status()) == 2  # a new deployment: the old arguments stay for rollback
    machine.change(KernelArgs(replace=("loglevel=3=7",), delete=("quiet",)))
    assert kernel_arguments(machine) == ("console=ttyS0", "loglevel=7")
    unchanged = machine.change(
        KernelArgs(append_if_missing=("console=ttyS0",), delete_if_present=("nosuch",))
    )
    assert not unchanged.changed and unchanged.lines == ("console=ttyS0 loglevel=7",)
    before = machine.snapshot()
    with pytest.raises(DeploymentError, match="nosuch"):
        machine.run(KernelArgs(delete=("nosuch",)))
    assert machine.snapshot() == before
    entries = "".join(p.read_text() for p in (machine.path / "boot/loader/entries").glob("*"))
    assert "loglevel=7" in entries
    machine.change(KernelArgs(deploy_index=1, append=("x=1",)))
    assert kernel_arguments(machine) == ("console=ttyS0", "quiet", "loglevel=3", "x=1")
    with pytest.raises(UsageError, match="--deploy-index 7"):
        machine.run(KernelArgs(deploy_index=7, append=("y",)))
    # the command line: what it prints, and its exit codes
    printed = ok("kargs", *machine.args())
    assert printed.stdout == "console=ttyS0 quiet loglevel=3 x=1\n"
    updated = ok("kargs", *machine.args(), "--append", "a", "--append", "b=2").stdout
    assert updated == "Kernel arguments updated:\nconsole=ttyS0 quiet loglevel=3 x=1 a b=2\n"
    assert kernel_arguments(machine) == ("console=ttyS0", "quiet", "loglevel=3", "x=1", "a", "b=2")
    exit_77 = cli(
        "kargs", *machine.args(), "--append-if-missing", "console=ttyS0",
        "--delete-if-present", "nosuch", "--unchanged-exit-77",
    )  # fmt: skip
    assert exit_77.returncode == 77
    bad = cli("kargs", *machine.args(), "--delete", "nosuch")
    assert bad.returncode == 1 and "nosuch" in bad.error_line
    usage = cli("kargs", *machine.args(), "--deploy-index", "7", "--append", "y")
    assert usage.returncode == 2 and "--deploy-index 7" in usage.error_line


def test_cleanup_rollback_and_base(machine: Machine) -> None:
    machine.change(Upgrade())
    [_, rollback] = machine.deployments()
    removed = machine.change(Cleanup(rollback=True))
    assert removed.changed and removed.lines == (f"Removed rollback deployment {rollback.id}",)
    assert machine.versions() == ["1.1"]
    assert len([d for d in machine.snapshot()[2] if not d.endswith(".origin")]) == 1
    pruned = machine.change(Cleanup(base=True, repomd=True))
    assert pruned.lines == ("Pruned unreferenced objects", "Removed cached update metadata")
    machine.fsck()
    with pytest.raises(UsageError, match="at least one of"):
        Cleanup()
    nothing = machine.change(Cleanup(pending=True))
    assert not nothing.changed and nothing.lines == ("Nothing to clean up.",)


# ---------------------------------------------------------------------------------------------
# /etc


def test_local_etc_changes_are_carried_to_the_new_deployment(machine: Machine) -> None:
    [root] = machine.path.glob("ostree/deploy/test/deploy/*.0")
    (root / "etc/hello-aot.conf").write_text("greeting=local edit\n")
    (root / "etc/local-only.conf").write_text("mine\n")
    machine.change(Upgrade())
    new = machine.root()
    assert (new / "etc/hello-aot.conf").read_text() == "greeting=local edit\n"
    assert (new / "etc/local-only.conf").read_text() == "mine\n"
    # a file the admin did not touch follows the image
    assert (new / "usr/bin/hello-aot").read_text().endswith("hello 1.1\n")


# ---------------------------------------------------------------------------------------------
# db


def test_db_diff_list_version(machine: Machine) -> None:
    m, c10, c11 = machine, checksum(machine, "1.0"), checksum(machine, "1.1")
    m.change(Upgrade())
    default = m.run(DbDiff())
    assert isinstance(default, CommitDiff)
    assert (default.from_checksum, default.to_checksum) == (c10, c11)
    assert changes(default.diff.upgraded) == [("hello-aot", "1.0", "1.1")]
    named = m.run(DbDiff(from_rev=c11, to_rev=c10))
    assert isinstance(named, CommitDiff)
    assert named.from_checksum == c11 and named.to_checksum == c10
    assert [c.name for c in named.diff.downgraded] == ["hello-aot"]
    assert [c.name for c in named.diff.added] == ["legacy-aot"]
    assert [c.name for c in named.diff.removed] == ["extra-aot"]
    listing = m.run(DbList(rev="origin:test/os"))
    assert isinstance(listing, PackageList) and listing.checksum == c11
    names = {name: version for name, version, _ in listing.packages}
    assert names["hello-aot"] == "1.1" and "dpkg" in names
    booted = m.run(DbList())  # `db version` too: the default deployment's packages
    assert isinstance(booted, PackageList) and booted.checksum == c11
    with pytest.raises(DeploymentError, match="nosuchref"):
        m.run(DbDiff(from_rev="nosuchref", to_rev=c10))
    # the command line
    diff = ok("db", "diff", *m.args()).stdout.splitlines()
    assert diff[:2] == [f"ostree diff commit from: {c10}", f"ostree diff commit to:   {c11}"]
    assert "  hello-aot 1.0 -> 1.1" in diff
    doc = json.loads(ok("db", "diff", *m.args(), c11, c10, "--json").stdout)
    assert doc["from"] == c11 and doc["to"] == c10
    assert [c["name"] for c in doc["downgraded"]] == ["hello-aot"]
    assert [c["name"] for c in doc["added"]] == ["legacy-aot"]
    assert [c["name"] for c in doc["removed"]] == ["extra-aot"]
    printed = ok("db", "list", *m.args(), "origin:test/os").stdout
    assert printed.startswith(f"ostree commit: {c11}\n")
    assert "hello-aot 1.1" in printed and "dpkg " in printed
    assert "dpkg database: dpkg" in ok("db", "version", *m.args()).stdout
    bad = cli("db", "diff", *m.args(), "nosuchref", c10)
    assert bad.returncode == 1 and "nosuchref" in bad.error_line


def test_db_diff_changelogs_and_a_compose_servers_repository(machine: Machine) -> None:
    """`db diff --changelogs`: the upgraded package's new entries, read from the new commit
    (its doc folder is a link); `--repo`: the same on a repository, no sysroot."""
    m, c10, c11 = machine, checksum(machine, "1.0"), checksum(machine, "1.1")
    m.change(Upgrade())
    result = m.run(DbDiff(changelogs=True))
    assert isinstance(result, CommitDiff)
    assert list(result.changelogs) == ["hello-aot"]  # the only upgrade
    log = result.changelogs["hello-aot"]
    assert log.startswith("hello-aot (1.1) unstable;") and HELLO_CHANGES["1.1"] in log
    assert HELLO_CHANGES["1.0"] not in log  # what the old version had already
    plain = m.run(DbDiff())
    assert isinstance(plain, CommitDiff) and plain.changelogs == {}  # asked for only
    shown = ok("db", "diff", *m.args(), "-c").stdout.splitlines()
    at = shown.index("  hello-aot 1.0 -> 1.1")
    assert shown[at + 1].startswith("    hello-aot (1.1) unstable;")
    assert f"      * {HELLO_CHANGES['1.1']}" in shown
    doc = json.loads(ok("db", "diff", *m.args(), "--changelogs", "--json").stdout)
    assert doc["changelogs"] == {"hello-aot": log}
    assert "changelogs" not in json.loads(ok("db", "diff", *m.args(), "--json").stdout)
    # a compose server's repository: FROM alone is its parent to it
    repo = str(m.served.repo)
    by_ref = json.loads(ok("db", "diff", "--repo", repo, "test/os", "--json").stdout)
    assert (by_ref["from"], by_ref["to"]) == (c10, c11)
    assert [c["name"] for c in by_ref["upgraded"]] == ["hello-aot"]
    named = ok("db", "diff", "--repo", repo, c11, c10).stdout
    assert "Downgraded:\n  hello-aot 1.1 -> 1.0" in named
    listed = ok("db", "list", "--repo", repo, "test/other").stdout
    assert "other-aot 2.0" in listed
    for argv, what in (
        (["db", "diff", "--repo", repo, "nosuchref"], "nosuchref"),
        (["db", "diff", "--repo", str(m.path), "test/os"], str(m.path)),  # not a repository
        (["db", "diff", "--repo", repo], "name a ref or commit"),
        (["db", "diff", "--repo", repo, "--sysroot", str(m.path), "test/os"], "--sysroot"),
        (["db", "diff", "--repo", repo, c10], "no parent"),
    ):
        bad = cli(*argv)
        assert bad.returncode in (1, 2) and what in bad.error_line, (argv, bad.stderr)


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
    with pytest.raises(RepoError, match="(?i)signature|gpg"):
        m.run(Upgrade())
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
    with pytest.raises(RepoError, match="(?i)signature"):
        machine.run(Upgrade())
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
    with pytest.raises(RepoError, match="cannot pull"):
        machine.run(Upgrade())
    assert machine.snapshot() == before
    machine.fsck()


def test_unreachable_server(machine: Machine) -> None:
    machine.served.server.stop()
    before = machine.snapshot()
    with pytest.raises(RepoError, match="cannot pull test/os from origin"):
        machine.run(Upgrade())
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
    machine.change(Upgrade())  # deploys 1.1, or finds the killed upgrade had done so
    assert machine.versions()[:2] == ["1.1", "1.0"]
    machine.fsck()
