"""A real HTTP server on loopback serving a folder, for pulls and apt over HTTP in tests."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class ServerStats:
    requests: int = 0
    bytes_sent: int = 0
    paths: list[str] = field(default_factory=list)
    fail_with: int | None = None  # answer every request with this status (e.g. 500)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(SimpleHTTPRequestHandler):
    stats: ServerStats

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def send_head(self) -> Any:
        with self.stats.lock:
            self.stats.requests += 1
            self.stats.paths.append(self.path)
        if self.stats.fail_with is not None:
            self.send_error(self.stats.fail_with)
            return None
        return super().send_head()

    def copyfile(self, source: Any, outputfile: Any) -> None:
        while chunk := source.read(64 * 1024):
            outputfile.write(chunk)
            with self.stats.lock:
                self.stats.bytes_sent += len(chunk)


@dataclass
class Server:
    url: str
    port: int
    stats: ServerStats
    httpd: ThreadingHTTPServer

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def serve_directory(directory: Path) -> Iterator[Server]:
    """Serve `directory` at http://127.0.0.1:PORT/ until the block ends."""
    stats = ServerStats()
    handler = type("Handler", (_Handler,), {"stats": stats})
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(directory))
    )
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]
    server = Server(f"http://127.0.0.1:{port}", int(port), stats, httpd)
    try:
        yield server
    finally:
        server.stop()
        thread.join(timeout=5)
