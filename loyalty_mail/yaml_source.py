"""YAML with positions: plain Python values plus a map from each value's path to its file:line:column.

Config and segment files are loaded here so that every later error can point at the exact place
the user wrote. Duplicate keys, which plain PyYAML silently overwrites, are errors. Loading is
bounded: at most MAX_YAML_CHARS characters, MAX_NESTING levels of nesting, MAX_ALIASES alias
references and MAX_VALUES values once aliases are expanded (a "billion laughs" file is refused
in milliseconds); an alias inside the node it names is an error, as is text that is not valid
Unicode (a lone surrogate escape such as "\\ud800").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, Location, Problem, shown
from .program_files import read_program_text

PathKey = tuple[str | int | float, ...]  # mapping keys (any YAML scalar) and list indices

MAX_YAML_CHARS = 256_000
MAX_NESTING = 100
MAX_ALIASES = 100
MAX_VALUES = 100_000


class _Refused(Exception):
    """Loading stopped at a limit; `problem` says where and why."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


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
    """Parse YAML text; syntax errors, duplicate keys and the limits above raise ConfigError with
    positions."""
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(Problem(Location(file, 1), f"the document is longer than {MAX_YAML_CHARS:,} "
                                                     "characters, the limit for YAML files"))
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, file)
        node = loader.get_single_node()
    except _Refused as exc:
        raise ConfigError(exc.problem) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else None
        raise ConfigError(Problem(where, f"invalid YAML: {exc.problem or exc.context}")) from None
    except yaml.reader.ReaderError as exc:
        before = text[:exc.position]
        where = Location(file, before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1)
        raise ConfigError(Problem(where, f"invalid YAML: character U+{exc.character:04X} is not allowed "
                                         "(control characters such as NUL cannot appear in YAML)")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(Problem(Location(file, 1), f"invalid YAML: {exc}")) from None
    finally:
        if loader is not None:
            loader.dispose()
    doc = YamlDocument(file=file, value=None)
    if node is None:
        return doc
    cycle = _cycle(node)
    if cycle is not None:
        raise ConfigError(Problem(_at(file, cycle), "an alias refers to the node that contains it "
                                                    "(a recursive alias such as &a [*a])"))
    too_large = _too_large(node)
    if too_large is not None:
        raise ConfigError(Problem(_at(file, too_large), f"more than {MAX_VALUES:,} values once aliases are "
                                                   "expanded (aliases repeat what they name)"))
    problems: list[Problem] = []
    constructor = yaml.SafeLoader("")
    try:
        doc.value = _Builder(doc, constructor, problems).build(node, (), 0)
    except _Refused as exc:
        raise ConfigError(exc.problem) from None
    if problems:
        raise ConfigError(problems)
    return doc


def load_yaml_file(path: Path, display_name: str | None = None, *, root: Path | None = None) -> YamlDocument:
    """Read and parse a YAML file, naming it as `display_name` in errors. The file must be a
    regular file inside `root` (default: its own folder), reached through no symbolic link."""
    name = display_name or str(path)
    text = read_program_text(path, root or path.parent, name, max_bytes=MAX_YAML_CHARS)
    return load_yaml_text(text, name)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with nesting and alias references counted while composing."""

    def __init__(self, text: str, file: str):
        super().__init__(text)
        self.file = file
        self.depth = 0
        self.aliases = 0

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        # The scanner looks ahead across open [ and { (its cost grows with their nesting), so
        # flow nesting is refused here, before the composer sees it.
        if self.flow_level >= MAX_NESTING:
            raise _Refused(Problem(_mark(self.file, self.get_mark()),
                                   f"nested more than {MAX_NESTING} levels deep"))
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Refused(Problem(_mark(self.file, event.start_mark),
                                       f"more than {MAX_ALIASES} alias references (*name) in one file"))
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _Refused(Problem(_mark(self.file, event.start_mark),
                                   f"nested more than {MAX_NESTING} levels deep"))
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _mark(file: str, mark: Any) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


def _at(file: str, node: yaml.Node) -> Location:
    return _mark(file, node.start_mark)


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value
    elif isinstance(node, yaml.SequenceNode):
        yield from node.value


def _cycle(root: yaml.Node) -> yaml.Node | None:
    """A node that contains itself through aliases, if any (iterative depth-first search)."""
    state: dict[int, int] = {id(root): 1}  # 1: on the current path, 2: done
    stack: list[tuple[yaml.Node, Iterator[yaml.Node]]] = [(root, _children(root))]
    while stack:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            state[id(node)] = 2
            stack.pop()
        elif state.get(id(child)) == 1:
            return child
        elif id(child) not in state:
            state[id(child)] = 1
            stack.append((child, _children(child)))
    return None


def _too_large(root: yaml.Node) -> yaml.Node | None:
    """The first node that expands to more than MAX_VALUES values when each of its parts does
    not (`root` has no cycle), or None when all of `root` stays within the limit."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, Iterator[yaml.Node], int]] = [(root, _children(root), 1)]
    while stack:
        node, children, size = stack.pop()
        for child in children:
            if id(child) in sizes:
                size += sizes[id(child)]
            else:
                stack.append((node, children, size))
                stack.append((child, _children(child), 1))
                break
        else:
            if size > MAX_VALUES:
                return node
            sizes[id(node)] = size
            if stack:
                parent, rest, total = stack.pop()
                stack.append((parent, rest, total + size))
    return None


class _Builder:
    """Composed nodes -> plain values and positions, counting values as aliases expand them."""

    def __init__(self, doc: YamlDocument, constructor: yaml.SafeLoader, problems: list[Problem]):
        self.doc = doc
        self.constructor = constructor
        self.problems = problems
        self.values = 0
        self.locations: dict[int, Location] = {}
        self.scalars: dict[int, Any] = {}

    def at(self, node: yaml.Node) -> Location:
        found = self.locations.get(id(node))
        if found is None:
            found = self.locations[id(node)] = _at(self.doc.file, node)
        return found

    def build(self, node: yaml.Node, path: PathKey, depth: int) -> Any:
        doc, constructor, problems = self.doc, self.constructor, self.problems
        here = self.at(node)
        self.values += 1
        if self.values > MAX_VALUES:
            raise _Refused(Problem(here, f"more than {MAX_VALUES:,} values once aliases are expanded"))
        if depth > MAX_NESTING:
            raise _Refused(Problem(here, f"nested more than {MAX_NESTING} levels deep (through aliases)"))
        doc.positions[path] = here
        if isinstance(node, yaml.MappingNode):
            constructor.flatten_mapping(node)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.scalar(key_node)
                key_at = self.at(key_node)
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    problems.append(Problem(key_at, f"keys must be plain text, found {repr(key) if isinstance(key, _Unhashable) else shown(key)}"))
                    continue
                if key in result:
                    first = doc.key_positions.get(path + (key,))
                    problems.append(
                        Problem(key_at, f"duplicate key '{key}' (first given at line {first.line})" if first
                                else f"duplicate key '{key}'")
                    )
                    continue
                doc.key_positions[path + (key,)] = key_at
                result[key] = self.build(value_node, path + (key,), depth + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, path + (i,), depth + 1) for i, child in enumerate(node.value)]
        return self.scalar(node)

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return _Unhashable("mapping" if isinstance(node, yaml.MappingNode) else "sequence")
        if id(node) in self.scalars:
            return self.scalars[id(node)]
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (yaml.constructor.ConstructorError, ValueError, TypeError, KeyError, AttributeError,
                OverflowError):
            self.problems.append(Problem(self.at(node), _unreadable_scalar(node)))
            value = None
        self.scalars[id(node)] = value
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                self.problems.append(Problem(self.at(node), "text is not valid Unicode: "
                                             f"{shown(value[exc.start])} is half of a surrogate pair; write "
                                             "the character itself, or \\U0001F600 for one beyond \\uFFFF"))
                value = self.scalars[id(node)] = ""
        return value


_TAG_KINDS = {
    "tag:yaml.org,2002:timestamp": "a date (YYYY-MM-DD) or a date and time (YYYY-MM-DDTHH:MM:SS, "
                                   "with an offset between -23:59 and +23:59)",
    "tag:yaml.org,2002:int": "a whole number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:binary": "base64 text",
}


def _unreadable_scalar(node: yaml.Node) -> str:
    """Why a scalar cannot be read: what was written and what its type allows."""
    found = _shorten(str(node.value))
    kind = _TAG_KINDS.get(node.tag)
    if kind is None:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!", 1)
        return f"unknown tag {tag} on \"{found}\"; YAML tags other than the standard ones are not allowed"
    if node.tag == "tag:yaml.org,2002:int" and str(node.value).lstrip("+-").replace("_", "").isdigit():
        return f"\"{found}\" has more digits than a number may have (4,300)"
    if node.tag == "tag:yaml.org,2002:timestamp":
        return (f"\"{found}\" is not a real date or time; write {kind}, or quote it to keep it as text")
    return f"\"{found}\" is not {kind}; quote it to keep it as text"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class _Unhashable:
    """Stands for a key that is a list or mapping (refused as a key)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self) -> str:
        return f"a {self.kind}"
