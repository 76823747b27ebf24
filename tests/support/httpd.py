"""A real HTTP server on loopback serving a folder, for pulls and apt over HTTP in tests.

stdlib's ThreadingHTTPServer speaking HTTP/1.1 with keep-alive, plus what mirrors do and stdlib
does not: single byte ranges (apt resumes partial downloads with them), ETag/If-None-Match, and
an If-Modified-Since that never answers 304 for a file rewritten within the same second. It
counts requests and body bytes, and can be told to fail every request or to send slowly.

It runs in a child process, not a thread: python-apt's Acquire.run() keeps the GIL while apt
downloads, so a server thread in the test process would never answer it. The parent drives the
child with JSON lines on its stdin/stdout; the child stops when its stdin closes.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import functools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, cast

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
ROOT = Path(__file__).resolve().parents[2]  # where `tests` is importable from


@dataclass
class Hit:
    """One request as served: body bytes only, headers not counted."""

    method: str
    path: str
    status: int = 0
    bytes: int = 0
    range: str | None = None


@dataclass(frozen=True)
class ServerStats:
    """What the server has done so far (a snapshot)."""

    requests: int = 0
    bytes_sent: int = 0
    hits: tuple[Hit, ...] = ()

    @property
    def paths(self) -> list[str]:
        return [hit.path for hit in self.hits]

    def bytes_for(self, suffix: str) -> int:
        """Body bytes sent for paths ending in `suffix` (for example ".deb")."""
        return sum(hit.bytes for hit in self.hits if hit.path.endswith(suffix))


# ---- the child process ----


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), functools.partial(_Handler, directory=str(directory)))
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes_sent = 0
        self.hits: list[Hit] = []
        self.fail_status: int | None = None
        self.rate: int | None = None  # bytes per second, None: as fast as possible
        self.connections: set[socket.socket] = set()

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        """Clients that hang up (or a stop() that cuts them) are routine here: no traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("connection from %s ended: %s", client_address, sys.exc_info()[1])
        else:
            log.exception("error serving %s", client_address)

    def control(self, op: str, value: Any = None) -> dict[str, Any]:
        """One command from the parent; the answer goes back as JSON."""
        with self.lock:
            if op == "stats":
                hits = [asdict(h) for h in self.hits]
                return {"requests": self.requests, "bytes_sent": self.bytes_sent, "hits": hits}
            if op == "reset":
                self.requests = self.bytes_sent = 0
                self.hits.clear()
            elif op == "fail":
                self.fail_status = value
            elif op == "throttle":
                self.rate = value
            else:
                raise ValueError(f"unknown command {op!r}")
        return {}

    def cut_connections(self) -> None:
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end on their own

    hit: Hit | None = None
    remaining: int | None = None

    @property
    def _server(self) -> _HTTPServer:
        return cast(_HTTPServer, self.server)

    def setup(self) -> None:
        super().setup()
        self._server.connections.add(self.connection)

    def finish(self) -> None:
        self._server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.hit is not None and isinstance(code, int):
            self.hit.status = code
        super().log_request(code, size)

    def send_head(self) -> BinaryIO | None:
        server = self._server
        self.hit = Hit(self.command, self.path.split("?")[0], range=self.headers.get("Range"))
        self.remaining = None
        with server.lock:
            server.requests += 1
            server.hits.append(self.hit)
        if self._server.fail_status is not None:
            self.send_error(self._server.fail_status)
            return None
        path = Path(self.translate_path(self.path))
        if path.is_file() and not self.path.endswith("/"):
            return self._send_file(path)
        return super().send_head()  # folders: redirect, listing, 404

    def _not_modified(self, st: os.stat_result, etag: str) -> bool:
        if "If-None-Match" in self.headers:
            return etag in [t.strip() for t in self.headers["If-None-Match"].split(",")]
        try:
            since = email.utils.parsedate_to_datetime(self.headers["If-Modified-Since"])
        except (TypeError, ValueError, IndexError):
            return False
        # Last-Modified has whole seconds: a file rewritten in the same second as the copy the
        # client holds must not look unchanged, so sub-second mtimes always count as newer.
        if since.tzinfo is None:
            since = since.replace(tzinfo=datetime.UTC)
        return st.st_mtime <= since.timestamp()

    def _byte_range(self, size: int, st: os.stat_result, etag: str) -> tuple[int, int] | None:
        """(first, last) asked for by a single "bytes=" range, None for the whole file."""
        wanted, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        if not wanted or (if_range and if_range not in (etag, self.date_time_string(st.st_mtime))):
            return None
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
        if not m or m.groups() == ("", ""):
            return None  # not one range we understand: RFC 9110 lets us send it all
        first, last = m.groups()
        if not first:  # the last N bytes
            return max(0, size - int(last)) if int(last) else size, size - 1
        if last and int(last) < int(first):
            return None
        return int(first), min(int(last), size - 1) if last else size - 1

    def _send_file(self, path: Path) -> BinaryIO | None:
        f = path.open("rb")
        st = os.fstat(f.fileno())
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}"'
        if self._not_modified(st, etag):
            f.close()
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.end_headers()
            return None
        span = self._byte_range(st.st_size, st, etag)
        if span is not None and span[0] >= st.st_size:
            f.close()
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{st.st_size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        first, last = span or (0, st.st_size - 1)
        partial = span is not None
        self.send_response(HTTPStatus.PARTIAL_CONTENT if partial else HTTPStatus.OK)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Length", str(last - first + 1))
        if partial:
            self.send_header("Content-Range", f"bytes {first}-{last}/{st.st_size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", self.date_time_string(st.st_mtime))
        self.send_header("ETag", etag)
        self.end_headers()
        f.seek(first)
        self.remaining = last - first + 1
        return f

    def copyfile(self, source: BinaryIO, outputfile: BinaryIO) -> None:  # type: ignore[override]
        server, rate = self._server, self._server.rate
        remaining = self.remaining
        while remaining is None or remaining > 0:
            size = CHUNK if remaining is None else min(CHUNK, remaining)
            if rate:
                size = max(1, min(size, rate // 10))
            chunk = source.read(size)
            if not chunk:
                break
            if rate:
                time.sleep(len(chunk) / rate)
            outputfile.write(chunk)
            if remaining is not None:
                remaining -= len(chunk)
            with server.lock:
                server.bytes_sent += len(chunk)
                if self.hit is not None:
                    self.hit.bytes += len(chunk)


def _child(directory: Path) -> None:
    httpd = _HTTPServer(directory)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    print(json.dumps({"port": httpd.server_address[1]}), flush=True)
    for line in sys.stdin:  # until the parent closes it (stop) or goes away
        command = json.loads(line)
        print(json.dumps(httpd.control(command["op"], command.get("value"))), flush=True)
    httpd.shutdown()
    httpd.server_close()
    httpd.cut_connections()


# ---- the parent's handle ----


class Server:
    """A running server process; `url` has no trailing slash."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.absolute()
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.httpd", str(self.directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": path},
        )
        self._lock = threading.Lock()
        self.stopped = False
        self._final = ServerStats()
        self.port = int(self._read()["port"])
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"HTTP server for {self.directory} exited ({self._proc.wait()})")
        return cast(dict[str, Any], json.loads(line))

    def _call(self, op: str, value: Any = None) -> dict[str, Any]:
        if self.stopped:
            raise RuntimeError("the HTTP server is stopped")
        assert self._proc.stdin is not None
        with self._lock:
            self._proc.stdin.write(json.dumps({"op": op, "value": value}) + "\n")
            self._proc.stdin.flush()
            return self._read()

    @property
    def stats(self) -> ServerStats:
        """Requests and body bytes served so far (kept after stop)."""
        if self.stopped:
            return self._final
        data = self._call("stats")
        hits = tuple(Hit(**h) for h in data["hits"])
        return ServerStats(data["requests"], data["bytes_sent"], hits)

    def reset_stats(self) -> None:
        self._call("reset")

    def fail(self, status: int | None = 500) -> None:
        """Answer every request with `status` from now on (None: serve normally again)."""
        self._call("fail", status)

    def throttle(self, bytes_per_second: int | None) -> None:
        """Send bodies at about this rate (None: full speed), for cancel-mid-download tests."""
        self._call("throttle", bytes_per_second)

    def stop(self) -> None:
        """Stop listening and cut open connections: the mirror is unreachable from now on."""
        if self.stopped:
            return
        self._final = self.stats
        self.stopped = True
        assert self._proc.stdin is not None
        with contextlib.suppress(OSError):
            self._proc.stdin.close()  # the child's cue to stop
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[Server]:
    """Serve `directory` at http://127.0.0.1:PORT until the block ends."""
    server = Server(directory)
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
