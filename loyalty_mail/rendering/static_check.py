"""A static pass over Jinja's node tree: every variable and attribute path a template can reach,
in every branch and macro, checked against the documented template context.

Sample renders only see the branches their members take (`{% if member.points > 30000 %}` is
never true for a sample); this pass reads the tree Jinja itself parses (`env.parse`), so a
misspelled field in a branch no sample takes is still found, with file, line, column and the
closest documented name.

What is checked: names (against the context, Jinja's globals and what the template binds: `set`,
`for` targets and `loop`, macro parameters, `with`, imports), attributes and constant subscripts of
the records the context documents (`member`, `tier`, `tier.next`, `program`, `flow`,
`occurrence` with the fields its flows' triggers give). Custom attributes (`member.attributes.*`),
scalars, lists and template-bound names are "any": their attributes are not checked. The operand
of `is defined`, `is undefined` and `| default` is not checked either: those are how a template
asks whether something is there. Layouts (`extends`), `include`d files (with the includer's
names) and `import`ed files (with Jinja's globals only, unless `with context`) are followed; one
that is not there is a problem where it is named (with the closest file's name), unless the
include says `ignore missing`. A block of a template that extends a layout must be a block of
its layout chain (Jinja ignores any other: the email would go out without it), and a call of a
macro the file defines or imports must give its required arguments and no keyword it has no
parameter for (`layout_blocks.py`, `macro_calls.py`). Every filter and test must be one Jinja has,
also in a branch no sample takes (Jinja reports an unknown one inside a condition only when a
render reaches it).

Columns: Jinja's nodes carry a line but no column. The file is run through Jinja's own lexer
(`env.lex`), whose tokens, joined, give the source back except for whitespace removed by `-`
markers; walking the source alongside the tokens gives each name token's column. A problem's
column is the first column on its line where that name token stands and no earlier problem was
reported.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import nodes

from ..config import Settings
from ..errors import Location, Problem
from ..yaml_source import PathKey, YamlDocument
from .catalog import TEMPLATES_DIR, Variant, outside_templates
from .context import CONTEXT_NAMES, MEMBER_FIELDS
from .layout_blocks import (
    overriding_blocks,
    parent_name,
    rendered_block_names,
    self_references,
)
from .macro_calls import Signature
from .syntax import syntax_message, unknown_message

# What each trigger puts in `occurrence` (flows/occurrences.py); a template no flow uses may
# be sent by any of them (preview, send-test).
OCCURRENCE_FIELDS: dict[str, tuple[str, ...]] = {
    "welcome": ("kind", "key"),
    "milestone": ("kind", "key", "threshold", "years"),
    "tier_upgrade": ("kind", "key", "old_tier", "new_tier"),
    "reengagement": ("kind", "key", "segment", "entry"),
    "tier_at_risk": ("kind", "key", "tier", "review_at", "grace_until", "needed", "measure", "threshold",
                     "downgrade_to"),
    "tier_downgrade": ("kind", "key", "old_tier", "new_tier", "why", "to_regain", "measure"),
    "birthday": ("kind", "key", "birthday", "age", "days_before"),
    "reward_available": ("kind", "key", "balance", "newly", "affordable", "next"),
    "statement": ("kind", "key", "month", "period_start", "period_end", "earned", "redeemed", "expired",
                  "expiring", "expiring_until", "balance", "tier", "next_tier", "to_next_tier"),
    "points_expiring": ("kind", "key", "points", "expires_at", "expires_on", "before", "could_buy"),
    "confirmation": ("kind", "key"),
    "campaign": ("kind", "key", "campaign", "topic"),
}
OCCURRENCE_KINDS = ("signup", "points", "anniversary", "tier_upgrade", "segment_entry", "tier_at_risk",
                    "tier_downgrade", "birthday", "reward_available", "statement", "points_expiring",
                    "confirmation")
_RENDERER_NAMES = ("tracking", "open_pixel_url")  # added by the renderer next to CONTEXT_NAMES
_DICT_METHODS = frozenset(name for name in dir(dict) if not name.startswith("_"))
_PRESENCE_TESTS = frozenset({"defined", "undefined"})
_PRESENCE_FILTERS = frozenset({"default", "d"})


@dataclass(frozen=True)
class Record:
    """A dict of the context whose keys are documented: `member`, `tier`, `program`..."""

    name: str
    fields: Mapping[str, Record | None]   # None: any value (attributes not checked)
    hint: str = ""
    kind: str = "field"   # what its keys are: an imported module's are macros

    def problem(self, attr: str) -> str:
        if not self.fields:
            return f"undefined variable: {self.name} has no {self.kind} '{attr}'{self.hint}"
        close = closest(attr, list(self.fields))
        advice = f"did you mean {close[0]}?" if close else \
            f"{self.name} has: {', '.join(sorted(self.fields))}{self.hint}"
        return f"undefined variable: {self.name} has no {self.kind} '{attr}' ({advice})"


def closest(word: str, names: list[str]) -> list[str]:
    """The documented name `word` most likely misspells (none, or one): the closest whole name,
    else the name whose beginning it misspells (`frist` -> first_name, `tel` -> telephone)."""
    close = difflib.get_close_matches(word, names, n=1)
    if close or len(word) < 3:
        return close
    starts = {name[:len(word)]: name for name in sorted(names, key=len, reverse=True) if len(name) > len(word)}
    close = difflib.get_close_matches(word, list(starts), n=1, cutoff=0.75)
    return [starts[close[0]]] if close else []


def _record(name: str, names: Iterable[str], hint: str = "", **nested: Record | None) -> Record:
    return Record(name, {**{n: None for n in names}, **nested}, hint)


def template_context(triggers: Iterable[str] | None = None) -> dict[str, Record | None]:
    """The context's top-level names and what is known of each, for an email sent by flows with
    these triggers (None: any trigger)."""
    kinds = list(triggers) if triggers is not None else list(OCCURRENCE_FIELDS)
    occurrence_fields = dict.fromkeys(f for t in kinds for f in OCCURRENCE_FIELDS.get(t, ()))
    triggers_text = ", ".join(sorted(kinds))
    next_tier = _record("tier.next", ("name", "label", "threshold", "perks"))
    context: dict[str, Record | None] = {name: None for name in (*CONTEXT_NAMES, *_RENDERER_NAMES)}
    context.update({
        "member": _record("member", (*MEMBER_FIELDS, "name"),
                          "; custom attributes are member.attributes.NAME", attributes=None),
        "tier": _record("tier", ("name", "label", "rank", "perks", "threshold", "to_next", "progress",
                                 "basis"), next=next_tier),
        "program": _record("program", ("name", "currency", "sender_name", "sender_email",
                                       "postal_address", "default_locale")),
        "flow": _record("flow", ("name",)),
        "occurrence": _record("occurrence", occurrence_fields,
                              f"; flows with trigger {triggers_text} give these fields"),
    })
    return context


UNTRIGGERED = ("kind", "key", "step")   # a journey's email decided where its trigger's data is not there


def untriggered_context() -> dict[str, Record | None]:
    """The context of an email a journey sends at a step that does not see the trigger's data
    (flows/journey_spec.py, `sends_without_trigger`): `occurrence` has only kind, key and step,
    and there is no `event`."""
    context = template_context()
    why = (": the trigger's data is not there after a wait with no email before it (send one before "
           "the first wait, or ask `is defined` / `| default`)")
    context["occurrence"] = _record("occurrence", UNTRIGGERED, why)
    context["event"] = Record("event", {}, why)
    return context


def triggers_by_email(settings: Settings) -> dict[str, list[str]]:
    """The triggers of the flows that send each email."""
    found: dict[str, list[str]] = {}
    for flow in settings.flows:
        for template in flow.templates():
            found.setdefault(template, []).append(flow.trigger)
    return found


class Columns:
    """Columns of name tokens in one source, from Jinja's lexer (see the module docstring)."""

    def __init__(self, env: jinja2.Environment, source: str) -> None:
        self._at: dict[tuple[int, str], list[int]] = {}
        self._used: set[tuple[int, int]] = set()
        self._given: dict[int, tuple[int, int]] = {}  # by node: a node checked twice keeps its place
        lines = source.split("\n")
        starts = [0]
        for text in lines[:-1]:
            starts.append(starts[-1] + len(text) + 1)
        position = 0
        try:
            for lineno, kind, value in env.lex(source):
                while not source.startswith(value, position) and position < len(source) \
                        and source[position].isspace():
                    position += 1  # whitespace a `-` marker removed from the token
                if kind in ("name", "string"):  # a string: `member['first_name']`, at its quote
                    line = source.count("\n", 0, position) + 1
                    token = value if kind == "name" else value[1:-1]
                    self._at.setdefault((line, token), []).append(position - starts[line - 1] + 1)
                position += len(value)
        except jinja2.TemplateSyntaxError:
            pass  # the syntax check reports it; problems then carry no column

    def find(self, node: nodes.Node, line: int, name: str, search: int = 0,
             index: int | None = None) -> tuple[int, int]:
        """(line, column) of `name` on `line`: its `index`-th occurrence there when given, else
        the first one not yet given to another node (looking up to `search` lines further);
        column 0 when the lexer did not see it there."""
        if id(node) in self._given:
            return self._given[id(node)]
        columns = self._at.get((line, name), [])
        if index is not None and index < len(columns):
            self._given[id(node)] = (line, columns[index])
            return line, columns[index]
        place = (line, 0)
        for candidate in range(line, line + search + 1):
            free = [c for c in self._at.get((candidate, name), []) if (candidate, c) not in self._used]
            if free:
                place = (candidate, free[0])
                self._used.add(place)
                break
        self._given[id(node)] = place
        return place


