"""Names defined once: commit metadata keys, bus names, object paths, polkit actions."""

from __future__ import annotations

# ---- commit metadata (DESIGN.md "Commit metadata") ----
VERSION = "version"  # ostree's standard key
PACKAGES = "aptostree.packages"  # a(sss): name, version, architecture
INPUTHASH = "aptostree.inputhash"
TREEFILE = "aptostree.treefile"  # flattened treefile, JSON
CLIENTLAYER = "aptostree.clientlayer"
BASE_CHECKSUM = "aptostree.base-checksum"
DERIVED_FROM = "aptostree.derived-from"  # a derived image's commit: the image commit below it
REQUESTED_PACKAGES = "aptostree.requested-packages"
REQUESTED_LOCAL_PACKAGES = "aptostree.requested-local-packages"
OVERRIDE_REMOVE = "aptostree.override-remove"
OVERRIDE_REPLACE = "aptostree.override-replace"
SOURCE_TITLE = "ostree.source-title"

METADATA_TYPES: dict[str, str] = {
    VERSION: "s",
    PACKAGES: "a(sss)",
    INPUTHASH: "s",
    TREEFILE: "s",
    CLIENTLAYER: "b",
    BASE_CHECKSUM: "s",
    REQUESTED_PACKAGES: "as",
    REQUESTED_LOCAL_PACKAGES: "as",
    OVERRIDE_REMOVE: "as",
    OVERRIDE_REPLACE: "as",
    SOURCE_TITLE: "s",
}


def metadata_type(key: str, value: object) -> str:
    """The GVariant type of a metadata value: its key's, else as json-glib types rpm-ostree's
    add-commit-metadata: booleans `b`, integers `x`, other numbers `d`, anything else `s`."""
    if key in METADATA_TYPES:
        return METADATA_TYPES[key]
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "x"
    return "d" if isinstance(value, float) else "s"


# Bump when the same inputs would now give a different tree (postprocessing changed), so
# that no-change detection does not keep an image made by an older apt-ostree.
COMPOSE_FORMAT = 7  # 5: apt timers masked; 6: apt and dpkg guarded; 7: .pyc mtimes 0

# ---- D-Bus ----
BUS_NAME = "org.aptostree.AptOstree1"
OBJECT_ROOT = "/org/aptostree/AptOstree1"
SYSROOT_PATH = f"{OBJECT_ROOT}/Sysroot"
INTERFACE_SYSROOT = f"{BUS_NAME}.Sysroot"
INTERFACE_OS = f"{BUS_NAME}.OS"
INTERFACE_TRANSACTION = f"{BUS_NAME}.Transaction"
OS_PATH_PREFIX = f"{OBJECT_ROOT}/OS"
TRANSACTION_PATH_PREFIX = f"{OBJECT_ROOT}/Transaction"
POLKIT_BUS_NAME = "org.freedesktop.PolicyKit1"
POLKIT_AUTHORITY_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_AUTHORITY_INTERFACE = "org.freedesktop.PolicyKit1.Authority"
DAEMON_CONFIG = "/etc/apt-ostreed.conf"
# libostree's mark of a machine booted from OSTree (ostree-prepare-root makes it)
BOOTED_MARKER = "/run/ostree-booted"


def polkit_action(name: str) -> str:
    """`org.aptostree.AptOstree1.<name>` (DESIGN.md lists the names)."""
    return f"{BUS_NAME}.{name}"
