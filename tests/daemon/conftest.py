"""Fixtures for daemon tests: a private system bus with polkitd, and apt-ostreed serving a
folder sysroot (the `machine` of tests/deploy: test/os 1.0 deployed, the remote at 1.1)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gi.repository import GLib

from tests.daemon.bus import (
    Daemon,
    PrivateBus,
    start_bus,
    start_daemon,
    start_polkitd,
    stop,
    wait_idle,
)
from tests.deploy import conftest as deploy
from tests.support.sysroots import Machine

# the deploy tests' fixtures: a served copy of the images, the template and machine sysroots
served, template, machine = deploy.served, deploy.template, deploy.machine


@pytest.fixture
def bus() -> Iterator[PrivateBus]:
    b = start_bus()
    yield b
    stop(b.proc)
    shutil.rmtree(b.dir, ignore_errors=True)


@pytest.fixture
def polkitd(bus: PrivateBus) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_polkitd(bus)
    yield proc
    stop(proc)


@pytest.fixture
def daemon_config(tmp_path: Path) -> Path:
    path = tmp_path / "apt-ostreed.conf"
    path.write_text("[Daemon]\nIdleExitTimeout=0\n")
    return path


@pytest.fixture
def start(
    bus: PrivateBus, tmp_path: Path, daemon_config: Path
) -> Iterator[Callable[[Path], Daemon]]:
    """Start apt-ostreed on a sysroot (again after a kill); stopped at teardown."""
    started: list[Daemon] = []

    def run(sysroot: Path) -> Daemon:
        d = start_daemon(bus, sysroot, daemon_config, tmp_path / "apt-ostreed.log")
        started.append(d)
        return d

    yield run
    for d in started:
        stop(d.proc)


@pytest.fixture
def daemon(
    bus: PrivateBus,
    start: Callable[[Path], Daemon],
    machine: Machine,
    polkitd: subprocess.Popen[bytes],
) -> Iterator[Daemon]:
    d = start(machine.path)
    yield d
    if d.proc.poll() is None:
        # its worker may still clean up after the last result: let it end before the
        # machine's sysroot is removed (torn down after this fixture)
        with contextlib.suppress(AssertionError, GLib.Error):
            wait_idle(bus)
