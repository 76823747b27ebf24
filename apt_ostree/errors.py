"""The project's errors: one root with a shallow hierarchy that maps onto D-Bus error names."""

from __future__ import annotations

ERROR_PREFIX = "org.aptostree.AptOstree1.Error"


class AptOstreeError(Exception):
    """Root of every error the project raises on purpose; its message is one line for users."""

    dbus_name = "Failed"


class UsageError(AptOstreeError):
    """The command line was malformed (exit code 2)."""

    dbus_name = "InvalidArgs"


class TreefileError(AptOstreeError):
    """A treefile (or a file it names) is malformed."""

    dbus_name = "InvalidTreefile"


class PackageError(AptOstreeError):
    """Package resolution, download or verification failed."""

    dbus_name = "PackageError"


class RepoError(AptOstreeError):
    """An OSTree repository operation failed."""

    dbus_name = "RepoError"


class CommandError(AptOstreeError):
    """An external tool failed; carries its stderr."""

    dbus_name = "CommandFailed"

    def __init__(self, message: str, *, stderr: str = "", returncode: int = 1) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.returncode = returncode


class UnchangedError(AptOstreeError):
    """Nothing changed where the caller asked to be told (exit code 77)."""

    dbus_name = "Unchanged"


def dbus_error_name(error: AptOstreeError) -> str:
    return f"{ERROR_PREFIX}.{error.dbus_name}"


class PostprocessError(AptOstreeError):
    """A tree could not be turned into the committed layout (a step or a user script failed)."""

    dbus_name = "PostprocessFailed"


class LayeringError(AptOstreeError):
    """Client-side layering failed: a maintainer script, dpkg, or a refused layer content."""

    dbus_name = "LayeringFailed"


class Terminated(BaseException):
    """SIGTERM, raised where the process is (apt_ostree.run.raise_on_sigterm), so that
    context managers unwind: children stopped, mounts and work folders removed. A
    BaseException, so that no `except Exception` on the way swallows it."""
