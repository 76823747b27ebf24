"""A private system bus, a private polkitd on it, and apt-ostreed on a folder sysroot.

Nothing is written to the host's /etc or /usr: the dbus-daemon gets its own configuration
(a system bus: EXTERNAL auth, deny-by-default, our data/ policy and polkit's), and polkitd,
whose action and rules directories are fixed at build time, runs inside a private mount
namespace (bubblewrap) where our data/ actions file and a test rules file are bound over
/usr/share/polkit-1/actions, /etc/polkit-1/rules.d and /usr/share/polkit-1/rules.d.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
POLKITD = "/usr/lib/polkit-1/polkitd"
BUS_NAME = "org.aptostree.AptOstree1"

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{aptostree_policy}</include>
  <include>/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>
</busconfig>
"""

# the test rule: members of GRANTED_GROUP may do every apt-ostree action without a password
RULES = """polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.aptostree.AptOstree1.") == 0 && subject.isInGroup("%s")) {
        return polkit.Result.YES;
    }
});
"""
# users that exist on every Debian system: `daemon` (group daemon) is granted by the rule,
# `nobody` (group nogroup) is not
GRANTED_USER, GRANTED_GROUP = "daemon", "daemon"
DENIED_USER = "nobody"


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class PrivateBus:
    """A dbus-daemon configured as a system bus, in a directory other users can reach."""

    dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"unix:path={self.dir / 'system_bus_socket'}"

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address, **extra}

    def has_owner(self, name: str) -> bool:
        out = subprocess.run(
            ["gdbus", "call", "--system", "--dest", "org.freedesktop.DBus",
             "--object-path", "/org/freedesktop/DBus",
             "--method", "org.freedesktop.DBus.NameHasOwner", name],
            env=self.env(), capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        return "true" in out


def start_bus() -> PrivateBus:
    d = Path(tempfile.mkdtemp(prefix="aot-bus-", dir="/tmp"))
    d.chmod(0o755)  # unprivileged test clients connect too
    (d / "services").mkdir()
    config = d / "system.conf"
    config.write_text(
        BUS_CONFIG.format(
            socket=d / "system_bus_socket",
            services=d / "services",
            aptostree_policy=DATA / "org.aptostree.AptOstree1.conf",
        )
    )
    proc = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile"],
        stdout=subprocess.DEVNULL,
    )
    wait_for(lambda: (d / "system_bus_socket").exists(), "the private bus")
    return PrivateBus(d, proc)


def start_polkitd(bus: PrivateBus) -> subprocess.Popen[bytes]:
    """polkitd, seeing our actions and rules in place of the host's."""
    actions, rules, empty = bus.dir / "actions", bus.dir / "rules.d", bus.dir / "empty"
    for d in (actions, rules, empty):
        d.mkdir()
    (actions / "org.aptostree.AptOstree1.policy").write_bytes(
        (DATA / "org.aptostree.AptOstree1.policy").read_bytes()
    )
    (rules / "50-aptostree-test.rules").write_text(RULES % GRANTED_GROUP)
    for d in (actions, rules, empty):
        d.chmod(0o755)
    argv = [
        "bwrap", "--dev-bind", "/", "/",
        "--ro-bind", str(actions), "/usr/share/polkit-1/actions",
        "--ro-bind", str(rules), "/etc/polkit-1/rules.d",
        "--ro-bind", str(empty), "/usr/share/polkit-1/rules.d",
        "--die-with-parent", POLKITD, "--no-debug",
    ]  # fmt: skip
    # started as root: polkitd switches to its own user (polkitd) itself
    proc = subprocess.Popen(argv, env=bus.env(), stdout=subprocess.DEVNULL)
    wait_for(lambda: bus.has_owner("org.freedesktop.PolicyKit1"), "polkitd on the private bus")
    return proc


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log: Path


def start_daemon(bus: PrivateBus, sysroot: Path, config: Path, log: Path) -> Daemon:
    argv = [sys.executable, "-m", "apt_ostree.daemon.main", "--sysroot", str(sysroot)]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*argv, "--config", str(config), "--debug"],
            env=bus.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    wait_for(lambda: bus.has_owner(BUS_NAME) or proc.poll() is not None, "apt-ostreed")
    assert proc.poll() is None, log.read_text()
    return Daemon(proc, log)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def client_argv(*args: str | Path, user: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "apt_ostree.cli.main", *map(str, args)]
    if user is not None:
        gid = pwd.getpwnam(user).pw_gid
        argv = ["setpriv", f"--reuid={user}", f"--regid={gid}", "--init-groups", *argv]
    return argv


def run_client(bus: PrivateBus, *args: str | Path, user: str | None = None) -> Result:
    proc = subprocess.run(
        client_argv(*args, user=user),
        env=bus.env(),
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def get_property(bus: PrivateBus, name: str) -> Any:
    """A Sysroot property, unpacked (the test process is its own bus client)."""
    from gi.repository import Gio, GLib

    flags = (
        Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
        | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
    )
    conn = Gio.DBusConnection.new_for_address_sync(bus.address, flags, None, None)
    try:
        reply = conn.call_sync(
            BUS_NAME, "/org/aptostree/AptOstree1/Sysroot", "org.freedesktop.DBus.Properties",
            "Get", GLib.Variant("(ss)", ("org.aptostree.AptOstree1.Sysroot", name)),
            None, Gio.DBusCallFlags.NONE, -1, None,
        )  # fmt: skip
        return reply.unpack()[0]
    finally:
        conn.close_sync(None)


def wait_idle(bus: PrivateBus, timeout: float = 60) -> None:
    """Until the daemon runs no transaction: a worker cleans up after its result (dropped
    deployments, prune), and an `ostree fsck` must not race with the prune."""
    wait_for(lambda: get_property(bus, "ActiveTransaction")[2] == "", "the daemon to be idle",
             timeout)  # fmt: skip


def install_activation(bus: PrivateBus, sysroot: Path, config: Path) -> None:
    """A D-Bus activation file like data/'s, starting apt-ostreed on the folder sysroot."""
    exec_line = f"{sys.executable} -m apt_ostree.daemon.main --sysroot {sysroot} --config {config}"
    (bus.dir / "services" / f"{BUS_NAME}.service").write_text(
        f"[D-BUS Service]\nName={BUS_NAME}\nExec={exec_line}\nUser=root\n"
    )


class Running:
    """A client started in the background, whose stderr is read as it comes."""

    def __init__(self, bus: PrivateBus, *args: str | Path, user: str | None = None) -> None:
        self.proc = subprocess.Popen(
            client_argv(*args, user=user),
            env=bus.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        self.stderr_lines: list[str] = []

    def wait_for_stderr(self, text: str, timeout: float = 60) -> None:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr_lines.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} not in {''.join(self.stderr_lines)}")

    def finish(self, timeout: float = 60) -> Result:
        out, err = self.proc.communicate(timeout=timeout)
        return Result(self.proc.returncode, out, "".join(self.stderr_lines) + err)
