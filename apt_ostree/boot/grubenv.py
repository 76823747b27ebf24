"""GRUB's environment block (`grub-editenv`'s file format): exactly 1024 bytes, a header line,
`name=value` lines, padded with `#`. GRUB's `save_env` rewrites the file in place and refuses
one of another size, so it is always written whole at that size."""

from __future__ import annotations

import os
from pathlib import Path

from apt_ostree.errors import StateError

SIZE = 1024
MAGIC = "# GRUB Environment Block\n"


def read(path: Path) -> dict[str, str]:
    """The variables of the block at `path`; none when there is no file."""
    try:
        text = path.read_bytes().decode()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise StateError(f"{path}: {e}") from e
    if not text.startswith(MAGIC):
        raise StateError(f"{path}: not a GRUB environment block")
    env: dict[str, str] = {}
    for line in text[len(MAGIC) :].split("\n"):
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            env[name] = value.replace("\\n", "\n").replace("\\\\", "\\")
    return env


def render(env: dict[str, str]) -> bytes:
    body = "".join(
        f"{k}={v.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}\n"
        for k, v in env.items()
    )
    data = (MAGIC + body).encode()
    if len(data) > SIZE:
        raise StateError(f"GRUB environment block over {SIZE} bytes")
    return data + b"#" * (SIZE - len(data))


def write(path: Path, env: dict[str, str]) -> None:
    """Replace the block at `path` by one holding `env` (a new file, renamed into place, so a
    power cut leaves the old block or the new one)."""
    data = render({k: v for k, v in env.items() if v != ""})
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def update(path: Path, **changes: str) -> dict[str, str]:
    """Set (or, with "", unset) variables of the block at `path`; returns the new block."""
    env = read(path)
    env.update(changes)
    env = {k: v for k, v in env.items() if v != ""}
    write(path, env)
    return env
