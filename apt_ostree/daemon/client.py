"""A client of apt-ostreed: requests in, typed results out, over the system bus.

`DaemonClient.run(request)` calls the request's method on the OS object
(`requests.to_call`); a mutating method returns a Transaction, whose progress signals go to
the caller's `Progress` and whose `Result` signal carries the outcome; read-only methods return
their structures at once. Errors come back as org.aptostree.AptOstree1.Error.* names and are
raised again as the project's classes (`errors.error_class`), so a program using this module
(the CLI among them) sees exactly what an in-process call would raise. Ctrl-C cancels the
transaction. Needs neither python-apt nor libostree.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from dasbus.connection import SystemMessageBus
from dasbus.error import AbstractErrorRule, DBusError, ErrorMapper
from dasbus.loop import EventLoop
from gi.repository import GLib

from apt_ostree import keys
from apt_ostree.daemon.variants import native, option_variants
from apt_ostree.errors import (
    ERROR_PREFIX,
    AptOstreeError,
    Cancelled,
    DaemonUnreachable,
    error_class,
)
from apt_ostree.progress import Progress
from apt_ostree.system.requests import DbDiff, DbList, Request, Search, Status, to_call
from apt_ostree.system.results import (
    BootFailure,
    CachedUpdate,
    CommitDiff,
    DeploymentInfo,
    Outcome,
    PackageList,
    Result,
    SearchMatch,
    StatusResult,
    TransactionInfo,
    packages_from_wire,
)


class ProjectErrorNames(AbstractErrorRule):  # type: ignore[misc]
    """org.aptostree.AptOstree1.Error.<name> -> the project's class of that name."""

    def match_type(self, exception_type: type) -> bool:
        return False

    def get_name(self, exception_type: type) -> str:
        raise LookupError(exception_type)

    def match_name(self, error_name: str) -> bool:
        return error_name.startswith(ERROR_PREFIX + ".")

    def get_type(self, error_name: str) -> type:
        return error_class(error_name)


class DaemonClient:
    """One connection to apt-ostreed on the system bus."""

    def __init__(self, bus: SystemMessageBus) -> None:
        self.bus = bus

    @staticmethod
    def connect() -> DaemonClient | None:
        """A client when the daemon is on the bus or can be activated there, else None."""
        mapper = ErrorMapper()
        mapper.add_rule(ProjectErrorNames())
        bus = SystemMessageBus(error_mapper=mapper)
        try:
            if bus.proxy.NameHasOwner(keys.BUS_NAME):
                return DaemonClient(bus)
            if keys.BUS_NAME in bus.proxy.ListActivatableNames():
                return DaemonClient(bus)
        except (GLib.Error, DBusError):
            pass
        return None

    def close(self) -> None:
        self.bus.disconnect()

    def _sysroot(self) -> Any:
        return self.bus.get_proxy(keys.BUS_NAME, keys.SYSROOT_PATH, keys.INTERFACE_SYSROOT)

    def _os(self, osname: str | None) -> Any:
        path = self._call(lambda: self._sysroot().GetOS(osname or ""))
        return self.bus.get_proxy(keys.BUS_NAME, path, keys.INTERFACE_OS)

    @staticmethod
    def _call(call: Any) -> Any:
        try:
            return call()
        except DBusError as e:  # not one of ours: the bus or the daemon itself failed
            raise DaemonUnreachable(f"apt-ostreed: {e}") from e

    # ---- verbs ----

    def run(self, request: Request, osname: str | None, progress: Progress) -> Result:
        """Run `request` on the stateroot `osname` (None: the booted or only one)."""
        proxy = self._os(osname)
        positional, options = to_call(request)
        method = getattr(proxy, request.method)
        reply = self._call(lambda: method(*positional, option_variants(type(request), options)))
        if request.mutating:
            return self.follow(reply, progress)
        if isinstance(request, Status):
            return self.status(reply)
        if isinstance(request, DbDiff):
            return CommitDiff.from_wire(native(reply))
        if isinstance(request, DbList):
            checksum, rows = reply
            return PackageList(checksum, packages_from_wire(rows))
        assert isinstance(request, Search), request
        return tuple(SearchMatch(*row) for row in reply)

    def status(self, deployments: Any) -> StatusResult:
        """`Status`'s deployments, with the daemon's running transaction and cached update."""
        sysroot = self._sysroot()
        title, client, path = sysroot.ActiveTransaction
        return StatusResult(
            tuple(DeploymentInfo.from_wire(d) for d in native(deployments)),
            TransactionInfo(title, client, path) if path else None,
            CachedUpdate.from_wire(native(sysroot.CachedUpdate)),
            sysroot.AutomaticUpdatePolicy,
            tuple(BootFailure.from_wire(f) for f in native(sysroot.BootFailures)),
        )

    def automatic_update(self, osname: str | None, progress: Progress) -> Outcome | None:
        """Do what AutomaticUpdatePolicy says; None when it is `none`."""
        path = self._call(lambda: self._os(osname).AutomaticUpdateTrigger({}))
        return None if path == "/" else self.follow(path, progress)

    def cancel(self) -> None:
        self._call(lambda: self._sysroot().CancelTransaction())

    def reload(self) -> None:
        self._call(lambda: self._sysroot().ReloadConfig())

    def follow(self, path: str, progress: Progress) -> Outcome:
        """Start the transaction at `path`, render its signals, return its outcome."""
        return _Follower(self.bus, path, progress).run()


class _Follower:
    """One transaction's signals, until Finished."""

    def __init__(self, bus: SystemMessageBus, path: str, progress: Progress) -> None:
        self.proxy = bus.get_proxy(keys.BUS_NAME, path, keys.INTERFACE_TRANSACTION)
        self.loop = EventLoop()
        self.outcome: Outcome | None = None
        self.error: AptOstreeError | None = None
        self.done = False
        p, r = self.proxy, progress
        p.Message.connect(r.message)
        p.TaskBegin.connect(r.step_begin)
        p.TaskEnd.connect(r.step_end)
        p.PercentProgress.connect(r.percent)
        p.DownloadProgress.connect(lambda d, t, s, f: r.download(d, t, s, final=f))
        p.LiveMessage.connect(lambda text, f: r.live(text, final=f))
        p.Result.connect(self._result)
        p.Finished.connect(self._finished)
        bus.proxy.NameOwnerChanged.connect(self._owner_changed)

    def _result(self, outcome: dict[str, Any]) -> None:
        self.outcome = Outcome.from_wire(native(outcome))

    def _finished(self, success: bool, message: str, name: str) -> None:
        if not success:
            self.error = error_class(name)(message)
        self._end()

    def _owner_changed(self, name: str, old: str, new: str) -> None:
        if name == keys.BUS_NAME and not new and not self.done:
            self.error = DaemonUnreachable("apt-ostreed exited during the transaction")
            self._end()

    def _end(self) -> None:
        self.done = True
        self.loop.quit()

    def _interrupt(self) -> bool:
        print("Cancelling the transaction...", file=sys.stderr, flush=True)
        self.proxy.Cancel()
        return True

    def run(self) -> Outcome:
        source = GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, self._interrupt)
        try:
            self.proxy.Start()
            self.loop.run()
        finally:
            GLib.source_remove(source)
        if self.error is not None:
            raise self.error
        if self.outcome is None:
            raise Cancelled("the transaction ended without a result")
        return self.outcome
