"""Folder sysroots for client tests: the verbs run through the typed core (`execute`, in this
process) or through the CLI as a user runs it, served copies of the test images, and machines
made from a template sysroot (tests/deploy/conftest.py has the fixtures)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from apt_ostree.progress import Progress
from apt_ostree.system.execute import execute
from apt_ostree.system.requests import Init, Request
from apt_ostree.system.results import DeploymentInfo, Outcome
from apt_ostree.system.results import Result as VerbResult
from apt_ostree.system.sysroot import System
from apt_ostree.system.updates import init_sysroot
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


def ok(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    result = cli(*args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def ostree(*args: str | Path) -> str:
    argv = ["ostree", *map(str, args)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"
    return proc.stdout


@dataclass
class Recorder(Progress):
    """A progress sink that keeps what a verb reported: step titles, messages, live lines."""

    steps: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    lives: list[str] = field(default_factory=list)

    def step_begin(self, title: str) -> None:
        self.steps.append(title)

    def message(self, text: str) -> None:
        self.messages.append(text)

    def live(self, text: str, *, final: bool = False) -> None:
        self.lives.append(text)


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
        """The CLI's arguments that name this machine."""
        return ["--sysroot", str(self.path)]

    def system(self, progress: Progress | None = None) -> System:
        return System(self.path, "test", progress or Progress())

    def run(self, request: Request, progress: Progress | None = None) -> VerbResult:
        """Run a verb through the typed core, in this process (as `--sysroot` does)."""
        return execute(self.system(progress), request)

    def change(self, request: Request, progress: Progress | None = None) -> Outcome:
        """Run a mutating verb through the core; its outcome."""
        outcome = self.run(request, progress)
        assert isinstance(outcome, Outcome), outcome
        return outcome

    def deployments(self) -> tuple[DeploymentInfo, ...]:
        return self.system().status()

    def status(self) -> list[dict[str, object]]:
        """The deployments as `status --json` lists them."""
        return [d.to_wire() for d in self.deployments()]

    def root(self, index: int = 0) -> Path:
        """The tree of deployment `index` (its id is `test-CHECKSUM.SERIAL`)."""
        name = self.deployments()[index].id.removeprefix("test-")
        path = self.path / "ostree/deploy/test/deploy" / name
        assert path.is_dir(), path
        return path

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


INIT_KARGS = ("console=ttyS0",)


def init_request(served: Served, ref: str = "test/os") -> Init:
    """`init` of `ref` from `served`, verified with the images' GPG key."""
    keyring = str(served.images.gpg_key.keyring)
    return Init(ref=ref, remote=f"origin={served.url}", gpg_import=keyring, karg=INIT_KARGS)


def init_args(path: Path, served: Served, ref: str = "test/os") -> list[str]:
    """The same `init` on the command line."""
    keyring = str(served.images.gpg_key.keyring)
    karg = [a for k in INIT_KARGS for a in ("--karg", k)]
    return ["init", "--sysroot", str(path), "--os", "test", "--remote", f"origin={served.url}",
            "--gpg-import", keyring, *karg, ref]  # fmt: skip


def init(path: Path, served: Served, ref: str = "test/os") -> Machine:
    """A sysroot at `path` with `ref` deployed, made by the core's `init`."""
    init_sysroot(path, "test", init_request(served, ref), Progress())
    return Machine(path, served)