@dataclass
class _Source:
    """One template file being checked: where problems are reported, and their columns."""

    name: str          # Jinja name, e.g. "welcome/en.html"
    columns: Columns
    line_offset: int = 0   # front matter: the line in the file of the parsed text's line 1
    search: int = 0        # front matter: how many lines further a token may stand
    order: Mapping[int, int] = field(default_factory=dict)  # node id -> index among its line's tokens

    def location(self, node: nodes.Node, token: str) -> Location:
        line, column = self.columns.find(node, node.lineno + self.line_offset, token, self.search,
                                         self.order.get(id(node)))
        return Location(f"{TEMPLATES_DIR}/{self.name}", line, column)


MAX_CHECKS_PER_FILE = 50


@dataclass
class StaticChecker:
    """Checks the templates of one program against the context; collects problems."""

    env: jinja2.Environment
    problems: list[Problem] = field(default_factory=list)
    _columns: dict[str, Columns] = field(default_factory=dict)
    _trees: dict[str, nodes.Template | None] = field(default_factory=dict)
    _modules: dict[str, set[str] | None] = field(default_factory=dict)
    _orders: dict[str, dict[int, int]] = field(default_factory=dict)
    _times_checked: dict[str, int] = field(default_factory=dict)  # in the variant being checked
    context_names: frozenset[str] = frozenset()  # the email's context, for files that do not see it

    @property
    def globals(self) -> dict[str, Record | None]:
        """Jinja's globals (range, namespace...): all an imported template sees by default."""
        return dict.fromkeys(self.env.globals)

    def check_variant(self, variant: Variant, triggers: Iterable[str] | None, raw: str,
                      context: dict[str, Record | None] | None = None) -> None:
        """The email's body (and its layouts, includes, imports), subject and preheader, against
        the context of these triggers' flows (or `context`)."""
        context = context if context is not None else template_context(triggers)
        self.context_names = frozenset(context)
        self._times_checked = {}
        scope: list[dict[str, Record | None]] = [context, self.globals]
        self.check_file(variant.html_path, scope, [])
        if variant.text_path:
            self.check_file(variant.text_path, scope, [])
        front = Columns(self.env, raw)
        front_end = raw.find("\n---", 3)
        span = raw.count("\n", 0, front_end) + 1 if front_end > 0 else 1
        # Both trees stay alive while either is checked: `front` remembers nodes by id(), and a
        # freed subject's node ids would be handed to the preheader's nodes (with its locations).
        trees = [self._parse(text) for text in (variant.subject, variant.preheader)]
        for tree in trees:
            source = _Source(variant.html_path, front, line_offset=1, search=span)
            self._check_tree(tree, source, scope, [])

    def _parse(self, text: str) -> nodes.Template:
        try:
            return self.env.parse(text)
        except jinja2.TemplateSyntaxError:
            return nodes.Template([])  # the sample render reports it with its line

    def missing(self, name: str) -> bool:
        """Whether no template file has this name."""
        return self._source_of(name) is None

    def _source_of(self, name: str) -> str | None:
        try:
            return self.env.loader.get_source(self.env, name)[0]  # type: ignore[union-attr]
        except jinja2.TemplateNotFound:
            return None
        except jinja2.TemplateSyntaxError:
            return ""  # the syntax check and the renderer report it

    def tree(self, name: str) -> nodes.Template | None:
        """A file's tree, parsed once; None when it is missing or does not parse (the syntax
        check and the renderer report those)."""
        if name not in self._trees:
            text = self._source_of(name)
            try:
                self._trees[name] = self.env.parse(text, name) if text is not None else None
            except jinja2.TemplateSyntaxError:
                self._trees[name] = None
            if text is not None:
                self._columns[name] = Columns(self.env, text)
        return self._trees[name]

    def check_file(self, name: str, scope: list[dict[str, Record | None]], stack: list[str]) -> None:
        """Check a file with the names its includer sees. A file included at many places is
        checked at its first MAX_CHECKS_PER_FILE of them: includes inside includes multiply
        (ten of a file that includes ten more...)."""
        tree = self.tree(name)
        if tree is None or name in stack or self._times_checked.get(name, 0) >= MAX_CHECKS_PER_FILE:
            return
        self._times_checked[name] = self._times_checked.get(name, 0) + 1
        if name not in self._orders:
            self._orders[name] = _token_order(tree)
        source = _Source(name, self._columns[name], order=self._orders[name])
        self._check_tree(tree, source, scope, [*stack, name])
        self._check_blocks(tree, source)
        self._check_filters(tree, source)

    def _check_filters(self, tree: nodes.Template, source: _Source) -> None:
        """Every filter and test is one Jinja has: an unknown one inside a condition only fails
        when a render takes that branch (Jinja defers it), so a sample may never see it."""
        for node in tree.find_all((nodes.Filter, nodes.Test)):
            kind, known = ("filter", self.env.filters) if isinstance(node, nodes.Filter) else ("test", self.env.tests)
            if node.name not in known:
                self.problems.append(Problem(source.location(node, node.name),
                                             unknown_message(self.env, kind, node.name)))

    def _check_blocks(self, tree: nodes.Template, source: _Source) -> None:
        """A block of a template that extends a layout must be a block of that layout's chain."""
        layout = parent_name(tree)
        names = self_references(tree)
        parent, seen = layout, set()
        while parent is not None:
            parent_tree = self.tree(parent)
            if parent_tree is None or parent in seen:
                return  # a missing layout is reported where it is named
            seen.add(parent)
            names |= rendered_block_names(parent_tree)
            parent = parent_name(parent_tree)
        for block in overriding_blocks(tree) if layout is not None else ():
            if block.name not in names:
                close = closest(block.name, sorted(names))
                advice = f"did you mean {close[0]}?" if close else f"it has: {', '.join(sorted(names)) or 'none'}"
                self.problems.append(Problem(
                    source.location(block, block.name),
                    f"block '{block.name}' is not a block of {TEMPLATES_DIR}/{layout} ({advice})"))

    def _check_tree(self, tree: nodes.Template, source: _Source, scope: list[dict[str, Record | None]],
                    stack: list[str]) -> None:
        top = _bound_at_top(tree) | {"self": None}
        _Walk(self, source, [*scope, top], stack).statements(tree.body)

    def signatures(self, name: str) -> dict[str, Signature]:
        """The macros a template defines at its top level, by name."""
        tree = self.tree(name)
        return {node.name: Signature.of(node, name) for node in (tree.body if tree is not None else ())
                if isinstance(node, nodes.Macro)}

    def exported(self, name: str) -> set[str] | None:
        """The top-level names (macros, sets) a template exports to `import`, or None if unknown."""
        if name not in self._modules:
            tree = self.tree(name)
            self._modules[name] = set(_bound_at_top(tree)) if tree is not None else None
        return self._modules[name]


