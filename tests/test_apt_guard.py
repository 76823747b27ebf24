"""apt, apt-get and dpkg on a booted image: the guard that compose puts in front of them
stops what would change packages (it could only fail on the read-only /usr and dpkg
database) and says what to run instead; everything else, and everything elsewhere, runs the
real program with its arguments as given."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

GUARD = Path(__file__).resolve().parent.parent / "data" / "apt-ostree-guard"


def _run(
    tmp_path: Path, argv: str, *, booted: bool = True, usr: str = "--ro-bind"
) -> tuple[int, str]:
    """`argv` run through the guard as compose installs it (NAME a link to it, the real
    program diverted to NAME.distrib: here a stub that prints its arguments), with /run empty
    (with the booted marker or not) and /usr bound read-only or read-write."""
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for name in ("apt", "apt-get", "dpkg"):
            (bin_dir / name).symlink_to(GUARD)
            stub = bin_dir / f"{name}.distrib"
            stub.write_text('#!/bin/sh\necho "real ${0##*/} $*"\n')
            stub.chmod(0o755)
    marker = "touch /run/ostree-booted && " if booted else ""
    command = ["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/run", usr, "/usr", "/usr",
               "--", "sh", "-c", f'{marker}PATH="$0:$PATH" exec {argv}', str(bin_dir)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    "argv",
    ["apt-get install -y htop", "apt install htop", "apt-get -o Debug::X=1 remove htop",
     "apt upgrade", "apt-get dist-upgrade", "apt autoremove --purge", "apt reinstall dbus",
     "dpkg -i ./htop.deb", "dpkg --remove htop", "dpkg -P htop", "dpkg -iR ./debs",
     "dpkg --configure -a", "dpkg --add-architecture i386"],
)  # fmt: skip
def test_what_changes_packages_is_stopped_with_what_to_run(tmp_path: Path, argv: str) -> None:
    code, out = _run(tmp_path, argv)
    name = argv.split()[0]
    assert code == 1, out
    assert out.startswith(f"{name}: this machine runs an OSTree image: /usr is read-only")
    assert "apt-ostree install PKG" in out and "apt-ostree upgrade" in out
    assert "real" not in out  # the real program never ran


@pytest.mark.parametrize(
    "argv",
    ["apt-get download htop", "apt show install", "apt list --installed", "apt-get update",
     "apt-get -s install htop", "apt install --dry-run htop", "apt-get source hello",
     "apt-get -t trixie-backports --simulate upgrade", "dpkg -l", "dpkg -L dbus",
     "dpkg --print-architecture", "dpkg --compare-versions 1 lt 2", "dpkg -i --no-act x.deb"],
)  # fmt: skip
def test_what_only_reads_runs_the_real_program(tmp_path: Path, argv: str) -> None:
    code, out = _run(tmp_path, argv)
    name, *args = argv.split()
    assert code == 0 and out == f"real {name}.distrib {' '.join(args)}\n", out


def test_elsewhere_or_with_a_writable_usr_everything_runs(tmp_path: Path) -> None:
    # a build host or a chroot (no marker); usroverlay, or apt-ostree's sandbox (/usr writable)
    for booted, usr in ((False, "--ro-bind"), (True, "--bind")):
        code, out = _run(tmp_path, "apt-get install -y htop", booted=booted, usr=usr)
        assert code == 0 and out == "real apt-get.distrib install -y htop\n", out
