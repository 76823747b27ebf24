"""Treefile loading: includes, variables, types, and the errors a user sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apt_ostree import treefile
from apt_ostree.aptpkg.resolve import Variant
from apt_ostree.errors import TreefileError


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
        ("ref: os/x\n  bad: [\n", "not valid YAML"),
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
