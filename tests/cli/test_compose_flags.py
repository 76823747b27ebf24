"""`compose tree` flags of rpm-ostree's that build pipelines use: --add-metadata-string,
--write-commitid-to (the ref stays), --write-composejson-to, --print-only, and
--container-image (the commit as an OCI image, in the same step)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.images import EPOCH, Images, copy_repo, ostree
from tests.support.sysroots import cli

pytestmark = [pytest.mark.slow]


def test_commitid_composejson_and_metadata(images: Images, tmp_path: Path) -> None:
    repo = copy_repo(images.repo, tmp_path / "repo")
    before = ostree(repo, "rev-parse", images.ref).strip()
    commitid, composejson = tmp_path / "commitid", tmp_path / "compose.json"
    result = cli(
        "compose", "tree", images.treefile, "--repo", repo, "--cachedir", images.cachedir,
        "--add-metadata-string", "com.example.build=42",
        "--write-commitid-to", commitid, "--write-composejson-to", composejson,
        "--container-image", f"oci:{tmp_path / 'oci'}:next",
        env={"SOURCE_DATE_EPOCH": EPOCH, "PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    checksum = commitid.read_text().strip()
    assert checksum != before and len(checksum) == 64
    assert ostree(repo, "rev-parse", images.ref).strip() == before  # the ref stays
    shown = ostree(repo, "show", "--print-metadata-key=com.example.build", checksum)
    assert shown.strip() == "'42'"
    doc = json.loads(composejson.read_text())
    assert doc["ostree-commit"] == checksum and doc["ref"] == images.ref and doc["changed"]
    assert doc["aptostree-inputhash"] and doc["commit-version"]
    inspected = subprocess.run(["skopeo", "inspect", f"oci:{tmp_path / 'oci'}:next"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert json.loads(inspected)["Labels"]["ostree.commit"] == checksum
    assert doc["container-image-manifest-digest"] == json.loads(inspected)["Digest"]


def test_print_only_and_bad_metadata(images: Images, tmp_path: Path) -> None:
    printed = cli("compose", "tree", images.treefile, "--repo", tmp_path / "r", "--print-only")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["ref"] == images.ref
    assert not (tmp_path / "r").exists()
    for bad, message in (("nokey", "expected KEY=VALUE"), ("aptostree.packages=x", "own key")):
        result = cli("compose", "tree", images.treefile, "--repo", tmp_path / "r",
                     "--add-metadata-string", bad)  # fmt: skip
        assert result.returncode == 2 and message in result.error_line
    result = cli("compose", "tree", images.treefile, "--repo", tmp_path / "r",
                 "--container-image", "ftp://nowhere")  # fmt: skip
    assert result.returncode == 2 and "oci:DIR" in result.error_line  # before any compose
    assert not (tmp_path / "r").exists()
