"""Treefile loading: includes, variables, types, and the errors a user sees."""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from apt_ostree import ostree, treefile
from apt_ostree.aptpkg.resolve import Variant
from apt_ostree.compose import tree
from apt_ostree.compose.bootstrap import BootstrapInput, dpkg_path_filters, mmdebstrap_argv
from apt_ostree.compose.osrelease import mutate_os_release
from apt_ostree.errors import PostprocessError, TreefileError
from apt_ostree.progress import Progress
from apt_ostree.run import run


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_minimal_treefile_defaults(tmp_path: Path) -> None:
    t = treefile.load(write(tmp_path / "t.yaml", "ref: os/test\npackages: [bash]\n"))
    assert t.ref == "os/test"
    assert t.packages == ("bash",)
    assert t.variant == Variant.MINBASE
    assert t.recommends is False
    assert t.machineid_compat is True
    assert t.repos is None


def test_json_is_accepted(tmp_path: Path) -> None:
    data = {"ref": "os/json", "packages": ["a", "b"], "recommends": True}
    t = treefile.load(write(tmp_path / "t.json", json.dumps(data)))
    assert (t.ref, t.packages, t.recommends) == ("os/json", ("a", "b"), True)


def test_include_scalars_override_lists_concatenate(tmp_path: Path) -> None:
    write(
        tmp_path / "base.yaml",
        "ref: os/base\nvariant: essential\npackages: [a, b]\n"
        "units: [one.service]\nvariables: {x: base, y: kept}\n",
    )
    sub = tmp_path / "sub"
    sub.mkdir()
    write(sub / "mid.yaml", "include: ../base.yaml\npackages: [c]\n")
    t = treefile.load(
        write(
            tmp_path / "top.yaml",
            "include: [sub/mid.yaml]\nref: os/${x}-${y}\npackages: [d]\n" "variables: {x: top}\n",
        )
    )
    assert t.ref == "os/top-kept"
    assert t.packages == ("a", "b", "c", "d")
    assert t.variant == Variant.ESSENTIAL
    assert t.units == ("one.service",)
    assert "include" not in t.flattened and "variables" not in t.flattened


def test_builtin_basearch_variable(tmp_path: Path) -> None:
    t = treefile.load(write(tmp_path / "t.yaml", "ref: os/${basearch}/x\n"))
    assert t.ref.startswith("os/") and t.ref.split("/")[1] in ("amd64", "arm64", "i386")


def test_postprocess_script_and_add_files_relative_to_treefile(tmp_path: Path) -> None:
    d = tmp_path / "conf"
    d.mkdir()
    write(d / "post.sh", "#!/bin/sh\necho hi\n")
    write(d / "motd", "hello\n")
    t = treefile.load(
        write(
            d / "t.yaml",
            "ref: os/x\npostprocess-script: post.sh\n"
            "postprocess: ['#!/bin/sh\n\necho inline\n']\n"
            "add-files: [[motd, /usr/share/motd-extra]]\n",
        )
    )
    assert t.postprocess[0] == "#!/bin/sh\necho hi\n"
    assert "inline" in t.postprocess[1]
    assert t.add_files[0].source == d / "motd"
    assert t.add_files[0].dest == "/usr/share/motd-extra"
    # the flattened form carries content, not host paths
    assert str(d) not in t.flattened_json()
    assert "postprocess-script" not in t.flattened


