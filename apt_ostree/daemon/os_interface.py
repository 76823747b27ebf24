"""org.aptostree.AptOstree1.OS, one object per stateroot: converts types and delegates.

Its methods are made from the request types (`requests.SERVED`), one per type: the request's
positional fields are the method's arguments, its options the trailing `a{sv}` (keyed by the
long flag's name). Mutating methods return the path of a new Transaction object (subscribe to
its signals, then call its Start()); read-only ones return structures (`REPLIES`): the
deployments as `aa{sv}` with the keys of `status --json`, a package diff as `a{sv}`, package
lists as arrays.
"""

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dasbus.server.interface import returns_multiple_arguments
from dasbus.server.template import BasicInterfaceTemplate
from dasbus.typing import Dict, List, Str, Tuple

from apt_ostree import keys
from apt_ostree.daemon.dbus_typing import (
    CallInfo,
    ObjPath,
    Options,
    Variant,
    accepts_additional_arguments,
    dbus_interface,
)
from apt_ostree.daemon.service import Daemon
from apt_ostree.daemon.variants import native, wire_variants
from apt_ostree.system.requests import (
    SERVED,
    DbDiff,
    DbList,
    Kind,
    Request,
    Search,
    Status,
    from_call,
)
from apt_ostree.system.results import CommitDiff, PackageList, Result, StatusResult

_ARG_TYPES = {Kind.STR: Str, Kind.STRS: List[Str]}
_PACKAGES = List[Tuple[Str, Str, Str]]
# the reply of each read-only method
REPLIES: Mapping[type[Request], Any] = {
    Status: List[Dict[Str, Variant]],
    DbDiff: Dict[Str, Variant],
    DbList: Tuple[Str, _PACKAGES],  # (checksum, packages): two out arguments
    Search: _PACKAGES,  # (name, version, summary)
}


def os_path(osname: str) -> str:
    """The object path of a stateroot; bytes outside [A-Za-z0-9] are escaped as _XX."""
    escaped = re.sub(r"[^A-Za-z0-9]", lambda m: f"_{ord(m.group()):02x}", osname)
    return f"{keys.OS_PATH_PREFIX}/{escaped}"


def reply_of(result: Result) -> Any:
    """A read-only method's reply, for the types in REPLIES."""
    if isinstance(result, StatusResult):
        return [wire_variants(d.to_wire()) for d in result.deployments]
    if isinstance(result, CommitDiff):
        return wire_variants(result.to_wire())
    if isinstance(result, PackageList):
        return (result.checksum, [tuple(p) for p in result.packages])
    assert isinstance(result, tuple), result
    return [(m.name, m.version, m.summary) for m in result]


class OSObject:
    """The implementation behind one OS object: the daemon and a stateroot name."""

    def __init__(self, daemon: Daemon, osname: str) -> None:
        self.daemon = daemon
        self.osname = osname

    def call(
        self, cls: type[Request], positional: Sequence[Any], options: Options, sender: str
    ) -> Any:
        request = from_call(cls, positional, native(options))
        if request.mutating:
            return ObjPath(self.daemon.start(request, self.osname, sender).path)
        return reply_of(self.daemon.query(request, self.osname))

    def automatic_update(self, sender: str) -> str:
        txn = self.daemon.automatic_update(self.osname, sender)
        return txn.path if txn is not None else "/"


def _method(cls: type[Request]) -> Callable[..., Any]:
    """The bus method of a request type: (its positional fields..., a{sv} options)."""

    def method(self: OSInterface, *values: Any, call_info: CallInfo) -> Any:
        *positional, options = values
        impl: OSObject = self.implementation
        return impl.call(cls, positional, options, call_info["sender"])

    kinds = [(f.name, _ARG_TYPES[f.kind]) for f in cls.fields() if f.positional]
    reply = REPLIES.get(cls, ObjPath)
    arg = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [
        inspect.Parameter("self", arg),
        *(inspect.Parameter(name, arg, annotation=hint) for name, hint in kinds),
        inspect.Parameter("options", arg, annotation=Dict[Str, Variant]),
        inspect.Parameter("call_info", inspect.Parameter.KEYWORD_ONLY),
    ]
    method.__signature__ = inspect.Signature(params, return_annotation=reply)  # type: ignore[attr-defined]
    method.__annotations__ = {**dict(kinds), "options": Dict[Str, Variant], "return": reply}
    method.__name__ = method.__qualname__ = cls.method
    if cls is DbList:
        method = returns_multiple_arguments(method)
    return accepts_additional_arguments(method)


class OSInterface(BasicInterfaceTemplate):  # type: ignore[misc]
    @property
    def Name(self) -> str:
        impl: OSObject = self.implementation
        return impl.osname

    @accepts_additional_arguments
    def AutomaticUpdateTrigger(self, options: Options, *, call_info: CallInfo) -> ObjPath:
        """Run AutomaticUpdatePolicy: a Transaction path, or "/" when the policy is none."""
        impl: OSObject = self.implementation
        return ObjPath(impl.automatic_update(call_info["sender"]))


for _cls in SERVED.values():
    setattr(OSInterface, _cls.method, _method(_cls))
OSInterface = dbus_interface(keys.INTERFACE_OS)(OSInterface)  # type: ignore[misc]
