"""The boot-time accounts script (apt-ostree-accounts.service) does what merge_accounts does."""

from __future__ import annotations

import subprocess
from pathlib import Path

from apt_ostree.accounts import SCRIPT_TEXT, merge_accounts

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
