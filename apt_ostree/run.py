"""The one subprocess wrapper: argv lists, explicit environment, errors that carry stderr.

`run` waits for a tool, `run_streaming` hands its lines to a callback as they come (steps a
user watches), `spawn` starts a long-lived child (the daemon's worker) and returns it.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from apt_ostree.errors import CommandError, Terminated

log = logging.getLogger(__name__)

BASE_ENV: Mapping[str, str] = {
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every tool runs with: BASE_ENV, a few host variables, then `extra`."""
    env = dict(BASE_ENV)
    # CONTAINERS_REGISTRIES_CONF and REGISTRY_AUTH_FILE: skopeo's registries and logins
    for name in (
        *("HOME", "TMPDIR", "SOURCE_DATE_EPOCH", "http_proxy", "https_proxy", "no_proxy"),
        *("CONTAINERS_REGISTRIES_CONF", "REGISTRY_AUTH_FILE"),
    ):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra or {})
    return env


# a tool that got SIGTERM because we did gets this long to clean up before SIGKILL
STOP_SECONDS = 30


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def raise_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)


def mounts_under(folder: Path) -> list[Path]:
    """The mount points at or below `folder` in our mount namespace, deepest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_bytes().splitlines():
        # the mount point is field 5, with space, tab, newline and backslash octal-escaped
        raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), line.split()[4])
        point = Path(os.fsdecode(raw))
        if point == folder or folder in point.parents:
            found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_under(folder: Path) -> None:
    """Detach whatever is mounted at or below `folder`, so that removing it never reaches
    into another file system (a bind-mounted /dev or /sys left by a killed tool)."""
    folder = folder.resolve()
    for point in mounts_under(folder):
        run(["umount", "--lazy", point], check=False)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to a child we started (it cleans up), SIGKILL when it takes too long."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _last_lines(text: str, count: int = 5) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def run(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: str | bytes | None = None,
    capture: bool = True,
    merge: bool = False,
    check: bool = True,
    timeout: float | None = None,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv`; raise CommandError (with the tool's stderr) when it fails, unless
    check=False (the caller reads `returncode`).

    `what` names the step for the error message; by default the program's name.
    With capture=False the tool's output goes to our stderr (for long steps a user watches);
    with merge=True its stderr is merged into `stdout`, in the order the tool wrote.
    """
    args = [str(a) for a in argv]
    log.debug("running: %s", shlex.join(args))
    data = input.decode() if isinstance(input, bytes) else input
    try:
        proc = subprocess.run(
            args,
            env=command_env(env),
            cwd=cwd,
            input=data,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=(subprocess.STDOUT if merge else subprocess.PIPE) if capture else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise CommandError(f"{args[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise CommandError(f"{what or args[0]} did not finish within {timeout:.0f} s") from e
    if check and proc.returncode != 0:
        detail = _last_lines(proc.stderr or proc.stdout or "")
        msg = f"{what or Path(args[0]).name} failed (exit {proc.returncode})"
        raise CommandError(
            f"{msg}: {detail}" if detail else msg,
            stderr=proc.stderr or "",
            returncode=proc.returncode,
        )
    return proc


def run_streaming(
    argv: Sequence[str | Path],
    on_line: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    what: str | None = None,
) -> None:
    """Run `argv`, handing each line of its merged output to `on_line` as it comes.

    For long steps a user watches (bootstrap, initramfs). Raises CommandError with the last
    lines of output when the tool fails.
    """
    args = [str(a) for a in argv]
    log.debug("running: %s", shlex.join(args))
    tail: deque[str] = deque(maxlen=20)
    try:
        proc = subprocess.Popen(
            args,
            env=command_env(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except FileNotFoundError as e:
        raise CommandError(f"{args[0]} is not installed") from e
    assert proc.stdout is not None
    with proc:
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                on_line(line)
        except BaseException:  # SIGTERM (Terminated), Ctrl-C, a failing on_line: stop it
            _stop(proc)
            raise
    if proc.returncode != 0:
        text = "\n".join(tail)
        name = what or Path(args[0]).name
        raise CommandError(
            f"{name} failed (exit {proc.returncode}): {_last_lines(text)}",
            stderr=text,
            returncode=proc.returncode,
        )


def spawn(
    argv: Sequence[str | Path], *, env: Mapping[str, str], input: bytes = b""
) -> subprocess.Popen[bytes]:
    """Start `argv` as the leader of a new session (so that it and its children are signalled
    as one group), with `env` as its whole environment, `input` on its stdin and its stdout a
    pipe for the caller to read; stderr is ours. For the daemon's worker, which outlives the
    call that starts it."""
    args = [str(a) for a in argv]
    log.debug("spawning: %s", shlex.join(args))
    try:
        proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, env=env
        )
    except FileNotFoundError as e:
        raise CommandError(f"{args[0]} is not installed") from e
    assert proc.stdin is not None
    with proc.stdin:
        proc.stdin.write(input)
    return proc
