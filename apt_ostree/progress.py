"""Progress a user watches: steps, messages, download and percent progress.

Compose and the sysroot verbs report through a `Progress`; the terminal renderer draws a
progress line on a tty and plain lines otherwise. The daemon's worker writes the same calls as JSON
lines (`JsonProgress`), which the daemon turns into transaction signals.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class Progress:
    """Base progress sink: records nothing, prints nothing (for library use and tests)."""

    def message(self, text: str) -> None:
        """A line of information."""

    def step_begin(self, title: str) -> None:
        """A named step starts."""

    def step_end(self, title: str, seconds: float) -> None:
        """The step ends."""

    def percent(self, title: str, done: int, total: int) -> None:
        """Countable progress within the current step."""

    def download(
        self, done_bytes: int, total_bytes: int, bytes_per_second: float, *, final: bool = False
    ) -> None:
        """Download progress within the current step; `final` once it is complete."""

    def live(self, text: str, *, final: bool = False) -> None:
        """A status line that the next one replaces (pull counters); `final` keeps it."""

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        start = time.monotonic()
        self.step_begin(title)
        yield
        self.step_end(title, time.monotonic() - start)


class TerminalProgress(Progress):
    """Renders to a stream: a redrawn line on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._live = False
        self._last_plain = 0.0

    def _line(self, text: str) -> None:
        if self._live:
            self.stream.write("\r\033[K")
            self._live = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _live_line(self, text: str, *, final: bool) -> None:
        if self.tty:
            # redraw the line; a final one stays as it is, the next text starts below it
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
            self._live = not final
            self.stream.flush()
        elif final or time.monotonic() - self._last_plain >= 5:
            self._last_plain = time.monotonic()
            self._line(text)

    def message(self, text: str) -> None:
        self._line(text)

    def step_begin(self, title: str) -> None:
        self._line(f"==> {title}")

    def step_end(self, title: str, seconds: float) -> None:
        self._line(f"    {title}: done in {seconds:.1f} s")

    def percent(self, title: str, done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        self._live_line(f"    {title}: {pct:3d}% ({done}/{total})", final=done >= total)

    def download(
        self, done_bytes: int, total_bytes: int, bytes_per_second: float, *, final: bool = False
    ) -> None:
        text = (
            f"    downloading: {human_size(done_bytes)} / {human_size(total_bytes)}"
            f" at {human_size(bytes_per_second)}/s"
        )
        self._live_line(text, final=final)

    def live(self, text: str, *, final: bool = False) -> None:
        self._live_line(text, final=final)


class JsonProgress(Progress):
    """Writes each call as one JSON line (`{"kind": ..., ...}`) to a stream: the daemon's
    worker reports this way, and the daemon turns each line into a transaction signal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, kind: str, **fields: object) -> None:
        self.stream.write(json.dumps({"kind": kind, **fields}) + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        self.emit("message", text=text)

    def step_begin(self, title: str) -> None:
        self.emit("step_begin", title=title)

    def step_end(self, title: str, seconds: float) -> None:
        self.emit("step_end", title=title, seconds=seconds)

    def percent(self, title: str, done: int, total: int) -> None:
        self.emit("percent", title=title, done=done, total=total)

    def download(
        self, done_bytes: int, total_bytes: int, bytes_per_second: float, *, final: bool = False
    ) -> None:
        self.emit(
            "download", done=done_bytes, total=total_bytes, speed=bytes_per_second, final=final
        )

    def live(self, text: str, *, final: bool = False) -> None:
        self.emit("live", text=text, final=final)
