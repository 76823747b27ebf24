"""Container images benchmark (issue 14): update bytes, encapsulate and rebase times, a registry
serving many clients at once.

The image: examples/minimal-bookworm.yaml plus `bench-hello` (bench.deploy's package: one
~20 kB file of random bytes), 1.0 then 1.1, composed into an archive repository,
encapsulated and pushed to Debian's docker-registry on loopback (tests.support.registry).
The client reaches the registry through a counting TCP proxy on loopback, so bytes are the
bytes the registry sent.

1. Encapsulate time of 1.0 (to an `oci:` layout) vs `ostree commit` of the same tree (its
   checkout, committed into a fresh archive repository): report the ratio.
2. Rebase of a machine to the image of 1.0 vs `init` of the same commit from the ostree
   remote over HTTP (both fetch the whole image): report the ratio, and the bytes.
3. The push of 1.1: blobs and bytes uploaded vs the whole image (only changed layers go).
4. `upgrade` by tag to 1.1: bytes from the registry vs the .deb that changed (goal <= 1.5x)
   and vs the whole-image pull.
5. N clients (default 20) pulling the image of 1.1 at once into repositories of their own
   (the importer of `rebase`, without deploying): all get the same checksum; throughput.

Run as root: .venv/bin/python -m bench.container [--clients N] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apt_ostree.container import oci
from apt_ostree.ostree import remove_sysroot as remove_tree
from bench.common import APT_OSTREE, machine_line, timed, write_section
from bench.deploy import compose_hello_1_0, compose_hello_1_1, init, mib, ostree
from tests.support.httpd import serve_directory
from tests.support.registry import registry

IMPORT = """\
import sys
from pathlib import Path
from typing import Any
from apt_ostree import ostree
from apt_ostree.container import importer
from apt_ostree.container.imageref import ImageReference
from apt_ostree.progress import Progress
repo = ostree.Repo.open(Path(sys.argv[1]), create=True)
pulled = importer.pull(repo, ImageReference.parse(sys.argv[2]), None, Progress())
print(pulled.checksum)
"""


class CountingProxy:
    """A TCP proxy on loopback that counts the bytes the upstream sends to its clients."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sent = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> int:
        with self.lock:
            sent, self.sent = self.sent, 0
        return sent

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                if count:
                    with self.lock:
                        self.sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


@contextmanager
def counted_registry(work: Path) -> Iterator[tuple[str, dict[str, str], CountingProxy]]:
    """The registry, and the proxy in front of it: (proxy host, env naming both insecure)."""
    with registry(work / "registry") as reg:
        proxy = CountingProxy(reg.host)
        conf = work / "registries.conf"
        conf.write_text(
            "".join(
                f'[[registry]]\nlocation = "{h}"\ninsecure = true\n' for h in (reg.host, proxy.host)
            )
        )
        try:
            yield reg.host, {"CONTAINERS_REGISTRIES_CONF": str(conf)}, proxy
        finally:
            proxy.close()


