"""Small real .deb packages built from a declarative spec, for tests.

`build_deb(spec, outdir)` runs `dpkg-deb --build --root-owner-group`. The same spec gives a
byte-identical .deb whatever the umask or the clock: modes are set explicitly and
SOURCE_DATE_EPOCH makes dpkg-deb clamp every mtime and date the ar members (dpkg >= 1.18.11).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from apt_ostree.run import run

EPOCH = 1700000000
MAINTAINER = "apt-ostree tests <tests@localhost>"
SCRIPTS = ("preinst", "postinst", "prerm", "postrm", "config")


@dataclass(frozen=True)
class File:
    """A regular file with an explicit mode (plain str/bytes content means 0644)."""

    content: str | bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Dir:
    """A directory shipped by the package, possibly empty (parents are made 0755 anyway)."""

    mode: int = 0o755


Content = str | bytes | File | Symlink | Dir
Relation = str | tuple[str, ...]


@dataclass(frozen=True)
class DebSpec:
    """What goes into one binary package. Relations take Debian syntax or a tuple of clauses."""

    name: str
    version: str = "1.0"
    architecture: str = "all"
    depends: Relation = ""
    pre_depends: Relation = ""
    recommends: Relation = ""
    conflicts: Relation = ""
    breaks: Relation = ""
    provides: Relation = ""
    replaces: Relation = ""
    section: str = "misc"
    priority: str = "optional"
    essential: bool = False
    description: str = "test package"
    files: Mapping[str, Content] = field(default_factory=dict, hash=False)
    conffiles: tuple[str, ...] | None = None  # None: every regular file under /etc
    preinst: str = ""
    postinst: str = ""
    prerm: str = ""
    postrm: str = ""
    config: str = ""  # debconf's config script (debconf-devel(7))
    templates: str = ""  # debconf's templates file
    triggers: str = ""
    extra_control: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def filename(self) -> str:
        """NAME_VERSION_ARCH.deb; the epoch is left out, as in Debian's pool."""
        return (
            f"{self.name}_{self.version.partition(':')[2] or self.version}_{self.architecture}.deb"
        )


def debconf_deb(name: str, questions: Mapping[str, str]) -> DebSpec:
    """A package with debconf string questions (QUESTION -> default), asked by its config
    script; its postinst writes the answers to /etc/NAME.conf, as packages write their
    configuration from debconf (debconf-devel(7))."""
    templates = "\n".join(
        f"Template: {name}/{q}\nType: string\nDefault: {default}\nDescription: {q}?\n"
        for q, default in questions.items()
    )
    ask = "".join(f"db_input high {name}/{q} || true\n" for q in questions)
    write = "".join(f'db_get {name}/{q}\necho "{q}=$RET" >> /etc/{name}.conf\n' for q in questions)
    confmodule = ". /usr/share/debconf/confmodule\n"
    return DebSpec(
        name=name,
        depends="debconf",
        templates=templates,
        config=f"{confmodule}{ask}db_go || true\n",
        postinst=f"{confmodule}rm -f /etc/{name}.conf\n{write}",
    )


def _relation(value: Relation) -> str:
    return value if isinstance(value, str) else ", ".join(value)


def _description(text: str) -> str:
    """Synopsis, then the extended description with Policy 5.6.13's leading space and '.'."""
    synopsis, *rest = text.strip("\n").split("\n")
    return "\n".join([synopsis, *(f" {line}" if line.strip() else " ." for line in rest)])


def _installed_size(spec: DebSpec) -> int:
    """KiB, as dpkg-gencontrol counts: each file rounded up, 1 for links and directories."""
    total = 0
    for content in spec.files.values():
        if isinstance(content, Symlink | Dir):
            total += 1
        else:
            data = content.content if isinstance(content, File) else content
            total += max(1, math.ceil(len(_bytes(data)) / 1024))
    return total


