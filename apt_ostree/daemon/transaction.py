"""A transaction: one request run by a worker process, reported as signals.

Bus-free: the signals are dasbus `Signal`s that `transaction_interface.py` re-emits on the bus.
The worker (`apt_ostree/daemon/worker.py`) gets its `Job` as JSON on stdin and writes JSON
lines on a pipe; a GLib watch on the pipe turns each into a signal. The worker's `result` and
`finished` lines are the client's result; end of file (the worker exited, or was killed) ends
the transaction, with `finished` if the worker never said it. Between the two the worker
cleans up (see worker.py); a transaction begun then starts its own worker only after that one
exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dasbus.signal import Signal
from gi.repository import GLib

from apt_ostree import keys
from apt_ostree.errors import AptOstreeError, Cancelled, dbus_error_name
from apt_ostree.run import spawn
from apt_ostree.system.results import Outcome

log = logging.getLogger(__name__)

# Cancel: SIGTERM to the worker's process group, SIGKILL when it is still there after this
KILL_AFTER_SECONDS = 5
PARENT_ENV = "APT_OSTREED_PID"  # the worker checks that its parent is still this daemon


@dataclass(frozen=True)
class Caller:
    """Who called: the bus unique name and the process behind it."""

    bus_name: str
    pid: int
    uid: int

    def __str__(self) -> str:
        return f"{self.bus_name} (pid {self.pid}, uid {self.uid})"


@dataclass(frozen=True)
class Job:
    """What a worker runs: a request (as its bus call, `requests.to_call`) on a stateroot,
    with the daemon's settings that reach the verbs."""

    sysroot: str
    osname: str
    method: str
    positional: list[Any]
    options: dict[str, Any]
    recommends: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> Job:
        return Job(**json.loads(text))


class Transaction:
    def __init__(
        self,
        number: int,
        title: str,
        job: Job,
        caller: Caller,
        on_done: Callable[[Transaction], None],
        after: Transaction | None = None,
    ) -> None:
        self.path = f"{keys.TRANSACTION_PATH_PREFIX}/{number}"
        self.title = title
        self.job = job
        self.caller = caller
        self._on_done = on_done
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._result: tuple[bool, str, str] | None = None
        self.cancelled = False
        self.reported = False  # finished was emitted (the worker may still clean up)
        self.done = False  # the worker is gone
        # a transaction whose worker still cleans up after its result: ours waits for it
        self._after = after if after is not None and not after.done else None
        self._on_exit: list[Callable[[], None]] = []
        self._waiting = False
        # signals: message(text), task_begin(title), task_end(title, seconds),
        # percent(title, done, total), download(done, total, speed, final), live(text, final),
        # result(Outcome), finished(success, error_message, error_name)
        self.message = Signal()
        self.task_begin = Signal()
        self.task_end = Signal()
        self.percent = Signal()
        self.download = Signal()
        self.live = Signal()
        self.result = Signal()
        self.finished = Signal()
        # the daemon decides who may cancel (the initiator, root, polkit's `cancel`)
        self.authorize_cancel: Callable[[str], None] = lambda sender: None

    @property
    def started(self) -> bool:
        return self._proc is not None or self._waiting

    def describe(self) -> str:
        return f"{self.path} ({self.title}) for client {self.caller}"

    def start(self) -> None:
        if self._proc is not None or self._waiting:
            return  # a second Start() is harmless
        if self._after is not None and not self._after.done:
            self._waiting = True
            self._after._on_exit.append(self._spawn)
            return
        self._spawn()

    def _spawn(self) -> None:
        self._waiting = False
        if self.done:
            return  # cancelled while it waited
        log.info("transaction %s: %s", self.path, self.job)
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        self._proc = spawn(
            [sys.executable, "-m", "apt_ostree.daemon.worker"],
            env=env,
            input=self.job.to_json().encode(),
        )
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        GLib.io_add_watch(fd, GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP, self._readable)

    def cancel(self) -> None:
        """Stop the worker: libostree's state is safe at any point (see worker.py)."""
        if self.done:
            return
        self.cancelled = True
        if self._proc is None:
            self._finish()
            return
        self._signal(signal.SIGTERM)
        GLib.timeout_add_seconds(KILL_AFTER_SECONDS, self._kill)

    def cancel_by(self, sender: str) -> None:
        self.authorize_cancel(sender)
        self.cancel()

    def _kill(self) -> bool:
        if not self.done:
            self._signal(signal.SIGKILL)
        return False

    def _signal(self, sig: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)  # the worker leads its own process group

    def _readable(self, fd: int, condition: int) -> bool:
        data = os.read(fd, 65536)
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._event(line)
        if data:
            return True
        assert self._proc is not None
        self._proc.stdout.close()  # type: ignore[union-attr]
        self._proc.wait()
        self._finish()
        return False

    def _event(self, line: bytes) -> None:
        try:
            ev: dict[str, Any] = json.loads(line)
            self._dispatch(ev)
        except (ValueError, KeyError, TypeError):
            log.warning("transaction %s: bad worker line %r", self.path, line)

    def _dispatch(self, ev: dict[str, Any]) -> None:
        kind = ev["kind"]
        if kind == "message":
            self.message.emit(ev["text"])
        elif kind == "step_begin":
            self.task_begin.emit(ev["title"])
        elif kind == "step_end":
            self.task_end.emit(ev["title"], float(ev["seconds"]))
        elif kind == "percent":
            self.percent.emit(ev["title"], int(ev["done"]), int(ev["total"]))
        elif kind == "download":
            args = (int(ev["done"]), int(ev["total"]), float(ev["speed"]), bool(ev["final"]))
            self.download.emit(*args)
        elif kind == "live":
            self.live.emit(ev["text"], bool(ev["final"]))
        elif kind == "result":
            self.result.emit(Outcome.from_wire(ev["result"]))
        elif kind == "finished":
            self._result = (bool(ev["success"]), ev["error_message"], ev["error_name"])
            self._report(self._result)  # the client has its result; cleanup may follow

    def _report(self, result: tuple[bool, str, str]) -> None:
        if self.reported:
            return
        self.reported = True
        log.info("transaction %s finished: %s", self.path, result)
        self.finished.emit(*result)

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self._result is not None:  # the worker's own word, even when cancelled too late
            result = self._result
        elif self.cancelled:
            result = (False, "transaction cancelled", dbus_error_name(Cancelled))
        else:
            code = self._proc.returncode if self._proc else None
            text = f"signal {-code}" if code is not None and code < 0 else f"status {code}"
            failed = dbus_error_name(AptOstreeError)
            result = (False, f"the transaction's worker died ({text})", failed)
        self._report(result)
        self._on_done(self)
        callbacks, self._on_exit = self._on_exit, []
        for callback in callbacks:
            callback()
