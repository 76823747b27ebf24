"""preserve-passwd's seed and the check-passwd / check-groups checks, on account files in a
folder (tests/compose/test_passwd_debconf.py runs them in real composes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from apt_ostree import treefile
from apt_ostree.compose import passwd
from apt_ostree.errors import PostprocessError

PREVIOUS = {
    "passwd": b"root:x:0:0::/root:/bin/sh\nsvc:x:100:101::/nonexistent:/usr/sbin/nologin\n",
    "group": b"root:x:0:\nshadow:x:42:\nsvc:x:101:\n",
    "shadow": b"root:*:19675:0:99999:7:::\nsvc:!:19675::::::\n",
    "gshadow": b"root:*::\nsvc:!::\n",
}


def load(tmp_path: Path, text: str) -> treefile.Treefile:
    path = tmp_path / "t.yaml"
    path.write_text("ref: os/x\n" + text)
    return treefile.load(path)


def tree(tmp_path: Path, passwd_text: str, group_text: str = "root:x:0:\nsvc:x:101:\n") -> Path:
    etc = tmp_path / "usr/etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(passwd_text)
    (etc / "group").write_text(group_text)
    return etc


def test_seed_is_the_previous_databases_with_debians_modes(tmp_path: Path) -> None:
    files = passwd.seed_files(load(tmp_path, ""), PREVIOUS)
    assert files == PREVIOUS
    seed = passwd.write_seed(tmp_path / "seed", files)
    assert seed is not None
    modes = {p.name: (p.stat().st_mode & 0o777, p.stat().st_uid, p.stat().st_gid)
             for p in seed.iterdir()}  # fmt: skip
    assert modes == {"passwd": (0o644, 0, 0), "group": (0o644, 0, 0),
                     "shadow": (0o640, 0, 42), "gshadow": (0o640, 0, 42)}  # fmt: skip
    assert passwd.seed_files(load(tmp_path, "preserve-passwd: false\n"), PREVIOUS) == {}
    assert passwd.write_seed(tmp_path / "none", {}) is None


def test_seed_from_check_passwd_file_leaves_shadow_out(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("svc:x:500:500::/:/bin/false\n")
    t = load(tmp_path, "check-passwd: {type: file, filename: passwd}\n")
    files = passwd.seed_files(t, PREVIOUS)
    assert files["passwd"] == b"svc:x:500:500::/:/bin/false\n"
    assert "shadow" not in files and files["group"] == PREVIOUS["group"]


def test_previous_check_names_the_user_and_both_ids(tmp_path: Path) -> None:
    t = load(tmp_path, "")
    passwd.check(t, tree(tmp_path, "root:x:0:0::/root:/bin/sh\n"), PREVIOUS)  # removed: fine
    etc = tree(tmp_path, "root:x:0:0::/root:/bin/sh\nsvc:x:102:101::/:/bin/false\n")
    with pytest.raises(PostprocessError) as e:
        passwd.check(t, etc, PREVIOUS)
    assert str(e.value) == (
        "check-passwd: user svc has UID 102 GID 101 in the new tree but UID 100 GID 101 in "
        "the previous commit"
    )
    passwd.check(load(tmp_path, "check-passwd: {type: none}\n"), etc, PREVIOUS)
    passwd.check(t, etc, {})  # no previous commit: nothing to compare with


def test_group_file_and_data_checks(tmp_path: Path) -> None:
    etc = tree(tmp_path, "svc:x:100:103::/:/bin/false\n", "svc:x:103:\nadm:x:4:\n")
    (tmp_path / "group").write_text("svc:x:101:\nadm:x:4:\n")
    t = load(tmp_path, "check-passwd: {type: none}\ncheck-groups: {type: file, filename: group}\n")
    with pytest.raises(PostprocessError, match=r"^check-groups: group svc has GID 103 in the "):
        passwd.check(t, etc, PREVIOUS)
    data = load(tmp_path, "check-passwd: {type: data, entries: {svc: [100, 101]}}\n"
                "check-groups: {type: none}\n")  # fmt: skip
    with pytest.raises(PostprocessError) as e:
        passwd.check(data, etc, PREVIOUS)
    assert str(e.value) == (
        "check-passwd: user svc has UID 100 GID 103 in the new tree but UID 100 GID 101 in "
        "the treefile's entries"
    )
    uid_only = load(tmp_path, "check-passwd: {type: data, entries: {svc: 100}}\n"
                    "check-groups: {type: none}\n")  # fmt: skip
    passwd.check(uid_only, etc, PREVIOUS)  # the UID is what it names
