"""apt on a booted image: the hook the .deb installs stops dpkg before it fails halfway on the
read-only /usr, and says what to run instead; elsewhere it does nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
HOOK = DATA / "apt-ostree-apt-hook"


def _hook(*, booted: bool, usr: str) -> subprocess.CompletedProcess[str]:
    """The hook in a private mount namespace: /run empty (with the booted marker or not), /usr
    bound read-only or read-write (the hook only tests it, nothing is written)."""
    marker = "touch /run/ostree-booted && " if booted else ""
    argv = ["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/run", usr, "/usr", "/usr",
            "--", "sh", "-c", f'{marker}exec "$0"', str(HOOK)]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_on_a_booted_image_dpkg_is_stopped_with_what_to_run() -> None:
    result = _hook(booted=True, usr="--ro-bind")
    assert result.returncode == 1
    assert "/usr is read-only and apt cannot change it" in result.stderr
    assert "apt-ostree install PKG" in result.stderr and "apt-ostree upgrade" in result.stderr


def test_elsewhere_or_with_a_writable_usr_it_does_nothing() -> None:
    assert _hook(booted=False, usr="--ro-bind").returncode == 0  # a build host, a chroot
    assert _hook(booted=True, usr="--bind").returncode == 0  # usroverlay, or layering's sandbox


def test_apt_reads_the_hook_from_its_configuration() -> None:
    out = subprocess.run(
        ["apt-config", "-c", str(DATA / "60apt-ostree"), "dump", "DPkg::Pre-Invoke"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert '"/usr/lib/apt-ostree/apt-ostree-apt-hook"' in out