def control_text(spec: DebSpec) -> str:
    """The DEBIAN/control file for `spec`, fields in the order dpkg-gencontrol writes them."""
    fields = {
        "Package": spec.name,
        "Version": spec.version,
        "Architecture": spec.architecture,
        "Maintainer": MAINTAINER,
        "Installed-Size": str(_installed_size(spec)),
        "Essential": "yes" if spec.essential else "",
        "Pre-Depends": _relation(spec.pre_depends),
        "Depends": _relation(spec.depends),
        "Recommends": _relation(spec.recommends),
        "Conflicts": _relation(spec.conflicts),
        "Breaks": _relation(spec.breaks),
        "Replaces": _relation(spec.replaces),
        "Provides": _relation(spec.provides),
        "Section": spec.section,
        "Priority": spec.priority,
        **spec.extra_control,
        "Description": _description(spec.description),
    }
    return "".join(f"{k}: {v}\n" for k, v in fields.items() if v)


def script_text(body: str) -> str:
    """A maintainer script: `body` as is when it has a #! line, else under `#!/bin/sh set -e`."""
    if body.startswith("#!"):
        return body if body.endswith("\n") else body + "\n"
    return f"#!/bin/sh\nset -e\n{body.rstrip()}\n"


def _bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _write_entry(root: Path, path: str, content: Content) -> None:
    if not path.startswith("/") or path == "/":
        raise ValueError(f"package file {path!r}: expected an absolute path below /")
    dest = root / path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, Symlink):
        dest.symlink_to(content.target)
    elif isinstance(content, Dir):
        dest.mkdir(exist_ok=True)
    else:
        file = content if isinstance(content, File) else File(content)
        dest.write_bytes(_bytes(file.content))


def _fix_modes(root: Path, spec: DebSpec) -> None:
    """0755 directories, 0644 files unless the spec says otherwise; the umask plays no part."""
    for d in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
        d.chmod(0o755)
    for path, content in spec.files.items():
        if isinstance(content, Symlink):
            continue
        default = 0o755 if isinstance(content, Dir) else 0o644
        mode = content.mode if isinstance(content, File | Dir) else default
        (root / path.lstrip("/")).chmod(mode)


def default_conffiles(spec: DebSpec) -> tuple[str, ...]:
    """Regular files under /etc: what debhelper's dh_installdeb marks as conffiles."""
    return tuple(
        sorted(
            path
            for path, content in spec.files.items()
            if path.startswith("/etc/") and not isinstance(content, Symlink | Dir)
        )
    )


def _write_control(debian: Path, spec: DebSpec) -> None:
    debian.mkdir()
    members = {"control": control_text(spec)}
    conffiles = default_conffiles(spec) if spec.conffiles is None else spec.conffiles
    if conffiles:
        members["conffiles"] = "".join(f"{c}\n" for c in conffiles)
    for name in ("triggers", "templates"):
        if text := getattr(spec, name):
            members[name] = text if text.endswith("\n") else text + "\n"
    for name, text in members.items():
        (debian / name).write_text(text)
        (debian / name).chmod(0o644)
    for name in SCRIPTS:
        if body := getattr(spec, name):
            (debian / name).write_text(script_text(body))
            (debian / name).chmod(0o755)


def build_deb(spec: DebSpec, outdir: Path) -> Path:
    """Build `spec` into outdir/NAME_VERSION_ARCH.deb (replacing it) and return its path."""
    outdir.mkdir(parents=True, exist_ok=True)
    out = outdir / spec.filename
    out.unlink(missing_ok=True)  # it may be a hard link into a cache: never write through it
    with tempfile.TemporaryDirectory(prefix="deb-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        for path, content in sorted(spec.files.items()):
            _write_entry(root, path, content)
        _write_control(root / "DEBIAN", spec)
        _fix_modes(root, spec)
        # gzip -1: tests build dozens of these and the payloads are tiny.
        run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", root, out],
            env={"SOURCE_DATE_EPOCH": str(EPOCH)},
        )
    return out
