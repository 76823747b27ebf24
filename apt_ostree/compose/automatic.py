"""How a composed image updates itself: apt-ostree's automatic updates when the treefile asks
(`automatic-updates: check|stage`), and never Debian's apt-daily or unattended-upgrades.

- `automatic-updates`: the image's /etc/apt-ostreed.conf (the .deb's conffile) gets that
  `AutomaticUpdatePolicy`, and apt-ostreed-automatic.timer is enabled, as an administrator
  would do; an image without apt-ostree is refused, with the key named.
- apt's timers (apt-daily.timer, apt-daily-upgrade.timer) and unattended-upgrades.service
  would run `apt-get` against a read-only /usr on every machine: they are masked in the image
  when it has them (`systemctl mask`: a link to /dev/null in /etc/systemd/system, which an
  administrator can remove).
- apt, apt-get and dpkg themselves, typed by hand on a booted machine, could only fail on the
  read-only /usr and dpkg database (apt's "Could not open lock file"): in an image that has
  apt-ostree, each is diverted to NAME.distrib (the tree's own `dpkg-divert --local
  --rename`, so upgrades of apt and dpkg land there too) and NAME links to the .deb's guard
  (/usr/lib/apt-ostree/apt-ostree-guard), which stops the commands that change packages with
  the apt-ostree verbs to use instead and runs the real program for everything else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from apt_ostree.errors import CommandError, PostprocessError
from apt_ostree.sandbox import run_in_tree

POLICIES = ("none", "check", "stage")
CONF = "etc/apt-ostreed.conf"
TIMER = "apt-ostreed-automatic.timer"
APT_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "unattended-upgrades.service")
GUARD = "/usr/lib/apt-ostree/apt-ostree-guard"
GUARDED = ("apt", "apt-get", "dpkg")
UNIT_DIR = "usr/lib/systemd/system"


def _systemctl(rootfs: Path, *argv: str, what: str) -> None:
    try:
        run_in_tree(rootfs, ["systemctl", *argv], what=what)
    except CommandError as e:
        raise PostprocessError(str(e)) from e


def set_policy(rootfs: Path, policy: str) -> None:
    """AutomaticUpdatePolicy=`policy` in the image's apt-ostreed.conf, the timer enabled."""
    conf = rootfs / CONF
    if not conf.is_file() or not (rootfs / UNIT_DIR / TIMER).is_file():
        raise PostprocessError(
            f"automatic-updates: {policy}: the image has no apt-ostree ({conf.name} and {TIMER}"
            " are missing): add 'apt-ostree' to packages"
        )
    text = conf.read_text()
    line = f"AutomaticUpdatePolicy={policy}"
    text, found = re.subn(r"(?m)^\s*AutomaticUpdatePolicy\s*=.*$", line, text)
    if not found:
        text = re.sub(r"(?m)^\[Daemon\]\s*$", f"[Daemon]\n{line}", text, count=1)
    conf.write_text(text)
    _systemctl(rootfs, "enable", TIMER, what="enabling automatic updates")


def mask_apt_updates(rootfs: Path) -> list[str]:
    """Mask apt's own update units that the image has; the names masked."""
    present = [u for u in APT_UNITS if (rootfs / UNIT_DIR / u).exists()]
    if present and (rootfs / "usr/bin/systemctl").exists():
        _systemctl(rootfs, "mask", *present, what="masking apt's update units")
    return present


def guard_apt(rootfs: Path) -> list[str]:
    """Put the guard in front of apt, apt-get and dpkg when the image has it; the names
    guarded (none without apt-ostree; a tree guarded before stays as it is)."""
    if not (rootfs / GUARD.lstrip("/")).is_file():
        return []
    guarded = []
    for name in GUARDED:
        path = rootfs / "usr/bin" / name
        if path.is_symlink() and os.readlink(path) == GUARD:
            continue
        if not path.is_file():
            continue
        try:
            run_in_tree(
                rootfs,
                ["dpkg-divert", "--local", "--rename", "--divert", f"/usr/bin/{name}.distrib",
                 "--add", f"/usr/bin/{name}"],
                what=f"diverting {name}",
            )  # fmt: skip
        except CommandError as e:
            raise PostprocessError(str(e)) from e
        path.symlink_to(GUARD)
        guarded.append(name)
    return guarded
