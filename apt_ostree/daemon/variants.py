"""Plain Python <-> GLib variants, for both ends of the bus.

Results travel as their wire dictionaries (`apt_ostree/system/results.py`): `wire_variants`
makes an `a{sv}` of one, typing each key by `WIRE_TYPES` and leaving out keys whose value is
None; `native` turns what dasbus hands over (variants nested in plain containers) back into
plain Python. Request options are typed by their request's fields (`option_variants`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gi.repository import GLib

from apt_ostree.system.requests import Request
from apt_ostree.system.results import WIRE_TYPES


def _variant(key: str, value: Any) -> GLib.Variant:
    signature = WIRE_TYPES[key]
    if signature == "a{sv}":
        return GLib.Variant(signature, wire_variants(value))
    if signature == "aa{sv}":
        return GLib.Variant(signature, [wire_variants(item) for item in value])
    return GLib.Variant(signature, value)


def wire_variants(doc: Mapping[str, Any]) -> dict[str, GLib.Variant]:
    """The `a{sv}` content of a wire dictionary (None values are left out)."""
    return {key: _variant(key, value) for key, value in doc.items() if value is not None}


def native(value: Any) -> Any:
    """`value` with every variant in it unpacked, recursively."""
    if isinstance(value, GLib.Variant):
        return value.unpack()
    if isinstance(value, tuple | list):
        return type(value)(native(v) for v in value)
    if isinstance(value, dict):
        return {k: native(v) for k, v in value.items()}
    return value


def option_variants(request: type[Request], options: Mapping[str, Any]) -> dict[str, GLib.Variant]:
    """A request's options (`requests.to_call`) as the `a{sv}` of its method."""
    kinds = {f.key: f.kind for f in request.fields()}
    return {key: GLib.Variant(kinds[key].value, value) for key, value in options.items()}
