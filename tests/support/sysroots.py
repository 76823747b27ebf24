"""Folder sysroots for client tests: the CLI run as a user runs it, served copies of the test
images, and machines made from a template sysroot (tests/deploy/conftest.py has the fixtures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.httpd import Server
from tests.support.images import Images

ROOT = Path(__file__).resolve().parents[2]
APT_OSTREE = [sys.executable, "-m", "apt_ostree.cli.main"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, self.stderr
        return lines[0]


def cli(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """Run `apt-ostree ARGS` as a user does; `env` adds to the environment."""
    proc = subprocess.run(
        [*APT_OSTREE, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=cwd,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def ok(*args: str | Path) -> Result:
    result = cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def ostree(*args: str | Path) -> str:
    return subprocess.run(
        ["ostree", *map(str, args)], capture_output=True, text=True, check=True
    ).stdout


@dataclass
class Served:
    """A copy of the images' repository, served over loopback HTTP."""

    repo: Path
    server: Server
    images: Images

    @property
    def url(self) -> str:
        return self.server.url + "/"

    def set_ref(self, version: str, ref: str = "test/os") -> None:
        """Point `ref` at a version (forward or back) and update the summary, as a vendor would."""
        (self.repo / "refs" / "heads" / ref).write_text(self.images.checksum(version) + "\n")
        ostree("summary", "-u", f"--repo={self.repo}")


@dataclass
class Machine:
    """A folder sysroot following test/os on `served`."""

    path: Path
    served: Served

    def args(self) -> list[str]:
        return ["--sysroot", str(self.path)]

    def status(self) -> list[dict[str, object]]:
        doc = json.loads(ok("status", *self.args(), "--json").stdout)
        deployments: list[dict[str, object]] = doc["deployments"]
        return deployments

    def versions(self) -> list[object]:
        return [d["version"] for d in self.status()]

    def snapshot(self) -> tuple[str, str, list[str]]:
        """What a failed verb must leave alone: libostree's view, and the deployment dirs."""
        admin = ostree("admin", "status", f"--sysroot={self.path}")
        refs = ostree("refs", f"--repo={self.path}/ostree/repo")
        dirs = sorted(p.name for p in self.path.glob("ostree/deploy/test/deploy/*"))
        return admin, refs, dirs

    def fsck(self) -> None:
        ostree("fsck", f"--repo={self.path}/ostree/repo")


def init(path: Path, served: Served, *extra: str, ref: str = "test/os") -> Machine:
    ok(
        "init",
        "--sysroot",
        path,
        "--os",
        "test",
        "--remote",
        f"origin={served.url}",
        "--gpg-import",
        served.images.gpg_key.keyring,
        "--karg",
        "console=ttyS0",
        *extra,
        ref,
    )
    return Machine(path, served)
