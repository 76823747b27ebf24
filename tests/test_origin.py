"""The origin file: what the user asked for, as libostree's keyfile."""

from __future__ import annotations

import pytest

from apt_ostree.errors import StateError
from apt_ostree.origin import Origin, Refspec

BASE = Origin(Refspec("origin", "debian/trixie/amd64/minimal"))


def test_an_image_deployment_names_its_ref_as_refspec() -> None:
    assert BASE.to_text() == "[origin]\nrefspec=origin:debian/trixie/amd64/minimal\n\n"
    assert Origin.parse(BASE.to_text()) == BASE


def test_a_layered_deployment_names_it_as_baserefspec() -> None:
    layered = Origin(BASE.refspec, requested_packages=("htop",))
    text = layered.to_text()
    assert "baserefspec=origin:debian/trixie/amd64/minimal\n" in text and "\nrefspec=" not in text
    assert "[packages]\nrequested=htop;\n" in text
    assert Origin.parse(text) == layered
    # origins written before (refspec with layered packages) still read the same
    old = text.replace("baserefspec=", "refspec=")
    assert Origin.parse(old) == layered


def test_an_origin_without_a_ref_is_malformed_state() -> None:
    with pytest.raises(StateError, match="no \\[origin\\] refspec"):
        Origin.parse("[origin]\noverride-commit=abc\n")
