"""Template + member -> RenderedEmail, through sandboxed Jinja compiled once per variant.

Compile (once per email and locale): flatten the layout chain, inline CSS with premailer, mark
links for tracking, derive the text body, compile both with Jinja's sandbox and StrictUndefined.
Render (per email): run the compiled templates with the member's context, sign the links.
A variant that cannot be inlined at compile time (see `inlining.NeedsFallback`) is rendered from
its original files and inlined per email, its stylesheet compiled once (`replay`); `fallback` on
the compiled variant says where and why.
"""

from __future__ import annotations

import decimal
import difflib
import html as html_escape
import itertools
import math
from itertools import islice
import re
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import cssselect
import jinja2
import jinja2.meta
import markupsafe

from ..config import Settings
from ..errors import Location, NotFound, Problem, TemplateError, shown
from ..signing import Kind, TokenClaims, TokenSigner, signing_keys
from ..tiers import TierLadder
from .catalog import TEMPLATES_DIR, Catalog, FrontMatterLoader, Variant, load_catalog, outside_templates
from .cascade import Restyler
from .context import ContextBuilder, Helper, Links
from .flatten import Flattener, MissingFile, NotFlattenable, referenced_files
from .origins import Traced
from .inlining import (NeedsFallback, compile_inlined, inline_and_track, inline_css, prune_unmatchable_rules,
                       unreadable_selector)
from .replay import CompiledInliner, fixed_style_texts
from .limits import TEMPLATE_FAULTS, RenderLimitError, RenderLimitExceeded, RenderLimits
from ..message import Address, RenderedEmail
from .text import html_to_text, settle
from . import depth, watchdog
from .sandbox import TemplateSandbox, sandboxed_environment
from .syntax import syntax_column, syntax_message, unknown_message
from .undefined import column_of, missing_name, read_from_none, suggestion

_TEXT_URL = re.compile(r"https?://[^\s<>()\"']*[^\s<>()\"'.,;:!?]")  # a sentence's stop after it is not the URL's
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_STYLE_BLOCK = re.compile(r"<style[^>]*>(.*?)</style>", re.IGNORECASE | re.DOTALL)
PREVIEW_SEND_ID = "preview"
_SEPARATOR = "\x1e"  # between subject and preheader; stripped from both
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_OUTPUT_BLOCK = 256  # output pieces joined between two size checks
_FAULTS: tuple[type[Exception], ...] = (jinja2.TemplateError, *TEMPLATE_FAULTS)


# What a template inlined per email costs, as `check` and `templates list` say it
PER_EMAIL = ("CSS is inlined per email (slower: each rendered email is parsed and styled again, "
             "4-5x the CPU time of an email compiled once)")


@dataclass(frozen=True)
class Fallback:
    """Why a variant is inlined per email: the file and line, and the reason."""

    location: Location
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {PER_EMAIL}: {self.reason}"


@dataclass
class CompiledVariant:
    variant: Variant
    headline: jinja2.Template      # subject and preheader, rendered in one pass
    html: jinja2.Template          # inlined at compile time, or the original file on fallback
    text: jinja2.Template | None   # None: derived from each rendered HTML (fallback only)
    fallback: Fallback | None
    restyler: Restyler | None = None  # rules a loop or condition changes, applied per email
    dynamic: tuple[tuple[str, Location], ...] = ()  # those rules' selectors and places
    links_used: frozenset[str] | None = None  # the link names the templates print (None: unknown)
    inliner: CompiledInliner | None = None  # fallback: the stylesheets, compiled once, for each email


@dataclass
class _Job:
    compiled: CompiledVariant
    context: dict[str, Any]
    tracker: LinkTracker
    links: Links
    where: str


