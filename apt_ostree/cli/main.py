"""`apt-ostree`: parse the command line, run the verb, map errors onto exit codes.

Exit codes (DESIGN.md): 0 done, 1 failed (one `error:` line; a traceback only with
--debug), 2 usage, 77 nothing changed where --unchanged-exit-77 asked.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from apt_ostree import __version__
from apt_ostree.cli import client
from apt_ostree.daemon import client as daemon_client
from apt_ostree.errors import AptOstreeError, Terminated, UnchangedError, UsageError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNCHANGED = 77


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


COMPOSE_HELP = "compose images on a build server"


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given the `argv` it will parse, the compose verbs (whose
    modules import apt and libostree) are only registered when that is the verb."""
    parser = _Parser(prog="apt-ostree", description="Hybrid image/package system for Debian")
    parser.add_argument("--version", action="version", version=f"apt-ostree {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True
    verb = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    if argv is None or verb == "compose":
        from apt_ostree.cli import compose

        compose.register(verbs, help=COMPOSE_HELP)
    else:  # listed in --help; never parsed
        verbs.add_parser("compose", help=COMPOSE_HELP)
    client.register(verbs)
    daemon_client.register(verbs)
    return parser


def _in_process() -> None:
    """A verb run here, as apt-ostreed's worker runs it: SIGTERM unwinds (children stopped,
    overlays and work folders removed, `error: terminated`, exit 143), and the mounts that
    the verb's tools make (mmdebstrap's /proc, layering's overlays) stay in a mount namespace
    of ours, so that they go with us even when we are killed."""
    from apt_ostree.run import private_mount_namespace, raise_on_sigterm

    raise_on_sigterm()
    private_mount_namespace()


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args = build_parser(args_list).parse_args(args_list)
        # without --sysroot, served verbs go through apt-ostreed (apt_ostree/daemon/client.py)
        result: int | None = daemon_client.dispatch(args)
        if result is None:
            _in_process()
            result = args.func(args)
        return result
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
