"""org.aptostree.AptOstree1.OS, one object per stateroot: converts types and delegates.

Mutating methods return the path of a new Transaction object: subscribe to its signals, then
call its Start(). Read-only methods return the text the CLI prints. Every method takes a
catch-all options dictionary keyed by the CLI's long flag names (`apt_ostree/daemon/verbs.py`).
"""

import re
from typing import Any

from dasbus.server.template import BasicInterfaceTemplate

from apt_ostree import keys
from apt_ostree.daemon.dbus_typing import (
    CallInfo,
    ObjPath,
    Options,
    accepts_additional_arguments,
    dbus_interface,
)
from apt_ostree.daemon.service import Daemon
from apt_ostree.daemon.verbs import BY_METHOD


def os_path(osname: str) -> str:
    """The object path of a stateroot; bytes outside [A-Za-z0-9] are escaped as _XX."""
    escaped = re.sub(r"[^A-Za-z0-9]", lambda m: f"_{ord(m.group()):02x}", osname)
    return f"{keys.OS_PATH_PREFIX}/{escaped}"


class OSObject:
    """The implementation behind one OS object: the daemon and a stateroot name."""

    def __init__(self, daemon: Daemon, osname: str) -> None:
        self.daemon = daemon
        self.osname = osname

    def call(self, method: str, positional: list[Any], options: Options, sender: str) -> str:
        verb = BY_METHOD[method]
        plain = {k: v.unpack() for k, v in options.items()}
        if verb.mutating:
            return self.daemon.start(verb, self.osname, positional, plain, sender).path
        return self.daemon.query(verb, self.osname, positional, plain)

    def automatic_update(self, sender: str) -> str:
        txn = self.daemon.automatic_update(self.osname, sender)
        return txn.path if txn is not None else "/"


@dbus_interface(keys.INTERFACE_OS)
class OSInterface(BasicInterfaceTemplate):  # type: ignore[misc]
    def _call(self, method: str, positional: list[Any], options: Options, info: CallInfo) -> str:
        impl: OSObject = self.implementation
        return impl.call(method, positional, options, info["sender"])

    @property
    def Name(self) -> str:
        impl: OSObject = self.implementation
        return impl.osname

    # ---- mutating: each returns a Transaction path ----

    @accepts_additional_arguments
    def Upgrade(self, options: Options, *, call_info: CallInfo) -> ObjPath:
        return self._call("Upgrade", [], options, call_info)

    @accepts_additional_arguments
    def Deploy(self, revision: str, options: Options, *, call_info: CallInfo) -> ObjPath:
        return self._call("Deploy", [revision], options, call_info)

    @accepts_additional_arguments
    def Rebase(
        self, refspec: str, revision: str, options: Options, *, call_info: CallInfo
    ) -> ObjPath:
        return self._call("Rebase", [refspec, revision], options, call_info)

    @accepts_additional_arguments
    def Rollback(self, options: Options, *, call_info: CallInfo) -> ObjPath:
        return self._call("Rollback", [], options, call_info)

    @accepts_additional_arguments
    def Cleanup(self, options: Options, *, call_info: CallInfo) -> ObjPath:
        return self._call("Cleanup", [], options, call_info)

    @accepts_additional_arguments
    def KernelArgs(self, options: Options, *, call_info: CallInfo) -> ObjPath:
        return self._call("KernelArgs", [], options, call_info)

    @accepts_additional_arguments
    def FinalizeDeployment(
        self, checksum: str, options: Options, *, call_info: CallInfo
    ) -> ObjPath:
        return self._call("FinalizeDeployment", [checksum], options, call_info)

    @accepts_additional_arguments
    def Install(self, packages: list[str], options: Options, *, call_info: CallInfo) -> ObjPath:
        return self._call("Install", [packages], options, call_info)

    @accepts_additional_arguments
    def Uninstall(self, packages: list[str], options: Options, *, call_info: CallInfo) -> ObjPath:
        return self._call("Uninstall", [packages], options, call_info)

    @accepts_additional_arguments
    def OverrideRemove(
        self, packages: list[str], options: Options, *, call_info: CallInfo
    ) -> ObjPath:
        return self._call("OverrideRemove", [packages], options, call_info)

    @accepts_additional_arguments
    def OverrideReplace(
        self, packages: list[str], options: Options, *, call_info: CallInfo
    ) -> ObjPath:
        return self._call("OverrideReplace", [packages], options, call_info)

    @accepts_additional_arguments
    def OverrideReset(
        self, packages: list[str], options: Options, *, call_info: CallInfo
    ) -> ObjPath:
        return self._call("OverrideReset", [packages], options, call_info)

    @accepts_additional_arguments
    def Reset(self, options: Options, *, call_info: CallInfo) -> ObjPath:
        return self._call("Reset", [], options, call_info)

    @accepts_additional_arguments
    def RefreshMd(self, options: Options, *, call_info: CallInfo) -> ObjPath:
        return self._call("RefreshMd", [], options, call_info)

    @accepts_additional_arguments
    def Initramfs(self, options: Options, *, call_info: CallInfo) -> ObjPath:
        return self._call("Initramfs", [], options, call_info)

    @accepts_additional_arguments
    def ApplyLive(self, options: Options, *, call_info: CallInfo) -> ObjPath:
        return self._call("ApplyLive", [], options, call_info)

    @accepts_additional_arguments
    def UsrOverlay(self, options: Options, *, call_info: CallInfo) -> ObjPath:
        return self._call("UsrOverlay", [], options, call_info)

    @accepts_additional_arguments
    def AutomaticUpdateTrigger(self, options: Options, *, call_info: CallInfo) -> ObjPath:
        """Run AutomaticUpdatePolicy: a Transaction path, or "/" when the policy is none."""
        impl: OSObject = self.implementation
        return ObjPath(impl.automatic_update(call_info["sender"]))

    # ---- read-only: each returns the text the CLI prints ----

    @accepts_additional_arguments
    def Status(self, options: Options, *, call_info: CallInfo) -> str:
        return self._call("Status", [], options, call_info)

    @accepts_additional_arguments
    def DbDiff(self, from_rev: str, to_rev: str, options: Options, *, call_info: CallInfo) -> str:
        return self._call("DbDiff", [from_rev, to_rev], options, call_info)

    @accepts_additional_arguments
    def DbList(self, rev: str, options: Options, *, call_info: CallInfo) -> str:
        return self._call("DbList", [rev], options, call_info)

    @accepts_additional_arguments
    def DbVersion(self, rev: str, options: Options, *, call_info: CallInfo) -> str:
        return self._call("DbVersion", [rev], options, call_info)

    @accepts_additional_arguments
    def Search(self, patterns: list[str], options: Options, *, call_info: CallInfo) -> str:
        return self._call("Search", [patterns], options, call_info)
