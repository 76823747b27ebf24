"""`apt-ostree`: parse the command line, run the verb here or in apt-ostreed, render the result,
map errors onto exit codes.

A verb of the table (`apt_ostree/system/requests.py`) becomes its request; without
`--sysroot`, and with apt-ostreed on the system bus, the daemon runs it (`DaemonClient.run`),
else this process does (`execute`). Either way the result is rendered here by the same code
(`apt_ostree/cli/render.py`).

Exit codes: 0 done, 1 failed (one `error:` line; a traceback only with --debug), 2 usage,
77 nothing changed where --unchanged-exit-77 asked.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from apt_ostree import keys
from apt_ostree.cli import render
from apt_ostree.cli.parser import build_parser, quiet, request_of, verb_of
from apt_ostree.daemon.client import DaemonClient
from apt_ostree.errors import (
    AptOstreeError,
    DaemonUnreachable,
    Terminated,
    UnchangedError,
    UsageError,
)
from apt_ostree.progress import Progress, TerminalProgress
from apt_ostree.system.requests import DbDiff, DbList, Init, Request
from apt_ostree.system.results import Result

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNCHANGED = 77


def _in_process() -> None:
    """A verb run here, as apt-ostreed's worker runs it: SIGTERM unwinds (children stopped,
    overlays and work folders removed, `error: terminated`, exit 143), and the mounts that
    the verb's tools make (mmdebstrap's /proc, layering's overlays) stay in a mount namespace
    of ours, so that they go with us even when we are killed."""
    from apt_ostree.run import raise_on_sigterm
    from apt_ostree.syscalls import private_mount_namespace

    raise_on_sigterm()
    private_mount_namespace()


UNREACHABLE = "cannot reach apt-ostreed (org.aptostree.AptOstree1) on the system bus"


def _daemon(args: argparse.Namespace, request: Request) -> DaemonClient | None:
    """The daemon to ask, or None to run here: `--sysroot` given, a verb only this process
    runs, or no daemon on a machine not booted from OSTree (where running here says what to
    do)."""
    if args.sysroot is not None or not request.served:
        return None
    client = DaemonClient.connect()
    if client is None and Path(keys.BOOTED_MARKER).exists():
        raise DaemonUnreachable(UNREACHABLE)
    return client


def _connected() -> DaemonClient:
    client = DaemonClient.connect()
    if client is None:
        raise DaemonUnreachable(UNREACHABLE)
    return client


def _progress(args: argparse.Namespace) -> Progress:
    return Progress() if quiet(args) else TerminalProgress()


def run_verb(request: Request, args: argparse.Namespace) -> Result:
    """Run `request` in apt-ostreed, or here; its result."""
    if getattr(args, "repo", None) is not None:  # db diff/list --repo: a repository, here
        if args.sysroot is not None:
            raise UsageError("--repo and --sysroot: name one")
        from apt_ostree.system.packages import repo_query

        assert isinstance(request, DbDiff | DbList)
        return repo_query(Path(args.repo), request)
    progress = _progress(args)
    client = _daemon(args, request)
    if client is not None:
        try:
            return client.run(request, args.osname, progress)
        finally:
            client.close()
    _in_process()
    # imported here: the daemon's client needs neither apt nor libostree
    from apt_ostree.system.execute import execute
    from apt_ostree.system.sysroot import System, default_sysroot
    from apt_ostree.system.updates import init_sysroot

    if isinstance(request, Init):
        if args.sysroot is None or args.osname is None:
            raise UsageError("init needs --sysroot DIR and --os NAME")
        return init_sysroot(args.sysroot.absolute(), args.osname, request, progress)
    return execute(System(default_sysroot(args.sysroot), args.osname, progress), request)


def _automatic(args: argparse.Namespace) -> int:
    """`upgrade --trigger-automatic-update-policy` (apt-ostreed-automatic.service)."""
    if args.sysroot is not None:
        raise UsageError("--trigger-automatic-update-policy needs the daemon: drop --sysroot")
    client = _connected()
    try:
        outcome = client.automatic_update(args.osname, _progress(args))
    finally:
        client.close()
    if outcome is None:
        print("Automatic updates are not enabled (AutomaticUpdatePolicy=none).")
        return 0
    return render.outcome(outcome, exit_77=False)


def _daemon_verb(verb: str) -> int:
    """`cancel` and `reload`: methods of the daemon's Sysroot object."""
    client = _connected()
    try:
        client.cancel() if verb == "cancel" else client.reload()
    finally:
        client.close()
    return 0


def dispatch(args: argparse.Namespace) -> int:
    verb = verb_of(args)
    if verb is None:
        if args.verb in ("cancel", "reload"):
            return _daemon_verb(args.verb)
        _in_process()  # compose
        code: int = args.func(args)
        return code
    if getattr(args, "trigger_automatic_update_policy", False):
        return _automatic(args)
    request = request_of(verb, args)
    return render.show(verb, request, run_verb(request, args), args)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return dispatch(build_parser(args_list).parse_args(args_list))
    except UnchangedError as e:
        print(str(e), file=sys.stderr)
        return EXIT_UNCHANGED
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except AptOstreeError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # the reader went away (`status --json | head`): not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Terminated:  # SIGTERM, where a verb asked for it (raise_on_sigterm)
        print("error: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
