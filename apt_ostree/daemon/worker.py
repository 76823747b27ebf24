"""The daemon's transaction worker: `python -m apt_ostree.daemon.worker VERB --sysroot DIR ...`.

Runs one client verb in-process, exactly as `apt-ostree --sysroot DIR VERB ...` does (same
parser, same functions, same output), and reports on its stdout as JSON lines: progress
(`JsonProgress`), each line the verb prints (`{"kind": "output"}`), and at the end
`{"kind": "finished", "success", "error_name", "error_message"}`; after that it removes the
deployments the verb dropped and prunes the repository (deferred: `defer_cleanups`), so the
client has its result without waiting for work that costs what the image weighs.

Why a child process and not a thread: python3-apt holds the GIL while it downloads (a thread
would freeze the bus), and the verbs are crash-safe under SIGKILL, so cancelling is killing the
worker: SIGTERM unwinds the verb (its context managers abort and unmount), SIGKILL follows
after a few seconds. The worker asks the kernel to kill it when the daemon dies
(PR_SET_PDEATHSIG), so a daemon killed mid-transaction does not leave an orphan changing the
system, and it runs in a mount namespace of its own, so that no scratch mount outlives it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from apt_ostree.errors import ERROR_PREFIX, AptOstreeError, Terminated, dbus_error_name
from apt_ostree.progress import JsonProgress
from apt_ostree.run import private_mount_namespace, raise_on_sigterm

PR_SET_PDEATHSIG = 1
PARENT_ENV = "APT_OSTREED_PID"
RECOMMENDS_ENV = "APT_OSTREED_RECOMMENDS"  # "1": the daemon's config says Recommends=true


class _OutputStream(io.TextIOBase):
    """sys.stdout of the worker: each printed line becomes an `output` event."""

    def __init__(self, progress: JsonProgress) -> None:
        self._progress = progress
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._progress.emit("output", text=line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._progress.emit("output", text=self._pending)
            self._pending = ""

    def isatty(self) -> bool:
        return False


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    parent = os.environ.get(PARENT_ENV)
    if parent is not None and os.getppid() != int(parent):
        os._exit(1)  # the daemon died before prctl took effect


def _event_stream() -> TextIO:
    """The JSON channel is the original stdout; fd 1 then goes to stderr, so that tools the
    verb runs (dpkg, maintainer scripts) cannot write into the channel."""
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return events


def run(argv: Sequence[str], events: TextIO) -> int:
    # imported here: the CLI modules import libostree and apt, after PDEATHSIG is set
    from apt_ostree.cli import client
    from apt_ostree.cli.main import build_parser
    from apt_ostree.deployments import defer_cleanups, install_recommends

    defer_cleanups()
    install_recommends(os.environ.get(RECOMMENDS_ENV) == "1")

    progress = JsonProgress(events)
    # the verbs render through `client.TerminalProgress()`: report as JSON instead
    setattr(client, "TerminalProgress", lambda stream=None: progress)  # noqa: B010
    out = _OutputStream(progress)
    success, name, message = True, "", ""
    try:
        with contextlib.redirect_stdout(out):  # type: ignore[type-var]
            if argv[:1] == ["--automatic"]:
                automatic(argv, progress)
            else:
                args = build_parser().parse_args(list(argv))
                args.func(args)
    except AptOstreeError as e:
        success, name, message = False, dbus_error_name(e), str(e)
    except Terminated:
        success, name, message = False, f"{ERROR_PREFIX}.Cancelled", "transaction cancelled"
    except Exception as e:  # a bug: still report it to the client, with the traceback logged
        import traceback

        traceback.print_exc()
        success, name, message = False, f"{ERROR_PREFIX}.Failed", repr(e)
    out.flush()
    progress.emit("finished", success=success, error_name=name, error_message=message)
    _housekeeping()
    return 0 if success else 1


def _housekeeping() -> None:
    """After the result: the cleanup the verb deferred (dropped deployments' trees, repository
    prune: what the image weighs, not what changed). The daemon starts no transaction until
    this worker exits; its lines go to stderr (the daemon's log), not to the client."""
    from apt_ostree.deployments import run_deferred_cleanups
    from apt_ostree.progress import TerminalProgress

    try:
        run_deferred_cleanups(TerminalProgress(sys.stderr))
    except (AptOstreeError, Terminated) as e:  # left for the next cleanup
        print(f"worker: cleanup after the transaction: {e or 'cancelled'}", file=sys.stderr)


def automatic(argv: Sequence[str], progress: JsonProgress) -> None:
    """`--automatic check|stage --sysroot DIR --os NAME`: AutomaticUpdatePolicy's run. Both
    report what the update brings (`cached_update`); `stage` then deploys it (stages it on a
    booted system), as `upgrade` does."""
    from apt_ostree.deployments import SysrootClient, UpgradeOptions
    from apt_ostree.pkgdiff import render_diff

    p = argparse.ArgumentParser(prog="apt-ostreed worker")
    p.add_argument("--automatic", choices=("check", "stage"), required=True)
    p.add_argument("--sysroot", type=Path, required=True)
    p.add_argument("--os", dest="osname", required=True)
    args = p.parse_args(list(argv))
    client = SysrootClient(args.sysroot, args.osname, progress)
    outcome = client.upgrade(UpgradeOptions(preview=True))
    update = None
    if outcome.changed and outcome.checksum and outcome.diff is not None:
        version = client.commit(outcome.checksum).version
        update = {"checksum": outcome.checksum, "version": version, **outcome.diff.to_json()}
    progress.emit("cached_update", update=update)
    if args.automatic == "stage" and update is not None:
        outcome = client.upgrade(UpgradeOptions())
    for line in outcome.lines:
        print(line)
    for line in render_diff(outcome.diff) if outcome.diff is not None else ():
        print(line)


def main() -> int:
    _die_with_parent()
    raise_on_sigterm()
    why = private_mount_namespace()
    if why is not None:
        print(f"worker: no private mount namespace: {why}", file=sys.stderr)
    return run(sys.argv[1:], _event_stream())


if __name__ == "__main__":
    sys.exit(main())
