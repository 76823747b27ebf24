"""Answers to packages' debconf questions (preseeding), at compose and at layering.

An answer is a line of debconf-set-selections(1): `OWNER QUESTION TYPE VALUE`, for example
`tzdata tzdata/Areas select Europe`. A treefile's answers (`debconf-file`, then `debconf`) go
into the tree's debconf database before any package is configured, and the image keeps them
in `SELECTIONS`. Layering on a client gives them again to the sandbox's debconf, followed by
the machine's own `/etc/apt-ostree/debconf.d/*.conf` (so the machine's answer to a question
wins: debconf-set-selections keeps the last line for each question), before dpkg configures
the layered packages. Answers are given with the `seen` flag set, as debconf-set-selections
does, so a package asks nothing and uses the answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SELECTIONS = "usr/share/apt-ostree/debconf-selections"  # in a tree: the image's answers
MACHINE_DIR = "apt-ostree/debconf.d"  # in a machine's /etc: *.conf, its own answers
# debconf's template types (debconf-devel(7), "Templates"), and debconf-set-selections'
# `seen`, which sets the flag instead of the value
TYPES = frozenset("boolean error multiselect note password seen select string text title".split())


def problem(line: str) -> str | None:
    """What is wrong with one answer line, or None (blank lines and # comments are none)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    fields = text.split(None, 3)
    if len(fields) < 3:
        return f"'{text}' is not 'OWNER QUESTION TYPE VALUE'"
    if fields[2] not in TYPES:
        return f"'{text}': type '{fields[2]}' is not one of {', '.join(sorted(TYPES))}"
    return None


def answers(text: str) -> list[str]:
    """The answer lines of a selections file, checked: ValueError('line N: ...') else."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if (wrong := problem(line)) is not None:
            raise ValueError(f"line {number}: {wrong}")
        if line.strip() and not line.strip().startswith("#"):
            found.append(line.strip())
    return found


def render(lines: Iterable[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def image_answers(tree: Path) -> str:
    """The answers an image carries (`SELECTIONS` of the tree), or ''."""
    path = tree / SELECTIONS
    return path.read_text() if path.is_file() else ""


def machine_answers(etc: Path) -> str:
    """A machine's own answers: `etc`/apt-ostree/debconf.d/*.conf in name order, checked;
    ValueError naming the file and the line."""
    folder = etc / MACHINE_DIR
    lines: list[str] = []
    for conf in sorted(folder.glob("*.conf")) if folder.is_dir() else []:
        try:
            lines += answers(conf.read_text())
        except ValueError as e:
            raise ValueError(f"/etc/{MACHINE_DIR}/{conf.name}: {e}") from None
    return render(lines)


def install(rootfs: Path, lines: Iterable[str]) -> None:
    """Keep a composed image's answers in the tree (for layering on its clients)."""
    text = render(lines)
    if not text:
        return
    path = rootfs / SELECTIONS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)
