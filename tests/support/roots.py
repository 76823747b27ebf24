"""A Debian 13 (trixie) machine in a folder, with apt-ostree's .deb installed: a root made by
mmdebstrap from the host's Debian mirror, entered with bubblewrap (as root, with the
capabilities layering needs for its own mounts and sandbox). What runs in it is trixie's own
Python 3.13, python3-apt and libostree, so the .deb is tested as a trixie host runs it.

The root is cached under the test cache, keyed on the .deb's content and the package list:
an unchanged checkout reuses it (seconds), a changed one builds it again (~1 min).
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from apt_ostree.aptpkg.sources import read_host_sources, render_sources
from tests.support.debian import CACHE

SUITE = "trixie"
# the .deb's Depends (debian/control) and what the tests run in the root
PACKAGES = (
    "python3-apt", "python3-gi", "gir1.2-ostree-1.0", "ostree", "python3-yaml",
    "python3-dasbus", "bubblewrap", "dbus", "systemd", "e2fsprogs", "gnupg", "dpkg-dev",
)  # fmt: skip


@dataclass(frozen=True)
class Root:
    path: Path

    def run(
        self, *argv: str | Path, binds: Sequence[Path] = (), check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`argv` in the root; each of `binds` (folders of the host) at the same path in it."""
        outer = ["bwrap", "--bind", str(self.path), "/", "--proc", "/proc", "--dev", "/dev",
                 "--tmpfs", "/tmp", "--tmpfs", "/run", "--ro-bind", "/sys", "/sys",
                 "--cap-add", "ALL", "--unshare-pid", "--die-with-parent"]  # fmt: skip
        for b in binds:
            outer += ["--bind", str(b), str(b)]
        proc = subprocess.run(
            [*outer, "--", *map(str, argv)], capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} in the {SUITE} root: {proc.stdout}{proc.stderr}")
        return proc


ROOT = Path(__file__).resolve().parents[2]


def build_checkout_deb(outdir: Path) -> Path:
    """The .deb of this checkout (tools/build-deb: reproducible, so the root's key is stable)."""
    out = subprocess.run(
        [str(ROOT / "tools" / "build-deb"), str(outdir)], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def _key(deb: Path) -> str:
    h = hashlib.sha256(deb.read_bytes())
    h.update(" ".join(PACKAGES).encode())
    return h.hexdigest()[:16]


def debian13_root(deb: Path, cache: Path = CACHE) -> Root:
    """The trixie root with `deb` installed (made once per .deb)."""
    folder = cache / "roots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{SUITE}-{_key(deb)}"
    with (folder / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "usr/bin/apt-ostree").exists():
            for old in folder.glob(f"{SUITE}-*"):
                shutil.rmtree(old, ignore_errors=True)
            _build(path, deb)
    return Root(path)


def _build(path: Path, deb: Path) -> None:
    sources = path.with_suffix(".sources")
    sources.write_text(render_sources(e for e in read_host_sources(SUITE) if not e.optional))
    partial = path.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(
        ["mmdebstrap", "--variant=apt", "--include=" + ",".join(PACKAGES),
         "--aptopt=Acquire::Check-Valid-Until \"false\"",
         f"--customize-hook=copy-in {deb} /tmp",
         f"--customize-hook=chroot \"$1\" dpkg -i /tmp/{deb.name}",
         SUITE, str(partial), str(sources)],
        check=True, capture_output=True,
    )  # fmt: skip
    partial.rename(path)