def test_repos_entries(tmp_path: Path) -> None:
    key = write(tmp_path / "key.gpg", "x")
    t = treefile.load(
        write(
            tmp_path / "t.yaml",
            f"""ref: os/x
repos:
  - uris: http://127.0.0.1:1/debian
    suites: [stable, stable-updates]
    components: main contrib
    signed-by: {key}
""",
        )
    )
    assert t.repos is not None
    (r,) = t.repos
    assert r.uris == ("http://127.0.0.1:1/debian",)
    assert r.suites == ("stable", "stable-updates")
    assert r.components == ("main", "contrib")
    assert r.signed_by == str(key)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("packages: [a]\n", "missing required key 'ref'"),
        ("ref: os/x\npackges: [a]\n", "unknown key 'packges'"),
        ("ref: os/x\npackages: bash\n", "key 'packages': expected a list of strings"),
        ("ref: os/x\npackages: [1, 2]\n", "key 'packages': expected a list of strings"),
        ("ref: os/x\nrecommends: 'yes'\n", "key 'recommends': expected true or false"),
        ("ref: [a]\n", "key 'ref': expected a string"),
        ("ref: 'bad ref'\n", "not a valid OSTree ref"),
        ("ref: os/x\nvariant: tiny\n", "key 'variant': 'tiny' is not one of"),
        ("ref: os/${nope}\n", "unknown variable '${nope}'"),
        ("ref: os/x\nadd-files: [[a]]\n", "key 'add-files': expected a list of [source, dest"),
        ("ref: os/x\nadd-files: [[missing, /x]]\n", "missing is not a file"),
        ("ref: os/x\nrepos: [{uris: x, suites: y}]\n", "an entry has no 'components'"),
        (
            "ref: os/x\nrepos: [{uris: x, suites: y, components: z, mirror: 1}]\n",
            "unknown field 'mirror'",
        ),
        ("ref: os/x\npostprocess-script: none.sh\n", "cannot read"),
        ("- a\n- b\n", "expected a mapping of keys"),
        ("ref: os/x\n  bad: [\n", "bad.yaml:2:6: mapping values are not allowed here"),
        ("ref: os/x\ninclude: nothere.yaml\n", "cannot read treefile"),
    ],
)
def test_bad_treefiles_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(TreefileError) as e:
        treefile.load(path)
    assert message in str(e.value)
    assert "bad.yaml" in str(e.value) or "nothere.yaml" in str(e.value)
    assert "\n" not in str(e.value)


def test_include_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "include: b.yaml\nref: os/a\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(TreefileError, match="include cycle"):
        treefile.load(tmp_path / "a.yaml")


def test_example_treefiles_load() -> None:
    examples = Path(__file__).parent.parent / "examples"
    minimal = treefile.load(examples / "minimal.yaml")
    server = treefile.load(examples / "server.yaml")
    assert "linux-image-cloud-amd64" in minimal.packages and "ostree-boot" in minimal.packages
    assert set(minimal.packages) < set(server.packages)
    assert minimal.ref != server.ref
    assert minimal.repos is None  # the host's apt sources: no mirror written down


# ---------------------------------------------------------------------------------------------
# syntax: duplicate keys and positions


def load_error(path: Path) -> str:
    with pytest.raises(TreefileError) as e:
        treefile.load(path)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "ref: os/x\npackages: [a]\npackages: [b]\n",
            "3:1: duplicate key 'packages' (first at line 2)",
        ),
        (
            "ref: os/x\nrepos:\n  - uris: a\n    suites: b\n    uris: c\n",
            "5:5: duplicate key 'uris' (first at line 3)",
        ),
        ("ref: os/x\nvariables: {a: 1, b: 2, a: 3}\n", "2:25: duplicate key 'a' (first at line 2)"),
    ],
)
def test_duplicate_yaml_keys_are_errors_at_their_position(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path / "dup.yaml", text)
    assert load_error(path) == f"{path.resolve()}:{message}"


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    """`<<: *anchor` merges a mapping; the keys written beside it override, as YAML says."""
    key = write(tmp_path / "key.gpg", "x")
    t = treefile.load(
        write(
            tmp_path / "t.yaml",
            f"ref: os/x\nrepos:\n  - &main {{uris: http://a, suites: s, components: main, "
            f"signed-by: {key}}}\n  - <<: *main\n    suites: s-updates\n",
        )
    )
    assert t.repos is not None
    assert [r.suites for r in t.repos] == [("s",), ("s-updates",)]


