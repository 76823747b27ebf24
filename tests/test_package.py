"""The Debian package built by tools/build-deb: its control data, its files, and that the
installed layout runs with Debian's own /usr/bin/python3 (no venv, no checkout)."""

from __future__ import annotations

import configparser
import functools
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_DEB = ROOT / "tools" / "build-deb"
PYDIR = "usr/lib/python3/dist-packages"


def build_deb(outdir: Path) -> Path:
    out = subprocess.run(
        [str(BUILD_DEB), str(outdir)], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Path(out)


@functools.cache
def _session_deb() -> Path:
    import tempfile

    return build_deb(Path(tempfile.mkdtemp(prefix="apt-ostree-deb-test-")))


@pytest.fixture(scope="module")
def deb() -> Path:
    return _session_deb()


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    return root


def dpkg_field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", deb, name], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_name_version_and_relations(deb: Path) -> None:
    assert re.fullmatch(r"apt-ostree_0\.\d+\.\d+\+git\d+\.[0-9a-f]{8}(\.m[0-9a-f]{10})?_all\.deb",
                        deb.name), deb.name  # fmt: skip
    assert dpkg_field(deb, "Package") == "apt-ostree"
    assert dpkg_field(deb, "Architecture") == "all"
    depends = {d.split()[0] for d in dpkg_field(deb, "Depends").split(", ")}
    for needed in ("python3", "python3-apt", "python3-gi", "gir1.2-ostree-1.0", "python3-yaml",
                   "python3-dasbus", "bubblewrap", "ostree", "dbus"):  # fmt: skip
        assert needed in depends
    assert "polkitd" in dpkg_field(deb, "Recommends")
    info = subprocess.run(["dpkg-deb", "--info", deb], capture_output=True, text=True, check=True)
    assert "conffiles" in info.stdout and "postinst" in info.stdout


def test_same_checkout_same_bytes(deb: Path, tmp_path: Path) -> None:
    again = build_deb(tmp_path)
    assert again.name == deb.name
    assert again.read_bytes() == deb.read_bytes()


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
