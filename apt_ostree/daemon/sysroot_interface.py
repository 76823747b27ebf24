"""org.aptostree.AptOstree1.Sysroot: converts types and delegates to `Daemon`."""

from dasbus.server.template import InterfaceTemplate
from dasbus.typing import Dict, List, Str

from apt_ostree import keys
from apt_ostree.daemon.dbus_typing import (
    CallInfo,
    ObjPath,
    Variant,
    accepts_additional_arguments,
    dbus_interface,
    emits_properties_changed,
)
from apt_ostree.daemon.os_interface import os_path
from apt_ostree.daemon.service import Daemon
from apt_ostree.daemon.variants import wire_variants
from apt_ostree.errors import UsageError


@dbus_interface(keys.INTERFACE_SYSROOT)
class SysrootInterface(InterfaceTemplate):  # type: ignore[misc]
    @property
    def daemon(self) -> Daemon:
        impl: Daemon = self.implementation
        return impl

    def connect_signals(self) -> None:
        """PropertiesChanged for a property when what it shows has changed."""
        super().connect_signals()
        d = self.daemon
        for name, signal in (
            ("Deployments", d.deployments_changed),
            ("Booted", d.deployments_changed),
            ("ActiveTransaction", d.transaction_changed),
            ("AutomaticUpdatePolicy", d.config_changed),
            ("CachedUpdate", d.cached_update_changed),
            ("BootFailures", d.deployments_changed),
        ):
            self.watch_property(name, signal)
            signal.connect(self.flush_changes)

    @property
    def Path(self) -> Str:
        return str(self.daemon.sysroot)

    @property
    def Deployments(self) -> List[Dict[Str, Variant]]:
        """Every deployment, with the keys of `apt-ostree status --json`."""
        return [wire_variants(d.to_wire()) for d in self.daemon.deployments()]

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
    def AutomaticUpdatePolicy(self) -> Str:
        return self.daemon.config.automatic_update_policy.value

    @property
    def CachedUpdate(self) -> Dict[Str, Variant]:
        """What the last automatic check found: checksum, version, and the package changes
        (added, removed, upgraded, downgraded, as `DbDiff`); empty when none."""
        update = self.daemon.cached_update()
        return wire_variants(update.to_wire()) if update is not None else {}

    @property
    def BootFailures(self) -> List[Dict[Str, Variant]]:
        """The updates whose trial boot failed (checksum, base-checksum, version, reason,
        time): `upgrade` and automatic updates do not stage them again."""
        return [wire_variants(f.to_wire()) for f in self.daemon.boot_failures()]

    @accepts_additional_arguments
    def GetOS(self, name: Str, *, call_info: CallInfo) -> ObjPath:
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
