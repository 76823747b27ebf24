"""Running a command inside a tree with bubblewrap.

The tree is bound read-write (or read-only) at `/`, with a fresh /proc, a minimal /dev
(what dracut and maintainer scripts need), tmpfs on /tmp and /run, and new pid, ipc and uts
namespaces. There is no network unless asked for, and the environment is cleared and set
from `sandbox_env()`, so nothing from the composing host leaks into the tree.

The argv is built by small pure functions (data that tests can read); `run_in_tree()` and
`stream_in_tree()` hand it to the project's one subprocess wrapper.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from apt_ostree.run import run, run_streaming

BWRAP = "bwrap"

SANDBOX_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    # systemctl and friends act on unit files and never try to reach a running manager
    # (systemd's ENVIRONMENT.md: $SYSTEMD_OFFLINE).
    "SYSTEMD_OFFLINE": "1",
    "HOME": "/root",
    "TMPDIR": "/tmp",
}


@dataclass(frozen=True)
class Bind:
    """A host path made visible at `dest` inside the sandbox."""

    source: Path
    dest: str
    readonly: bool = False


def sandbox_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The sandbox's whole environment: SANDBOX_ENV, then `extra`."""
    env = dict(SANDBOX_ENV)
    env.update(extra or {})
    return env


def env_args(env: Mapping[str, str]) -> list[str]:
    args = ["--clearenv"]
    for name in sorted(env):
        args += ["--setenv", name, env[name]]
    return args


def tree_args(tree: Path, *, readonly: bool = False) -> list[str]:
    return ["--ro-bind" if readonly else "--bind", str(tree), "/"]


def api_fs_args() -> list[str]:
    return ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run"]


def namespace_args(*, network: bool = False) -> list[str]:
    args = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    args += ["--new-session"]  # no TIOCSTI into the caller's terminal
    return args if network else [*args, "--unshare-net"]


def capability_args(keep: Sequence[str] | None) -> list[str]:
    """bwrap run by root keeps every capability; `keep` (names like CAP_CHOWN) narrows that."""
    if keep is None:
        return []
    args = ["--cap-drop", "ALL"]
    for cap in keep:
        args += ["--cap-add", cap]
    return args


def bind_args(binds: Sequence[Bind]) -> list[str]:
    args: list[str] = []
    for b in binds:
        args += ["--ro-bind" if b.readonly else "--bind", str(b.source), b.dest]
    return args


def bwrap_argv(
    tree: Path,
    command: Sequence[str],
    *,
    binds: Sequence[Bind] = (),
    env: Mapping[str, str] | None = None,
    network: bool = False,
    readonly: bool = False,
    cwd: str = "/",
    capabilities: Sequence[str] | None = None,
) -> list[str]:
    """The full bwrap command line that runs `command` inside `tree`.

    `binds` come after the API filesystems, so they may point into /run or /tmp.
    """
    return [
        BWRAP,
        *tree_args(tree, readonly=readonly),
        *api_fs_args(),
        *bind_args(binds),
        *namespace_args(network=network),
        *capability_args(capabilities),
        *env_args(sandbox_env(env)),
        "--chdir",
        cwd,
        "--",
        *command,
    ]


def run_in_tree(
    tree: Path,
    command: Sequence[str],
    *,
    binds: Sequence[Bind] = (),
    env: Mapping[str, str] | None = None,
    network: bool = False,
    readonly: bool = False,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `command` inside `tree`, capturing its output; CommandError when it fails."""
    argv = bwrap_argv(tree, command, binds=binds, env=env, network=network, readonly=readonly)
    return run(argv, what=what or Path(command[0]).name)


def stream_in_tree(
    tree: Path,
    command: Sequence[str],
    on_line: Callable[[str], None],
    *,
    binds: Sequence[Bind] = (),
    env: Mapping[str, str] | None = None,
    network: bool = False,
    what: str | None = None,
) -> None:
    """Run `command` inside `tree`, handing each line of its output to `on_line`."""
    argv = bwrap_argv(tree, command, binds=binds, env=env, network=network)
    run_streaming(argv, on_line, what=what or Path(command[0]).name)


def passthrough_env() -> dict[str, str]:
    """Host variables a sandboxed tool should still see: SOURCE_DATE_EPOCH, for reproducibility."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    return {"SOURCE_DATE_EPOCH": value} if value else {}
