"""Stable system users and groups across composes: rpm-ostree's `preserve-passwd`,
`check-passwd` and `check-groups`.

Every compose builds the tree from nothing, so the IDs adduser or systemd-sysusers give a
package's system user depend on the order packages are configured in and on which other
packages make users: a new package, or a new order, would give a user another UID, and the
files machines keep in /var under the old one would belong to nobody, or to someone else.

`preserve-passwd` (the default): when the ref has a commit, its account databases
(/usr/etc/passwd, group, shadow, gshadow) are the new tree's /etc before any package is
installed. base-passwd's preinst writes /etc/passwd and /etc/group only when they are missing
(its postinst's update-passwd changes only the static entries it ships), and adduser and
systemd-sysusers keep an existing user as it is, so each user keeps its UID and GID and a
new user gets an ID free in both. With `check-passwd: {type: file}` passwd comes from that
file instead (and group from check-groups' file), as rpm-ostree does; shadow (gshadow) then
starts empty. The price, as in rpm-ostree: a user whose package left stays in passwd.

The checks run on the postprocessed tree, before the commit: an entry of the previous commit
(`previous`, the default), of a file (`file`) or of the treefile (`data`) that the new tree
has with another UID, GID or group ID fails the compose with one line naming it and both
IDs. An entry that is gone is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from apt_ostree import ostree
from apt_ostree.errors import PostprocessError
from apt_ostree.treefile import AccountCheck, CheckType, Treefile

DATABASES = ("passwd", "group", "shadow", "gshadow")
COMPANION = {"passwd": "shadow", "group": "gshadow"}  # its secrets, seeded only with it
KEY = {"passwd": "check-passwd", "group": "check-groups"}
SHADOW_GROUP = "shadow"  # owns /etc/shadow and /etc/gshadow (mode 0640) on Debian


def previous_databases(repo: Path, checksum: str | None) -> dict[str, bytes]:
    """The account databases of the previous commit (none when there is no commit)."""
    if checksum is None:
        return {}
    commits = ostree.Repo.open(repo)
    found = {}
    for db in DATABASES:
        data = commits.read_file(checksum, f"/usr/etc/{db}")
        if data is not None:
            found[db] = data
    return found


def seed_files(treefile: Treefile, previous: Mapping[str, bytes]) -> dict[str, bytes]:
    """What the tree's /etc starts with: the previous databases, or a check's file."""
    if not treefile.preserve_passwd:
        return {}
    files = dict(previous)
    for db, check in treefile.account_checks().items():
        if check.filename is not None:
            files[db] = check.filename.read_bytes()
            files.pop(COMPANION[db], None)
    for db, companion in COMPANION.items():
        if db not in files:
            files.pop(companion, None)
    return files


def write_seed(folder: Path, files: Mapping[str, bytes]) -> Path | None:
    """`files` in `folder` with the modes and owners of Debian's own (None: no files)."""
    if not files:
        return None
    folder.mkdir()
    groups = _ids("group", files.get("group", b"").decode(errors="replace"))
    shadow_gid = groups.get(SHADOW_GROUP, (0,))
    for db, data in files.items():
        path = folder / db
        path.write_bytes(data)
        secret = db in COMPANION.values()
        os.chown(path, 0, shadow_gid[0] if secret else 0)
        path.chmod(0o640 if secret else 0o644)
    return folder


def _ids(db: str, text: str) -> dict[str, tuple[int, ...]]:
    """name -> (UID, GID) of a passwd text, (GID,) of a group text."""
    found: dict[str, tuple[int, ...]] = {}
    count = 2 if db == "passwd" else 1
    for line in text.splitlines():
        fields = line.split(":")[2 : 2 + count]
        if len(fields) == count and all(f.isdigit() for f in fields):
            found.setdefault(line.split(":", 1)[0], tuple(int(f) for f in fields))
    return found


def _expected(
    db: str, check: AccountCheck, previous: Mapping[str, bytes]
) -> tuple[dict[str, tuple[int, ...]], str] | None:
    """The IDs to keep and where they come from (None: nothing to check)."""
    if check.type is CheckType.PREVIOUS and db in previous:
        return _ids(db, previous[db].decode(errors="replace")), "the previous commit"
    if check.type is CheckType.FILE and check.filename is not None:
        return _ids(db, check.filename.read_text(errors="replace")), str(check.filename)
    if check.type is CheckType.DATA:
        return dict(check.entries), "the treefile's entries"
    return None


def _show(db: str, ids: tuple[int, ...]) -> str:
    names = ("UID", "GID") if db == "passwd" else ("GID",)
    return " ".join(f"{name} {value}" for name, value in zip(names, ids, strict=False))


def check(treefile: Treefile, etc: Path, previous: Mapping[str, bytes]) -> None:
    """Fail when an entry kept its name but not its IDs (`etc` is the tree's /usr/etc)."""
    for db, account_check in treefile.account_checks().items():
        expected = _expected(db, account_check, previous)
        if expected is None:
            continue
        ids, source = expected
        path = etc / db
        now = _ids(db, path.read_text(errors="replace")) if path.is_file() else {}
        changed = [n for n in sorted(ids) if n in now and now[n][: len(ids[n])] != ids[n]]
        if changed:
            name = changed[0]
            what = "user" if db == "passwd" else "group"
            more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
            raise PostprocessError(
                f"{KEY[db]}: {what} {name} has {_show(db, now[name][: len(ids[name])])} in the "
                f"new tree but {_show(db, ids[name])} in {source}{more}"
            )
