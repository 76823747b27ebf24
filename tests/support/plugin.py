"""pytest fixtures every test may use: .deb builder, signed apt repository, loopback HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.aptrepo import AptRepo
from tests.support.debs import DebSpec, build_deb
from tests.support.httpd import Server, serve_directory


@pytest.fixture
def deb_builder(tmp_path: Path) -> Callable[[DebSpec], Path]:
    out = tmp_path / "debs"
    return lambda spec: build_deb(spec, out)


@pytest.fixture
def apt_repo(tmp_path: Path) -> AptRepo:
    return AptRepo(tmp_path / "aptrepo")


@pytest.fixture
def http_server() -> Iterator[Callable[[Path], Server]]:
    with ExitStack() as stack:
        yield lambda directory: stack.enter_context(serve_directory(directory))
