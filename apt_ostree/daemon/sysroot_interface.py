"""org.aptostree.AptOstree1.Sysroot: converts types and delegates to `Daemon`."""

from dasbus.server.template import InterfaceTemplate

from apt_ostree import keys
from apt_ostree.daemon.dbus_typing import (
    CallInfo,
    ObjPath,
    accepts_additional_arguments,
    dbus_interface,
    emits_properties_changed,
)
from apt_ostree.daemon.os_interface import os_path
from apt_ostree.daemon.service import Daemon
from apt_ostree.errors import UsageError


@dbus_interface(keys.INTERFACE_SYSROOT)
class SysrootInterface(InterfaceTemplate):  # type: ignore[misc]
    @property
    def daemon(self) -> Daemon:
        impl: Daemon = self.implementation
        return impl

    def connect_signals(self) -> None:
        super().connect_signals()
        for name in (
            "Deployments",
            "Booted",
            "ActiveTransaction",
            "AutomaticUpdatePolicy",
            "CachedUpdate",
        ):
            self.watch_property(name, self.daemon.properties_changed)
        self.daemon.properties_changed.connect(self.flush_changes)

    @property
    def Path(self) -> str:
        return str(self.daemon.sysroot)

    @property
    def Deployments(self) -> str:
        """A JSON list of deployments, with the keys of `apt-ostree status --json`."""
        return self.daemon.deployments_json()

    @property
    def Booted(self) -> ObjPath:
        """The booted stateroot's OS object, or "/" (a folder sysroot boots nothing)."""
        name = self.daemon.booted_osname()
        return ObjPath(os_path(name) if name else "/")

    @property
    def ActiveTransaction(self) -> tuple[str, str, str]:
        """(title, initiating client, object path), or three empty strings."""
        t = self.daemon.active
        return (t.title, str(t.caller), t.path) if t else ("", "", "")

    @property
    def AutomaticUpdatePolicy(self) -> str:
        return self.daemon.config.automatic_update_policy.value

    @property
    def CachedUpdate(self) -> str:
        """JSON of the last automatic check (checksum, version, diff), or ""."""
        return self.daemon.cached_update

    @accepts_additional_arguments
    def GetOS(self, name: str, *, call_info: CallInfo) -> ObjPath:
        """The OS object of a stateroot ("": the booted one, or the only one)."""
        name = name or self.daemon.default_osname()
        if name not in self.daemon.osnames():
            raise UsageError(f"no stateroot {name!r} in {self.daemon.sysroot}")
        return ObjPath(os_path(name))

    @accepts_additional_arguments
    @emits_properties_changed
    def ReloadConfig(self, *, call_info: CallInfo) -> None:
        """Re-read the configuration file (`apt-ostree reload`)."""
        self.daemon.reload(call_info["sender"])

    @accepts_additional_arguments
    def CancelTransaction(self, *, call_info: CallInfo) -> None:
        """Cancel the running transaction (`apt-ostree cancel`)."""
        self.daemon.cancel(call_info["sender"])
