"""What a user watching a terminal (or a log) sees of progress."""

from __future__ import annotations

import io
import re

from apt_ostree.progress import TerminalProgress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows for `raw` (\\r: back to column 0, ESC[K: erase to the end)."""
    lines: list[str] = []
    line, col = "", 0
    for token in re.findall(r"\033\[K|\r|\n|[^\r\n\033]+", raw):
        if token == "\n":
            lines.append(line)
            line, col = "", 0
        elif token == "\r":
            col = 0
        elif token == "\033[K":
            line = line[:col]
        else:
            line = line[:col] + token + line[col + len(token) :]
            col += len(token)
    return lines + ([line] if line else [])


def test_a_final_live_line_stays_on_a_terminal() -> None:
    out = _Terminal()
    p = TerminalProgress(out)
    p.step_begin("Pulling")
    p.live("    receiving objects: 1/10")
    p.live("    receiving objects: 10/10")
    p.live("    received 10 objects, 1.0 kB in 0.1 s", final=True)
    p.step_end("Pulling", 0.1)
    assert _screen(out.getvalue()) == [
        "==> Pulling",
        "    received 10 objects, 1.0 kB in 0.1 s",
        "    Pulling: done in 0.1 s",
    ]


def test_a_live_line_is_replaced_by_the_next_message() -> None:
    out = _Terminal()
    p = TerminalProgress(out)
    p.download(10, 100, 5.0)
    p.message("done")
    assert _screen(out.getvalue()) == ["done"]


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    p = TerminalProgress(out)
    p.live("    received 10 objects", final=True)
    p.percent("Unpacking", 3, 3)
    assert out.getvalue().splitlines() == ["    received 10 objects", "    Unpacking: 100% (3/3)"]