_SOURCE_ORDER = {nodes.CondExpr: ("expr1", "test", "expr2"),
                 nodes.For: ("target", "iter", "test", "body", "else_")}


def subject_problems(env: jinja2.Environment, doc: YamlDocument,
                     tests: Iterable[tuple[PathKey, str | None]],
                     untriggered: Iterable[PathKey] = ()) -> list[Problem]:
    """The static pass over the A/B variants' subjects written in `doc`: for each (path of a flow
    or campaign in `doc`, its trigger), every `variants[].subject`, with each problem at that
    subject's line and column in `doc` (a subject that does not parse: its syntax error there).
    A journey's send step in `untriggered` is checked against `untriggered_context()`: it is
    decided where the trigger's data is not there."""
    lost = set(untriggered)
    problems: list[Problem] = []
    for path, trigger in tests:
        test: Any = doc.value
        for key in path:
            if isinstance(test, dict):
                test = test.get(key)
            else:
                test = test[key] if isinstance(test, list) and isinstance(key, int) and key < len(test) else None
        found = test.get("variants") if isinstance(test, dict) else None
        for index, variant in enumerate(found if isinstance(found, list) else []):
            subject = variant.get("subject") if isinstance(variant, dict) else None
            if not isinstance(subject, str):
                continue
            where = doc.locate((*path, "variants", index, "subject"))
            try:
                env.from_string(subject)   # an unknown filter or test is found on compiling
                tree = env.parse(subject)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(Problem(where, f"variant '{variant.get('name')}' subject: syntax error: "
                                               f"{syntax_message(env, exc)}"))
                continue
            checker = StaticChecker(env)
            context = untriggered_context() if path in lost else template_context([trigger] if trigger else None)
            scope = [context, checker.globals]
            checker._check_tree(tree, _Source("subject", Columns(env, subject)), scope, [])
            problems += [Problem(where, f"variant '{variant.get('name')}' subject: {p.message}")
                         for p in dict.fromkeys(checker.problems)]
    return problems


