"""Users and groups across deployments.

libostree's 3-way merge keeps a locally modified /etc file as it is (ostree's "adapting
existing" documentation), so once an administrator has added a user, /etc/passwd never
again receives the accounts a new image or a layered package's scripts create. Both places
need both sets: the new deployment gets every account of its /usr/etc that its /etc lacks,
appended, and local accounts stay. In a folder sysroot this runs right after the deploy; on
a booted machine, where the deployment is staged and its /etc merged at shutdown, the unit
that compose ships (`ACCOUNTS_UNIT`) does the same early at the next boot, before
systemd-sysusers and systemd-tmpfiles need the names.
"""

from __future__ import annotations

from pathlib import Path

DATABASES = ("passwd", "group", "shadow", "gshadow")
ACCOUNTS_SCRIPT = "usr/lib/apt-ostree/merge-accounts"
ACCOUNTS_UNIT = "apt-ostree-accounts.service"

SCRIPT_TEXT = """\
#!/bin/sh
# Append to /etc/{passwd,group,shadow,gshadow} the accounts that the image's /usr/etc
# defines and this machine's /etc lacks; local accounts are kept (apt-ostree, accounts.py).
# One awk per database: it runs early at every boot (a loop of greps took 16 s under qemu TCG).
# merge-accounts [ROOT]: the tree at ROOT (default /).
set -e
root=${1:-}
for db in passwd group shadow gshadow; do
    image="$root/usr/etc/$db" etc="$root/etc/$db"
    [ -f "$image" ] && [ -f "$etc" ] || continue
    new=$(awk -F: 'FILENAME == ARGV[1] { have[$1] = 1; next } $1 != "" && !($1 in have)' \\
        "$etc" "$image")
    [ -z "$new" ] || printf "%s\\n" "$new" >> "$etc"
done
"""

UNIT_TEXT = f"""\
[Unit]
Description=Add the image's new users and groups to /etc
DefaultDependencies=no
# /etc is on the root filesystem: after it is writable, and not after local-fs.target, whose
# /boot mount waits for udev, which itself starts after systemd-sysusers (a cycle that only
# the device timeout would break)
After=systemd-remount-fs.service
Before=systemd-sysusers.service systemd-tmpfiles-setup.service sysinit.target
ConditionPathExists=/usr/etc/passwd

[Service]
Type=oneshot
ExecStart=/{ACCOUNTS_SCRIPT}
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target
"""


def _names(lines: list[str]) -> set[str]:
    return {line.split(":", 1)[0] for line in lines if line.strip()}


def merge_accounts(root: Path) -> list[str]:
    """Append to root/etc's account files the entries of root/usr/etc they lack; return the
    names added (a name once per database it was added to)."""
    added: list[str] = []
    for db in DATABASES:
        image, local = root / "usr/etc" / db, root / "etc" / db
        if not image.is_file() or not local.is_file():
            continue
        local_lines = local.read_text().splitlines()
        have = _names(local_lines)
        new = [
            line
            for line in image.read_text().splitlines()
            if line.strip() and line.split(":", 1)[0] not in have
        ]
        if new:
            text = "\n".join(local_lines + new) + "\n"
            local.write_text(text)
            added += [line.split(":", 1)[0] for line in new]
    return added


def install_unit(rootfs: Path) -> None:
    """Ship the boot-time merge (script + unit, enabled) in a tree being composed."""
    script = rootfs / ACCOUNTS_SCRIPT
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(SCRIPT_TEXT)
    script.chmod(0o755)
    units = rootfs / "usr/lib/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    (units / ACCOUNTS_UNIT).write_text(UNIT_TEXT)
    (units / ACCOUNTS_UNIT).chmod(0o644)
    wants = units / "sysinit.target.wants"
    wants.mkdir(exist_ok=True)
    link = wants / ACCOUNTS_UNIT
    if not link.is_symlink():
        link.symlink_to(f"../{ACCOUNTS_UNIT}")
