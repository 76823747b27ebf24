"""How a composed image updates itself: apt-ostree's automatic updates when the treefile asks
(`automatic-updates: check|stage`), and never Debian's apt-daily or unattended-upgrades.

- `automatic-updates`: the image's /etc/apt-ostreed.conf (the .deb's conffile) gets that
  `AutomaticUpdatePolicy`, and apt-ostreed-automatic.timer is enabled, as an administrator
  would do; an image without apt-ostree is refused, with the key named.
- apt's timers (apt-daily.timer, apt-daily-upgrade.timer) and unattended-upgrades.service
  would run `apt-get` against a read-only /usr on every machine: they are masked in the image
  when it has them (`systemctl mask`: a link to /dev/null in /etc/systemd/system, which an
  administrator can remove).
"""

from __future__ import annotations

import re
from pathlib import Path

from apt_ostree.errors import CommandError, PostprocessError
from apt_ostree.sandbox import run_in_tree

POLICIES = ("none", "check", "stage")
CONF = "etc/apt-ostreed.conf"
TIMER = "apt-ostreed-automatic.timer"
APT_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "unattended-upgrades.service")
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