def test_json_duplicates_and_syntax_errors_have_positions(tmp_path: Path) -> None:
    dup = write(
        tmp_path / "dup.json",
        '{"ref": "os/x",\n "repos": [{"uris": "a", "suites": "b"},\n  {"uris": "a", "uris": "b"}]}',
    )
    assert load_error(dup) == f"{dup.resolve()}:3:17: duplicate key 'uris' (first at line 3)"
    top = write(tmp_path / "top.json", '{"ref": "os/x",\n"ref": "os/y"}')
    assert load_error(top) == f"{top.resolve()}:2:1: duplicate key 'ref' (first at line 1)"
    bad = write(tmp_path / "bad.json", '{"ref": "os/x",\n "packages": [1,, 2]}')
    assert load_error(bad) == f"{bad.resolve()}:2:17: Expecting value"
    # equal keys in different objects are no duplicates
    ok = write(tmp_path / "ok.json", '{"ref": "os/x", "variables": {"ref": "a"}}')
    assert treefile.load(ok).ref == "os/x"


def test_yaml_syntax_errors_are_one_line_with_a_position(tmp_path: Path) -> None:
    quote = write(tmp_path / "quote.yaml", 'ref: os/x\npackages: ["a\n')
    assert load_error(quote) == (
        f"{quote.resolve()}:3:1: found unexpected end of stream "
        "(while scanning a quoted scalar at line 2)"
    )
    control = write(tmp_path / "control.yaml", "ref: os/x\x07\n")
    assert load_error(control) == (
        f"{control.resolve()}:1:10: unacceptable character #x0007: special characters are not "
        "allowed"
    )
    assert "<unicode string>" not in load_error(write(tmp_path / "tab.yaml", "ref:\n\t- x\n"))


def test_duplicate_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "units: [a]\nunits: [b]\n")
    top = write(tmp_path / "top.yaml", "include: base.yaml\nref: os/x\n")
    assert load_error(top) == f"{tmp_path.resolve()}/base.yaml:2:1: duplicate key 'units' " + (
        "(first at line 1)"
    )


# ---------------------------------------------------------------------------------------------
# add-commit-metadata


def test_add_commit_metadata_keeps_types_and_merges_over_includes(tmp_path: Path) -> None:
    write(
        tmp_path / "base.yaml",
        "add-commit-metadata: {com.example.vendor: Example, com.example.build: 1}\n",
    )
    t = treefile.load(
        write(
            tmp_path / "t.yaml",
            "include: base.yaml\nref: os/x\nvariables: {channel: stable}\n"
            "add-commit-metadata:\n  com.example.build: 42\n  com.example.channel: ${channel}\n"
            "  com.example.supported: true\n  com.example.ratio: 0.5\n",
        )
    )
    assert dict(t.add_commit_metadata) == {
        "com.example.vendor": "Example",
        "com.example.build": 42,
        "com.example.channel": "stable",
        "com.example.supported": True,
        "com.example.ratio": 0.5,
    }
    assert t.flattened["add-commit-metadata"]["com.example.build"] == 42


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[a]", "expected a mapping of names to values"),
        ("{a: [1]}", "'a': expected a string, number or true/false, got list"),
        ("{a: null}", "'a': expected a string, number or true/false, got NoneType"),
        ("{a: {b: c}}", "'a': expected a string, number or true/false, got dict"),
        ("{1: a}", "the name 1 is not a string"),
        ("{aptostree.packages: x}", "'aptostree.packages' is apt-ostree's own, not settable"),
        ("{version: 13}", "'version': expected a string (quote it)"),
        ("{a: 99999999999999999999}", "does not fit in 64 bits"),
    ],
)
def test_bad_add_commit_metadata(tmp_path: Path, value: str, message: str) -> None:
    path = write(tmp_path / "bad.yaml", f"ref: os/x\nadd-commit-metadata: {value}\n")
    error = load_error(path)
    assert error.startswith(f"{path.resolve()}: key 'add-commit-metadata': ")
    assert message in error


def test_commit_metadata_command_line_wins_and_gives_the_version(tmp_path: Path) -> None:
    t = treefile.load(
        write(
            tmp_path / "t.yaml",
            "ref: os/x\nautomatic-version-prefix: '13'\n"
            "add-commit-metadata: {com.example.a: treefile, com.example.b: 2}\n",
        )
    )
    plain = tree.ComposeOptions(repo=tmp_path / "repo")
    cli = tree.ComposeOptions(repo=tmp_path / "repo", metadata=(("com.example.a", "cli"),))
    assert tree.extra_metadata(t, cli) == {"com.example.a": "cli", "com.example.b": 2}
    assert tree.commit_version(t, plain, None) == "13.0"
    versioned = replace(t, add_commit_metadata=(("version", "13.special"),))
    assert tree.commit_version(versioned, plain, None) == "13.special"
    given = tree.ComposeOptions(repo=tmp_path / "repo", metadata=(("version", "13.cli"),))
    assert tree.commit_version(versioned, given, None) == "13.cli"