def _token_order(tree: nodes.Template) -> dict[int, int]:
    """For each name, attribute and constant-key node: how many nodes naming the same token on
    the same line come before it, in source order."""
    order: dict[int, int] = {}
    seen: dict[tuple[int, str], int] = {}

    def token(node: nodes.Node) -> str | None:
        if isinstance(node, nodes.Name):
            return node.name
        if isinstance(node, nodes.Getattr):
            return node.attr
        if isinstance(node, nodes.Getitem):
            return _constant_name(node.arg)
        return None

    def visit(node: nodes.Node) -> None:
        fields = _SOURCE_ORDER.get(type(node))
        children: list[nodes.Node] = []
        if fields is None:
            children = list(node.iter_child_nodes())
        else:
            for field_name in fields:
                value = getattr(node, field_name)
                children.extend(value if isinstance(value, list) else [value] if value is not None else [])
        # a path is written base first: `member.points` names member, then points
        for child in children:
            visit(child)
        name = token(node)
        if name is not None:
            key = (node.lineno, name)
            order[id(node)] = seen.get(key, 0)
            seen[key] = order[id(node)] + 1

    visit(tree)
    return order


def _bound_at_top(tree: nodes.Template) -> dict[str, Record | None]:
    """Names a template binds outside macros, loops and blocks (`set`, macros, imports): Jinja
    exports them to the whole template, blocks included."""
    names: dict[str, Record | None] = {}

    def visit(node: nodes.Node) -> None:
        if isinstance(node, (nodes.Assign, nodes.AssignBlock)):
            names.update(dict.fromkeys(_targets(node.target)))
        elif isinstance(node, nodes.Macro):
            names[node.name] = None
            return
        elif isinstance(node, nodes.Import):
            names[node.target] = None
        elif isinstance(node, nodes.FromImport):
            names.update(dict.fromkeys(n if isinstance(n, str) else n[1] for n in node.names))
        if isinstance(node, (nodes.For, nodes.CallBlock, nodes.Block, nodes.With, nodes.Macro)):
            return
        for child in node.iter_child_nodes():
            visit(child)

    for statement in tree.body:
        visit(statement)
    return names


