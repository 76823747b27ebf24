"""What apply-live did on this boot: `/run/apt-ostree/live.json` (gone at reboot, as the /usr
overlay it describes), and the ref that keeps the live commit from being pruned."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from apt_ostree import ostree

STATE_FILE = Path("/run/apt-ostree/live.json")
LIVE_REF = "aptostree/live-apply"


@dataclass(frozen=True)
class LiveState:
    """What apply-live did on this boot (the JSON of STATE_FILE)."""

    deployment: str  # id of the booted deployment
    booted: str  # its commit
    commit: str  # the commit whose /usr is live now
    replaced: bool  # files were replaced or removed (--allow-replacement)


def read_state(booted: ostree.Deployment | None, path: Path = STATE_FILE) -> LiveState | None:
    """The live state of the booted deployment; None when nothing was applied on this boot."""
    if booted is None:
        return None
    try:
        state = LiveState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return state if state.deployment == booted.id else None


def write_state(state: LiveState, path: Path = STATE_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(path)


def drop_stale_ref(repo: ostree.Repo, booted: ostree.Deployment | None) -> None:
    """Delete LIVE_REF unless this boot has a live commit: a ref left by an earlier boot's
    apply-live would keep its commit from being pruned for good."""
    if read_state(booted) is None and repo.resolve_ref(LIVE_REF) is not None:
        repo.set_ref(LIVE_REF, None)
