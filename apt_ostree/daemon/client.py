"""The CLI as a client of apt-ostreed: without `--sysroot`, served verbs go over the system bus.

The parsed arguments become a method call on the OS object (`verbs.call_arguments`); a
mutating call returns a Transaction, whose signals are rendered with the same
`TerminalProgress` as in-process mode and whose Output lines are printed on stdout, so the
output is the same. Errors come back as org.aptostree.AptOstree1.Error.* names and are raised
again as the project's error classes, so `main()` maps them onto the same exit codes
(Unchanged -> 77, InvalidArgs -> 2). Ctrl-C asks the daemon to cancel the transaction.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from dasbus.connection import SystemMessageBus
from dasbus.error import AbstractErrorRule, DBusError, ErrorMapper
from dasbus.loop import EventLoop
from gi.repository import GLib

from apt_ostree import keys
from apt_ostree.daemon.verbs import Verb, call_arguments, verb_of
from apt_ostree.errors import ERROR_PREFIX, AptOstreeError, UsageError
from apt_ostree.progress import TerminalProgress

BOOTED_MARKER = Path("/run/ostree-booted")


class DaemonUnreachable(AptOstreeError):
    """The daemon is not on the system bus (and cannot be activated)."""

    dbus_name = "Unreachable"


def _error_classes() -> dict[str, type[AptOstreeError]]:
    # import the modules that define errors, so that every class is known by name
    import apt_ostree.daemon.config
    import apt_ostree.daemon.polkit
    import apt_ostree.daemon.service
    import apt_ostree.deployments  # noqa: F401

    found: dict[str, type[AptOstreeError]] = {}
    todo: list[type[AptOstreeError]] = [AptOstreeError]
    while todo:
        cls = todo.pop(0)
        found.setdefault(f"{ERROR_PREFIX}.{cls.dbus_name}", cls)
        todo += cls.__subclasses__()
    return found


class ProjectErrorNames(AbstractErrorRule):  # type: ignore[misc]
    """org.aptostree.AptOstree1.Error.<name> -> the project's class with that dbus_name."""

    def __init__(self) -> None:
        self.classes = _error_classes()

    def match_type(self, exception_type: type) -> bool:
        return False

    def get_name(self, exception_type: type) -> str:
        raise LookupError(exception_type)

    def match_name(self, error_name: str) -> bool:
        return error_name.startswith(ERROR_PREFIX + ".")

    def get_type(self, error_name: str) -> type:
        return self.classes.get(error_name, AptOstreeError)


def connect() -> SystemMessageBus | None:
    """The system bus when the daemon is on it or can be activated there, else None."""
    mapper = ErrorMapper()
    mapper.add_rule(ProjectErrorNames())
    bus = SystemMessageBus(error_mapper=mapper)
    try:
        if bus.proxy.NameHasOwner(keys.BUS_NAME):
            return bus
        if keys.BUS_NAME in bus.proxy.ListActivatableNames():
            return bus
    except (GLib.Error, DBusError):
        pass
    return None


def _variant(verb: Verb, name: str, value: Any) -> GLib.Variant:
    kind = next(a.kind for a in verb.options if a.name == name)
    return GLib.Variant(kind.value, value)


def dispatch(args: argparse.Namespace) -> int | None:
    """Run a served verb through the daemon; None when the CLI should run it in-process
    (`--sysroot` given, a verb the daemon does not serve, or no daemon on a machine that is
    not booted from OSTree, where in-process mode explains what to do)."""
    verb = verb_of(args)
    if getattr(args, "trigger_automatic_update_policy", False):
        return _automatic(args)
    if verb is None or getattr(args, "sysroot", None) is not None:
        return None
    bus = connect()
    if bus is None:
        if not BOOTED_MARKER.exists():
            return None
        raise DaemonUnreachable(f"cannot reach apt-ostreed ({keys.BUS_NAME}) on the system bus")
    try:
        return _call(bus, verb, args)
    except DBusError as e:
        raise DaemonUnreachable(f"apt-ostreed: {e}") from e
    finally:
        bus.disconnect()


def _connected() -> SystemMessageBus:
    bus = connect()
    if bus is None:
        raise DaemonUnreachable(f"cannot reach apt-ostreed ({keys.BUS_NAME}) on the system bus")
    return bus