def test_add_commit_metadata_is_part_of_the_input_hash(tmp_path: Path) -> None:
    a = treefile.load(write(tmp_path / "a.yaml", "ref: os/x\nadd-commit-metadata: {k: 1}\n"))
    b = treefile.load(write(tmp_path / "b.yaml", "ref: os/x\nadd-commit-metadata: {k: 2}\n"))
    assert tree.input_hash(a, []) != tree.input_hash(b, [])


def test_typed_metadata_in_a_real_commit(tmp_path: Path) -> None:
    """Numbers and booleans reach the commit as GVariant int64, double and boolean (as
    json-glib makes them from rpm-ostree's add-commit-metadata); `ostree` reads them back."""
    content = tmp_path / "tree"
    (content / "usr").mkdir(parents=True)
    repo = ostree.Repo.open(tmp_path / "repo", create=True)
    values = {"com.example.n": 42, "com.example.f": 0.5, "com.example.b": True, "version": "1"}
    checksum = repo.write_commit(content, subject="x", metadata=values, timestamp=0)
    shown = {
        key: run(["ostree", f"--repo={tmp_path / 'repo'}", "show", checksum,
                  f"--print-metadata-key={key}"]).stdout.strip()
        for key in values
    }  # fmt: skip
    assert shown == {
        "com.example.n": "int64 42",
        "com.example.f": "0.5",
        "com.example.b": "true",
        "version": "'1'",
    }
    # and the project reads back what it wrote
    assert repo.read_commit(checksum).metadata == values


# ---------------------------------------------------------------------------------------------
# packages-ARCH


