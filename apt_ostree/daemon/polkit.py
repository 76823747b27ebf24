"""Authorization: root is allowed; everyone else is asked about to polkit, per action.

polkit's `CheckAuthorization` gets the caller as a `system-bus-name` subject: polkitd then
looks up the process and user behind the name itself, from the bus, which is race-free (a
`unix-process` subject built from a pid could be a reused pid). The call is synchronous and
without user interaction: the daemon's main loop waits for polkitd (milliseconds for rules and
defaults); an authentication agent would block it (see docs/daemon.md).
"""

from __future__ import annotations

import logging
from typing import Any

from gi.repository import Gio, GLib

from apt_ostree import keys
from apt_ostree.daemon.transaction import Caller
from apt_ostree.errors import AccessDenied

log = logging.getLogger(__name__)

CHECK_TIMEOUT_MS = 30_000


def check_authorization(connection: Any, caller: Caller, action: str) -> None:
    """Raise AccessDenied unless `caller` may do `action` (a name from DESIGN.md)."""
    if caller.uid == 0:
        return
    action_id = keys.polkit_action(action)
    subject = ("system-bus-name", {"name": GLib.Variant("s", caller.bus_name)})
    params = GLib.Variant("((sa{sv})sa{ss}us)", (subject, action_id, {}, 0, ""))
    try:
        reply = connection.call_sync(
            keys.POLKIT_BUS_NAME,
            keys.POLKIT_AUTHORITY_PATH,
            keys.POLKIT_AUTHORITY_INTERFACE,
            "CheckAuthorization",
            params,
            GLib.VariantType("((bba{ss}))"),
            Gio.DBusCallFlags.NONE,
            CHECK_TIMEOUT_MS,
            None,
        )
    except GLib.Error as e:
        log.warning("polkit check of %s for %s failed: %s", action_id, caller, e.message)
        raise AccessDenied(f"{action_id}: polkit could not be asked ({e.message})") from e
    authorized, challenge, _details = reply.unpack()[0]
    log.info("polkit: %s for %s: authorized=%s", action_id, caller, authorized)
    if not authorized:
        more = " (authentication required)" if challenge else ""
        raise AccessDenied(f"{action_id}: not authorized for uid {caller.uid}{more}")
