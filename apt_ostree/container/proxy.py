"""A client of skopeo's image proxy (`skopeo experimental-image-proxy`), the way rpm-ostree's
container stack fetches images: one skopeo process per image, over a socket pair, so that
the registry's authentication, mirrors, TLS settings (containers-registries.conf(5)) and the
transports are skopeo's, and a manifest, the config or one layer is fetched at a time.

The protocol: a JSON request `{"method", "args"}` per SEQPACKET message; a reply
`{"success", "value", "pipeid", "error"}`, with the read end of a pipe passed as SCM_RIGHTS
when the value has bytes (a manifest, a blob); the caller reads the pipe to its end, then
calls FinishPipe, whose reply says whether the data was whole (skopeo checks a blob's digest
and size as it sends it).
"""

from __future__ import annotations

import array
import json
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO

from apt_ostree.errors import CommandError, ImageError
from apt_ostree.run import command_env

log = logging.getLogger(__name__)

MAX_MESSAGE = 32 * 1024
CHUNK = 1 << 20
# OpenImage checks the image against containers-policy.json from this protocol version on
# (skopeo 1.13); older proxies fetch what they are asked for
POLICY_VERSION = (0, 2, 6)


class ProxyError(ImageError):
    pass


def registries_options() -> list[str]:
    """skopeo's options for CONTAINERS_REGISTRIES_CONF, which newer skopeo reads by itself and
    Debian 12's (1.9) only as its hidden --registries-conf."""
    path = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    return ["--registries-conf", path] if path else []


class ImageProxy:
    """One running `skopeo experimental-image-proxy`."""

    def __init__(self, global_options: Sequence[str], env: dict[str, str] | None = None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = ["skopeo", *registries_options(), *global_options, "experimental-image-proxy"]
        argv += ["--sockfd", str(theirs.fileno())]
        log.debug("starting %s", " ".join(argv))
        try:
            self._proc = subprocess.Popen(
                argv,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=command_env(env),
            )
        except FileNotFoundError as e:
            raise CommandError("skopeo is not installed") from e
        finally:
            theirs.close()
        self._sock = ours
        self.version = tuple(int(p) for p in str(self._call("Initialize")[0]).split("."))

    @property
    def checks_policy(self) -> bool:
        return self.version >= POLICY_VERSION

    def _call(self, method: str, *args: Any) -> tuple[Any, int | None, int]:
        """(value, fd, pipeid) of one call."""
        try:
            self._sock.send(json.dumps({"method": method, "args": list(args)}).encode())
            fds = array.array("i")
            msg, ancdata, _, _ = self._sock.recvmsg(MAX_MESSAGE, socket.CMSG_LEN(fds.itemsize))
        except OSError as e:
            raise ProxyError(f"skopeo's image proxy stopped: {self._stderr()}") from e
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        if not msg:
            raise ProxyError(f"skopeo's image proxy stopped: {self._stderr()}")
        reply = json.loads(msg)
        fd = fds[0] if fds else None
        if not reply.get("success"):
            if fd is not None:
                os.close(fd)
            raise ProxyError(str(reply.get("error") or f"{method} failed"))
        return reply.get("value"), fd, int(reply.get("pipeid") or 0)

    def _stderr(self) -> str:
        if self._proc.poll() is None or self._proc.stderr is None:
            return "no reply"
        return self._proc.stderr.read().decode(errors="replace").strip() or "no reply"

    def _read_pipe(self, fd: int | None, pipeid: int, sink: Callable[[bytes], None]) -> None:
        """Drain the pipe in a thread while FinishPipe waits for skopeo's writer: skopeo
        closes its end only in FinishPipe, so the reader sees the end of the data after."""
        if fd is None:
            raise ProxyError("skopeo's image proxy sent no data")
        failure: list[BaseException] = []

        def drain() -> None:
            try:
                with os.fdopen(fd, "rb") as pipe:
                    while chunk := pipe.read(CHUNK):
                        sink(chunk)
            except BaseException as e:  # re-raised in the caller's thread
                failure.append(e)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            self._call("FinishPipe", pipeid)
        finally:
            reader.join()
        if failure:
            raise failure[0]

    def _bytes(self, method: str, *args: Any) -> tuple[Any, bytes]:
        value, fd, pipeid = self._call(method, *args)
        chunks: list[bytes] = []
        self._read_pipe(fd, pipeid, chunks.append)
        return value, b"".join(chunks)

    def open_image(self, reference: str) -> int:
        return int(self._call("OpenImage", reference)[0])

    def manifest(self, image: int) -> tuple[str, bytes]:
        """The image's manifest digest and its (OCI) manifest."""
        digest, data = self._bytes("GetManifest", image)
        return str(digest), data

    def config(self, image: int) -> bytes:
        return self._bytes("GetFullConfig", image)[1]

    def blob(
        self, image: int, digest: str, size: int, out: BinaryIO, on_data: Callable[[int], None]
    ) -> None:
        """Write the blob to `out`, reporting each chunk's size."""
        _, fd, pipeid = self._call("GetBlob", image, digest, size)

        def sink(chunk: bytes) -> None:
            out.write(chunk)
            on_data(len(chunk))

        self._read_pipe(fd, pipeid, sink)

    def close(self) -> None:
        with suppress(OSError):
            self._sock.send(json.dumps({"method": "Shutdown", "args": []}).encode())
        self._sock.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()


@contextmanager
def image_proxy(
    global_options: Sequence[str], env: dict[str, str] | None = None
) -> Iterator[ImageProxy]:
    proxy = ImageProxy(global_options, env)
    try:
        yield proxy
    finally:
        proxy.close()
