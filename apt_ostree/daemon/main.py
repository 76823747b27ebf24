"""`apt-ostreed`: the daemon's entry point. Owns org.aptostree.AptOstree1 on the system bus.

    apt-ostreed [--sysroot DIR] [--config FILE] [--debug]

`--sysroot` serves a sysroot in a folder (tests, image builders); the default is /. The bus
is the system bus (DBUS_SYSTEM_BUS_ADDRESS, as every GLib program, points it elsewhere).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dasbus.connection import SystemMessageBus
from dasbus.error import AbstractErrorRule, ErrorMapper
from dasbus.loop import EventLoop
from gi.repository import Gio, GLib

from apt_ostree import keys
from apt_ostree.daemon.os_interface import OSInterface, OSObject, os_path
from apt_ostree.daemon.service import Daemon
from apt_ostree.daemon.sysroot_interface import SysrootInterface
from apt_ostree.daemon.transaction import Transaction
from apt_ostree.daemon.transaction_interface import TransactionInterface
from apt_ostree.errors import AptOstreeError, dbus_error_name

log = logging.getLogger("apt-ostreed")


class ProjectErrors(AbstractErrorRule):  # type: ignore[misc]
    """AptOstreeError subclasses travel as org.aptostree.AptOstree1.Error.<name>
    (`errors.DBUS_NAMES`); anything else (a bug) as ...Error.Failed with its message."""

    def match_type(self, exception_type: type) -> bool:
        return True

    def get_name(self, exception_type: type) -> str:
        if issubclass(exception_type, AptOstreeError):
            return dbus_error_name(exception_type)
        return dbus_error_name(AptOstreeError)

    def match_name(self, error_name: str) -> bool:
        return False

    def get_type(self, error_name: str) -> type:
        raise LookupError(error_name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="apt-ostreed", description="the apt-ostree daemon")
    p.add_argument("--sysroot", type=Path, default=Path("/"), help="the sysroot (default /)")
    p.add_argument("--config", type=Path, default=Path(keys.DAEMON_CONFIG), metavar="FILE")
    p.add_argument("--debug", action="store_true", help="debug logging")
    return p.parse_args(argv)


class Service:
    """Publishes the daemon's objects and runs the main loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        mapper = ErrorMapper()
        mapper.add_rule(ProjectErrors())
        self.bus = SystemMessageBus(error_mapper=mapper)
        self.loop = EventLoop()
        self.daemon = Daemon(args.sysroot.resolve(), args.config, self.bus.connection)
        self.daemon.transaction_added.connect(self._publish_transaction)
        self.daemon.transaction_removed.connect(self._unpublish_transaction)
        self.daemon.idle.connect(self.loop.quit)

    def _publish_transaction(self, txn: Transaction) -> None:
        self.bus.publish_object(txn.path, TransactionInterface(txn))

    def _unpublish_transaction(self, txn: Transaction) -> None:
        self.bus.unpublish_object(txn.path)

    def _name_owner_changed(self, *args: Any) -> None:
        name, _old, new = args[5].unpack()
        if name.startswith(":") and not new:
            self.daemon.client_vanished(name)

    def run(self) -> int:
        self.bus.publish_object(keys.SYSROOT_PATH, SysrootInterface(self.daemon))
        for name in self.daemon.osnames():
            self.bus.publish_object(os_path(name), OSInterface(OSObject(self.daemon, name)))
        self.bus.connection.signal_subscribe(
            "org.freedesktop.DBus", "org.freedesktop.DBus", "NameOwnerChanged",
            "/org/freedesktop/DBus", None, Gio.DBusSignalFlags.NONE, self._name_owner_changed,
        )  # fmt: skip
        self.bus.register_service(keys.BUS_NAME)
        self.daemon.watch_idle(lambda s, f: GLib.timeout_add_seconds(s, f))
        for sig in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, self._stop)
        log.info("serving %s on %s", self.daemon.sysroot, keys.BUS_NAME)
        self.loop.run()
        if self.daemon.active is not None:
            self.daemon.active.cancel()  # the worker's group gets SIGTERM (PDEATHSIG does the rest)
        self.bus.disconnect()
        return 0

    def _stop(self) -> bool:
        self.loop.quit()
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return Service(args).run()
    except AptOstreeError as e:
        print(f"apt-ostreed: error: {e}", file=sys.stderr)
        return 1
    except GLib.Error as e:
        print(f"apt-ostreed: error: {e.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