def _targets(node: nodes.Node) -> Iterator[str]:
    if isinstance(node, nodes.Name):
        yield node.name
    elif isinstance(node, nodes.NSRef):
        return
    else:
        for child in node.iter_child_nodes():
            yield from _targets(child)


def _path(node: nodes.Node) -> str | None:
    """`member.nickname` for the node of that path; None for anything else."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = _path(node.node)
        return f"{base}.{node.attr}" if base else None
    if isinstance(node, nodes.Getitem):
        base, key = _path(node.node), _constant_name(node.arg)
        return f"{base}.{key}" if base and key is not None else None
    return None


def _constant_name(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return node.value
    return None


_Macros = dict[str, tuple[dict[str, Any], "Signature | dict[str, Signature]"]]


class _Walk:
    """One walk over one file's tree, with the stack of scopes visible at each node."""

    def __init__(self, checker: StaticChecker, source: _Source, scopes: list[dict[str, Record | None]],
                 stack: list[str], guarded: frozenset[str] = frozenset(), macros: _Macros | None = None) -> None:
        self.checker, self.source, self.scopes, self.stack = checker, source, scopes, stack
        self.guarded = guarded  # paths an enclosing `{% if X is defined %}` asked about
        # name -> (the scope that bound it, the macro or imported module's macros it names)
        self.macros: _Macros = macros if macros is not None else {}

    def report(self, node: nodes.Node, token: str, message: str) -> None:
        self.checker.problems.append(Problem(self.source.location(node, token), message))

    def visible(self) -> dict[str, Record | None]:
        names: dict[str, Record | None] = {}
        for scope in self.scopes:
            names.update(scope)
        return names

    def nested(self, names: Iterable[str]) -> _Walk:
        return _Walk(self.checker, self.source, [*self.scopes, dict.fromkeys(names)], self.stack, self.guarded,
                     self.macros)

    def bind_macro(self, name: str, macro: Signature | dict[str, Signature]) -> None:
        self.macros[name] = (self.scopes[-1], macro)

    def bound_macro(self, name: str) -> Signature | dict[str, Signature] | None:
        """The macro (or imported module's macros) `name` names here, if that binding is visible."""
        scope = next((s for s in reversed(self.scopes) if name in s), None)
        bound = self.macros.get(name)
        return bound[1] if bound is not None and bound[0] is scope else None

    # -- statements ----------------------------------------------------------------------

    def statements(self, body: Iterable[nodes.Node]) -> None:
        for node in body:
            self.statement(node)

    def statement(self, node: nodes.Node) -> None:
        if isinstance(node, nodes.For):
            self.expr(node.iter)
            inner = self.nested([*_targets(node.target), "loop"])
            if node.test is not None:
                inner.expr(node.test)
            inner.statements(node.body)
            self.statements(node.else_)
        elif isinstance(node, (nodes.Assign, nodes.AssignBlock)):
            if isinstance(node, nodes.Assign):
                self.expr(node.node)
            else:
                if node.filter is not None:
                    self.expr(node.filter)
                self.statements(node.body)
            for target in _targets(node.target):
                self.scopes[-1][target] = None
                if self.bound_macro(target) is not None:
                    del self.macros[target]
        elif isinstance(node, nodes.Macro):
            for default in node.defaults:
                self.expr(default)
            self.scopes[-1][node.name] = None
            self.bind_macro(node.name, Signature.of(node, self.source.name))
            self.nested([a.name for a in node.args] + ["varargs", "kwargs", "caller"]).statements(node.body)
        elif isinstance(node, nodes.CallBlock):
            self.call(node.call, call_block=True)
            for part in node.call.iter_child_nodes():
                self.expr(part)
            for default in node.defaults:
                self.expr(default)
            self.nested([a.name for a in node.args] + ["varargs", "kwargs", "caller"]).statements(node.body)
        elif isinstance(node, nodes.With):
            for value in node.values:
                self.expr(value)
            self.nested(name for target in node.targets for name in _targets(target)).statements(node.body)
        elif isinstance(node, nodes.If):
            self.expr(node.test)
            tests = [node.test, *node.test.find_all(nodes.Test)]
            asked = {_path(t.node) for t in tests if isinstance(t, nodes.Test) and t.name == "defined"}
            guarded = _Walk(self.checker, self.source, self.scopes, self.stack,
                            self.guarded | {p for p in asked if p}, self.macros)
            guarded.statements(node.body)
            self.statements(node.elif_)
            self.statements(node.else_)
        elif isinstance(node, nodes.Block):
            self.nested(["super"]).statements(node.body)
        elif isinstance(node, nodes.Extends):
            self.template_reference(node, [self.visible()])
        elif isinstance(node, nodes.Include):
            self.template_reference(node, [self.visible()] if node.with_context else [self.checker.globals],
                                    node.ignore_missing)
        elif isinstance(node, (nodes.Import, nodes.FromImport)):
            scopes = [self.visible()] if node.with_context else [self.checker.globals]
            name = self.template_reference(node, scopes)
            if isinstance(node, nodes.Import):
                exported = self.checker.exported(name) if name is not None else None
                # `{% import "file" as m %}`: m.NAME must be a macro (or a name) the file defines
                self.scopes[-1][node.target] = None if exported is None else Record(
                    f"{TEMPLATES_DIR}/{name} (imported as {node.target})", dict.fromkeys(exported), kind="macro")
                if name is not None:
                    self.bind_macro(node.target, self.checker.signatures(name))
            else:
                self.from_import(node, name)
        else:
            for child in node.iter_child_nodes():
                if isinstance(child, nodes.Expr):
                    self.expr(child)
                else:
                    self.statement(child)

    def template_reference(self, node: nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport,
                           scopes: list[dict[str, Record | None]], ignore_missing: bool = False) -> str | None:
        """Check the file a statement names (a constant name), with `scopes`; a file that is not
        there is a problem where it is named, unless the include may miss it."""
        name = _constant_name(node.template)
        if name is None:
            self.expr(node.template)
            return None
        outside = outside_templates(name)
        if outside is not None:
            self.report(node.template, name, outside)
            return None
        if self.checker.missing(name):
            if not ignore_missing:
                known = self.checker.env.list_templates()
                close = difflib.get_close_matches(name, known, n=1)
                advice = f" (did you mean {TEMPLATES_DIR}/{close[0]}?)" if close else ""
                self.report(node.template, name, f"{TEMPLATES_DIR}/{name} does not exist{advice}")
            return None
        self.checker.check_file(name, scopes, self.stack)
        return name

    def from_import(self, node: nodes.FromImport, module: str | None) -> None:
        exported = self.checker.exported(module) if module else None
        for item in node.names:
            imported, bound = (item, item) if isinstance(item, str) else item
            self.scopes[-1][bound] = None
            macro = self.checker.signatures(module).get(imported) if module else None
            if macro is not None:
                self.bind_macro(bound, macro)
            if exported is not None and imported not in exported:
                close = difflib.get_close_matches(imported, sorted(exported), n=1)
                advice = f"did you mean {close[0]}?" if close else f"it has: {', '.join(sorted(exported)) or 'nothing'}"
                self.report(node, imported,
                            f"undefined variable: {TEMPLATES_DIR}/{module} has no macro '{imported}' ({advice})")

    # -- expressions -------------------------------------------------------------------------

    def expr(self, node: nodes.Node) -> Record | None:
        """Check an expression; what is known of its value (a Record) or None (any)."""
        if isinstance(node, nodes.Name):
            return self.name(node)
        if isinstance(node, nodes.Getattr):
            return self.field(node, self.expr(node.node), node.attr)
        if isinstance(node, nodes.Getitem):
            key = _constant_name(node.arg)
            owner = self.expr(node.node)
            if key is None:
                self.expr(node.arg)
                return None
            return self.field(node, owner, key)
        if isinstance(node, nodes.Test) and node.name in _PRESENCE_TESTS:
            self.presence(node.node)
            return None
        if isinstance(node, nodes.Filter) and node.name in _PRESENCE_FILTERS and node.node is not None:
            self.presence(node.node)
            for argument in [*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs]:
                if argument is not None:
                    self.expr(argument)
            return None
        if isinstance(node, nodes.Call):
            self.call(node)
        for child in node.iter_child_nodes():
            self.expr(child)
        return None

    def call(self, node: nodes.Call, call_block: bool = False) -> None:
        """A call of a macro this file defines or imports (as `{% call %}`: `call_block`), against
        the macro's parameters."""
        callee, token = node.node, None
        macro: Signature | dict[str, Signature] | None = None
        if isinstance(callee, nodes.Name):
            macro, token = self.bound_macro(callee.name), callee.name
        elif isinstance(callee, nodes.Getattr) and isinstance(callee.node, nodes.Name):
            module = self.bound_macro(callee.node.name)
            macro, token = (module.get(callee.attr) if isinstance(module, dict) else None), callee.attr
        if isinstance(macro, Signature) and token is not None:
            for message in macro.problems(node, closest, call_block):
                self.report(callee, token, message)

    def presence(self, node: nodes.Node) -> None:
        """Check only the base of a path whose presence is asked: `member.nickname is defined`."""
        while isinstance(node, (nodes.Getattr, nodes.Getitem)):
            if isinstance(node, nodes.Getitem):
                self.expr(node.arg)
            node = node.node
        self.expr(node)

    def name(self, node: nodes.Name) -> Record | None:
        if node.ctx != "load":
            return None
        visible = self.visible()
        if node.name in visible:
            return visible[node.name]
        if node.name in self.checker.context_names:  # the email has it; this file was not given it
            self.report(node, node.name, (
                f"undefined variable '{node.name}': {TEMPLATES_DIR}/{self.source.name} is imported or included "
                f"without context, so it sees only its own arguments and names; pass {node.name} as an argument, "
                "or add `with context` where it is imported"))
            return None
        candidates = [n for n in visible if not n.startswith("_")]
        close = closest(node.name, candidates)
        advice = f" (did you mean {close[0]}?)" if close else " (see \"Template context\" in the README)"
        self.report(node, node.name, f"undefined variable '{node.name}'{advice}")
        return None

    def field(self, node: nodes.Node, owner: Record | None, key: str) -> Record | None:
        if owner is None:
            return None
        if key in owner.fields:
            return owner.fields[key]
        if key not in _DICT_METHODS and _path(node) not in self.guarded:
            self.report(node, key, owner.problem(key))
        return None


def check_static(env: jinja2.Environment, settings: Settings, variants: Iterable[Variant],
                 raw_sources: Mapping[str, str]) -> list[Problem]:
    """Every problem the static pass finds in these variants (each once)."""
    checker = StaticChecker(env)
    triggers = triggers_by_email(settings)
    for variant in variants:
        checker.check_variant(variant, triggers.get(variant.email), raw_sources.get(variant.html_path, ""))
    found = list(dict.fromkeys(checker.problems))
    return sorted(found, key=lambda p: (p.location.file, p.location.line, p.location.column)
                  if p.location else ("", 0, 0))


def check_untriggered(env: jinja2.Environment, variants: Iterable[Variant],
                      raw_sources: Mapping[str, str]) -> list[Problem]:
    """The static pass over these variants against `untriggered_context`: what an email needs of
    its trigger's data (each problem once, in file order)."""
    checker = StaticChecker(env)
    context = untriggered_context()
    for variant in variants:
        checker.check_variant(variant, None, raw_sources.get(variant.html_path, ""), context)
    found = list(dict.fromkeys(checker.problems))
    return sorted(found, key=lambda p: (p.location.file, p.location.line, p.location.column)
                  if p.location else ("", 0, 0))