def manifest(image: str, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """The image's manifest: its size in bytes, and its fields."""
    raw = subprocess.run(
        ["skopeo", "--registries-conf", env["CONTAINERS_REGISTRIES_CONF"], "inspect", "--raw",
         image],
        capture_output=True, check=True, env={**os.environ, **env},
    ).stdout  # fmt: skip
    return len(raw), dict(json.loads(raw))


def storage_blobs(work: Path) -> dict[str, int]:
    """The blobs the registry stores: digest -> size."""
    root = work / "registry/storage/docker/registry/v2/blobs/sha256"
    return {p.parent.name: p.stat().st_size for p in root.glob("*/*/data")}


def image_size(layout: Path, tag: str) -> tuple[int, int]:
    """(layers, compressed bytes) of the image `tag` of an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    entry = next(
        m for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    )  # fmt: skip
    digest = entry["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs/sha256" / digest).read_text())
    return len(manifest["layers"]), sum(d["size"] for d in manifest["layers"])


@dataclass
class Results:
    encapsulate: float = 0.0
    ostree_commit: float = 0.0
    init: float = 0.0
    rebase: float = 0.0
    init_bytes: int = 0
    rebase_bytes: int = 0
    image_layers: int = 0
    image_bytes: int = 0
    push_blobs: int = 0
    push_bytes: int = 0
    upgrade_bytes: int = 0
    upgrade_seconds: float = 0.0
    deb_bytes: int = 0
    clients: int = 0
    clients_seconds: float = 0.0
    clients_bytes: int = 0
    clients_checksums: int = 0
    new_layers: list[tuple[str, int]] = field(default_factory=list)  # in the recompose
    manifest_bytes: int = 0  # the recompose's manifest and config
    config_bytes: int = 0


def encapsulate(repo: Path, ref: str, image: str, env: dict[str, str] | None = None) -> float:
    argv = [*APT_OSTREE, "compose", "container-encapsulate", "--repo", str(repo), ref, image]
    return timed(f"container-encapsulate {image.split('/')[-1]}", argv, env=env).seconds


def run_bench(work: Path, clients: int) -> Results:
    r = Results()
    hello_image = compose_hello_1_0(work)
    repo, ref, old = hello_image.repo, hello_image.ref, hello_image.old

    # 1. encapsulate vs ostree commit of the same tree
    r.encapsulate = encapsulate(repo, old, f"oci:{work / 'layout'}:1.0")
    r.image_layers, r.image_bytes = image_size(work / "layout", "1.0")
    ostree(repo, "checkout", "-U", old, str(work / "tree"))
    ostree(work / "fresh", "init", "--mode=archive")
    r.ostree_commit = timed(
        "ostree commit of the same tree",
        ["ostree", f"--repo={work / 'fresh'}", "commit", "-b", "x", f"--tree=dir={work / 'tree'}"],
    ).seconds
    shutil.rmtree(work / "tree")
    shutil.rmtree(work / "fresh")

    with counted_registry(work) as (host, env, proxy), serve_directory(repo) as http:
        name = f"{host}/bench/os"
        encapsulate(repo, old, f"docker://{name}:stable", env)
        # 2. rebase to the image vs init from the ostree remote
        http.reset_stats()
        r.init = timed_init(work / "init", http.url, ref)
        r.init_bytes = http.stats.bytes_sent
        init(work / "machine", http.url, ref, "init (the machine that rebases)")
        proxy.reset()
        image = f"ostree-unverified-registry:{proxy.host}/bench/os:stable"
        rebase = [*APT_OSTREE, "rebase", "--sysroot", str(work / "machine"), image]
        r.rebase = timed("rebase to the image of the same commit", rebase, env=env).seconds
        r.rebase_bytes = proxy.reset()
        remove_tree(work / "init")

        # 3. recompose with one package changed, push: only the changed layers go
        new, deb = compose_hello_1_1(work, hello_image)
        r.deb_bytes = deb.stat().st_size
        before = storage_blobs(work)
        _, old_manifest = manifest(f"docker://{name}:stable", env)
        encapsulate(repo, new, f"docker://{name}:stable", env)
        r.manifest_bytes, new_manifest = manifest(f"docker://{name}:stable", env)
        r.config_bytes = new_manifest["config"]["size"]
        r.new_layers = [
            (str((d.get("annotations") or {}).get(oci.ANNOTATION_COMPONENTS, "commit")), d["size"])
            for d in new_manifest["layers"]
            if d["digest"] not in {o["digest"] for o in old_manifest["layers"]}
        ]
        after = storage_blobs(work)
        added = {d: s for d, s in after.items() if d not in before}
        r.push_blobs, r.push_bytes = len(added), sum(added.values())

        # 4. upgrade by tag
        proxy.reset()
        upgrade = [*APT_OSTREE, "upgrade", "--sysroot", str(work / "machine")]
        r.upgrade_seconds = timed("upgrade by tag", upgrade, env=env).seconds
        r.upgrade_bytes = proxy.reset()
        status = json.loads(
            subprocess.run(
                [*APT_OSTREE, "status", "--sysroot", str(work / "machine"), "--json"],
                capture_output=True, text=True, check=True,
            ).stdout
        )  # fmt: skip
        if status["deployments"][0]["checksum"] != new:
            raise SystemExit("upgrade by tag did not deploy the new commit")
        remove_tree(work / "machine")

        # 5. N clients at once
        r.clients = clients
        r.clients_seconds, sums = concurrent_pulls(work, image, env, clients)
        r.clients_bytes = proxy.reset()
        r.clients_checksums = len(set(sums))
        if set(sums) != {new}:
            raise SystemExit(f"concurrent pulls: checksums {sorted(set(sums))}, expected {new}")
    return r


def timed_init(sysroot: Path, url: str, ref: str) -> float:
    start = time.monotonic()
    init(sysroot, url, ref, "init from the ostree remote (baseline)")
    return time.monotonic() - start


def concurrent_pulls(
    work: Path, image: str, env: dict[str, str], n: int
) -> tuple[float, list[str]]:
    def one(i: int) -> str:
        repo = work / f"client-{i}"
        proc = subprocess.run(
            [sys.executable, "-c", IMPORT, str(repo), image],
            capture_output=True, text=True, env={**os.environ, **env},
        )  # fmt: skip
        shutil.rmtree(repo, ignore_errors=True)
        if proc.returncode != 0:
            raise SystemExit(f"client {i}: {proc.stderr[-2000:]}")
        return proc.stdout.split()[-1]

    start = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        sums = list(pool.map(one, range(n)))
    seconds = time.monotonic() - start
    print(f"  {n} concurrent pulls: {seconds:.1f} s", flush=True)
    return seconds, sums


def report(r: Results) -> None:
    ratio = r.upgrade_bytes / r.deb_bytes
    lines = [
        "## Container images (issue 14)",
        "",
        f"{machine_line()}; one round. examples/minimal-bookworm.yaml plus bench-hello"
        f" (bench.deploy's package), encapsulated: {r.image_layers} layers,"
        f" {mib(r.image_bytes)} compressed."
        " Debian's docker-registry on loopback; bytes are those the registry sent, counted by"
        " a TCP proxy in front of it.",
        "",
        "| measure | value | baseline | ratio | goal |",
        "| --- | --- | --- | --- | --- |",
        f"| `compose container-encapsulate` to an `oci:` layout, s | {r.encapsulate:.1f}"
        f" | `ostree commit` of the same tree: {r.ostree_commit:.1f} |"
        f" {r.encapsulate / r.ostree_commit:.2f} | report |",
        f"| `rebase` to the image of the same commit, s | {r.rebase:.1f} | `init` from the"
        f" ostree remote: {r.init:.1f} | {r.rebase / r.init:.2f} | report |",
        f"| bytes of that rebase | {mib(r.rebase_bytes)} | `init`: {mib(r.init_bytes)} |"
        f" {r.rebase_bytes / r.init_bytes:.2f} | report |",
        f"| push of the recompose (bench-hello 1.1): blobs uploaded | {r.push_blobs} of"
        f" {r.image_layers + 2} | | | only changed layers |",
        f"| push of the recompose: bytes uploaded | {mib(r.push_bytes)} | whole image:"
        f" {mib(r.image_bytes)} | {r.push_bytes / r.image_bytes:.3f} | |",
        f"| `upgrade` by tag: bytes pulled | {mib(r.upgrade_bytes)} | the changed .deb:"
        f" {mib(r.deb_bytes)} | {ratio:.2f}x | <= 1.5x |",
        f"| `upgrade` by tag: bytes pulled | {mib(r.upgrade_bytes)} | whole-image pull:"
        f" {mib(r.rebase_bytes)} | {r.upgrade_bytes / r.rebase_bytes:.3f} | report |",
        f"| {r.clients} clients pulling at once: s | {r.clients_seconds:.1f} | | | report |",
        f"| {r.clients} clients: throughput | {mib(r.clients_bytes / r.clients_seconds)}/s"
        f" ({mib(r.clients_bytes)} in all) | | | |",
        f"| {r.clients} clients: distinct checksums | {r.clients_checksums} | | | 1 |",
    ]
    new = ", ".join(f"{name} {mib(size)}" for name, size in r.new_layers)
    layers = sum(size for _, size in r.new_layers)
    own = sum(size for name, size in r.new_layers if name == "bench-hello")
    lines += [
        "",
        f"Layers new in the recompose (the upgrade fetches these): {new}. Of the"
        f" {mib(r.upgrade_bytes)} pulled: those layers {mib(layers)}, the manifest"
        f" {mib(r.manifest_bytes)} and the config {mib(r.config_bytes)}, HTTP the rest."
        f" The package's own layer is {own / r.deb_bytes:.2f}x the .deb; what every update"
        f" fetches besides (dpkg's status file in sysimage, the commit layer, manifest and"
        f" config) is {(r.upgrade_bytes - own) / r.deb_bytes:.2f}x, so the goal is within reach"
        f" for a package of {mib(2 * (r.upgrade_bytes - own))} or more"
        f"{', not for this one' if ratio > 1.5 else ''}.",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("container", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="apt-ostree-bench-container-", dir="/var/tmp"))
    print(f"scratch: {scratch}")
    try:
        results = run_bench(scratch, args.clients)
    finally:
        if not args.keep:
            for name in ("init", "machine"):
                remove_tree(scratch / name)
            shutil.rmtree(scratch, ignore_errors=True)
    report(results)


if __name__ == "__main__":
    main()
