"""apt-ostreed on a real private system bus with a real polkitd, serving a folder sysroot.

The CLI runs as a user runs it (a subprocess, without --sysroot, DBUS_SYSTEM_BUS_ADDRESS at
the private bus); `apt-ostree --sysroot`, `ostree admin status` and `ostree fsck` check.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gi.repository import GLib

from apt_ostree.daemon.introspection import interfaces_xml, members
from tests.daemon.bus import (
    DATA,
    DENIED_USER,
    GRANTED_USER,
    Daemon,
    PrivateBus,
    Running,
    get_property,
    install_activation,
    run_client,
    stop,
    wait_for,
    wait_idle,
)
from tests.support.images import remove_sysroot
from tests.support.sysroots import Machine, cli, ok

pytestmark = [pytest.mark.slow]

SLOW = 3000  # bytes per second: an upgrade's pull (about 56 kB) then takes ~20 s


def test_status_through_the_daemon_is_the_in_process_status(
    bus: PrivateBus, daemon: Daemon, machine: Machine
) -> None:
    for flags in ([], ["--json"], ["-v"]):
        through = run_client(bus, "status", *flags)
        assert through.returncode == 0, through.stderr
        assert through.stdout == ok("status", *machine.args(), *flags).stdout
    assert run_client(bus, "db", "list").stdout == ok("db", "list", *machine.args()).stdout


def test_upgrade_through_the_daemon(bus: PrivateBus, daemon: Daemon, machine: Machine) -> None:
    result = run_client(bus, "upgrade")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Deployed" in result.stdout and "hello-aot 1.0 -> 1.1" in result.stdout
    assert "==> Checking origin:test/os for updates" in result.stderr  # progress signals
    assert "==> Deploying" in result.stderr
    assert machine.versions() == ["1.1", "1.0"]
    deployments = get_property(bus, "Deployments")  # aa{sv}, the keys of status --json
    assert [d["version"] for d in deployments] == ["1.1", "1.0"]
    assert deployments[0]["checksum"] == machine.served.images.checksum("1.1")
    again = run_client(bus, "upgrade", "--unchanged-exit-77")
    assert again.returncode == 77, again.stderr
    assert "No upgrade available." in again.stderr
    bad = run_client(bus, "deploy", "9.9")
    assert bad.returncode == 1
    assert (
        bad.stderr.splitlines()[-1]
        == "error: version 9.9 not found in the history of origin:test/os"
    )
    assert run_client(bus, "db", "diff").stdout == ok("db", "diff", *machine.args()).stdout


def test_a_second_transaction_is_refused_and_cancel_leaves_no_deployment(
    bus: PrivateBus, daemon: Daemon, machine: Machine
) -> None:
    before = machine.snapshot()
    machine.served.server.throttle(SLOW)
    first = Running(bus, "upgrade")
    first.wait_for_stderr("==> Pulling")
    second = run_client(bus, "rollback")
    assert second.returncode == 1
    assert "Transaction/1 (upgrade)" in second.stderr
    assert f"pid {first.proc.pid}, uid 0" in second.stderr
    assert "is running" in second.stderr
    title, client, path = get_property(bus, "ActiveTransaction")
    assert (title, path) == ("upgrade", "/org/aptostree/AptOstree1/Transaction/1")
    assert f"pid {first.proc.pid}" in client
    first.proc.send_signal(signal.SIGINT)  # Ctrl-C: the client asks the daemon to cancel
    result = first.finish()
    assert result.returncode == 1
    assert "error: transaction cancelled" in result.stderr
    assert machine.snapshot() == before
    machine.fsck()
    # the next transaction runs
    machine.served.server.throttle(None)
    assert run_client(bus, "upgrade").returncode == 0
    assert machine.versions() == ["1.1", "1.0"]


def test_cancel_verb_from_another_client(bus: PrivateBus, daemon: Daemon, machine: Machine) -> None:
    machine.served.server.throttle(SLOW)
    first = Running(bus, "upgrade")
    first.wait_for_stderr("==> Pulling")
    denied = run_client(bus, "cancel", user=DENIED_USER)
    assert denied.returncode == 1 and "not authorized" in denied.stderr
    assert run_client(bus, "cancel").returncode == 0
    assert first.finish().returncode == 1
    assert machine.versions() == ["1.0"]


def test_unprivileged_users_read_but_change_only_through_polkit(
    bus: PrivateBus, daemon: Daemon, machine: Machine
) -> None:
    status = run_client(bus, "status", "--json", user=DENIED_USER)
    assert status.returncode == 0, status.stderr
    denied = run_client(bus, "upgrade", user=DENIED_USER)
    assert denied.returncode == 1
    assert "org.aptostree.AptOstree1.upgrade: not authorized" in denied.stderr
    assert run_client(bus, "rollback", user=DENIED_USER).returncode == 1
    assert machine.versions() == ["1.0"]
    granted = run_client(bus, "upgrade", user=GRANTED_USER)  # the test rule's group
    assert granted.returncode == 0, granted.stderr
    assert machine.versions() == ["1.1", "1.0"]


def test_bad_input_from_the_bus_is_refused(
    bus: PrivateBus, daemon: Daemon, machine: Machine
) -> None:
    def call(method: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["gdbus", "call", "--system", "--dest", "org.aptostree.AptOstree1",
             "--object-path", "/org/aptostree/AptOstree1/OS/test",
             "--method", f"org.aptostree.AptOstree1.OS.{method}", *args],
            env=bus.env(), capture_output=True, text=True, check=False,
        )  # fmt: skip

    r = call("Upgrade", "{'sysroot': <'/'>}")
    assert "Error.InvalidArgs" in r.stderr and "unknown option 'sysroot'" in r.stderr
    r = call("Upgrade", "{'check': <'yes'>}")
    assert "Error.InvalidArgs" in r.stderr and "expected type 'b'" in r.stderr
    r = call("Deploy", "--check", "{}")  # a positional is never an option
    assert r.returncode != 0
    assert machine.versions() == ["1.0"]


@pytest.mark.parametrize("when", ["at start", "mid-pull"])
def test_daemon_killed_mid_transaction_leaves_the_sysroot_consistent(
    bus: PrivateBus,
    daemon: Daemon,
    machine: Machine,
    start: Callable[[Path], Daemon],
    when: str,
) -> None:
    before = machine.snapshot()
    machine.served.server.throttle(SLOW)
    first = Running(bus, "upgrade")
    first.wait_for_stderr("==> Checking" if when == "at start" else "==> Pulling")
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait()
    result = first.finish()
    assert result.returncode == 1
    assert "apt-ostreed exited during the transaction" in result.stderr
    # the worker died with the daemon (PR_SET_PDEATHSIG): nothing changes the sysroot now
    wait_for(lambda: not _workers(machine.path), "the worker to die")
    assert machine.snapshot() == before
    machine.fsck()
    machine.served.server.throttle(None)
    start(machine.path)
    upgraded = run_client(bus, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert machine.versions() == ["1.1", "1.0"]
    wait_idle(bus)
    machine.fsck()


def _steps(stderr: str) -> list[str]:
    """Step titles and errors: what a user reads, without timings and transfer rates."""
    return [line for line in stderr.splitlines() if not line.startswith(" ")]


def _workers(sysroot: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"apt_ostree.daemon.worker" in cmdline and str(sysroot).encode() in cmdline:
            found.append(int(proc.name))
    return found


def test_idle_exit_and_bus_activation(
    bus: PrivateBus, machine: Machine, polkitd: object, tmp_path: Path
) -> None:
    config = tmp_path / "idle.conf"
    config.write_text("[Daemon]\nIdleExitTimeout=2\n")
    install_activation(bus, machine.path, config)
    status = run_client(bus, "status")  # the bus starts the daemon
    assert status.returncode == 0, status.stderr
    assert bus.has_owner("org.aptostree.AptOstree1")
    wait_for(lambda: not bus.has_owner("org.aptostree.AptOstree1"), "idle exit", timeout=15)
    upgraded = run_client(bus, "upgrade")  # and again
    assert upgraded.returncode == 0, upgraded.stderr
    assert machine.versions() == ["1.1", "1.0"]
    wait_for(lambda: not bus.has_owner("org.aptostree.AptOstree1"), "idle exit", timeout=15)


@pytest.mark.parametrize("policy", ["none", "check", "stage"])
def test_automatic_update_policy(
    bus: PrivateBus,
    daemon: Daemon,
    machine: Machine,
    daemon_config: Path,
    policy: str,
    start: Callable[[Path], Daemon],
) -> None:
    assert get_property(bus, "AutomaticUpdatePolicy") == "none"
    daemon_config.write_text(f"[Daemon]\nIdleExitTimeout=0\nAutomaticUpdatePolicy={policy}\n")
    denied = run_client(bus, "reload", user=DENIED_USER)
    assert denied.returncode == 1
    assert run_client(bus, "reload").returncode == 0
    assert get_property(bus, "AutomaticUpdatePolicy") == policy
    result = run_client(bus, "upgrade", "--trigger-automatic-update-policy")
    assert result.returncode == 0, result.stderr
    update = get_property(bus, "CachedUpdate")  # a{sv}
    shown = run_client(bus, "status").stdout
    if policy == "none":
        assert "not enabled" in result.stdout
        assert machine.versions() == ["1.0"] and update == {}
        assert shown.startswith("State: idle\nAutomaticUpdates: disabled\nDeployments:")
        return
    if policy == "stage":  # staged (deployed, in a folder sysroot): nothing left to offer
        assert machine.versions() == ["1.1", "1.0"] and update == {}
        assert "AvailableUpdate" not in shown and "AutomaticUpdates: stage" in shown
        return
    assert machine.versions() == ["1.0"]
    # the same in status --json, where what D-Bus leaves out (no such version) is null
    doc = json.loads(run_client(bus, "status", "--json").stdout)
    assert _without_nulls(doc["cached-update"]) == update
    assert (doc["state"], doc["automatic-updates"]) == ("idle", "check")
    assert update["version"] == "1.1"
    assert update["checksum"] == machine.served.images.checksum("1.1")
    assert {"name": "hello-aot"}.items() <= update["upgraded"][0].items()
    assert "AvailableUpdate:" in shown and f"Commit: {update['checksum']}" in shown
    assert "Diff: 1 upgraded, 1 removed, 1 added" in shown
    # kept in the stateroot's /var: a new daemon (after an idle exit, a reboot) has it, and so
    # has the CLI without a daemon
    stop(daemon.proc)
    start(machine.path)
    assert get_property(bus, "CachedUpdate") == update
    assert "AvailableUpdate:" in ok("status", *machine.args()).stdout


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def test_config_errors_are_refused_on_reload(
    bus: PrivateBus, daemon: Daemon, daemon_config: Path
) -> None:
    daemon_config.write_text("[Daemon]\nAutomaticUpdatePolicy=sometimes\n")
    result = run_client(bus, "reload")
    assert result.returncode == 1
    assert "AutomaticUpdatePolicy=sometimes: expected none, check or stage" in result.stderr
    assert get_property(bus, "AutomaticUpdatePolicy") == "none"
    assert daemon.proc.poll() is None


def test_introspection_matches_data_xml(bus: PrivateBus, daemon: Daemon) -> None:
    shipped = (DATA / "org.aptostree.AptOstree1.xml").read_text()
    assert shipped == interfaces_xml(), "run: python -m apt_ostree.daemon.introspection"
    expected = members(shipped)
    for path, iface in (
        ("/org/aptostree/AptOstree1/Sysroot", "Sysroot"),
        ("/org/aptostree/AptOstree1/OS/test", "OS"),
    ):
        live = subprocess.run(
            ["gdbus", "introspect", "--system", "--xml", "--dest", "org.aptostree.AptOstree1",
             "--object-path", path],
            env=bus.env(), capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        name = f"org.aptostree.AptOstree1.{iface}"
        assert members(live)[name] == expected[name]


def test_a_client_gone_before_start_does_not_hold_the_daemon(
    bus: PrivateBus, daemon: Daemon, machine: Machine
) -> None:
    # gdbus calls Upgrade and leaves: the transaction is never started, and goes with it
    subprocess.run(
        ["gdbus", "call", "--system", "--dest", "org.aptostree.AptOstree1",
         "--object-path", "/org/aptostree/AptOstree1/OS/test",
         "--method", "org.aptostree.AptOstree1.OS.Upgrade", "{}"],
        env=bus.env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    wait_for(lambda: get_property(bus, "ActiveTransaction") == ("", "", ""), "the drop")
    assert machine.versions() == ["1.0"]
    assert run_client(bus, "upgrade").returncode == 0


def test_a_client_killed_mid_transaction_leaves_it_running(
    bus: PrivateBus, daemon: Daemon, machine: Machine
) -> None:
    machine.served.server.throttle(20_000)
    first = Running(bus, "upgrade")
    first.wait_for_stderr("==> Pulling")
    first.proc.kill()
    first.proc.wait()
    wait_for(lambda: get_property(bus, "ActiveTransaction") == ("", "", ""), "the end", 60)
    assert machine.versions() == ["1.1", "1.0"]


def test_lock_layering_refuses_package_changes(
    bus: PrivateBus, daemon: Daemon, machine: Machine, daemon_config: Path
) -> None:
    daemon_config.write_text("[Daemon]\nIdleExitTimeout=0\nLockLayering=true\n")
    assert run_client(bus, "reload").returncode == 0
    result = run_client(bus, "install", "hello")
    assert result.returncode == 1  # a refused change, not a malformed command line
    assert "LockLayering is set" in result.stderr
    assert machine.versions() == ["1.0"]


# one after the other, on the daemon's sysroot and on a copy run with --sysroot
VERB_SEQUENCE = [
    ["kargs", "--append=x"],
    ["rollback"],
    ["kargs"],
    ["upgrade", "--preview"],
    ["upgrade", "--download-only"],
    ["deploy", "1.1"],
    ["deploy", "9.9"],
    ["rebase", "origin:test/other"],
    ["cleanup", "-r"],
    ["finalize-deployment"],
    ["rollback", "--unchanged-exit-77"],
]


def test_verbs_give_the_same_results_through_the_daemon(
    bus: PrivateBus, daemon: Daemon, machine: Machine, tmp_path: Path
) -> None:
    twin = tmp_path / "twin"
    subprocess.run(["cp", "-a", str(machine.path), str(twin)], check=True)
    try:
        for argv in VERB_SEQUENCE:
            through = run_client(bus, *argv)
            local = cli(argv[0], "--sysroot", twin, *argv[1:])
            # libostree's cleanup prints "Freed objects" on fd 1 itself (g_print): in-process it
            # lands in stdout, in the worker in the daemon's log
            expected = "".join(
                line for line in local.stdout.splitlines(True) if not line.startswith("Freed ")
            )
            assert (through.returncode, through.stdout) == (local.returncode, expected), argv
            assert _steps(through.stderr) == _steps(local.stderr), argv
            status = ok("status", *machine.args(), "--json").stdout
            assert ok("status", "--sysroot", twin, "--json").stdout == status, argv
    finally:
        remove_sysroot(twin)


def _gdbus(bus: PrivateBus, method: str, *args: str) -> Any:
    """A call on the OS object as a script makes it, its reply parsed as GVariant text."""
    out = subprocess.run(
        ["gdbus", "call", "--system", "--dest", "org.aptostree.AptOstree1",
         "--object-path", "/org/aptostree/AptOstree1/OS/test",
         "--method", f"org.aptostree.AptOstree1.OS.{method}", *args],
        env=bus.env(), capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return GLib.Variant.parse(None, out, None, None).unpack()


def test_scripts_read_typed_results_with_gdbus(
    bus: PrivateBus, daemon: Daemon, machine: Machine
) -> None:
    assert run_client(bus, "upgrade").returncode == 0
    (deployments,) = _gdbus(bus, "Status", "{}")
    assert [d["version"] for d in deployments] == ["1.1", "1.0"]
    new, old = deployments
    assert new["checksum"] == machine.served.images.checksum("1.1")
    assert (new["booted"], new["staged"], new["requested-packages"]) == (False, False, [])
    assert new["origin"] == "origin:test/os" and new["kernel-arguments"] == ["console=ttyS0"]
    assert deployments == get_property(bus, "Deployments")
    (diff,) = _gdbus(bus, "DbDiff", old["checksum"], new["checksum"], "{}")
    assert (diff["from"], diff["to"]) == (old["checksum"], new["checksum"])
    [change] = diff["upgraded"]
    assert (change["name"], change["old-version"], change["new-version"]) == (
        "hello-aot", "1.0", "1.1",
    )  # fmt: skip
    checksum, packages = _gdbus(bus, "DbList", "", "{}")
    assert checksum == new["checksum"] and ("hello-aot", "1.1") in {p[:2] for p in packages}
    bad = subprocess.run(
        ["gdbus", "call", "--system", "--dest", "org.aptostree.AptOstree1",
         "--object-path", "/org/aptostree/AptOstree1/OS/test",
         "--method", "org.aptostree.AptOstree1.OS.Upgrade", "{'check': <1>}"],
        env=bus.env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "org.aptostree.AptOstree1.Error.InvalidArgs" in bad.stderr
    assert "option 'check': expected type 'b'" in bad.stderr