def _automatic(args: argparse.Namespace) -> int:
    """`upgrade --trigger-automatic-update-policy` (apt-ostreed-automatic.service)."""
    if args.sysroot is not None:
        raise UsageError("--trigger-automatic-update-policy needs the daemon: drop --sysroot")
    bus = _connected()
    try:
        sysroot = bus.get_proxy(keys.BUS_NAME, keys.SYSROOT_PATH)
        os_path = sysroot.GetOS(args.osname or "")
        os_proxy = bus.get_proxy(keys.BUS_NAME, os_path, keys.INTERFACE_OS)
        path = os_proxy.AutomaticUpdateTrigger({})
        if path == "/":
            print("Automatic updates are not enabled (AutomaticUpdatePolicy=none).")
            return 0
        return follow(bus, path)
    except DBusError as e:
        raise DaemonUnreachable(f"apt-ostreed: {e}") from e
    finally:
        bus.disconnect()


def _call(bus: SystemMessageBus, verb: Verb, args: argparse.Namespace) -> int:
    sysroot = bus.get_proxy(keys.BUS_NAME, keys.SYSROOT_PATH)
    os_path = sysroot.GetOS(getattr(args, "osname", None) or "")
    os_proxy = bus.get_proxy(keys.BUS_NAME, os_path, keys.INTERFACE_OS)
    positional, options = call_arguments(verb, args)
    variants = {k: _variant(verb, k, v) for k, v in options.items()}
    result: str = getattr(os_proxy, verb.method)(*positional, variants)
    if not verb.mutating:
        sys.stdout.write(result)
        sys.stdout.flush()
        return 0
    return follow(bus, result)


class _Follower:
    """Renders one transaction's signals until Finished."""

    def __init__(self, bus: SystemMessageBus, path: str) -> None:
        self.proxy = bus.get_proxy(keys.BUS_NAME, path, keys.INTERFACE_TRANSACTION)
        self.progress = TerminalProgress()
        self.loop = EventLoop()
        self.result: tuple[bool, str, str] | None = None
        p, r = self.proxy, self.progress
        p.Message.connect(r.message)
        p.TaskBegin.connect(r.step_begin)
        p.TaskEnd.connect(r.step_end)
        p.PercentProgress.connect(r.percent)
        p.DownloadProgress.connect(lambda d, t, s, f: r.download(d, t, s, final=f))
        p.LiveMessage.connect(lambda text, f: r.live(text, final=f))
        p.Output.connect(lambda line: print(line, flush=True))
        p.Finished.connect(self._finished)
        bus.proxy.NameOwnerChanged.connect(self._owner_changed)

    def _finished(self, success: bool, message: str, name: str) -> None:
        self.result = (success, message, name)
        self.loop.quit()

    def _owner_changed(self, name: str, old: str, new: str) -> None:
        if name == keys.BUS_NAME and not new and self.result is None:
            self.result = (False, "apt-ostreed exited during the transaction", "")
            self.loop.quit()

    def _interrupt(self) -> bool:
        print("Cancelling the transaction...", file=sys.stderr, flush=True)
        self.proxy.Cancel()
        return True

    def run(self) -> tuple[bool, str, str]:
        source = GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, self._interrupt)
        try:
            self.proxy.Start()
            self.loop.run()
        finally:
            GLib.source_remove(source)
        assert self.result is not None
        return self.result


def follow(bus: SystemMessageBus, path: str) -> int:
    success, message, name = _Follower(bus, path).run()
    if not success:
        cls = ProjectErrorNames().get_type(name)
        raise cls(message)
    return 0


def _simple(bus_method: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        bus = _connected()
        try:
            getattr(bus.get_proxy(keys.BUS_NAME, keys.SYSROOT_PATH), bus_method)()
        finally:
            bus.disconnect()
        return 0

    return run


def register(verbs: Any) -> None:
    """Verbs that exist only with the daemon."""
    p = verbs.add_parser("cancel", help="cancel the daemon's running transaction")
    p.set_defaults(func=_simple("CancelTransaction"))
    p = verbs.add_parser("reload", help="make the daemon re-read its configuration")
    p.set_defaults(func=_simple("ReloadConfig"))
    # the upgrade parser is cli/client.py's; the flag exists only with the daemon
    verbs.choices["upgrade"].add_argument(
        "--trigger-automatic-update-policy",
        action="store_true",
        help="do what the daemon's AutomaticUpdatePolicy says (check or stage)",
    )
