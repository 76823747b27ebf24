"""The Debian packages: the quick builder tools/build-deb (its control data, its files, that
the installed layout runs with Debian's own /usr/bin/python3, no venv, no checkout) and the
source package debian/ (dpkg-buildpackage from a copy of the tree; lintian on both builds),
their man pages and bash completion, and that a client never pulls a boot stack."""

from __future__ import annotations

import argparse
import configparser
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from apt_ostree import __version__
from apt_ostree.system.requests import VERBS

ROOT = Path(__file__).resolve().parent.parent
BUILD_DEB = ROOT / "tools" / "build-deb"
PYDIR = "usr/lib/python3/dist-packages"
CLIENT, COMPOSE = "apt-ostree", "apt-ostree-compose"
MAN_PAGES = {
    CLIENT: ("man8/apt-ostree.8.gz", "man8/apt-ostreed.8.gz", "man5/apt-ostreed.conf.5.gz"),
    COMPOSE: ("man5/apt-ostree-treefile.5.gz",),
}
COMPLETION = "usr/share/bash-completion/completions/apt-ostree"
# what installing the client (or the compose tools) must never bring: a boot stack that
# replaces the host's initramfs generator (ostree-boot -> dracut, which conflicts with
# initramfs-tools), loaders, and what those drag in (mdadm -> an MTA)
NEVER = re.compile(
    r"dracut.*|ostree-boot|initramfs-tools|grub.*|shim.*|mdadm|default-mta|"
    r"mail-transport-agent|exim4.*|postfix|sendmail.*|nullmailer|dma|msmtp-mta|opensmtpd"
)
# a sane PATH: the first python3 of a developer's PATH may not be Debian's
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


