"""`/etc/apt-ostreed.conf`: the daemon's settings (DESIGN.md names the keys).

    [Daemon]
    AutomaticUpdatePolicy=none|check|stage
    IdleExitTimeout=60      # seconds without a client or transaction; 0 never exits
    LockLayering=false      # refuse package layering and overrides
    Recommends=false        # layering installs Recommends (the layering code's default: no)
    BootTrialTimeout=600    # seconds a trial boot has to bless itself; 0: no trial boots
    VerifyUpdates=false     # automatic updates boot in a container and pass the checks first

A missing file means the defaults; a malformed one is refused with the key and what was
expected, at start and on `reload` (which then keeps the previous settings).
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from apt_ostree.errors import ConfigError


class Policy(StrEnum):
    NONE = "none"
    CHECK = "check"
    STAGE = "stage"


SECTION = "Daemon"
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


@dataclass(frozen=True)
class DaemonConfig:
    automatic_update_policy: Policy = Policy.NONE
    idle_exit_timeout: int = 60
    lock_layering: bool = False
    recommends: bool = False
    boot_trial_timeout: int = 600
    verify_updates: bool = False


def _bool(path: Path, key: str, value: str) -> bool:
    if value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ConfigError(f"{path}: [{SECTION}] {key}={value}: expected true or false")


def _seconds(path: Path, key: str, value: str) -> int:
    if not value.isdigit():
        raise ConfigError(f"{path}: [{SECTION}] {key}={value}: expected seconds")
    return int(value)


def load_config(path: Path) -> DaemonConfig:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(path.read_text(), source=str(path))
    except FileNotFoundError:
        return DaemonConfig()
    except (configparser.Error, OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e
    if not parser.has_section(SECTION):
        return DaemonConfig()
    known = {
        "AutomaticUpdatePolicy",
        "IdleExitTimeout",
        "LockLayering",
        "Recommends",
        "BootTrialTimeout",
        "VerifyUpdates",
    }
    s = parser[SECTION]
    for key in s:
        if key not in known:
            raise ConfigError(f"{path}: [{SECTION}] unknown key {key!r}")
    policy = s.get("AutomaticUpdatePolicy", "none").lower()
    if policy not in set(Policy):
        raise ConfigError(
            f"{path}: [{SECTION}] AutomaticUpdatePolicy={policy}: expected none, check or stage"
        )
    timeout = _seconds(path, "IdleExitTimeout", s.get("IdleExitTimeout", "60"))
    trial = _seconds(path, "BootTrialTimeout", s.get("BootTrialTimeout", "600"))
    return DaemonConfig(
        automatic_update_policy=Policy(policy),
        idle_exit_timeout=timeout,
        lock_layering=_bool(path, "LockLayering", s.get("LockLayering", "false")),
        recommends=_bool(path, "Recommends", s.get("Recommends", "false")),
        boot_trial_timeout=trial,
        verify_updates=_bool(path, "VerifyUpdates", s.get("VerifyUpdates", "false")),
    )
