"""Python bytecode that stays valid in a deployment.

A .pyc in timestamp mode (PEP 552 flags 0, what py3compile writes) records its source's mtime
and size, and Python recompiles the module when they differ from the source's. libostree
keeps no mtimes: every file of a deployment has mtime 0. So each Python program on a machine
booted from an image would compile all of its modules again at every start, in memory, as
/usr is read-only (measured in a Debian 13 guest under TCG: `apt-ostree status --json` 9-10 s).
Recording mtime 0 in the .pyc files of a tree before it is committed makes them match what
the deployment has; the size still guards against a changed source.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_FLAGS = slice(4, 8)  # 0: timestamp-based (1 and 3 are hash-based: left alone)
_MTIME = slice(8, 12)
_ZERO = b"\0\0\0\0"


def zero_source_mtimes(top: Path) -> int:
    """Record mtime 0 in every timestamp-based .pyc under `top` (in __pycache__ folders, not
    following links); how many were changed. Files are rewritten in place: call it on a tree
    of its own (a compose's, a layer's upper), never on a checkout hardlinked to objects."""
    changed = 0
    for folder, _, names in os.walk(top):
        if os.path.basename(folder) != "__pycache__":
            continue
        for name in names:
            path = os.path.join(folder, name)
            if not name.endswith(".pyc") or not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            with open(path, "r+b") as f:
                head = f.read(16)
                if len(head) < 16 or head[_FLAGS] != _ZERO or head[_MTIME] == _ZERO:
                    continue
                f.seek(_MTIME.start)
                f.write(_ZERO)
            changed += 1
    return changed