def build_deb(outdir: Path, *, compose: bool = False) -> list[Path]:
    """tools/build-deb, run with bash as the README runs it: the paths it prints."""
    argv = ["bash", str(BUILD_DEB), *(["--compose"] if compose else []), str(outdir)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [Path(line) for line in out.splitlines()]


@functools.cache
def _session_debs() -> tuple[Path, Path]:
    import tempfile

    client, compose = build_deb(Path(tempfile.mkdtemp(prefix="apt-ostree-deb-test-")), compose=True)
    return client, compose


@pytest.fixture(scope="module")
def deb() -> Path:
    return _session_debs()[0]


@pytest.fixture(scope="module")
def compose_deb() -> Path:
    return _session_debs()[1]


def _unpack(deb: Path, root: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    return root


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack(deb, tmp_path_factory.mktemp("unpacked"))


@pytest.fixture(scope="module")
def debian_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dpkg-buildpackage -us -uc` (source and binaries) in a copy of the checkout's files,
    tracked and untracked but not ignored: what a clean clone of this working tree holds.
    The folder with the .changes, .dsc and .debs."""
    top = tmp_path_factory.mktemp("dpkg-buildpackage")
    src = top / f"apt-ostree-{__version__}"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():  # a tracked file deleted in the working tree is not
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    proc = subprocess.run(
        ["dpkg-buildpackage", "-us", "-uc"],
        cwd=src, env={**CLEAN_ENV, "HOME": str(top)}, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return top


def _debian_deb(folder: Path, package: str) -> Path:
    return folder / f"{package}_{__version__}_all.deb"


def dpkg_field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", deb, name], capture_output=True, text=True, check=True
    ).stdout.strip()


def _names(relations: str) -> set[str]:
    """The package names of a relation field (alternatives included)."""
    return {
        alt.split()[0].split(":")[0]
        for rel in relations.split(",")
        for alt in rel.split("|")
        if alt.strip()
    }


def test_name_version_and_relations(deb: Path) -> None:
    assert re.fullmatch(r"apt-ostree_0\.\d+\.\d+\+git\d+\.[0-9a-f]{8}(\.m[0-9a-f]{10})?_all\.deb",
                        deb.name), deb.name  # fmt: skip
    assert dpkg_field(deb, "Package") == "apt-ostree"
    assert dpkg_field(deb, "Architecture") == "all"
    depends = {d.split()[0] for d in dpkg_field(deb, "Depends").split(", ")}
    for needed in ("python3", "python3-apt", "python3-gi", "gir1.2-ostree-1.0", "python3-yaml",
                   "python3-dasbus", "bubblewrap", "ostree", "dbus"):  # fmt: skip
        assert needed in depends
    assert dpkg_field(deb, "Recommends") == "polkitd, skopeo, systemd-container"
    info = subprocess.run(["dpkg-deb", "--info", deb], capture_output=True, text=True, check=True)
    assert "conffiles" in info.stdout and "postinst" in info.stdout


def test_the_compose_package(deb: Path, compose_deb: Path, tmp_path: Path) -> None:
    version = dpkg_field(deb, "Version")
    assert compose_deb.name == f"{COMPOSE}_{version}_all.deb"
    depends = dpkg_field(compose_deb, "Depends").split(", ")
    assert f"{CLIENT} (= {version})" in depends
    assert {"mmdebstrap", "gdisk", "dosfstools", "mtools"} <= _names(", ".join(depends))
    root = _unpack(compose_deb, tmp_path)
    assert (root / "usr/share/man" / MAN_PAGES[COMPOSE][0]).is_file()
    shipped = {p.name for p in (root / f"usr/share/doc/{COMPOSE}/examples").iterdir()}
    assert shipped == {p.name for p in (ROOT / "examples").glob("*.yaml")}


def test_changelog_names_the_modules_version_and_a_maintainer() -> None:
    def field(name: str) -> str:
        return subprocess.run(
            ["dpkg-parsechangelog", "-l", str(ROOT / "debian" / "changelog"), "-S", name],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    assert field("Version") == __version__
    maintainer = field("Maintainer")
    assert re.fullmatch(r"[^<>]+ <[^@\s<>]+@[a-z0-9-]+(\.[a-z0-9-]+)+>", maintainer), maintainer
    assert "localhost" not in maintainer
    control = (ROOT / "debian" / "control").read_text()
    assert f"Maintainer: {maintainer}\n" in control


def test_same_checkout_same_bytes(deb: Path, compose_deb: Path, tmp_path: Path) -> None:
    # without --compose: the client alone, one path (what tests/vm reads)
    (again,) = build_deb(tmp_path / "client")
    assert again.name == deb.name
    assert again.read_bytes() == deb.read_bytes()
    both = build_deb(tmp_path / "both", compose=True)
    assert [p.read_bytes() for p in both] == [deb.read_bytes(), compose_deb.read_bytes()]


def test_files_where_the_daemon_and_the_bus_expect_them(deb: Path, unpacked: Path) -> None:
    listing = subprocess.run(
        ["dpkg-deb", "--contents", deb], capture_output=True, text=True, check=True
    ).stdout
    assert all(" root/root " in line for line in listing.splitlines())
    data = ROOT / "data"
    expected = {
        "usr/lib/systemd/system/apt-ostreed.service": data / "apt-ostreed.service",
        "usr/lib/systemd/system/apt-ostreed-automatic.timer": data / "apt-ostreed-automatic.timer",
        "usr/share/dbus-1/system.d/org.aptostree.AptOstree1.conf": (
            data / "org.aptostree.AptOstree1.conf"
        ),
        "usr/share/dbus-1/system-services/org.aptostree.AptOstree1.service": (
            data / "org.aptostree.AptOstree1.service"
        ),
        "usr/share/polkit-1/actions/org.aptostree.AptOstree1.policy": (
            data / "org.aptostree.AptOstree1.policy"
        ),
        "usr/share/dbus-1/interfaces/org.aptostree.AptOstree1.xml": (
            data / "org.aptostree.AptOstree1.xml"
        ),
        "etc/apt-ostreed.conf": data / "apt-ostreed.conf",
    }
    for installed, source in expected.items():
        assert (unpacked / installed).read_bytes() == source.read_bytes(), installed
    conffiles = subprocess.run(
        ["dpkg-deb", "--ctrl-tarfile", deb], capture_output=True, check=True
    ).stdout
    assert b"./conffiles" in conffiles
    # activation starts the unit that exists, whose ExecStart is the shipped entry point
    activation = configparser.ConfigParser()
    activation.read(unpacked / "usr/share/dbus-1/system-services/org.aptostree.AptOstree1.service")
    unit = activation["D-BUS Service"]["SystemdService"]
    assert (unpacked / "usr/lib/systemd/system" / unit).is_file()
    unit_text = (unpacked / "usr/lib/systemd/system" / unit).read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", unit_text, re.MULTILINE)
    assert exec_start and (unpacked / exec_start.group(1).lstrip("/")).is_file()
    for name in ("apt-ostree", "apt-ostreed"):
        script = unpacked / "usr/bin" / name
        assert os.access(script, os.X_OK)
        assert script.read_text().startswith("#!/usr/bin/python3\n")
    modules = {p.relative_to(unpacked / PYDIR) for p in (unpacked / PYDIR).rglob("*.py")}
    in_checkout = {
        p.relative_to(ROOT)
        for p in (ROOT / "apt_ostree").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert modules == in_checkout
    assert not list((unpacked / PYDIR).rglob("__pycache__"))


def _installed_python(unpacked: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run with Debian's python3 and only the unpacked package on the path (no venv)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
           "PYTHONPATH": str(unpacked / PYDIR), "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    return subprocess.run(
        ["/usr/bin/python3", *argv], capture_output=True, text=True, env=env, cwd="/", check=False
    )


def test_installed_entry_points_run(unpacked: Path) -> None:
    _entry_points_run(unpacked)


def test_installed_entry_points_of_the_source_package_run(
    debian_build: Path, tmp_path: Path
) -> None:
    _entry_points_run(_unpack(_debian_deb(debian_build, CLIENT), tmp_path))


def _entry_points_run(unpacked: Path) -> None:
    where = _installed_python(unpacked, "-c", "import apt_ostree; print(apt_ostree.__file__)")
    assert where.stdout.startswith(str(unpacked / PYDIR)), where
    cli = _installed_python(unpacked, str(unpacked / "usr/bin/apt-ostree"), "--help")
    assert cli.returncode == 0, cli.stderr
    for verb in ("status", "upgrade", "rollback", "install", "kargs", "compose"):
        assert verb in cli.stdout
    daemon = _installed_python(unpacked, str(unpacked / "usr/bin/apt-ostreed"), "--help")
    assert daemon.returncode == 0, daemon.stderr
    assert "--sysroot" in daemon.stdout
    # every module imports (a missing runtime dependency would show here)
    modules = sorted(
        ".".join(p.relative_to(unpacked / PYDIR).with_suffix("").parts)
        for p in (unpacked / PYDIR / "apt_ostree").rglob("*.py")
    )
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    imported = _installed_python(
        unpacked, "-c", code, *(m.removesuffix(".__init__") for m in modules)
    )
    assert imported.returncode == 0, imported.stderr


# ---- the source package (debian/) ----


def test_dpkg_buildpackage_builds_both_packages(debian_build: Path) -> None:
    assert (debian_build / f"apt-ostree_{__version__}.dsc").is_file()
    for package in (CLIENT, COMPOSE):
        built = _debian_deb(debian_build, package)
        assert dpkg_field(built, "Package") == package
        assert dpkg_field(built, "Version") == __version__


def _files(deb: Path) -> set[str]:
    listing = subprocess.run(
        ["dpkg-deb", "--contents", deb], capture_output=True, text=True, check=True
    ).stdout
    return {ln.split(None, 5)[5].removeprefix("./") for ln in listing.splitlines() if ln[0] != "d"}


def _conffiles(deb: Path) -> str:
    with_control = subprocess.run(
        ["dpkg-deb", "--ctrl-tarfile", deb], capture_output=True, check=True
    ).stdout
    names = subprocess.run(
        ["tar", "-t"], input=with_control, capture_output=True, check=True
    ).stdout.decode()
    if "./conffiles" not in names.split():
        return ""
    return subprocess.run(
        ["tar", "-xO", "./conffiles"], input=with_control, capture_output=True, check=True
    ).stdout.decode()


def test_both_builds_ship_the_same_files(debian_build: Path, deb: Path, compose_deb: Path) -> None:
    """tools/build-deb's DATA and debian/apt-ostree.install name the same places; pybuild adds
    the .dist-info only."""
    client = _debian_deb(debian_build, CLIENT)
    assert {f for f in _files(client) if ".dist-info/" not in f} == _files(deb)
    assert _files(_debian_deb(debian_build, COMPOSE)) == _files(compose_deb)
    assert _conffiles(client) == _conffiles(deb) != ""
    assert _conffiles(_debian_deb(debian_build, COMPOSE)) == _conffiles(compose_deb) == ""


def test_lintian_reports_no_errors_or_warnings(
    debian_build: Path, deb: Path, compose_deb: Path
) -> None:
    """The source and both binaries of dpkg-buildpackage, and tools/build-deb's two, at
    lintian's default level."""
    (changes,) = debian_build.glob("apt-ostree_*.changes")
    proc = subprocess.run(
        ["lintian", "--no-cfg", str(changes), str(deb), str(compose_deb)],
        capture_output=True, text=True, env=CLEAN_ENV,
    )  # fmt: skip
    tags = [ln for ln in proc.stdout.splitlines() if ln.startswith(("E:", "W:"))]
    assert not tags, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_boot_stack_is_pulled(debian_build: Path, deb: Path, compose_deb: Path) -> None:
    """Neither package Depends on or Recommends what would replace a build server's
    initramfs generator or install a loader on it; the client recommends polkitd and skopeo."""
    debs = [deb, compose_deb, *(_debian_deb(debian_build, p) for p in (CLIENT, COMPOSE))]
    for built in debs:
        for name in ("Pre-Depends", "Depends", "Recommends"):
            bad = {n for n in _names(dpkg_field(built, name)) if NEVER.fullmatch(n)}
            assert not bad, (built.name, name, bad)
    assert (
        dpkg_field(_debian_deb(debian_build, CLIENT), "Recommends")
        == "polkitd, skopeo, systemd-container"
    )
    # what apt would do here, Recommends included: install, never remove
    proc = subprocess.run(
        ["apt-get", "install", "-s", "-o", "APT::Install-Recommends=true",
         *(str(_debian_deb(debian_build, p)) for p in (CLIENT, COMPOSE))],
        capture_output=True, text=True, env=CLEAN_ENV,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    actions = [ln.split()[:2] for ln in proc.stdout.splitlines() if ln.startswith(("Inst", "Remv"))]
    assert [a for a in actions if a[0] == "Remv"] == []
    assert [a for a in actions if NEVER.fullmatch(a[1])] == []


# ---- man pages and completion ----


def _man(page: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**CLEAN_ENV, "MANWIDTH": "250", "MAN_KEEP_FORMATTING": "", "MANPAGER": "cat"}
    return subprocess.run(
        ["man", *options, "-l", str(page)], capture_output=True, text=True, env=env
    )


def _plain(text: str) -> str:
    return re.sub(r".\x08|\x1b\[[0-9;]*m", "", text)


@pytest.mark.parametrize("build", ["build-deb", "dpkg-buildpackage"])
def test_man_pages_render(build: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Every page renders without a warning from groff or man (what lintian's manpage check
    runs), and lexgrog reads its whatis line."""
    if build == "build-deb":
        debs = dict(zip((CLIENT, COMPOSE), _session_debs(), strict=True))
    else:
        folder = request.getfixturevalue("debian_build")
        debs = {p: _debian_deb(folder, p) for p in (CLIENT, COMPOSE)}
    for package, built in debs.items():
        root = _unpack(built, tmp_path / package)
        for page in MAN_PAGES[package]:
            path = root / "usr/share/man" / page
            checked = _man(path, "--warnings", "-E", "UTF-8", "-Tutf8", "-Z")
            assert checked.returncode == 0 and checked.stderr == "", (page, checked.stderr)
            name = Path(page).name.removesuffix(".gz").rsplit(".", 1)[0]
            text = _plain(_man(path, "-E", "ascii").stdout)
            assert text.startswith(name.upper()) and "\nNAME\n" in text, (page, text[:200])
            whatis = subprocess.run(["lexgrog", str(path)], capture_output=True, text=True)
            assert whatis.returncode == 0 and f'"{name} - ' in whatis.stdout, whatis.stdout


def test_the_cli_page_has_every_verb_and_flag(unpacked: Path) -> None:
    text = _plain(_man(unpacked / "usr/share/man" / MAN_PAGES[CLIENT][0], "-E", "ascii").stdout)
    for verb in VERBS:
        assert " ".join(verb.words) in text, verb.words
        for f in verb.request.fields():
            for flag in f.param.flags:
                assert flag in text, (verb.words, flag)
    for words in ("compose tree", "compose image", "cancel", "reload", "--unchanged-exit-77"):
        assert words in text
    daemon = _plain(_man(unpacked / "usr/share/man" / MAN_PAGES[CLIENT][1], "-E", "ascii").stdout)
    for option in ("--sysroot", "--config", "--debug", "org.aptostree.AptOstree1"):
        assert option in daemon
    conf = _plain(_man(unpacked / "usr/share/man" / MAN_PAGES[CLIENT][2], "-E", "ascii").stdout)
    for key in ("AutomaticUpdatePolicy", "IdleExitTimeout", "LockLayering", "Recommends"):
        assert key in conf


def _complete(script: Path, *words: str) -> list[str]:
    """What `_apt_ostree` offers for the last of `words` (the word being completed)."""
    code = (
        'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); '
        '_apt_ostree; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", code, "complete", str(script), *words],
        capture_output=True, text=True, env=CLEAN_ENV, check=True,
    )  # fmt: skip
    return [w for w in proc.stdout.splitlines() if w]


def test_bash_completion(unpacked: Path) -> None:
    from apt_ostree.cli.parser import build_parser

    script = unpacked / COMPLETION
    assert _complete(script, "apt-ostree", "ins") == ["install"]
    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(_complete(script, "apt-ostree", "")) == set(verbs.choices)
    assert _complete(script, "apt-ostree", "override", "re") == ["remove", "replace", "reset"]
    assert _complete(script, "apt-ostree", "--debug", "db", "") == ["diff", "list", "version"]
    assert _complete(script, "apt-ostree", "update", "--ch") == ["--check"]  # an alias
    assert "--sysroot" in _complete(script, "apt-ostree", "status", "--sys")
    assert _complete(script, "apt-ostree", "compose", "image", "--format", "") == ["raw", "qcow2"]
    # package names: of the apt sources for install, the installed ones for uninstall
    assert "dpkg" in _complete(script, "apt-ostree", "install", "dpk")
    assert "dpkg" in _complete(script, "apt-ostree", "remove", "dpk")
    assert _complete(script, "apt-ostree", "status", "--os", "x", "") == []
