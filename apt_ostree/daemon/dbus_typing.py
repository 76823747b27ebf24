"""dasbus's decorators and D-Bus type names, typed for mypy (dasbus ships no type hints).

The interface modules annotate with these names; dasbus reads the annotations at runtime to
generate the introspection XML, so they are real dasbus types at runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from dasbus.server import interface as _interface
from dasbus.server import property as _property
from dasbus.typing import ObjPath as _ObjPath
from dasbus.typing import UInt64 as _UInt64
from gi.repository import GLib

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

if TYPE_CHECKING:
    ObjPath = str
    UInt64 = int
    Variant = Any
else:
    ObjPath = _ObjPath
    UInt64 = _UInt64
    Variant = GLib.Variant

Options = dict[str, Variant]
CallInfo = dict[str, Any]


def dbus_interface(name: str) -> Callable[[C], C]:
    return cast(Callable[[C], C], _interface.dbus_interface(name))


def dbus_signal(method: F) -> F:
    return cast(F, _interface.dbus_signal(method))


def accepts_additional_arguments(method: F) -> F:
    return cast(F, _interface.accepts_additional_arguments(method))


def emits_properties_changed(method: F) -> F:
    return cast(F, _property.emits_properties_changed(method))
