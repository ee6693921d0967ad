"""YAML with positions: plain Python values plus a map from each value's path to its file:line:column.

Config and segment files are loaded here so that every later error can point at the exact place
the user wrote. Duplicate keys, which plain PyYAML silently overwrites, are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, Location, Problem

PathKey = tuple[str | int | float, ...]  # mapping keys (any YAML scalar) and list indices


@dataclass
class YamlDocument:
    """A loaded YAML document: its value and where each part of it was written."""

    file: str
    value: Any
    positions: dict[PathKey, Location] = field(default_factory=dict)
    key_positions: dict[PathKey, Location] = field(default_factory=dict)

    def locate(self, path: PathKey, *, key: bool = False) -> Location:
        """Where the value at `path` (or, with key=True, its key) was written.

        Falls back to the nearest ancestor that has a position, so an error about a
        missing key points at the mapping that lacks it.
        """
        path = tuple(path)
        if key and path in self.key_positions:
            return self.key_positions[path]
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return self.positions.get((), Location(self.file, 1, 1))


def format_path(path: PathKey) -> str:
    """`("tiers", "levels", 1, "name")` -> `tiers.levels[1].name`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml_text(text: str, file: str) -> YamlDocument:
    """Parse YAML text; syntax errors and duplicate keys raise ConfigError with positions."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else None
        raise ConfigError(Problem(where, f"invalid YAML: {exc.problem or exc.context}")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(Problem(Location(file, 1), f"invalid YAML: {exc}")) from None
    finally:
        loader.dispose()
    doc = YamlDocument(file=file, value=None)
    if node is None:
        return doc
    problems: list[Problem] = []
    constructor = yaml.SafeLoader("")
    doc.value = _build(node, (), doc, constructor, problems)
    if problems:
        raise ConfigError(problems)
    return doc


def load_yaml_file(path: Path, display_name: str | None = None) -> YamlDocument:
    """Read and parse a YAML file, naming it as `display_name` in errors."""
    name = display_name or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return load_yaml_text(text, name)


def _build(
    node: yaml.Node,
    path: PathKey,
    doc: YamlDocument,
    constructor: yaml.SafeLoader,
    problems: list[Problem],
) -> Any:
    doc.positions[path] = Location(doc.file, node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            key_at = Location(doc.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                problems.append(Problem(key_at, f"keys must be plain text, found {key!r}"))
                continue
            if key in result:
                first = doc.key_positions.get(path + (key,))
                problems.append(
                    Problem(key_at, f"duplicate key '{key}' (first given at line {first.line})" if first
                            else f"duplicate key '{key}'")
                )
                continue
            doc.key_positions[path + (key,)] = key_at
            result[key] = _build(value_node, path + (key,), doc, constructor, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(child, path + (i,), doc, constructor, problems) for i, child in enumerate(node.value)
        ]
    return constructor.construct_object(node, deep=True)