class LinkTracker:
    """Turns a link into a signed click URL for one send (or leaves it, for previews)."""

    def __init__(self, signer: TokenSigner | None, base_url: str, send_id: str,
                 untracked: frozenset[str], click_tracking: bool) -> None:
        self._signer, self._base, self._send_id = signer, base_url, send_id
        self._untracked, self._clicks = untracked, click_tracking and signer is not None
        self._signed: dict[tuple[int, str], str] = {}  # the HTML and text parts share links

    def click_url(self, link: int, url: str) -> str:
        if not self._clicks or url in self._untracked or not url.lower().startswith(("http://", "https://")):
            return url
        key = (link, url)
        if key not in self._signed:
            # _clicks is set only with a signer
            token = self._signer.sign(TokenClaims("click", self._send_id, link, url))  # type: ignore[union-attr]
            self._signed[key] = f"{self._base}/c/{token}"
        return self._signed[key]

    def open_pixel_url(self) -> str:
        # the pixel is added only to tracked emails, which are rendered only with a signer
        return f"{self._base}/o/{self._signer.sign(TokenClaims('open', self._send_id))}.gif"  # type: ignore[union-attr]


@jinja2.pass_context
def _track_link(context: jinja2.runtime.Context, value: str, link: int) -> str:
    """An href as written in the HTML (`?a=1&amp;b=2`) -> the click URL of the decoded URL
    (`?a=1&b=2`), escaped for the HTML part and as it is for the text part: both parts sign the
    same URL. The compiled text part calls it with autoescape on (see `inlining.TRACK_FILTER`),
    so data in the href is escaped there as in the HTML, and decoding once restores it."""
    tracker: LinkTracker = context["_tracker"]
    url = tracker.click_url(link, html_escape.unescape(str(value)).strip())
    if context.environment.autoescape:
        return markupsafe.escape(url)  # escape() returns Markup
    return markupsafe.Markup(url)  # Markup: an autoescape block does not escape it again


@jinja2.pass_context
def _track_value(context: jinja2.runtime.Context, value: Any, link: int) -> str:
    """`href="{{ value }}"`: what `_track_link` gives for that href, without capturing it as a
    block: printed, a str is escaped and `_track_link` decodes it back; markup is decoded once."""
    text = html_escape.unescape(value.__html__()) if hasattr(value, "__html__") else str(value)
    tracker: LinkTracker = context["_tracker"]
    url = tracker.click_url(link, text.strip())
    if context.environment.autoescape:
        return markupsafe.escape(url)
    return markupsafe.Markup(url)


def email_environment(loader: jinja2.BaseLoader | None, autoescape: bool,
                      limits: RenderLimits | None = None) -> TemplateSandbox:
    """The sandbox every email runs in, with the click-tracking filter compiled emails call."""
    env = sandboxed_environment(loader, autoescape, limits)
    env.filters["track_link"] = _track_link
    env.filters["track_value"] = _track_value
    return env


