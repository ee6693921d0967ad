"""The emails page: every email in every locale, rendered as a member (or the sample member) gets
it, with what `check` says about it. A template that does not load or render becomes its
problems (file:line), shown where the preview would be."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
import sqlalchemy as sa

from ..errors import LoyaltyMailError, NotFound, Problem, shown
from ..members import member_profile
from ..message import RenderedEmail
from ..rendering import Fallback
from ..rendering.checks import check_email, missing_translations, sample_occurrence
from ..trial_send import sample_member_for
from .program import ProgramState

PREVIEW_FLOW = {"name": "preview"}
CHANGED = Problem(None, "a template file changed while it was read (renamed or removed?): the page reloads "
                        "with the files as they are now")


@dataclass(frozen=True)
class EmailEntry:
    email: str
    locale: str
    subject: str


@dataclass
class EmailPreview:
    """One email in one locale, for one member: the message, or why there is none."""

    email: str
    locale: str
    member: Mapping[str, Any] | None = None
    rendered: RenderedEmail | None = None
    inlining: str = ""
    problems: list[Problem] = field(default_factory=list)
    notice: str | None = None  # the member asked for is not there
    errors: list[Problem] = field(default_factory=list)      # from `check`, over every sample member
    warnings: list[Problem] = field(default_factory=list)


def email_list(state: ProgramState) -> tuple[list[EmailEntry], list[Problem]]:
    """Every email x locale of the program, or the problems that stop the templates loading."""
    try:
        catalog = state.renderer().catalog
    except LoyaltyMailError as exc:
        return [], _problems(exc)
    return [EmailEntry(email, locale, variant.subject) for email in catalog.names
            for locale, variant in sorted(catalog.variants[email].items())], []


def preview(state: ProgramState, engine: sa.Engine, email: str, locale: str, member_id: str | None,
            now: datetime, *, check: bool = True) -> EmailPreview:
    """Render `email` in `locale` for `member_id` (or the sample member), untracked, and (with
    `check`) run `check` on it."""
    result = EmailPreview(email, locale)
    try:
        renderer = state.renderer()
        if member_id:
            try:
                with engine.connect() as connection:
                    result.member = member_profile(connection, member_id, recent=0).member
            except NotFound:
                result.notice = f"No such member: no member with id {shown(member_id)}. This is the sample member's."
        if result.member is None:
            result.member = sample_member_for(renderer, email, locale, now)
        compiled = renderer.compiled(email, locale)
        result.inlining = describe_inlining(compiled.fallback)
        result.rendered = renderer.render(email, result.member, now=now, tracked=False, locale=locale,
                                          flow=PREVIEW_FLOW, occurrence=sample_occurrence(renderer, email))
    except LoyaltyMailError as exc:
        result.problems = _problems(exc)
    except (jinja2.TemplateNotFound, OSError):  # removed or renamed since the templates were loaded
        result.problems = [CHANGED]
        return result
    if not check or (result.problems and result.member is None):
        return result
    try:  # after a failed render too: the static check names the column, and suggests a name
        report = check_email(state.renderer(), email, locale, now)
    except LoyaltyMailError as exc:  # such as a file the cached compiled email was made from, now gone
        result.problems = result.problems or _problems(exc)
        return result
    except (jinja2.TemplateNotFound, OSError):
        result.problems = [*result.problems, CHANGED]
        return result
    result.problems, result.errors = _each_once(result.problems, report.errors)
    result.warnings = [*missing_translations(state.renderer(), email), *report.warnings]  # as `check` lists them
    return result


def _each_once(problems: list[Problem], errors: list[Problem]) -> tuple[list[Problem], list[Problem]]:
    """Each fault once. An undefined variable is found by the static check (with its column) and
    again by rendering (the line only): the static finding stands for both. What is shown in place
    of the preview is not repeated among `check`'s errors."""
    def twin_of(p: Problem) -> Problem | None:
        """The static finding (with its column) on the line of a rendered one (without), with the
        same message or both about an undefined variable."""
        if p.location is None or p.location.column:
            return None
        return next((e for e in errors if e.location and e.location.column
                     and (e.location.file, e.location.line) == (p.location.file, p.location.line)
                     and (e.message == p.message or e.message.startswith("undefined variable")
                          and p.message.startswith("undefined variable"))), None)

    shown = [twin_of(p) or p for p in problems]
    return list(dict.fromkeys(shown)), [e for e in errors if e not in shown and twin_of(e) is None]


def describe_inlining(fallback: Fallback | None) -> str:
    if fallback is None:
        return ("Compiled once: premailer moved the <style> rules onto the elements when the template "
                "was compiled, so each email only fills in its values.")
    return (f"Per email (slower): the stylesheet, compiled once, is applied to every rendered email, which is "
            f"parsed and written again, because of {fallback.location}: {fallback.reason}.")


def _problems(exc: LoyaltyMailError) -> list[Problem]:
    return list(getattr(exc, "problems", None) or [Problem(None, str(exc))])
