"""What `check` warns a marketer about (`check --strict` makes each an error).

From the template files (the email, its layouts, includes and imports): an `<img>` without
`alt`, member data printed unescaped (`| safe`, `{% autoescape false %}`), no preheader. From
each sample render: an HTML part over 100 KB as sent, its links signed (Gmail clips messages
over 102 KB), no unsubscribe link in the body, a link holding `&amp;` as text (escaped twice:
`&amp;` in a Jinja string is escaped again when printed), a subject over 80 characters and, in a production
program, `http:` links and links to `localhost` or an example domain: every URL the email points
at, images and `background=` included, and those in Outlook's conditional comments (which link
tracking rewrites too).

A program is in production when `tracking.base_url` is served from a public host: not
`localhost` or a loopback address, and not a reserved test name (`.localhost`, `.local`,
`.test`, `.example`, `.invalid`, `example.com`/`.net`/`.org`; RFC 2606 and 6761). Until then,
links to example domains are what a program under construction is expected to have.
"""

from __future__ import annotations

import os
import re

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape as html_escape
from urllib.parse import urlsplit

import jinja2
import lxml.html
from jinja2 import nodes
from lxml import etree

from ..errors import Location, Problem
from .catalog import TEMPLATES_DIR, Variant
from .links import urls_in
from .static_check import Columns

HTML_LIMIT = 100 * 1024        # Gmail clips an HTML part over 102 KB ("[Message clipped]")
SUBJECT_LIMIT = 80             # characters; longer subjects are cut in most inboxes
_TEST_SUFFIXES = (".localhost", ".local", ".test", ".example", ".invalid", ".example.com",
                  ".example.net", ".example.org")
_TEST_HOSTS = frozenset({"localhost", "example.com", "example.net", "example.org"})
# a URL whose `&` reached the page as `&amp;amp;`: `'?a=1&amp;b=2'` in a Jinja string, escaped again
_ESCAPED_TWICE = re.compile(r"&(amp|#0*38|#x0*26);", re.I)


def is_test_host(host: str) -> bool:
    """localhost, a loopback or unspecified address, or a reserved test domain."""
    host = host.lower().rstrip(".")
    if host in _TEST_HOSTS or host.endswith(_TEST_SUFFIXES):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def is_production(base_url: str) -> bool:
    """Whether `tracking.base_url` is a public host (see the module docstring)."""
    return not is_test_host(urlsplit(base_url).hostname or "")


def template_files(env: jinja2.Environment, name: str) -> list[str]:
    """The file and every file it extends, includes or imports by a constant name that exists
    (`{% include "x" ignore missing %}` may name one that does not)."""
    found, pending = [name], [name]
    while pending:
        current = pending.pop()
        try:
            tree = env.parse(env.loader.get_source(env, current)[0], current)  # type: ignore[union-attr]
        except jinja2.TemplateNotFound:
            found.remove(current)
            continue
        except jinja2.TemplateSyntaxError:
            continue
        for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            target = getattr(node, "template", None)  # every one of the four has it
            if isinstance(target, nodes.Const) and isinstance(target.value, str) and target.value not in found:
                found.append(target.value)
                pending.append(target.value)
    return found


def lint_files(env: jinja2.Environment, variant: Variant) -> list[Problem]:
    """Warnings read from the variant's files: images without alt, member data printed
    unescaped (`| safe`, `{% autoescape false %}`), no preheader."""
    problems: list[Problem] = []
    if not variant.preheader.strip():
        problems.append(Problem(Location(f"{TEMPLATES_DIR}/{variant.html_path}", variant.subject_line),
                                "no preheader: add `preheader:` to the front matter (inboxes show it "
                                "after the subject; without it they show the first text of the body)"))
    for name in template_files(env, variant.html_path):
        try:
            source = env.loader.get_source(env, name)[0]  # type: ignore[union-attr]
            tree = env.parse(source, name)
        except (jinja2.TemplateNotFound, jinja2.TemplateSyntaxError):
            continue
        where = f"{TEMPLATES_DIR}/{name}"
        problems.extend(_images_without_alt(source, where))
        columns = Columns(env, source)
        for node in tree.find_all(nodes.Filter):
            if node.name == "safe" and node.node is not None and _reads_member_data(node.node):
                line, column = columns.find(node, node.lineno, "safe")
                problems.append(Problem(Location(where, line, column),
                                        "`| safe` on member data prints it unescaped: a name like "
                                        "<b>Lan</b> becomes markup; remove `| safe`"))
        for block in tree.find_all(nodes.ScopedEvalContextModifier):
            if not any(option.key == "autoescape" and not (isinstance(option.value, nodes.Const) and option.value.value)
                       for option in block.options):
                continue
            printed = [expression for output in block.find_all(nodes.Output) for expression in output.nodes
                       if not isinstance(expression, nodes.TemplateData) and _reads_member_data(expression)]
            if printed:
                line, column = columns.find(block, block.lineno, "autoescape")
                problems.append(Problem(Location(where, line, column),
                                        "`{% autoescape false %}` prints member data unescaped (line "
                                        f"{printed[0].lineno}): a name like <b>Lan</b> becomes markup; print "
                                        "member data outside the block"))
    return problems


