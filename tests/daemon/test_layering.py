"""Package layering through apt-ostreed: results, polkit's actions, and cancelling while a
maintainer script runs (the setup is tests/deploy/test_layering.py's)."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon.bus import (
    DENIED_USER,
    Daemon,
    PrivateBus,
    Running,
    run_client,
    wait_for,
    wait_idle,
)
from tests.deploy.test_layering import LAYER_DEBS, point_apt_at
from tests.support.aptrepo import AptRepo
from tests.support.debian import SUITE
from tests.support.debs import DebSpec
from tests.support.httpd import Server
from tests.support.sysroots import Machine, ok

pytestmark = [pytest.mark.slow]

SLEEP_MARK = "4321"  # `sleep 4321` in a postinst: found in /proc while it runs
SLEEPY = DebSpec(name="sleepy-aot", postinst=f"#!/bin/sh\nsleep {SLEEP_MARK}\n")
RECOMMENDS = (
    DebSpec(name="recommender-aot", recommends="recommended-aot"),
    DebSpec(name="recommended-aot"),
)


@pytest.fixture
def layered(machine: Machine, tmp_path: Path, http_server: Callable[[Path], Server]) -> Machine:
    apt = AptRepo(tmp_path / "layer-apt", suite=SUITE, key=machine.served.images.gpg_key)
    apt.add_debs(machine.served.images.apt.debs())
    apt.add(*LAYER_DEBS, SLEEPY, *RECOMMENDS)
    apt.publish()
    server = http_server(apt.path)
    for deployment in machine.path.glob("ostree/deploy/test/deploy/*"):
        if deployment.is_dir():
            point_apt_at(deployment, apt, server.url)
    return machine


def _sleepers() -> list[Path]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc / "cmdline").read_bytes() == f"sleep\0{SLEEP_MARK}\0".encode():
                found.append(proc)
        except OSError:
            continue
    return found


def test_install_and_uninstall_through_the_daemon(
    bus: PrivateBus, daemon: Daemon, layered: Machine
) -> None:
    denied = run_client(bus, "install", "htop-aot", user=DENIED_USER)
    assert denied.returncode == 1
    assert "install-uninstall-packages: not authorized" in denied.stderr
    found = run_client(bus, "search", "htop", user=DENIED_USER)  # read-only: everyone
    assert found.returncode == 0, found.stderr
    assert found.stdout == ok("search", *layered.args(), "htop").stdout
    assert "htop-aot" in found.stdout
    result = run_client(bus, "install", "htop-aot")
    assert result.returncode == 0, result.stderr
    assert "Added:" in result.stdout and "htop-aot" in result.stdout
    assert layered.status()[0]["requested-packages"] == ["htop-aot"]
    assert "LayeredPackages: htop-aot" in run_client(bus, "status").stdout
    again = run_client(bus, "install", "htop-aot", "--idempotent", "--unchanged-exit-77")
    assert again.returncode == 77, again.stderr
    assert run_client(bus, "uninstall", "htop-aot").returncode == 0
    assert layered.status()[0]["requested-packages"] == []
    enabled = run_client(bus, "initramfs", "--enable", "--arg=--add-drivers", "--arg=virtio_blk")
    assert enabled.returncode == 0, enabled.stderr
    assert layered.status()[0]["initramfs-args"] == ["--add-drivers", "virtio_blk"]
    assert run_client(bus, "initramfs", "--disable").returncode == 0
    assert layered.status()[0]["regenerate-initramfs"] is False
    wait_idle(bus)
    layered.fsck()
    # the worker removed the trees of the deployments each change dropped, after its result
    trees = sorted(p.name for p in layered.path.glob("ostree/deploy/test/deploy/*")
                   if p.is_dir())  # fmt: skip
    assert trees == sorted(str(d["id"]).removeprefix("test-") for d in layered.status())


def test_recommends_follow_the_daemon_config(
    bus: PrivateBus, daemon: Daemon, layered: Machine, daemon_config: Path
) -> None:
    def layered_packages() -> list[str]:
        deployment = str(layered.status()[0]["id"]).removeprefix("test-")
        db = layered.path / "ostree/deploy/test/deploy" / deployment / "usr/lib/sysimage/dpkg"
        listed = re.findall(r"^Package: (recomm\S+)$", (db / "status").read_text(), re.M)
        return sorted(listed)

    assert run_client(bus, "install", "recommender-aot").returncode == 0
    assert layered_packages() == ["recommender-aot"]  # the default: Recommends=false
    daemon_config.write_text("[Daemon]\nIdleExitTimeout=0\nRecommends=true\n")
    assert run_client(bus, "reload").returncode == 0
    assert run_client(bus, "uninstall", "recommender-aot").returncode == 0
    result = run_client(bus, "install", "recommender-aot")
    assert result.returncode == 0, result.stderr
    assert layered_packages() == ["recommended-aot", "recommender-aot"]


def test_a_transaction_begun_while_the_last_one_cleans_up_waits_for_it(
    bus: PrivateBus, daemon: Daemon, layered: Machine
) -> None:
    # back to back: each change's result comes before its cleanup, the next one still runs
    for verb in ("install", "uninstall", "install", "uninstall"):
        result = run_client(bus, verb, "htop-aot")
        assert result.returncode == 0, (verb, result.stderr)
    assert layered.status()[0]["requested-packages"] == []
    wait_idle(bus)
    layered.fsck()


def test_cancel_while_a_maintainer_script_sleeps(
    bus: PrivateBus, daemon: Daemon, layered: Machine
) -> None:
    before = layered.snapshot()
    client = Running(bus, "install", "sleepy-aot")
    wait_for(lambda: bool(_sleepers()), "the postinst to run", timeout=120)
    client.proc.send_signal(signal.SIGINT)
    result = client.finish(timeout=30)
    assert result.returncode == 1
    assert "error: transaction cancelled" in result.stderr
    wait_for(lambda: not _sleepers(), "the postinst to be gone")
    assert str(layered.path) not in Path("/proc/self/mounts").read_text()  # no overlay left
    assert layered.snapshot() == before
    layered.fsck()
    # the sysroot is not left locked: the next transaction runs
    assert run_client(bus, "install", "htop-aot").returncode == 0
    assert ok("status", *layered.args(), "--json").stdout.count('"htop-aot"') >= 1
