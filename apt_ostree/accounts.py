"""Users and groups across deployments.

libostree's 3-way merge keeps a locally modified /etc file as it is (ostree's "adapting
existing" documentation), so once an administrator has added a user, /etc/passwd never
again receives the accounts a new image or a layered package's scripts create. Both places
need both sets: the new deployment gets every account of its /usr/etc that its /etc lacks,
appended, and local accounts stay. In a folder sysroot this runs right after the deploy; on
a booted machine, where the deployment is staged and its /etc merged at shutdown, the unit
that compose ships (`ACCOUNTS_UNIT`) does the same early at the next boot, before
systemd-sysusers and systemd-tmpfiles need the names.

The member lists of a group that both have (the 4th field of group and gshadow) follow the
treefile's `etc-group-members`, which the image keeps in `GROUP_MEMBERS`: a listed group
(one whose members humans manage: sudo, adm ...) keeps the machine's members and gets the
image's added; any other group takes the image's list, so that the vendor's changes reach
machines whose /etc/group was edited. Without the key (no `GROUP_MEMBERS` in the image) every
group is as a listed one. A group's name, password and GID stay the machine's.
"""

from __future__ import annotations

import os
from pathlib import Path

DATABASES = ("passwd", "group", "shadow", "gshadow")
MEMBERS = frozenset({"group", "gshadow"})  # databases whose 4th field lists a group's members
GROUP_MEMBERS = "usr/share/apt-ostree/etc-group-members"  # one group name a line
ACCOUNTS_SCRIPT = "usr/lib/apt-ostree/merge-accounts"
ACCOUNTS_UNIT = "apt-ostree-accounts.service"

SCRIPT_TEXT = f"""\
#!/bin/sh
# Merge the image's accounts (/usr/etc/{{passwd,group,shadow,gshadow}}) into this machine's
# /etc: the accounts /etc lacks are appended, local accounts are kept, and the members of a
# group both have follow /{GROUP_MEMBERS} (apt-ostree, accounts.py).
# One awk per database: it runs early at every boot (a loop of greps took 16 s under qemu TCG).
# merge-accounts [ROOT]: the tree at ROOT (default /).
set -e
root=${{1:-}}
listed="$root/{GROUP_MEMBERS}"
[ -f "$listed" ] && haslist=1 || {{ haslist=0; listed=/dev/null; }}
# the merge goes to /run first: /etc is written only when something changes
out=$(mktemp "${{TMPDIR:-/run}}/apt-ostree-accounts.XXXXXX")
trap 'rm -f "$out"' EXIT
for db in passwd group shadow gshadow; do
    image="$root/usr/etc/$db" etc="$root/etc/$db"
    [ -f "$image" ] && [ -f "$etc" ] || continue
    case $db in group|gshadow) members=4 ;; *) members=0 ;; esac
    awk -F: -v OFS=: -v members=$members -v haslist=$haslist '
        function merge(name, local, image,    out, seen, parts, k, i) {{
            if (haslist && !(name in keep)) return image
            out = ""
            k = split(local, parts, ",")
            for (i = 1; i <= k; i++) if (parts[i] != "") {{
                out = out (out == "" ? "" : ",") parts[i]; seen[parts[i]] = 1
            }}
            k = split(image, parts, ",")
            for (i = 1; i <= k; i++) if (parts[i] != "" && !(parts[i] in seen)) {{
                out = out (out == "" ? "" : ",") parts[i]; seen[parts[i]] = 1
            }}
            return out
        }}
        FILENAME == ARGV[1] {{ keep[$0] = 1; next }}
        FILENAME == ARGV[2] {{
            if ($1 == "" || ($1 in img)) next
            img[$1] = $0; names[++n] = $1
            if (members && NF >= members) mem[$1] = $members
            next
        }}
        {{
            have[$1] = 1
            if (members && NF >= members && ($1 in mem)) {{
                merged = merge($1, $members, mem[$1])
                if (merged != $members) $members = merged
            }}
            print
        }}
        END {{ for (i = 1; i <= n; i++) if (!(names[i] in have)) print img[names[i]] }}
    ' "$listed" "$image" "$etc" > "$out"
    cmp -s "$out" "$etc" && continue
    cp -p "$etc" "$etc.apt-ostree-new"  # its mode and owner (shadow is 0640 root:shadow)
    cat "$out" > "$etc.apt-ostree-new"
    mv -f "$etc.apt-ostree-new" "$etc"
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


def _lines(text: str) -> list[str]:
    """Lines as awk reads them: split at newlines only, the last one's newline optional."""
    return text.removesuffix("\n").split("\n") if text else []


def _merge_members(local: str, image: str, *, listed: bool) -> str:
    if not listed:
        return image
    out = [m for m in local.split(",") if m]
    for member in image.split(","):
        if member and member not in out:
            out.append(member)
    return ",".join(out)


def merge_database(db: str, local: str, image: str, listed: frozenset[str] | None) -> str:
    """The text of /etc/`db` with the image's accounts merged in (as the boot script does)."""
    entries: dict[str, str] = {}
    for line in _lines(image):
        name = line.split(":", 1)[0]
        if name and name not in entries:
            entries[name] = line
    out, have = [], set()
    for line in _lines(local):
        fields = line.split(":")
        have.add(fields[0])
        theirs = entries.get(fields[0], "").split(":")
        if db in MEMBERS and len(fields) >= 4 and len(theirs) >= 4:
            keep = listed is None or fields[0] in listed
            fields[3] = _merge_members(fields[3], theirs[3], listed=keep)
            line = ":".join(fields)
        out.append(line)
    out += [line for name, line in entries.items() if name not in have]
    return "".join(f"{line}\n" for line in out)


def group_members(root: Path) -> frozenset[str] | None:
    """The image's etc-group-members (None: the image has no such list)."""
    path = root / GROUP_MEMBERS
    return frozenset(_lines(path.read_text())) if path.is_file() else None


def merge_accounts(root: Path) -> list[str]:
    """Merge root/usr/etc's accounts into root/etc's account files; return the names added
    (a name once per database it was added to)."""
    added: list[str] = []
    listed = group_members(root)
    for db in DATABASES:
        image, local = root / "usr/etc" / db, root / "etc" / db
        if not image.is_file() or not local.is_file():
            continue
        text = local.read_text()
        merged = merge_database(db, text, image.read_text(), listed)
        if merged != text:
            _replace(local, merged)
            have = {line.split(":", 1)[0] for line in _lines(text)}
            added += [
                n for n in (line.split(":", 1)[0] for line in _lines(merged)) if n not in have
            ]
    return added


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` by rename, keeping its mode and owner (shadow is 0640)."""
    new = path.with_name(f"{path.name}.apt-ostree-new")
    st = path.stat()
    new.write_text(text)
    os.chown(new, st.st_uid, st.st_gid)
    new.chmod(st.st_mode & 0o7777)
    new.replace(path)


def install_group_members(rootfs: Path, names: tuple[str, ...] | None) -> None:
    """Keep the treefile's etc-group-members in a tree being composed (None: no key)."""
    if names is None:
        return
    path = rootfs / GROUP_MEMBERS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}\n" for name in names))
    path.chmod(0o644)


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
