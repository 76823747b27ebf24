"""The daemon's implementation, bus-free apart from asking the bus who a caller is.

One transaction at a time: a mutating call while one runs is refused with an error naming the
running transaction and its client. Read-only calls run in the daemon's own process, through
the same typed core as `--sysroot` mode (`system.execute`), and return its results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from dasbus.signal import Signal
from gi.repository import Gio, GLib

from apt_ostree.config import DaemonConfig, Policy, load_config
from apt_ostree.daemon.polkit import check_authorization
from apt_ostree.daemon.transaction import Caller, Job, Transaction
from apt_ostree.errors import AptOstreeError, BusyError, RefusedError
from apt_ostree.progress import Progress
from apt_ostree.system.execute import execute
from apt_ostree.system.requests import (
    AutomaticUpdate,
    Install,
    OverrideRemove,
    OverrideReplace,
    OverrideReset,
    Request,
    Reset,
    Status,
    Uninstall,
    to_call,
)
from apt_ostree.system.results import (
    BootFailure,
    CachedUpdate,
    DeploymentInfo,
    Result,
    StatusResult,
    TransactionInfo,
)
from apt_ostree.system.sysroot import System

log = logging.getLogger(__name__)

# a transaction nobody started (its client went away before Start) is dropped after this
UNSTARTED_TIMEOUT_SECONDS = 60
# what LockLayering=true refuses
LAYERING = (Install, Uninstall, OverrideRemove, OverrideReplace, OverrideReset, Reset)


class Daemon:
    def __init__(self, sysroot: Path, config_path: Path, connection: Any) -> None:
        self.sysroot = sysroot
        self.config_path = config_path
        self.config: DaemonConfig = load_config(config_path)
        self.connection = connection  # Gio.DBusConnection, to ask who a caller is
        self.active: Transaction | None = None
        self._number = 0
        self._last_activity = time.monotonic()
        self._deployments: tuple[DeploymentInfo, ...] | None = None
        self._cached_update: CachedUpdate | None = None  # as last announced
        # the properties' signals: each is emitted when what its property shows has changed
        self.deployments_changed = Signal()  # Deployments, Booted
        self.transaction_changed = Signal()  # ActiveTransaction
        self.config_changed = Signal()  # AutomaticUpdatePolicy
        self.cached_update_changed = Signal()  # CachedUpdate
        self.transaction_added = Signal()  # (Transaction): publish it
        self.transaction_removed = Signal()  # (Transaction): unpublish it
        self.idle = Signal()  # the daemon has been idle for IdleExitTimeout

    # ---- who calls ----

    def caller(self, bus_name: str) -> Caller:
        def ask(method: str) -> int:
            reply = self.connection.call_sync(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                method,
                GLib.Variant("(s)", (bus_name,)),
                GLib.VariantType("(u)"),
                Gio.DBusCallFlags.NONE,
                -1,
                None,
            )
            value: int = reply.unpack()[0]
            return value

        return Caller(bus_name, ask("GetConnectionUnixProcessID"), ask("GetConnectionUnixUser"))

    def authorize(self, bus_name: str, action: str) -> Caller:
        caller = self.caller(bus_name)
        check_authorization(self.connection, caller, action)
        return caller

    # ---- reading ----

    def system(self, osname: str | None = None) -> System:
        return System(self.sysroot, osname, Progress())

    def osnames(self) -> list[str]:
        deploy = self.sysroot / "ostree" / "deploy"
        return sorted(p.name for p in deploy.iterdir() if p.is_dir()) if deploy.is_dir() else []

    def default_osname(self) -> str:
        return self.system().osname()

    def deployments(self) -> tuple[DeploymentInfo, ...]:
        self._deployments = self.system().status()
        return self._deployments

    def booted_osname(self) -> str:
        booted = [d for d in self.deployments() if d.booted]
        return booted[0].osname if booted else ""

    def query(self, request: Request, osname: str) -> Result:
        """A read-only request, run here; `status` gets what only the daemon knows."""
        self.touch()
        result = execute(self.system(osname), request)
        if isinstance(request, Status):
            assert isinstance(result, StatusResult)
            t = self.active
            return replace(
                result,
                transaction=TransactionInfo(t.title, str(t.caller), t.path) if t else None,
                policy=self.config.automatic_update_policy.value,
            )
        return result

    def cached_update(self) -> CachedUpdate | None:
        """What the last automatic check found (kept in the stateroot's /var: it outlives
        the daemon's idle exit and reboots)."""
        try:
            return self.system().cached_update()
        except AptOstreeError:
            return None

    def boot_failures(self) -> tuple[BootFailure, ...]:
        """The updates whose trial boot failed (the stateroot's /var/lib/apt-ostree)."""
        try:
            return self.system().boot_failures()
        except AptOstreeError:
            return ()

    # ---- transactions ----

    def start(self, request: Request, osname: str, sender: str) -> Transaction:
        """Check, authorize and create the transaction; the client then calls its Start()."""
        self.touch()
        if self.config.lock_layering and isinstance(request, LAYERING):
            raise RefusedError(f"{self.config_path}: LockLayering is set: package changes refused")
        caller = self.authorize(sender, request.polkit_action())
        return self.begin(request, osname, caller)

    def begin(self, request: Request, osname: str, caller: Caller, title: str = "") -> Transaction:
        previous = self.active
        if previous is not None and not previous.reported:
            raise BusyError(f"transaction {previous.describe()} is running")
        self._number += 1
        positional, options = to_call(request)
        job = Job(
            sysroot=str(self.sysroot),
            osname=osname,
            method=request.method,
            positional=positional,
            options=options,
            recommends=self.config.recommends,
        )
        title = title or request.title()
        # a reported transaction's worker may still clean up: the new one starts after it
        txn = Transaction(self._number, title, job, caller, self._done, after=previous)
        txn.authorize_cancel = lambda sender: self._authorize_cancel(txn, sender)
        self.active = txn
        self.transaction_added.emit(txn)
        self.transaction_changed.emit()
        GLib.timeout_add_seconds(UNSTARTED_TIMEOUT_SECONDS, self._drop_unstarted, txn)
        return txn

    def _drop_unstarted(self, txn: Transaction) -> bool:
        if not txn.started and not txn.done:
            log.info("transaction %s was never started: dropped", txn.path)
            txn.cancel()
        return False

    def client_vanished(self, bus_name: str) -> None:
        """A client left the bus: its unstarted transaction goes; a started one runs on."""
        txn = self.active
        if txn is not None and not txn.started and txn.caller.bus_name == bus_name:
            txn.cancel()

    def _done(self, txn: Transaction) -> None:
        if self.active is txn:
            self.active = None
        self.touch()
        self.transaction_removed.emit(txn)
        self.transaction_changed.emit()
        before = self._deployments
        if before is None or self.deployments() != before:
            self.deployments_changed.emit()
        update = self.cached_update()
        if update != self._cached_update:
            self._cached_update = update
            self.cached_update_changed.emit()

    def _authorize_cancel(self, txn: Transaction, sender: str) -> None:
        caller = self.caller(sender)
        if caller.bus_name != txn.caller.bus_name:  # the initiator may always cancel
            check_authorization(self.connection, caller, "cancel")

    def cancel(self, sender: str) -> None:
        """`apt-ostree cancel`: cancel the running transaction, whoever started it."""
        if self.active is None:
            raise RefusedError("no transaction is running")
        self.active.cancel_by(sender)

    def automatic_update(self, osname: str, sender: str) -> Transaction | None:
        """Run the configured AutomaticUpdatePolicy; None when it is `none`."""
        self.touch()
        policy = self.config.automatic_update_policy
        if policy is Policy.NONE:
            return None
        caller = self.authorize(sender, AutomaticUpdate.action)
        request = AutomaticUpdate(stage=policy is Policy.STAGE)
        return self.begin(request, osname, caller, f"automatic update ({policy.value})")

    # ---- configuration and idle exit ----

    def reload(self, sender: str) -> None:
        self.authorize(sender, "reload-daemon")
        self.config = load_config(self.config_path)
        log.info("configuration reloaded: %s", self.config)
        self.config_changed.emit()

    def touch(self) -> None:
        self._last_activity = time.monotonic()

    def watch_idle(self, schedule: Callable[[int, Callable[[], bool]], object]) -> None:
        """Check once a second whether the daemon has been idle for IdleExitTimeout."""

        def check() -> bool:
            timeout = self.config.idle_exit_timeout
            quiet = time.monotonic() - self._last_activity
            if timeout > 0 and self.active is None and quiet >= timeout:
                log.info("idle for %.0f s: exiting", quiet)
                self.idle.emit()
                return False
            return True

        schedule(1, check)
