"""The daemon's implementation, bus-free apart from asking the bus who a caller is.

One transaction at a time: a mutating call while one runs is refused with an error naming the
running transaction and its client. Read-only calls run in the daemon's own process, through
the same CLI functions that `--sysroot` mode runs, and return what the CLI prints.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from dasbus.signal import Signal
from gi.repository import Gio, GLib

from apt_ostree.daemon.config import DaemonConfig, Policy, load_config
from apt_ostree.daemon.polkit import check_authorization
from apt_ostree.daemon.transaction import Caller, Transaction
from apt_ostree.daemon.verbs import Verb, action_of, worker_argv
from apt_ostree.daemon.worker import RECOMMENDS_ENV
from apt_ostree.deployments import SysrootClient
from apt_ostree.errors import AptOstreeError, UsageError
from apt_ostree.progress import Progress

log = logging.getLogger(__name__)

# a transaction nobody started (its client went away before Start) is dropped after this
UNSTARTED_TIMEOUT_SECONDS = 60
LAYERING_METHODS = {
    "Install",
    "Uninstall",
    "OverrideRemove",
    "OverrideReplace",
    "OverrideReset",
    "Reset",
}


class BusyError(AptOstreeError):
    """Another transaction is running."""

    dbus_name = "Busy"


def run_in_process(argv: Sequence[str]) -> str:
    """Run a read-only CLI verb here and return what it prints."""
    from apt_ostree.cli.main import build_parser  # the CLI imports this package's client

    out = io.StringIO()
    with redirect_stdout(out):
        args = build_parser().parse_args(list(argv))
        args.func(args)
    return out.getvalue()


class Daemon:
    def __init__(self, sysroot: Path, config_path: Path, connection: Any) -> None:
        self.sysroot = sysroot
        self.config_path = config_path
        self.config: DaemonConfig = load_config(config_path)
        self.connection = connection  # Gio.DBusConnection, to ask who a caller is
        self.active: Transaction | None = None
        self.cached_update = ""
        self._number = 0
        self._last_activity = time.monotonic()
        self.properties_changed = Signal()  # Deployments, ActiveTransaction, ... may differ
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

    def client(self, osname: str | None = None) -> SysrootClient:
        return SysrootClient(self.sysroot, osname, Progress())

    def osnames(self) -> list[str]:
        deploy = self.sysroot / "ostree" / "deploy"
        return sorted(p.name for p in deploy.iterdir() if p.is_dir()) if deploy.is_dir() else []

    def default_osname(self) -> str:
        return self.client().osname()

    def deployments_json(self) -> str:
        return json.dumps([s.to_json() for s in self.client().status()])

    def booted_osname(self) -> str:
        booted = [d for d in self.client().sysroot.deployments() if d.booted]
        return booted[0].osname if booted else ""

    def query(
        self, verb: Verb, osname: str, positional: Sequence[Any], options: Mapping[str, Any]
    ) -> str:
        self.touch()
        text = run_in_process(worker_argv(verb, self.sysroot, osname, positional, options))
        if verb.method == "Status" and options.get("json"):
            text = self._status_extras(text)
        return text

    def _status_extras(self, text: str) -> str:
        """`status --json` through the daemon fills what only the daemon knows (rpm-ostree's
        `transaction` and `cached-update` keys); null as in --sysroot mode otherwise."""
        doc = json.loads(text)
        t = self.active
        doc["transaction"] = [t.title, str(t.caller), t.path] if t else None
        doc["cached-update"] = json.loads(self.cached_update) if self.cached_update else None
        return json.dumps(doc, indent=2) + "\n"

    # ---- transactions ----

    def start(
        self,
        verb: Verb,
        osname: str,
        positional: Sequence[Any],
        options: Mapping[str, Any],
        sender: str,
    ) -> Transaction:
        """Check, authorize and create the transaction; the client then calls its Start()."""
        self.touch()
        argv = worker_argv(verb, self.sysroot, osname, positional, options)
        if self.config.lock_layering and verb.method in LAYERING_METHODS:
            raise UsageError(f"{self.config_path}: LockLayering is set: package changes refused")
        return self.begin(
            " ".join(verb.words), argv, self.authorize(sender, action_of(verb, positional))
        )

    def begin(self, title: str, argv: Sequence[str], caller: Caller) -> Transaction:
        previous = self.active
        if previous is not None and not previous.reported:
            raise BusyError(f"transaction {previous.describe()} is running")
        self._number += 1
        # a reported transaction's worker may still clean up: the new one starts after it
        env = {RECOMMENDS_ENV: "1" if self.config.recommends else "0"}
        txn = Transaction(self._number, title, argv, caller, self._done, after=previous, env=env)
        txn.authorize_cancel = lambda sender: self._authorize_cancel(txn, sender)
        self.active = txn
        self.transaction_added.emit(txn)
        self.properties_changed.emit()
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
        self.properties_changed.emit()

    def _authorize_cancel(self, txn: Transaction, sender: str) -> None:
        caller = self.caller(sender)
        if caller.bus_name != txn.caller.bus_name:  # the initiator may always cancel
            check_authorization(self.connection, caller, "cancel")

    def cancel(self, sender: str) -> None:
        """`apt-ostree cancel`: cancel the running transaction, whoever started it."""
        if self.active is None:
            raise UsageError("no transaction is running")
        self.active.cancel_by(sender)

    def automatic_update(self, osname: str, sender: str) -> Transaction | None:
        """Run the configured AutomaticUpdatePolicy; None when it is `none`."""
        self.touch()
        policy = self.config.automatic_update_policy
        if policy is Policy.NONE:
            return None
        caller = self.authorize(sender, "upgrade")
        argv = ["--automatic", policy.value, "--sysroot", str(self.sysroot), "--os", osname]
        txn = self.begin(f"automatic update ({policy.value})", argv, caller)
        txn.cached_update.connect(self._set_cached_update)
        return txn

    def _set_cached_update(self, doc: str) -> None:
        self.cached_update = doc
        self.properties_changed.emit()

    # ---- configuration and idle exit ----

    def reload(self, sender: str) -> None:
        self.authorize(sender, "reload-daemon")
        self.config = load_config(self.config_path)
        log.info("configuration reloaded: %s", self.config)
        self.properties_changed.emit()

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
