"""An HTTP proxy on loopback in front of a registry that alters what it serves: a registry
(or a network) that cannot be trusted. `mode` says what it changes: "manifest" appends a
byte to every manifest (still valid JSON, another digest), "blob" flips the last byte of
every blob; the headers, Docker-Content-Digest included, are passed on as they came.
`altered` counts the replies it changed, so a test knows the client saw them."""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}
log = logging.getLogger(__name__)


@dataclass
class Tamper:
    host: str  # 127.0.0.1:PORT
    registries_conf: Path  # the proxy and its upstream marked insecure (plain HTTP)
    mode: str
    altered: int = 0

    @property
    def env(self) -> dict[str, str]:
        return {"CONTAINERS_REGISTRIES_CONF": str(self.registries_conf)}


def _alter(mode: str, path: str, body: bytes) -> bytes:
    if mode == "manifest" and "/manifests/" in path:
        return body + b"\n"
    if mode == "blob" and "/blobs/" in path and body:
        return body[:-1] + bytes([body[-1] ^ 0xFF])
    return body


@contextmanager
def tampering(upstream: str, work: Path, mode: str) -> Iterator[Tamper]:
    state = Tamper("", work / "tamper-registries.conf", mode)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._forward(head=False)

        def do_HEAD(self) -> None:
            self._forward(head=True)

        def _forward(self, *, head: bool) -> None:
            conn = http.client.HTTPConnection(upstream, timeout=60)
            conn.putrequest(self.command, self.path, skip_accept_encoding=True)
            for key, value in self.headers.items():  # Accept comes once per media type
                if key.lower() != "host":
                    conn.putheader(key, value)
            conn.endheaders()
            reply = conn.getresponse()
            sent = b"" if head else reply.read()
            body = _alter(state.mode, self.path, sent)
            if body != sent:
                with lock:
                    state.altered += 1
            self.send_response(reply.status)
            for key, value in reply.getheaders():
                if key.lower() not in _HOP:
                    self.send_header(key, value)
            length = reply.getheader("Content-Length", "0") if head else str(len(body))
            self.send_header("Content-Length", length)
            self.end_headers()
            self.wfile.write(body)
            conn.close()

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.host = f"127.0.0.1:{server.server_address[1]}"
    state.registries_conf.write_text(
        "".join(
            f'[[registry]]\nlocation = "{host}"\ninsecure = true\n'
            for host in (state.host, upstream)
        )
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