class Renderer:
    """Compiled emails of one program; `render` personalises one for one member."""

    def __init__(self, settings: Settings, catalog: Catalog, *, signer: TokenSigner | None = None,
                 coupon_secret: bytes | None = None) -> None:
        self.settings, self.catalog, self.signer = settings, catalog, signer
        self.ladder = TierLadder.from_settings(settings.tiers)
        loader = FrontMatterLoader(str(catalog.root))
        rendering = settings.rendering
        self.limits = RenderLimits(rendering.timeout.total_seconds(), rendering.max_bytes)
        self.html_env = email_environment(loader, autoescape=True, limits=self.limits)
        self.text_env = email_environment(loader, autoescape=False, limits=self.limits)
        secret = settings.tracking.secret
        self._contexts = ContextBuilder(settings, self.ladder, coupon_secret or (
            signing_keys(secret)[0] if secret else settings.program.name.encode()))
        self._compiled: dict[tuple[str, str], CompiledVariant] = {}
        self._subjects: dict[tuple[str, str, str], jinja2.Template] = {}  # A/B subjects, compiled once
        self._sender = Address(settings.program.sender_email, settings.program.sender_name)
        self._globals = dict(self.html_env.globals)  # range, dict, namespace...: Jinja's defaults

    @classmethod
    def for_program(cls, settings: Settings, *, signer: TokenSigner | None = None) -> Renderer:
        return cls(settings, load_catalog(settings.project_dir / TEMPLATES_DIR), signer=signer)

    def _source(self, name: str) -> str:
        """A template file as Jinja sees it (front matter blanked)."""
        try:
            # html_env is always built with the catalog's loader
            return self.html_env.loader.get_source(self.html_env, name)[0]  # type: ignore[union-attr]
        except jinja2.TemplateNotFound:
            raise NotFound(f"template {TEMPLATES_DIR}/{name} does not exist") from None

    def _exists(self, name: str) -> bool:
        try:
            self._source(name)
        except NotFound:
            return False
        return True

    @cached_property
    def _flattener(self) -> Flattener:
        return Flattener(self._source, self._exists)

    # -- compile -----------------------------------------------------------------------------

    def variant(self, email: str, locale: str | None = None) -> Variant:
        if email not in self.catalog.variants:
            known = ", ".join(self.catalog.names) or "none"
            close = difflib.get_close_matches(email, self.catalog.names, 1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise NotFound(f"no email template {shown(email)} in {TEMPLATES_DIR}/ ({hint}emails: {known})")
        return self.catalog.select(email, locale, self.settings.program.default_locale)

    def compiled(self, email: str, locale: str | None = None) -> CompiledVariant:
        variant = self.variant(email, locale)
        key = (variant.email, variant.locale)
        if key not in self._compiled:
            self.limits.start()  # compiling has a budget of its own, not the first email's
            self._compiled[key] = self._compile(variant)
        return self._compiled[key]

    def _compile(self, variant: Variant) -> CompiledVariant:
        where = f"{TEMPLATES_DIR}/{variant.html_path}"
        headline = self._from_string(self.text_env, _headline(variant.subject, variant.preheader),
                                     where, variant.subject_line, place=lambda inner: _headline_line(variant, inner))
        original = self._load(self.html_env, variant.html_path)
        text_own = self._load(self.text_env, variant.text_path) if variant.text_path else None
        try:
            traced = self._flattener.traced(variant.html_path)
            source = traced.text
            try:
                depth.parse(source)
            except depth.NestedTooDeep as exc:
                raise TemplateError(Problem(self._written_at(variant.html_path, traced, exc.line,
                                                             exc.offset_in(source)), depth.message())) from None
            compiled = compile_inlined(source, text_of=lambda page: html_to_text(page, template=True))
        except MissingFile as exc:
            why = outside_templates(exc.missing) or f"{TEMPLATES_DIR}/{exc.missing} does not exist"
            raise TemplateError(Problem(Location(f"{TEMPLATES_DIR}/{exc.template}", exc.line), why)) from None
        except NotFlattenable as exc:
            fallback = Fallback(Location(f"{TEMPLATES_DIR}/{exc.template}", exc.line), exc.reason)
            return CompiledVariant(variant, headline, original, text_own, fallback, inliner=CompiledInliner())
        except (cssselect.SelectorError, RecursionError) as exc:  # RecursionError: a selector too long
            raise self._unreadable_css(variant, traced, exc) from None
        except NeedsFallback as exc:
            fallback = Fallback(self._written_at(variant.html_path, traced, exc.line, exc.offset), exc.reason)
            pruned = prune_unmatchable_rules(source)
            per_email = original if pruned is None else self._from_string(self.html_env, pruned, where, 1)
            inliner = CompiledInliner()
            inliner.prepare(fixed_style_texts(source if pruned is None else pruned))
            try:
                used = None if text_own else _names_used(self.html_env, source,
                                                         _headline(variant.subject, variant.preheader))
            except jinja2.TemplateSyntaxError:
                used = None  # the flattened source does not parse: sign every link
            return CompiledVariant(variant, headline, per_email, text_own, fallback, links_used=used,
                                   inliner=inliner)
        html = self._from_string(self.html_env, compiled.source, where, 1)
        text = text_own or self._from_string(self.text_env, compiled.text_source, where, 1)
        dynamic = tuple((selector, self._written_at(variant.html_path, traced, line, source.find(selector)))
                        for selector, line in compiled.dynamic)
        used = None if text_own else _names_used(self.html_env, compiled.source, compiled.text_source,
                                                 _headline(variant.subject, variant.preheader))
        return CompiledVariant(variant, headline, html, text, None, compiled.restyler, dynamic, used)

    def _unreadable_css(self, variant: Variant, source: Traced | str,
                        exc: cssselect.SelectorError | RecursionError) -> TemplateError:
        """The error for a stylesheet with a selector premailer cannot evaluate (it stops on it),
        in the flattened source (traced to its files) or in a rendered email."""
        found = unreadable_selector(str(source))
        line = found[1] if found else 1
        what = "a selector"
        if found is not None:
            selector = found[0] if len(found[0]) <= 80 else f"{found[0][:60]}... ({len(found[0]):,} characters)"
            what = f"the selector '{selector}'"
        where = self._written_at(variant.html_path, source, line) if isinstance(source, Traced) \
            else self._locate_in_chain(variant.html_path, source, line)
        why = "it has too many parts: the selector library nests once per part" \
            if isinstance(exc, RecursionError) else str(exc)
        return TemplateError(Problem(where,
                                     f"CSS inlining cannot read {what} ({why}): premailer evaluates each "
                                     "selector between commas as written; fix or remove it, or move the rule "
                                     "into a <style data-premailer=\"ignore\"> block"))

    def _locate_in_chain(self, name: str, flattened: str, line: int, code: str | None = None) -> Location:
        """Map a line of a rendered email back to the file it came from, when it can: the line
        written as it is in a file of the chain, else the first line of a file there that holds
        `code`."""
        wanted = flattened.splitlines()[line - 1].strip() if 0 < line <= flattened.count("\n") + 1 else ""
        chain = [name]
        holding: Location | None = None
        for candidate in chain:
            source = self._source(candidate)
            chain.extend(file for file in referenced_files(source) if file not in chain)
            for number, text in enumerate(source.splitlines(), start=1):
                if wanted and text.strip() == wanted:
                    return Location(f"{TEMPLATES_DIR}/{candidate}", number)
                if code and holding is None and code in text:
                    holding = Location(f"{TEMPLATES_DIR}/{candidate}", number)
        return holding or Location(f"{TEMPLATES_DIR}/{name}", line)

    def _written_at(self, name: str, traced: Traced, line: int, offset: int | None = None) -> Location:
        """The file and line where an offset of the flattened source was written (or, without
        one, the first character of a line of it); the email's file as a whole when unknown."""
        found = None
        if offset is not None and offset >= 0:
            found = self._flattener.location(traced, offset)
        if found is None:
            found = self._flattener.line_location(traced, line)
        if found is None:
            return Location(f"{TEMPLATES_DIR}/{name}", 0)
        return Location(f"{TEMPLATES_DIR}/{found[0]}", found[1])

    def _load(self, env: jinja2.Environment, name: str) -> jinja2.Template:
        try:
            return env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            # the lexer names the file by its path (an unclosed `{% raw %}`), the parser by its name
            shown = exc.name if exc.name and not Path(exc.name).is_absolute() else name
            raise TemplateError(Problem(Location(f"{TEMPLATES_DIR}/{shown}", exc.lineno or 1,
                                                 syntax_column(env, exc)),
                                        f"syntax error: {syntax_message(env, exc)}")) from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(Problem(Location(f"{TEMPLATES_DIR}/{name}", 1),
                                        f"template {exc.name} not found")) from None

    def _headline(self, compiled: CompiledVariant, subject: str | None, where: str) -> jinja2.Template:
        """The subject and preheader template: the email's own, or `subject` (an A/B variant's,
        in the same sandbox) with the email's preheader."""
        if subject is None:
            return compiled.headline
        variant = compiled.variant
        key = (variant.email, variant.locale, subject)
        if key not in self._subjects:
            self._subjects[key] = self._from_string(self.text_env, _headline(subject, variant.preheader),
                                                    f"{where} (variant subject)", 1)
        return self._subjects[key]

    def _part(self, text: str, where: str, line: int) -> jinja2.Template:
        """A subject or preheader as a template of its own."""
        key = ("", "", text)
        if key not in self._subjects:
            self._subjects[key] = self._from_string(self.text_env, text, where, line)
        return self._subjects[key]

    def check_subject(self, subject: str, where: str) -> None:
        """Raise TemplateError (naming `where`) when an A/B variant's subject does not parse."""
        self._from_string(self.text_env, subject, where, 1)

    def _from_string(self, env: jinja2.Environment, source: str, where: str, line: int,
                     place: Callable[[int | None], int] | None = None) -> jinja2.Template:
        """`source` compiled; a syntax error at `line` of `where` (or where `place` puts the
        source's line), else at the source's own line."""
        try:
            return env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            at = place(exc.lineno) if place is not None else line if line > 1 else (exc.lineno or 1)
            raise TemplateError(Problem(Location(where, at), f"syntax error: {syntax_message(env, exc)}")) from None

    # -- render ------------------------------------------------------------------------------

    def links_for(self, send_id: str, *, tracked: bool, used: frozenset[str] | None = None) -> Links:
        """The per-send URLs; with `used` (the names an email's templates print), the others are
        left empty and unsigned. The unsubscribe URL is always signed: it goes in the headers."""
        base = self.settings.tracking.base_url
        if not tracked or self.signer is None:
            return Links(f"{base}/u/preview", f"{base}/p/preview", f"{base}/v/preview", f"{base}/k/preview")
        sign = self.signer.sign

        def url(name: str, path: str, kind: Kind) -> str:
            return f"{base}/{path}/{sign(TokenClaims(kind, send_id))}" if used is None or name in used else ""

        return Links(f"{base}/u/{sign(TokenClaims('unsubscribe', send_id))}",
                     url("preferences_url", "p", "preferences"), url("view_in_browser_url", "v", "view"),
                     url("confirm_url", "k", "confirm"))

    def render(
        self,
        email: str,
        member: Mapping[str, Any],
        *,
        now: datetime,
        send_id: str | None = None,
        flow: Mapping[str, Any] | None = None,
        occurrence: Mapping[str, Any] | None = None,
        tracked: bool = True,
        locale: str | None = None,
        test: bool = False,
        subject: str | None = None,
        open_pixel: bool = True,
    ) -> RenderedEmail:
        """The complete email for one member. `tracked=False` (previews, test sends) signs nothing;
        `open_pixel=False` (the view in the browser) keeps the signed links but adds no pixel.
        Subject, HTML and text together get `rendering.timeout`; compiling the email (once per
        process) does not count against it. `subject` replaces the email's subject (an A/B
        variant's: Jinja, with the same context)."""
        tracked = tracked and self.signer is not None and not test
        send_id = send_id or (PREVIEW_SEND_ID if not tracked else uuid.uuid4().hex)
        job = self._prepare(email, member, now, send_id, flow, occurrence, tracked, locale, subject)
        job.context["tracking"] = job.context["tracking"] and open_pixel
        compiled, context, variant = job.compiled, job.context, job.compiled.variant
        if compiled.fallback is None:
            html = self._run(compiled.html, context, job.where, 0, variant)
            if compiled.restyler is not None:
                html = self._inline_bounded(html, Location(job.where, 1), "rules that a loop changes are "
                                            "applied to each email", compiled.restyler.apply)
            text = self._run(compiled.text, context, job.where, 0, variant) if compiled.text else ""
            text = _track_text(text, job.tracker) if variant.text_path else tidy_text(text)
        else:
            html, text = self._render_per_email(compiled, context, job.tracker, job.where)
        program, tracking = self.settings.program, self.settings.tracking
        return RenderedEmail(
            send_id=send_id,
            sender=self._sender,
            to=Address(str(member["email"]), context["member"]["name"]),
            subject=context["subject"], html=html, text=text, preheader=context["preheader"],
            template=variant.email, locale=variant.locale,
            flow=(flow or {}).get("name"), date=now,
            message_id=f"<{send_id}@{program.sender_email.split('@')[-1]}>",
            unsubscribe_url=job.links.unsubscribe_url if tracked else None,
            unsubscribe_mailto=tracking.unsubscribe_mailto if tracked else None,
            headers={"X-Loyalty-Mail-Test": "yes"} if test else {},
            test=test,
        )

    def reference_html(self, email: str, member: Mapping[str, Any], *, now: datetime,
                       flow: Mapping[str, Any] | None = None,
                       occurrence: Mapping[str, Any] | None = None,
                       locale: str | None = None) -> str:
        """The slow, obviously right way: render the files as written, then run premailer.
        Untracked; `check` and the tests compare the compiled path against it."""
        job = self._prepare(email, member, now, PREVIEW_SEND_ID, flow, occurrence, False, locale)
        original = self._load(self.html_env, job.compiled.variant.html_path)
        self.limits.start()
        rendered = self._run(original, job.context, job.where, 0, job.compiled.variant)
        return self._inline_bounded(rendered, Location(job.where, 1),
                                    "`check` inlines a sample this way to compare it with the compiled email")

    def _prepare(self, email: str, member: Mapping[str, Any], now: datetime, send_id: str,
                 flow: Mapping[str, Any] | None, occurrence: Mapping[str, Any] | None,
                 tracked: bool, locale: str | None, subject: str | None = None) -> _Job:
        compiled = self.compiled(email, locale or member.get("locale"))
        self.limits.start()  # this email's own budget, from here
        variant = compiled.variant
        links = self.links_for(send_id, tracked=tracked, used=compiled.links_used if subject is None else None)
        tracking = self.settings.tracking
        tracker = LinkTracker(self.signer if tracked else None, tracking.base_url, send_id,
                              frozenset({links.unsubscribe_url, links.preferences_url,
                                         links.view_in_browser_url, links.confirm_url}),
                              tracking.click_tracking)
        context = dict(self._globals)
        context.update(self._contexts.build(member_row=member, locale=variant.locale, links=links, now=now,
                                            flow=flow, occurrence=occurrence))
        context["_tracker"] = tracker
        context["tracking"] = tracked and tracking.open_pixel
        context["open_pixel_url"] = Helper(tracker.open_pixel_url)
        where = f"{TEMPLATES_DIR}/{variant.html_path}"
        line = variant.subject_line if subject is None else 1
        place = (lambda inner: _headline_line(variant, inner)) if subject is None else None
        headline = self._run(self._headline(compiled, subject, where), context, where, line, place=place)
        parts = headline.split(_SEPARATOR)
        if len(parts) != 2:  # the data printed holds the separator: each rendered on its own
            parts = [self._run(self._part(text, where, at), context, where, at)
                     for text, at in ((variant.subject if subject is None else subject, line),
                                      (variant.preheader, variant.preheader_line or line))]
        # control characters (a NUL, a bell) have no place in a header or an inbox's line
        context["subject"], context["preheader"] = (" ".join(_CONTROL.sub(" ", part).split()) for part in parts)
        return _Job(compiled, context, tracker, links, where)

    def _render_per_email(self, compiled: CompiledVariant, context: dict[str, Any],
                          tracker: LinkTracker, where: str) -> tuple[str, str]:
        rendered = self._run(compiled.html, context, where, 0, compiled.variant)
        fallback = compiled.fallback
        inliner = compiled.inliner
        # only an email that falls back is inlined per email, and it has its inliner
        assert fallback is not None and inliner is not None
        try:
            finished = self._inline_bounded(
                rendered, fallback.location, f"it is inlined per email because {fallback.reason}",
                lambda page: inline_and_track(page, lambda link, url: tracker.click_url(link, url.strip()), inliner))
        except (cssselect.SelectorError, RecursionError) as exc:  # a <style> printed with data, read only now
            raise self._unreadable_css(compiled.variant, rendered, exc) from None
        except depth.NestedTooDeep as exc:
            raise TemplateError(Problem(Location(f"{TEMPLATES_DIR}/{compiled.variant.html_path}", 0),
                                        f"as rendered (line {exc.line} of the email), {depth.message()}")) from None
        if compiled.text:
            text = _track_text(self._run(compiled.text, context, where, 0, compiled.variant), tracker)
        else:
            text = html_to_text(finished)  # its links are already the tracked ones
        if context["tracking"]:
            pixel = (f'<img src="{html_escape.escape(tracker.open_pixel_url())}" width="1" height="1" '
                     'alt="" style="display:block;border:0;width:1px;height:1px">')
            finished = _BODY_END.sub(lambda m: pixel + m.group(0), finished, count=1)
        return finished, text

    def _inline_bounded(self, rendered: str, location: Location, why: str,
                        inline: Callable[[str], str] = inline_css) -> str:
        """CSS inlined on one rendered email (premailer, or `inline`), within what is left of the
        render's deadline; past it, a RenderLimitError at `location` that says `why` this email is
        inlined as it is rendered."""
        if self.limits.deadline == math.inf:
            return inline(rendered)
        try:
            with watchdog.deadline(self.limits.deadline):
                return inline(rendered)
        except watchdog.Overtime:
            styles = sum(len(block) for block in _STYLE_BLOCK.findall(rendered))
            raise RenderLimitError(Problem(location, (
                f"{self.limits.too_slow()}: inlining CSS per email did not finish, "
                f"with {styles:,} characters of stylesheet in a {len(rendered):,}-character email; {why}"))
            ) from None

    def _run(self, template: jinja2.Template, context: dict[str, Any], where: str, line: int,
             variant: Variant | None = None, place: Callable[[int | None], int] | None = None) -> str:
        """`template` rendered; a fault is located in its file, else at `line` of `where` (or
        where `place` puts the template's own line: the subject's or the preheader's)."""
        try:
            return _render_shared(template, context, self.limits)
        except _FAULTS as exc:
            if place is not None:
                line = place(_source_line(exc))
            location = _error_location(exc) or (Location(where, line) if line else None)
            if location is None and variant is not None:
                location = self._relocate(variant, context) or Location(where, 1)
            error = RenderLimitError if isinstance(exc, RenderLimitExceeded) else TemplateError
            raise error(Problem(location, _describe(exc, context, template.environment))) from None

    def _relocate(self, variant: Variant, context: dict[str, Any]) -> Location | None:
        """Render the original files to find which file and line fail (compiled sources have no
        file name of their own), within a render's limits of its own."""
        self.limits.start()
        try:
            _render_shared(self._load(self.html_env, variant.html_path), dict(context), self.limits)
        except _FAULTS as exc:
            return _error_location(exc)
        return None


_LINK_NAMES = frozenset({"preferences_url", "view_in_browser_url", "confirm_url"})


def _names_used(env: jinja2.Environment, *sources: str) -> frozenset[str]:
    """The per-send link names that self-contained sources (no extends, include or import)
    read, found on Jinja's node tree."""
    used: set[str] = set()
    for source in sources:
        used |= jinja2.meta.find_undeclared_variables(env.parse(source))
    return frozenset(used & _LINK_NAMES)


def _render_shared(template: jinja2.Template, context: dict[str, Any], limits: RenderLimits) -> str:
    """`template.render(context)` without its two copies of the context: the subject, HTML and
    text of one email read the same dict, which already holds the environment's globals. Reading
    is all a template can do with it: assignments go to the render's own Context. The output is
    measured every few hundred pieces, so a template that writes without end stops at
    `max_bytes`."""
    try:
        pieces = template.root_render_func(template.new_context(context, shared=True))
        block = list(islice(pieces, _OUTPUT_BLOCK))
        if len(block) < _OUTPUT_BLOCK:
            return limits.check_output("".join(block))  # most emails: one block
        parts, size = [], 0
        while block:
            part = "".join(block)
            size += len(part)
            limits.check_size(size, "the rendered email")
            parts.append(part)
            block = list(islice(pieces, _OUTPUT_BLOCK))
        return limits.check_output("".join(parts))
    except Exception:
        template.environment.handle_exception()  # re-raises with the template's file and line
        raise  # not reached


_LINE_INDENT = re.compile(r"\n[ \t]+")  # `^[ \t]+` in MULTILINE mode is 5x slower
_BLANK_LINES = re.compile(r"\n\n\n+")


def tidy_text(text: str) -> str:
    """Derived text after rendering: no indentation but its lists' (`text.settle`), at most one
    blank line in a row."""
    if "\n " in text or "\n\t" in text:  # a plain search first: most lines are not indented
        text = _LINE_INDENT.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", settle(text)).strip() + "\n"


TEXT_LINKS_FROM = 1000  # links of an own .txt part are numbered apart from the HTML part's


def _track_text(text: str, tracker: LinkTracker) -> str:
    numbers = itertools.count(TEXT_LINKS_FROM)
    return _TEXT_URL.sub(lambda m: tracker.click_url(next(numbers), m.group(0)), text)


def _headline(subject: str, preheader: str) -> str:
    """The subject and preheader as one template, the preheader on a line of its own (the line
    break is white space, which both lose)."""
    return f"{subject}{_SEPARATOR}\n{preheader}"


def _headline_line(variant: Variant, inner: int | None) -> int:
    """The file's line of line `inner` of `_headline`: the subject's, or the preheader's."""
    if inner is not None and variant.preheader_line and inner > variant.subject.count("\n") + 1:
        return variant.preheader_line
    return variant.subject_line


def _source_line(exc: BaseException) -> int | None:
    """The line, in a template compiled from a string, where `exc` was raised."""
    for frame, lineno in reversed(list(traceback.walk_tb(exc.__traceback__))):
        if frame.f_code.co_filename == "<template>":
            return lineno
    return None


def _error_location(exc: BaseException) -> Location | None:
    if isinstance(exc, jinja2.TemplateSyntaxError) and exc.filename:
        return Location(_display(exc.filename), exc.lineno or 1)
    for frame, lineno in reversed(list(traceback.walk_tb(exc.__traceback__))):
        filename = frame.f_code.co_filename
        if filename.endswith((".html", ".txt")) and Path(filename).exists():
            return Location(_display(filename), lineno, _undefined_column(exc, Path(filename), lineno))
    return None


def _undefined_column(exc: BaseException, path: Path, lineno: int) -> int:
    """The column of the undefined name, or of the unknown filter or test, `exc` is about."""
    name = missing_name(exc) if isinstance(exc, jinja2.UndefinedError) else None
    unknown = _UNKNOWN_AT_RUNTIME.match(exc.message or "") if isinstance(exc, jinja2.TemplateRuntimeError) else None
    if unknown is not None:
        try:
            line = path.read_text(encoding="utf-8", errors="replace").splitlines()[lineno - 1]
        except (OSError, IndexError):
            return 0
        before = r"(?:\||\bfilter)" if unknown.group(1) == "filter" else r"\bis(?:\s+not)?"
        found = re.search(rf"{before}\s*({re.escape(unknown.group(2))})\b", line)
        return found.start(1) + 1 if found else 0
    if name is None:
        return 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    return column_of(lines[lineno - 1], name) if 0 < lineno <= len(lines) else 0


def _display(filename: str) -> str:
    parts = Path(filename).parts
    if TEMPLATES_DIR in parts:
        index = len(parts) - 1 - parts[::-1].index(TEMPLATES_DIR)
        return "/".join(parts[index:])
    return filename


_UNKNOWN_AT_RUNTIME = re.compile(r"^No (filter|test) named '([^']+)'")  # inside a condition, Jinja says so late


def _describe(exc: BaseException, context: Mapping[str, Any] | None = None,
              env: jinja2.Environment | None = None) -> str:
    if isinstance(exc, RenderLimitExceeded):
        return str(exc.message)
    if isinstance(exc, RecursionError):
        return "recursion too deep (a macro that calls itself without end?)"
    if isinstance(exc, MemoryError):
        return "out of memory: the template builds a value too large"
    if isinstance(exc, decimal.InvalidOperation):
        return "a number too large (or not a number) to compute or format"
    if not isinstance(exc, jinja2.TemplateError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, jinja2.UndefinedError):
        name = missing_name(exc)
        if name and read_from_none(exc):
            return (f"undefined variable: '{name}' is read from a value that is none for this member (such as "
                    "tier.next for the highest tier): ask {% if ... %} before reading its fields")
        close = suggestion(name, context) if name and context is not None else None
        if name and close:
            return f"undefined variable: no field '{name}' in this email's data (did you mean {close}?)"
        if name:
            return f"undefined variable: no field '{name}' in this email's data " \
                   "(see \"Template context\" in the README)"
        return f"undefined variable: {exc.message} (see \"Template context\" in the README)"
    if isinstance(exc, jinja2.sandbox.SecurityError):
        return f"not allowed in the template sandbox: {exc.message}"
    if isinstance(exc, jinja2.TemplateNotFound) and " " not in str(exc.name):  # removed since it was compiled
        return f"{TEMPLATES_DIR}/{exc.name} does not exist"
    if env is not None and (unknown := _UNKNOWN_AT_RUNTIME.match(exc.message or "")):
        return unknown_message(env, *unknown.groups())
    return f"{type(exc).__name__}: {exc.message}"