@pytest.mark.parametrize(("native", "expected"), [("amd64", "a b grub-pc"), ("arm64", "a b")])
def test_native_packages_arch_joins_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: str, expected: str
) -> None:
    monkeypatch.setattr(treefile, "native_architecture", lambda: native)
    write(tmp_path / "base.yaml", "packages: [a]\npackages-amd64: [grub-pc]\n")
    t = treefile.load(
        write(
            tmp_path / "t.yaml",
            "include: base.yaml\nref: os/x\npackages: [b]\npackages-s390x: [s390-tools]\n",
        )
    )
    assert t.packages == tuple(expected.split())
    # what was composed for this architecture: the others' lists are not in it (nor its hash)
    assert t.flattened["packages"] == expected.split()
    assert not [k for k in t.flattened if k.startswith("packages-")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("packages-x86_64: [a]", "key 'packages-x86_64': 'x86_64' is not a Debian architecture"),
        ("packages-all: [a]", "key 'packages-all': 'all' is not a Debian architecture"),
        ("packages-amd64: a", "key 'packages-amd64': expected a list of strings"),
    ],
)
def test_bad_packages_arch(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.yaml", f"ref: os/x\n{text}\n")
    assert load_error(path) == f"{path.resolve()}: {message}"


# ---------------------------------------------------------------------------------------------
# mutate-os-release


BOOKWORM_OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""


def test_mutate_os_release_key(tmp_path: Path) -> None:
    quoted = treefile.load(write(tmp_path / "a.yaml", "ref: os/x\nmutate-os-release: '12'\n"))
    plain = treefile.load(write(tmp_path / "b.yaml", "ref: os/x\nmutate-os-release: 12\n"))
    assert quoted.mutate_os_release == plain.mutate_os_release == "12"
    assert treefile.load(write(tmp_path / "c.yaml", "ref: os/x\n")).mutate_os_release is None
    for value, got in (("12.1", "float"), ("true", "bool"), ("[12]", "list")):
        path = write(tmp_path / "bad.yaml", f"ref: os/x\nmutate-os-release: {value}\n")
        expected = f"{path.resolve()}: key 'mutate-os-release': expected a string, got {got}"
        assert load_error(path) == expected


def os_release_tree(root: Path, *, etc_file: bool) -> Path:
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr/lib/os-release").write_text(BOOKWORM_OS_RELEASE)
    if etc_file:
        (root / "etc/os-release").write_text(BOOKWORM_OS_RELEASE)
    else:
        (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    return root


class Messages(Progress):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text.strip())


def test_mutate_os_release_puts_the_version_in(tmp_path: Path) -> None:
    root = os_release_tree(tmp_path / "root", etc_file=False)
    mutate_os_release(root, "12", "12.20240101.3", Progress())
    assert (
        (root / "usr/lib/os-release").read_text()
        == (
            'PRETTY_NAME="Debian GNU/Linux 12.20240101.3 (bookworm)"\n'
            'NAME="Debian GNU/Linux"\n'
            'VERSION_ID="12"\n'  # programs compare it with the releases they know: it stays
            'VERSION="12.20240101.3 (bookworm)"\n'
            "VERSION_CODENAME=bookworm\n"
            "ID=debian\n"
            "OSTREE_VERSION='12.20240101.3'\n"
        )
    )
    assert os.readlink(root / "etc/os-release") == "../usr/lib/os-release"
    # a converted tree done again: still one OSTREE_VERSION
    mutate_os_release(root, "12.20240101.3", "12.20240101.4", Progress())
    assert (root / "usr/lib/os-release").read_text().count("OSTREE_VERSION=") == 1


def test_mutate_os_release_changes_an_etc_file_of_its_own(tmp_path: Path) -> None:
    root = os_release_tree(tmp_path / "root", etc_file=True)
    mutate_os_release(root, "12", "12.5", Progress())
    for path in ("usr/lib/os-release", "etc/os-release"):
        assert 'VERSION="12.5 (bookworm)"' in (root / path).read_text()


def test_mutate_os_release_errors_and_no_version(tmp_path: Path) -> None:
    root = os_release_tree(tmp_path / "root", etc_file=False)
    with pytest.raises(PostprocessError) as e:
        mutate_os_release(root, "13", "13.1", Progress())
    assert str(e.value) == (
        "mutate-os-release: '13' is not in /usr/lib/os-release's VERSION=\"12 (bookworm)\""
    )
    (root / "usr/lib/os-release").write_text('PRETTY_NAME="Debian GNU/Linux forky/sid"\n')
    with pytest.raises(PostprocessError, match="mutate-os-release: .* has no VERSION"):
        mutate_os_release(root, "14", "14.1", Progress())
    messages = Messages()
    mutate_os_release(root, "14", None, messages)
    assert messages.lines == ["mutate-os-release: ignored, the commit has no version"]
    assert (root / "usr/lib/os-release").read_text() == 'PRETTY_NAME="Debian GNU/Linux forky/sid"\n'


# ---------------------------------------------------------------------------------------------
# documentation and install-langs: dpkg path filters


def test_documentation_and_install_langs_keys(tmp_path: Path) -> None:
    t = treefile.load(
        write(tmp_path / "t.yaml", "ref: os/x\ndocumentation: false\ninstall-langs: [de, pt_BR]\n")
    )
    assert (t.documentation, t.install_langs) == (False, ("de", "pt_BR"))
    default = treefile.load(write(tmp_path / "d.yaml", "ref: os/x\n"))
    assert (default.documentation, default.install_langs) == (True, None)
    assert dpkg_path_filters(default.documentation, default.install_langs) == ()
    for text, message in (
        ("documentation: no-thanks", "key 'documentation': expected true or false, got str"),
        ("install-langs: de", "key 'install-langs': expected a list of strings"),
        (
            "install-langs: ['*']",
            "key 'install-langs': '*' is not a language name such as en, de or pt_BR",
        ),
        (
            "install-langs: [en_us]",
            "key 'install-langs': 'en_us' is not a language name such as en, de or pt_BR",
        ),
    ):
        path = write(tmp_path / "bad.yaml", f"ref: os/x\n{text}\n")
        assert load_error(path) == f"{path.resolve()}: {message}"


def dpkg_keeps(rules: tuple[str, ...], path: str) -> bool:
    """dpkg's decision for `path`: the last path-exclude/path-include that matches wins; a
    glob's `*` matches `/` too (fnmatch(3) without flags, dpkg(1) --path-exclude)."""
    keep = True
    for rule in rules:
        kind, _, pattern = rule.partition("=")
        if kind in ("path-exclude", "path-include") and fnmatch.fnmatchcase(path, pattern):
            keep = kind == "path-include"
    return keep


@pytest.mark.parametrize(
    ("documentation", "langs", "kept", "dropped"),
    [
        (
            False,
            None,
            "/usr/share/doc/dpkg/copyright /usr/share/locale/fr/LC_MESSAGES/dpkg.mo "
            "/usr/share/doc-base/dpkg /usr/bin/dpkg",
            "/usr/share/doc/dpkg/changelog.gz /usr/share/doc/dpkg/README.api "
            "/usr/share/man/man1/dpkg.1.gz /usr/share/man/de/man1/dpkg.1.gz "
            "/usr/share/info/sed.info.gz",
        ),
        (
            True,
            ("de", "pt_BR"),
            "/usr/share/locale/de/LC_MESSAGES/dpkg.mo /usr/share/locale/de_AT/LC_MESSAGES/x.mo "
            "/usr/share/locale/pt_BR/LC_MESSAGES/dpkg.mo /usr/share/locale/pt/LC_MESSAGES/dpkg.mo "
            "/usr/share/locale/locale.alias /usr/share/man/man1/dpkg.1.gz "
            "/usr/share/man/de/man1/dpkg.1.gz /usr/share/man/pt/man1/dpkg.1.gz "
            "/usr/share/doc/dpkg/changelog.gz",
            "/usr/share/locale/fr/LC_MESSAGES/dpkg.mo /usr/share/locale/pt_PT/LC_MESSAGES/x.mo "
            "/usr/share/locale/deu/LC_MESSAGES/x.mo /usr/share/man/fr/man1/dpkg.1.gz",
        ),
        (
            False,
            ("de",),
            "/usr/share/locale/de/LC_MESSAGES/dpkg.mo /usr/share/doc/dpkg/copyright",
            "/usr/share/man/de/man1/dpkg.1.gz /usr/share/man/man1/dpkg.1.gz",
        ),
        (True, (), "/usr/share/locale/locale.alias", "/usr/share/locale/de/LC_MESSAGES/dpkg.mo"),
    ],
)
def test_dpkg_path_filters(
    documentation: bool, langs: tuple[str, ...] | None, kept: str, dropped: str
) -> None:
    rules = dpkg_path_filters(documentation, langs)
    assert rules[0].startswith("# ")  # says where the file in the image comes from
    assert [p for p in kept.split() if not dpkg_keeps(rules, p)] == []
    assert [p for p in dropped.split() if dpkg_keeps(rules, p)] == []


def test_path_filters_reach_mmdebstrap() -> None:
    inp = BootstrapInput(
        suite="bookworm",
        sources_file=Path("/x.sources"),
        lists_dir=Path("/lists"),
        packages=(),
        debs=(),
        dpkg_options=dpkg_path_filters(False, None),
    )
    argv = mmdebstrap_argv(Path("/target"), inp)
    assert "--dpkgopt=path-include=/usr/share/doc/*/copyright" in argv
    assert argv.index("--dpkgopt=path-exclude=/usr/share/doc/*") < argv.index(
        "--dpkgopt=path-include=/usr/share/doc/*/copyright"
    )
    assert not [
        a for a in mmdebstrap_argv(Path("/t"), replace(inp, dpkg_options=())) if "dpkgopt" in a
    ]


def test_etc_group_members(tmp_path: Path) -> None:
    t = treefile.load(write(tmp_path / "t.yaml", "ref: os/x\netc-group-members: [sudo, adm]\n"))
    assert t.etc_group_members == ("sudo", "adm")
    assert treefile.load(write(tmp_path / "plain.yaml", "ref: os/x\n")).etc_group_members is None


def test_preserve_and_check_passwd(tmp_path: Path) -> None:
    d = tmp_path / "conf"
    d.mkdir()
    write(d / "passwd", "aot:x:990:990::/nonexistent:/usr/sbin/nologin\n")
    t = treefile.load(
        write(
            d / "t.yaml",
            "ref: os/x\npreserve-passwd: false\n"
            "check-passwd: {type: file, filename: passwd}\n"
            "check-groups: {type: data, entries: {aot: 990}}\n",
        )
    )
    assert t.preserve_passwd is False
    assert t.check_passwd == treefile.AccountCheck(treefile.CheckType.FILE, filename=d / "passwd")
    assert t.check_groups.type is treefile.CheckType.DATA
    assert t.check_groups.entries == {"aot": (990,)}
    assert str(d) not in t.flattened_json()  # the file's content goes into the input hash
    plain = treefile.load(write(tmp_path / "plain.yaml", "ref: os/x\n"))
    assert plain.preserve_passwd is True
    assert plain.check_passwd.type is plain.check_groups.type is treefile.CheckType.PREVIOUS
    assert "check-passwd" not in plain.flattened


def test_debconf_answers(tmp_path: Path) -> None:
    d = tmp_path / "conf"
    d.mkdir()
    write(d / "answers", "# zones\ntzdata tzdata/Areas select Europe\n\n")
    t = treefile.load(
        write(
            d / "t.yaml",
            "ref: os/x\ndebconf-file: answers\n"
            "debconf: ['tzdata tzdata/Zones/Europe select Berlin']\n",
        )
    )
    # the file's answers first, comments and blank lines left out; inlined for the input hash
    assert t.debconf == (
        "tzdata tzdata/Areas select Europe",
        "tzdata tzdata/Zones/Europe select Berlin",
    )
    assert "debconf-file" not in t.flattened and list(t.flattened["debconf"]) == list(t.debconf)
    assert treefile.load(write(tmp_path / "plain.yaml", "ref: os/x\n")).debconf == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("preserve-passwd: 1\n", "key 'preserve-passwd': expected true or false"),
        ("check-passwd: previous\n", "key 'check-passwd': expected a mapping with 'type': none,"),
        ("check-groups: {type: prev}\n", "key 'check-groups': expected a mapping with 'type'"),
        ("check-passwd: {type: file}\n", "key 'check-passwd': type file needs 'filename'"),
        ("check-passwd: {type: file, filename: nope}\n", "nope is not a file"),
        (
            "check-passwd: {type: none, filename: x}\n",
            "key 'check-passwd': unknown field 'filename'",
        ),
        ("check-passwd: {type: data, entries: {a: [1, 2, 3]}}\n", "a UID or [UID, GID]"),
        ("check-groups: {type: data, entries: {a: [1, 2]}}\n", "names to a GID"),
        ("etc-group-members: sudo\n", "key 'etc-group-members': expected a list of strings"),
        ("etc-group-members: ['a b']\n", "key 'etc-group-members': 'a b' is not a group name"),
        ("debconf: tzdata\n", "key 'debconf': expected a list of strings"),
        (
            "debconf: ['tzdata tzdata/Areas']\n",
            "key 'debconf': 'tzdata tzdata/Areas' is not 'OWNER",
        ),
        ("debconf: ['t t/q selct x']\n", "key 'debconf': 't t/q selct x': type 'selct' is not"),
        ("debconf: ['# a comment']\n", "key 'debconf': '# a comment' is not one"),
        ("debconf-file: nope\n", "key 'debconf-file': cannot read"),
        ("debconf-file: bad-answers\n", "key 'debconf-file': "),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path / "bad-answers", "tzdata tzdata/Areas select Europe\nbroken\n")
    path = write(tmp_path / "bad.yaml", "ref: os/x\n" + text)
    with pytest.raises(TreefileError) as e:
        treefile.load(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)
    assert "\n" not in str(e.value)
    if "bad-answers" in text:
        assert str(e.value).endswith(
            "bad-answers line 2: 'broken' is not 'OWNER QUESTION TYPE VALUE'"
        )