_MEMBER_DATA = frozenset({"member", "event"})  # what members and their events' senders wrote


def _reads_member_data(node: nodes.Node) -> bool:
    return any(isinstance(n, nodes.Name) and n.name in _MEMBER_DATA for n in [node, *node.find_all(nodes.Name)])


def _images_without_alt(source: str, where: str) -> list[Problem]:
    if "<img" not in source.lower():
        return []
    try:
        document = lxml.html.document_fromstring(source)
    except (etree.ParserError, ValueError):
        return []
    return [Problem(Location(where, image.sourceline or 1),
                    "<img> without alt: add alt=\"...\" (a description, or alt=\"\" for decoration); "
                    "many clients block images and show the alt text instead")
            for image in document.iter("img") if image.get("alt") is None]


@dataclass
class RenderedLint:
    """Warnings about the rendered samples of one variant, each reported once."""

    variant: Variant
    files: list[str]
    sources: dict[str, str]
    base_url: str
    production: bool
    _reported: set[str] = field(default_factory=set)

    def check(self, html: str, subject: str, unsubscribe_url: str, member_id: str,
              size: int | None = None) -> list[Problem]:
        """The warnings this render adds (each kind once per variant; each link once); `size`: the
        HTML part's bytes as sent, with its links signed (the preview's, when not given)."""
        found = self._check(html, subject, unsubscribe_url, member_id, len(html.encode()) if size is None else size)
        fresh = [(kind, p) for kind, p in found if kind not in self._reported]
        self._reported.update(kind for kind, _ in fresh)
        return [p for _, p in fresh]

    def _check(self, html: str, subject: str, unsubscribe_url: str, member_id: str,
               size: int) -> list[tuple[str, Problem]]:
        where = Location(f"{TEMPLATES_DIR}/{self.variant.html_path}", 1)
        problems: list[tuple[str, Problem]] = []
        if size > HTML_LIMIT:
            problems.append(("size", Problem(where, f"the HTML part is {size / 1024:.0f} KB (for {member_id}); "
                                    "Gmail clips messages over 102 KB and hides the rest, unsubscribe "
                                    "link included: keep it under 100 KB")))
        if len(subject) > SUBJECT_LIMIT:
            problems.append(("subject", Problem(Location(where.file, self.variant.subject_line),
                                    f"the subject is {len(subject)} characters (for {member_id}); "
                                    f"inboxes cut it after about {SUBJECT_LIMIT}: \"{subject}\"")))
        found = _urls(html)
        if unsubscribe_url not in {url for url, hidden in found if not hidden}:
            problems.append(("unsubscribe", Problem(where, "no unsubscribe link in the body: add "
                                    "<a href=\"{{ unsubscribe_url }}\">Unsubscribe</a> (a layout's footer "
                                    "is a good place)")))
        for url in dict.fromkeys(url for url, _ in found):  # one warning per place a link is written
            if _ESCAPED_TWICE.search(url):
                where_written = self._locate(url)
                problems.append((f"{where_written}: escaped twice", Problem(
                    where_written, f"the link {url} holds `&amp;` as text (it was escaped twice: `&amp;` "
                    "written in a Jinja string is escaped again when printed); write `&` in Jinja strings, "
                    "`&amp;` only in an href written as HTML")))
            if self.production:
                problems.extend((f"{p.location}: {p.message.partition(' ')[0]}", p)
                                for p in self._link_problems(url))
        return problems

    def _link_problems(self, url: str) -> Iterable[Problem]:
        if url.startswith(self.base_url):
            return
        parts = urlsplit(url)
        if parts.scheme == "http":
            yield Problem(self._locate(url), f"insecure link {url}: use https://")
        if parts.scheme in ("http", "https") and is_test_host(parts.hostname or ""):
            yield Problem(self._locate(url), f"link to a test host in a production program: {url}")

    def _locate(self, url: str) -> Location:
        """The first line, in the variant's files, that holds the whole URL as written; for a URL
        that data completes, where the longest beginning of it is written."""
        parts = urlsplit(url)
        for needle in dict.fromkeys((url, html_escape(url, quote=True))):
            whole = re.compile(re.escape(needle) + r"(?![^\s\"'<>`])")
            for name in self.files:
                for number, text in enumerate(self.sources.get(name, "").splitlines(), start=1):
                    if match := whole.search(text):
                        return Location(f"{TEMPLATES_DIR}/{name}", number, match.start() + 1)
        origin, best, length = f"{parts.scheme}://{parts.netloc}", None, 0
        for name in self.files:
            for number, text in enumerate(self.sources.get(name, "").splitlines(), start=1):
                for match in re.finditer(re.escape(origin), text):
                    shared = len(os.path.commonprefix([text[match.start():], url]))
                    if shared > length:
                        best, length = Location(f"{TEMPLATES_DIR}/{name}", number, match.start() + 1), shared
        return best or Location(f"{TEMPLATES_DIR}/{self.variant.html_path}", 1)


def _urls(document: str) -> list[tuple[str, bool]]:
    """Every URL the email points at (`links.urls_in`): links, images, backgrounds, and those in
    Outlook's conditional comments (True: only there)."""
    try:
        return urls_in(document)
    except (etree.ParserError, ValueError):
        return []
