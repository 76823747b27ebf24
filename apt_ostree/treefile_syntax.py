"""A treefile's text to plain data: YAML (JSON for a `.json` file), with positions in errors.

PyYAML and the json module both keep the last of two equal keys in a mapping and drop the
first without a word, so a treefile that says `packages:` twice would lose a package list.
A duplicated key is an error here at any depth (YAML itself forbids it: "each of the keys is
unique", YAML 1.2 section 3.2.1.1; RFC 8259 says names "SHOULD be unique"). Every error is
one line, `FILE:LINE:COLUMN: problem`, as compilers print them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from apt_ostree.errors import TreefileError

_MERGE_TAG = "tag:yaml.org,2002:merge"
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *base` merges a mapping in; the keys given here override it
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # SafeLoader's own "found unhashable key" comes next
            if key in first:
                line = first[key].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    problem=f"duplicate key '{key}' (first at line {line})",
                    problem_mark=key_node.start_mark,
                )
            first[key] = key_node
        return super().construct_mapping(node, deep=deep)


def parse(path: Path, text: str) -> Any:
    """The data in `text` (the content of the treefile `path`); TreefileError on bad syntax."""
    if path.suffix == ".json":
        return _parse_json(path, text)
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only
    except yaml.YAMLError as e:
        raise TreefileError(_yaml_message(path, text, e)) from e


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of the character at `offset`."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - text.rfind("\n", 0, offset)


def _yaml_message(path: Path, text: str, e: yaml.YAMLError) -> str:
    mark = (e.problem_mark or e.context_mark) if isinstance(e, yaml.MarkedYAMLError) else None
    if isinstance(e, yaml.MarkedYAMLError) and mark is not None:
        problem = _one_line(e.problem or e.context or "not valid YAML")
        if e.context and e.problem and e.context_mark:
            problem += f" ({_one_line(e.context)} at line {e.context_mark.line + 1})"
        return f"{path}:{mark.line + 1}:{mark.column + 1}: {problem}"
    if isinstance(e, yaml.reader.ReaderError):
        line, column = _position(text, e.position)
        code = e.character if isinstance(e.character, int) else ord(e.character)
        return f"{path}:{line}:{column}: unacceptable character #x{code:04x}: {e.reason}"
    return f"{path}: not valid YAML: {_one_line(str(e))}"


def _parse_json(path: Path, text: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TreefileError(f"{path}:{e.lineno}:{e.colno}: {e.msg}") from e
    _check_json_keys(path, text)
    return data


def _check_json_keys(path: Path, text: str) -> None:
    """Walk the (valid) JSON text again, refusing an object that names a key twice."""
    decoder = json.JSONDecoder()

    def space(pos: int) -> int:
        match = _JSON_SPACE.match(text, pos)
        return match.end() if match else pos

    def value(pos: int) -> int:  # the offset after the value that starts at `pos`
        pos = space(pos)
        if text[pos] == "{":
            first: dict[str, int] = {}
            pos = space(pos + 1)
            while text[pos] == '"':
                key, end = decoder.raw_decode(text, pos)
                if key in first:
                    line, column = _position(text, pos)
                    first_line = _position(text, first[key])[0]
                    raise TreefileError(
                        f"{path}:{line}:{column}: duplicate key '{key}' "
                        f"(first at line {first_line})"
                    )
                first[key] = pos
                pos = space(value(space(end) + 1))  # after the ':' and the value
                pos = space(pos + 1) if text[pos] == "," else pos
            return pos + 1
        if text[pos] == "[":
            pos = space(pos + 1)
            while text[pos] != "]":
                pos = space(value(pos))
                pos = space(pos + 1) if text[pos] == "," else pos
            return pos + 1
        return int(decoder.raw_decode(text, pos)[1])

    value(0)
