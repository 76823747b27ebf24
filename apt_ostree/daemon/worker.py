"""The daemon's transaction worker: `python -m apt_ostree.daemon.worker`, its `Job` as JSON on
stdin.

Runs one request with the typed core, exactly as `apt-ostree --sysroot DIR VERB ...` does
(`system.execute`), and reports on its stdout as JSON lines: progress (`JsonProgress`), the
outcome (`{"kind": "result", "result": {...}}`, `Outcome.to_wire`), and at the end
`{"kind": "finished", "success", "error_name", "error_message"}`; after that it removes the
deployments the request dropped and prunes the repository (deferred: `Settings.defer_cleanup`),
so the client has its result without waiting for work that costs what the image weighs.

Why a child process and not a thread: python3-apt holds the GIL while it downloads (a thread
would freeze the bus), and the verbs are crash-safe under SIGKILL, so cancelling is killing the
worker: SIGTERM unwinds the verb (its context managers abort and unmount), SIGKILL follows
after a few seconds. The worker asks the kernel to kill it when the daemon dies
(PR_SET_PDEATHSIG), so a daemon killed mid-transaction does not leave an orphan changing the
system, and it runs in a mount namespace of its own, so that no scratch mount outlives it.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from apt_ostree.daemon.transaction import PARENT_ENV, Job
from apt_ostree.errors import AptOstreeError, Cancelled, Terminated, dbus_error_name
from apt_ostree.progress import JsonProgress, TerminalProgress
from apt_ostree.run import raise_on_sigterm
from apt_ostree.syscalls import die_with_parent, private_mount_namespace
from apt_ostree.system.requests import WORKER_REQUESTS, from_call
from apt_ostree.system.results import Outcome

if TYPE_CHECKING:
    from apt_ostree.system.sysroot import System


def _event_stream() -> TextIO:
    """The JSON channel is the original stdout; fd 1 then goes to stderr, so that tools the
    verb runs (dpkg, maintainer scripts) and libostree's own prints cannot write into it."""
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return events


def run(job: Job, events: TextIO) -> int:
    # imported here, after PDEATHSIG is set: the core imports libostree and apt
    from apt_ostree.system.execute import execute
    from apt_ostree.system.sysroot import Settings, System

    progress = JsonProgress(events)
    settings = Settings(recommends=job.recommends, defer_cleanup=True)
    system: System | None = None
    success, name, message = True, "", ""
    try:
        request = from_call(WORKER_REQUESTS[job.method], job.positional, job.options)
        system = System(Path(job.sysroot), job.osname, progress, settings)
        result = execute(system, request)
        assert isinstance(result, Outcome), result  # every worker request changes something
        progress.emit("result", result=result.to_wire())
    except AptOstreeError as e:
        success, name, message = False, dbus_error_name(e), str(e)
    except Terminated:
        success, name, message = False, dbus_error_name(Cancelled), "transaction cancelled"
    except Exception as e:  # a bug: still report it to the client, with the traceback logged
        traceback.print_exc()
        success, name, message = False, dbus_error_name(AptOstreeError), repr(e)
    progress.emit("finished", success=success, error_name=name, error_message=message)
    if system is not None:
        _housekeeping(system)
    return 0 if success else 1


def _housekeeping(system: System) -> None:
    """After the result: the cleanup the request deferred (dropped deployments' trees,
    repository prune: what the image weighs, not what changed). The daemon starts no
    transaction until this worker exits; its lines go to stderr (the daemon's log)."""
    try:
        system.run_deferred_cleanup(TerminalProgress(sys.stderr))
    except (AptOstreeError, Terminated) as e:  # left for the next cleanup
        print(f"worker: cleanup after the transaction: {e or 'cancelled'}", file=sys.stderr)


def main() -> int:
    die_with_parent()
    parent = os.environ.get(PARENT_ENV)
    if parent is not None and os.getppid() != int(parent):
        os._exit(1)  # the daemon died before prctl took effect
    raise_on_sigterm()
    why = private_mount_namespace()
    if why is not None:
        print(f"worker: no private mount namespace: {why}", file=sys.stderr)
    job = Job.from_json(sys.stdin.read())
    return run(job, _event_stream())


if __name__ == "__main__":
    sys.exit(main())
