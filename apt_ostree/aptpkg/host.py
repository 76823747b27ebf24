"""apt's process-wide state: the host's configuration, read once, and what it says of the host.

apt's configuration is global to a process. The host's is read once (it holds the machine's
Acquire settings: proxies, validity checks); the scratch roots (`root.AptRoot`) then point
every path that names state at their own folders before each operation.
"""

from __future__ import annotations

from pathlib import Path

import apt_pkg

from apt_ostree.errors import PackageError

_initialized = False


def init() -> None:
    """Read the host's apt configuration, the first time only: later calls keep whatever a
    scratch root has set since."""
    global _initialized
    if not _initialized:
        apt_pkg.init_config()
        apt_pkg.init_system()
        _initialized = True


def native_architecture() -> str:
    init()
    return str(apt_pkg.config.find("APT::Architecture"))


def host_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise PackageError("cannot tell the host's release: no VERSION_CODENAME in /etc/os-release")


def one_line(text: str) -> str:
    """apt's multi-line error text (a SystemError's) as one line: errors here are one line."""
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())
