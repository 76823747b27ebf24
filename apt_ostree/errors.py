"""The project's errors: one root with a shallow hierarchy, and their D-Bus names.

Every class the project raises on purpose is here, with its name on the bus in one static
table (`DBUS_NAMES`): the daemon sends `org.aptostree.AptOstree1.Error.<name>`, and a client
maps the name back to the class (`error_class`) with nothing more than this module, without
python-apt or libostree. The CLI's exit code follows the class: `UsageError` 2 (the command
line or a call's arguments were malformed), everything else 1; `UnchangedError` is the 77 of
`--unchanged-exit-77`.
"""

from __future__ import annotations

from collections.abc import Mapping

ERROR_PREFIX = "org.aptostree.AptOstree1.Error"


class AptOstreeError(Exception):
    """Root of every error the project raises on purpose; its message is one line for users."""


class UsageError(AptOstreeError):
    """The command line, or the arguments of a bus call, were malformed (exit code 2)."""


class StateError(AptOstreeError):
    """What is on disk cannot be read as expected: a malformed origin, a missing commit."""


class RefusedError(AptOstreeError):
    """The change is refused as things are (a setting forbids it, nothing to act on)."""


class TreefileError(AptOstreeError):
    """A treefile (or a file it names) is malformed."""


class PackageError(AptOstreeError):
    """Package resolution, download or verification failed."""


class RepoError(AptOstreeError):
    """An OSTree repository or sysroot operation failed."""


class CommandError(AptOstreeError):
    """An external tool failed; carries its stderr."""

    def __init__(self, message: str, *, stderr: str = "", returncode: int = 1) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.returncode = returncode


class UnchangedError(AptOstreeError):
    """Nothing changed where the caller asked to be told (exit code 77)."""


class PostprocessError(AptOstreeError):
    """A tree could not be turned into the committed layout (a step or a user script failed)."""


class LayeringError(AptOstreeError):
    """Client-side layering failed: a maintainer script, dpkg, or a refused layer content."""


class DeploymentError(AptOstreeError):
    """A deployment operation was refused or failed (nothing was changed)."""


class LiveError(AptOstreeError):
    """apply-live or usroverlay was refused or failed."""


class ImageError(AptOstreeError):
    """A disk image could not be built."""


class ConfigError(AptOstreeError):
    """The daemon's configuration file is malformed."""


class BusyError(AptOstreeError):
    """Another transaction is running."""


class AccessDenied(AptOstreeError):
    """polkit did not allow the caller to do this."""


class Cancelled(AptOstreeError):
    """The transaction was cancelled."""


class DaemonUnreachable(AptOstreeError):
    """The daemon is not on the system bus (and cannot be activated), or went away."""


# The name of each class on the bus, after ERROR_PREFIX. Read by both sides: keep it static.
DBUS_NAMES: Mapping[type[AptOstreeError], str] = {
    AptOstreeError: "Failed",
    UsageError: "InvalidArgs",
    StateError: "InvalidState",
    RefusedError: "Refused",
    TreefileError: "InvalidTreefile",
    PackageError: "PackageError",
    RepoError: "RepoError",
    CommandError: "CommandFailed",
    UnchangedError: "Unchanged",
    PostprocessError: "PostprocessFailed",
    LayeringError: "LayeringFailed",
    DeploymentError: "DeploymentFailed",
    LiveError: "LiveFailed",
    ImageError: "ImageFailed",
    ConfigError: "InvalidConfig",
    BusyError: "Busy",
    AccessDenied: "AccessDenied",
    Cancelled: "Cancelled",
    DaemonUnreachable: "Unreachable",
}
_BY_NAME: Mapping[str, type[AptOstreeError]] = {
    f"{ERROR_PREFIX}.{name}": cls for cls, name in DBUS_NAMES.items()
}


def dbus_error_name(error: AptOstreeError | type[AptOstreeError]) -> str:
    """`org.aptostree.AptOstree1.Error.<name>` of an error (of its nearest listed class)."""
    cls = error if isinstance(error, type) else type(error)
    for klass in cls.__mro__:
        if klass in DBUS_NAMES:
            return f"{ERROR_PREFIX}.{DBUS_NAMES[klass]}"
    return f"{ERROR_PREFIX}.Failed"


def error_class(name: str) -> type[AptOstreeError]:
    """The class of a D-Bus error name; AptOstreeError for one this version does not know."""
    return _BY_NAME.get(name, AptOstreeError)


class Terminated(BaseException):
    """SIGTERM, raised where the process is (apt_ostree.run.raise_on_sigterm), so that
    context managers unwind: children stopped, mounts and work folders removed. A
    BaseException, so that no `except Exception` on the way swallows it."""
