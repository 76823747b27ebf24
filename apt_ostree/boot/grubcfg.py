#!/usr/bin/python3
"""libostree's GRUB configuration generator for apt-ostree's images (docs/boot.md).

libostree's grub2 bootloader backend (`sysroot.bootloader=grub2` in the sysroot repository's
config) runs `$OSTREE_GRUB2_EXEC -o /boot/loader.N/grub.cfg` at every deployment write, after
the new BLS entries are in `/boot/loader.N/entries` and before `/boot/loader` is swapped to
`loader.N` (libostree's ostree-bootloader-grub2.c; `_OSTREE_GRUB2_BOOTVERSION` is N). So the
configuration is part of the same atomic swap as the entries: an upgrade finalized at
shutdown, a rollback, a kargs edit and a cleanup all get a config that matches them, and the
fixed config GRUB starts from (`configfile /loader/grub.cfg`) never sees a stale one.

Debian's signed GRUB has no `blscfg` (nor `syslinuxcfg`), and under Secure Boot it loads no
module from disk, so the entries are written out as plain `menuentry` blocks with `linux` and
`initrd` (the signed GRUB verifies the kernel through shim).

Boot trials (apt_ostree.boot.trial) live in GRUB's environment block `/grub/grubenv` on the
same partition: `aptostree_trial=pending` boots entry 0 (libostree's default, the new
deployment) once with the trial's kernel arguments and saves `booting` first; `booting` means
that boot never came back to bless itself, so entry 1 (the previous deployment) boots.

This file runs as a program under Debian's /usr/bin/python3 with the standard library only:
libostree starts it in the middle of its write, also at shutdown, from any tree.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

GRUBENV = "/grub/grubenv"  # on the /boot partition: `($root)/grub/grubenv` in GRUB
TRIAL_VAR = "aptostree_trial"  # "", "pending" or "booting"
TRIAL_ARGS_VAR = "aptostree_trial_args"  # kernel arguments of a trial boot
PENDING = "pending"
BOOTING = "booting"
HEADER = "# Written by apt-ostree's GRUB generator for libostree: do not edit (docs/boot.md)."


@dataclass(frozen=True)
class Entry:
    """One BLS entry (the Boot Loader Specification's type #1 keys libostree writes)."""

    name: str
    title: str
    version: int
    linux: str
    initrd: tuple[str, ...]
    options: str


def parse_entry(path: Path) -> Entry:
    fields: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.strip().partition(" ")
        if key and not key.startswith("#"):
            fields.setdefault(key, []).append(value.strip())
    if "linux" not in fields:
        raise ValueError(f"{path}: no linux line")
    try:
        version = int(fields.get("version", ["0"])[0])
    except ValueError as e:
        raise ValueError(f"{path}: version is not a number") from e
    return Entry(
        name=path.name,
        title=fields.get("title", [path.stem])[0],
        version=version,
        linux=fields["linux"][0],
        initrd=tuple(fields.get("initrd", [])),
        options=" ".join(fields.get("options", [])),
    )


def read_entries(entries: Path) -> list[Entry]:
    """The entries in boot order: libostree gives the default deployment the highest version."""
    found = [parse_entry(p) for p in sorted(entries.glob("*.conf"))]
    return sorted(found, key=lambda e: (-e.version, e.name))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _args(text: str) -> str:
    # GRUB expands $ and interprets backslashes and quotes in a `linux` line's words
    return " ".join(_quote(word) for word in text.split())


def render(entries: list[Entry], *, timeout: int = 1) -> str:
    """The GRUB script for `entries` (boot order), with the trial logic of the module doc."""
    env = f"($root){GRUBENV}"
    lines = [
        HEADER,
        f"set timeout={timeout}",
        "set default=0",
        f"set {TRIAL_ARGS_VAR}=",
        f"if [ -f {env} ]; then load_env -f {env}; fi",
        f'if [ "${{{TRIAL_VAR}}}" = "{PENDING}" ]; then',
        f"  set {TRIAL_VAR}={BOOTING}",
        f"  save_env -f {env} {TRIAL_VAR}",
        # aptostree_trial_args comes from grubenv (apt-ostree writes it with `pending`)
        f'elif [ "${{{TRIAL_VAR}}}" = "{BOOTING}" ]; then',
        f"  set {TRIAL_ARGS_VAR}=",
        "  set default=1" if len(entries) > 1 else "  true",
        "else",
        f"  set {TRIAL_ARGS_VAR}=",
        "fi",
    ]
    for i, e in enumerate(entries):
        trial = f" ${TRIAL_ARGS_VAR}" if i == 0 else ""
        lines += [
            f"menuentry {_quote(e.title)} --id {_quote(f'ostree-{i}')} {{",
            f"  linux {_quote(e.linux)} {_args(e.options)}{trial}",
            *(f"  initrd {' '.join(_quote(i) for i in e.initrd)}" for _ in e.initrd[:1]),
            "}",
        ]
    return "\n".join(lines) + "\n"


def write(output: Path, entries_dir: Path) -> None:
    text = render(read_entries(entries_dir))
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="libostree's GRUB config for apt-ostree")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    # libostree writes the entries beside the config it asks for: /boot/loader.N/entries
    try:
        write(args.output, args.output.parent / "entries")
    except (OSError, ValueError) as e:
        print(f"apt-ostree grub generator: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
