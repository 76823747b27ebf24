"""Debian's docker-registry (Docker's Distribution) on loopback, plain HTTP, no login: a
scratch storage folder and a config of its own, never the package's /etc/docker/registry."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CONFIG = """\
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    registries_conf: Path  # marks the registry insecure (plain HTTP) for skopeo
    proc: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {"CONTAINERS_REGISTRIES_CONF": str(self.registries_conf)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@contextmanager
def registry(work: Path) -> Iterator[Registry]:
    work.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = work / "config.yml"
    config.write_text(CONFIG.format(root=work / "storage", port=port))
    conf = work / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "127.0.0.1:{port}"\ninsecure = true\n')
    log = (work / "registry.log").open("wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
    reg = Registry(f"127.0.0.1:{port}", conf, proc)
    try:
        _wait(reg)
        yield reg
    finally:
        reg.stop()
        log.close()


def _wait(reg: Registry) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://{reg.host}/v2/", timeout=2):
                return
        except OSError:
            if reg.proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
