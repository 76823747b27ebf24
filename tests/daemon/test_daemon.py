"""apt-ostreed on a real private system bus with a real polkitd, serving a folder sysroot."""

from __future__ import annotations

import json

import pytest

from tests.daemon.bus import Daemon, PrivateBus, run_client
from tests.support.sysroots import Machine, ok

pytestmark = [pytest.mark.slow]


def test_status_through_the_daemon_is_the_in_process_status(
    bus: PrivateBus, daemon: Daemon, machine: Machine
) -> None:
    for flags in ([], ["--json"], ["-v"]):
        through = run_client(bus, "status", *flags)
        assert through.returncode == 0, through.stderr
        assert through.stdout == ok("status", *machine.args(), *flags).stdout


def test_upgrade_through_the_daemon(bus: PrivateBus, daemon: Daemon, machine: Machine) -> None:
    result = run_client(bus, "upgrade")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Deployed" in result.stdout
    assert "==> Checking origin:test/os for updates" in result.stderr
    assert machine.versions() == ["1.1", "1.0"]
    again = run_client(bus, "upgrade", "--unchanged-exit-77")
    assert again.returncode == 77, again.stderr
    assert "No upgrade available." in again.stderr
    doc = json.loads(run_client(bus, "status", "--json").stdout)
    assert [d["version"] for d in doc["deployments"]] == ["1.1", "1.0"]
