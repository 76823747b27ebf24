"""The boot-time accounts script (apt-ostree-accounts.service) does what merge_accounts does."""

from __future__ import annotations

import subprocess
from pathlib import Path

from apt_ostree.accounts import GROUP_MEMBERS, SCRIPT_TEXT, merge_accounts

IMAGE = {
    "passwd": "root:x:0:0:root:/root:/bin/bash\nimg:x:998:998::/nonexistent:/usr/sbin/nologin\n",
    "group": "root:x:0:\nimg:x:998:\nshared:x:50:\n",
    "shadow": "root:*:19000:0:99999:7:::\nimg:!:19000::::::\n",
}
LOCAL = {
    "passwd": "root:x:0:0:root:/root:/bin/zsh\nalice:x:1000:1000::/home/alice:/bin/bash\n",
    "group": "root:x:0:\nshared:x:50:alice\nalice:x:1000:\n",
    "shadow": "",
}


def _tree(root: Path) -> Path:
    for db in IMAGE:
        (root / "usr/etc").mkdir(parents=True, exist_ok=True)
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "usr/etc" / db).write_text(IMAGE[db])
        (root / "etc" / db).write_text(LOCAL[db])
    return root


def test_script_equals_merge_accounts(tmp_path: Path) -> None:
    script, python = _tree(tmp_path / "script"), _tree(tmp_path / "python")
    (tmp_path / "merge-accounts").write_text(SCRIPT_TEXT)
    for _ in range(2):  # a second run adds nothing
        subprocess.run(["sh", str(tmp_path / "merge-accounts"), str(script)], check=True)
    merge_accounts(python)
    for db in IMAGE:
        assert (script / "etc" / db).read_text() == (python / "etc" / db).read_text(), db
    passwd = (script / "etc/passwd").read_text()
    assert passwd.startswith("root:x:0:0:root:/root:/bin/zsh\n")  # local entries kept
    assert passwd.endswith("img:x:998:998::/nonexistent:/usr/sbin/nologin\n")
    assert (script / "etc/group").read_text().count("shared:") == 1
    assert not (script / "etc/gshadow").exists()


# group members: the image's vendor groups and the machine's human groups
MEMBERS_IMAGE = {
    "passwd": "root:x:0:0::/root:/bin/sh\n_svc:x:990:990::/nonexistent:/usr/sbin/nologin\n",
    "group": "root:x:0:\nsudo:x:27:\nssl-cert:x:110:_svc\naudio:x:29:_svc,pulse\n_svc:x:990:\n",
    "gshadow": "root:*::\nsudo:*::\nssl-cert:!::_svc\naudio:*::_svc,pulse\n_svc:!::\n",
}
MEMBERS_LOCAL = {
    "passwd": "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/bash\n",
    # alice added to sudo, ssl-cert and audio by hand; a short line and a blank one kept as is
    "group": "root:x:0:\nsudo:x:27:alice\nssl-cert:x:110:alice\naudio:x:29:alice\n"
    "alice:x:1000:\nodd:x\n\n",
    "gshadow": "root:*::\nsudo:*::alice\nssl-cert:!:alice:alice\naudio:*::alice\nalice:!::\n",
}


def _members_tree(root: Path, listed: str | None) -> Path:
    for db in MEMBERS_IMAGE:
        for where, content in (("usr/etc", MEMBERS_IMAGE), ("etc", MEMBERS_LOCAL)):
            (root / where).mkdir(parents=True, exist_ok=True)
            (root / where / db).write_text(content[db])
    (root / "etc/gshadow").chmod(0o640)
    if listed is not None:
        (root / GROUP_MEMBERS).parent.mkdir(parents=True)
        (root / GROUP_MEMBERS).write_text(listed)
    return root


def _merged(tmp_path: Path, listed: str | None) -> dict[str, str]:
    """The script's result on one tree, checked equal to merge_accounts' on another."""
    script = _members_tree(tmp_path / "script", listed)
    python = _members_tree(tmp_path / "python", listed)
    (tmp_path / "merge-accounts").write_text(SCRIPT_TEXT)
    subprocess.run(["sh", str(tmp_path / "merge-accounts"), str(script)], check=True)
    written = {db: (script / "etc" / db).stat() for db in MEMBERS_IMAGE}
    subprocess.run(["sh", str(tmp_path / "merge-accounts"), str(script)], check=True)
    for db, st in written.items():  # a second run has nothing to change: it writes nothing
        again = (script / "etc" / db).stat()
        assert (again.st_ino, again.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), db
    assert sorted(merge_accounts(python)) == ["_svc", "_svc", "_svc"]  # passwd, group, gshadow
    assert merge_accounts(python) == []
    for db in MEMBERS_IMAGE:
        assert (script / "etc" / db).read_text() == (python / "etc" / db).read_text(), db
    for root in (script, python):
        assert (root / "etc/gshadow").stat().st_mode & 0o777 == 0o640  # shadow files stay private
        assert not list((root / "etc").glob("*.apt-ostree-new"))
    return {db: (script / "etc" / db).read_text() for db in MEMBERS_IMAGE}


def test_without_etc_group_members_every_group_keeps_local_members_and_gets_the_images(
    tmp_path: Path,
) -> None:
    merged = _merged(tmp_path, None)
    assert merged["group"] == (
        "root:x:0:\nsudo:x:27:alice\nssl-cert:x:110:alice,_svc\naudio:x:29:alice,_svc,pulse\n"
        "alice:x:1000:\nodd:x\n\n_svc:x:990:\n"
    )
    assert "ssl-cert:!:alice:alice,_svc\n" in merged["gshadow"]  # the admins field stays local
    assert merged["passwd"].endswith("/bin/bash\n_svc:x:990:990::/nonexistent:/usr/sbin/nologin\n")


def test_etc_group_members_keep_local_members_only_in_the_listed_groups(tmp_path: Path) -> None:
    merged = _merged(tmp_path, "sudo\naudio\n")
    # sudo and audio are the humans': local members kept, the image's added; ssl-cert is the
    # vendor's: the image's members replace alice
    assert merged["group"] == (
        "root:x:0:\nsudo:x:27:alice\nssl-cert:x:110:_svc\naudio:x:29:alice,_svc,pulse\n"
        "alice:x:1000:\nodd:x\n\n_svc:x:990:\n"
    )
    assert "ssl-cert:!:alice:_svc\n" in merged["gshadow"]
    assert "audio:*::alice,_svc,pulse\n" in merged["gshadow"]
