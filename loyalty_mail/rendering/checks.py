"""`loyalty-mail check` for templates: parse every file, check every variable and attribute path
in every branch against the documented context (`static_check`), render every email in every
locale against sample members, and compare compile-time inlining with per-email inlining.

Errors (the check fails): syntax errors, undefined variables, sandbox violations, a compiled
email whose DOM differs from rendering then inlining. Warnings (the check passes): missing
translations, templates that fall back to per-email inlining, and links whose tracked click URL
would be refused (a URL longer than the tracking store keeps, a token longer than the tracking
service accepts), each with file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import jinja2

from ..errors import LoyaltyMailError, Location, Problem, TemplateError
from ..models import tracking_events_table
from ..program_files import read_program_text
from ..signing import MAX_TOKEN_LENGTH, TokenClaims, TokenSigner
from .catalog import TEMPLATES_DIR, Variant
from .dom import dom_difference
from .links import links_in
from .limits import RenderLimitError
from .lint import HTML_LIMIT, RenderedLint, is_production, lint_files, template_files
from .renderer import _TEXT_URL, PER_EMAIL, PREVIEW_SEND_ID, TEXT_LINKS_FROM, Renderer
from .static_check import check_static, check_untriggered, triggers_by_email
from .syntax import syntax_column, syntax_message

URL_LIMIT = int(getattr(tracking_events_table.c.url.type, "length"))  # what the tracking store keeps
_SIZER = TokenSigner(b"only-measures-token-lengths")  # a token's length does not depend on the key


@dataclass
class TemplateReport:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    rendered: int = 0


def sample_members(renderer: Renderer, locale: str, now: datetime) -> list[dict[str, Any]]:
    """One member per tier, in `locale`, with and without a name; standing near each threshold."""
    settings = renderer.settings
    members: list[dict[str, Any]] = []
    for index, level in enumerate(settings.tiers.levels):
        points = int(level.threshold) + 150
        members.append({
            "member_id": f"SAMPLE{index:03d}", "email": f"sample{index}@example.com",
            "first_name": None if index % 2 else "Lan", "last_name": None if index % 2 else "Trần",
            "locale": locale, "timezone": settings.program.default_timezone,
            "joined_at": now - timedelta(days=366 * (index + 1)),
            "joined_on": (now - timedelta(days=366 * (index + 1))).date(),
            "birthday": date(1990, 2, 28), "points": points, "tier": level.name,
            "total_spend": Decimal(points * 1000), "purchase_count": 3 + index,
            "last_purchase_at": None if index == 0 else now - timedelta(days=40 * index),
            "nps_score": 9, "subscribed": True, "attributes": {},
        })
    return members


def sample_occurrences(renderer: Renderer) -> list[dict[str, Any]]:
    """An occurrence of each kind a flow can trigger, each carrying every occurrence field."""
    names = renderer.settings.tiers.levels
    old, new = names[0].name, names[min(1, len(names) - 1)].name
    base = {"key": "sample", "reason": "sample occurrence", "threshold": 5000, "years": 2,
            "old_tier": old, "new_tier": new, "segment": "sample_segment",
            "points": 1200, "expires_at": "2026-12-31T17:00:00+00:00", "expires_on": "2027-01-01",
            "before": "30 days",
            "event": {"id": "sample", "type": "purchase", "occurred_at": "2026-01-15T09:30:00+00:00",
                      "amount": "1250000", "currency": renderer.settings.program.currency, "points": 1250,
                      "items": [{"sku": "sample", "quantity": 1}], "properties": {"store": "sample"}},
            "tier": new, "review_at": "2026-03-01T00:00:00+00:00", "grace_until": "2026-03-31T00:00:00+00:00",
            "needed": "1500", "measure": "points_earned", "downgrade_to": old,
            "why": "not re-qualified", "to_regain": "1500", "birthday": "2026-05-17", "age": 30,
            "days_before": 0, **_sample_rewards(renderer), "month": "2026-01",
            "period_start": "2026-01-01T00:00:00+07:00", "period_end": "2026-02-01T00:00:00+07:00",
            "earned": 1200, "redeemed": 300, "expired": 0, "expiring": 250,
            "expiring_until": "2026-03-01T00:00:00+07:00", "next_tier": new, "to_next_tier": "800"}
    own = {"tier_at_risk": {"threshold": str(int(names[min(1, len(names) - 1)].threshold))},  # the tier's, as text
           "tier_downgrade": {"old_tier": new, "new_tier": old}}  # down, to the sample member's own tier
    return [{**base, "kind": kind, **own.get(kind, {})}
            for kind in ("signup", "points", "anniversary", "tier_upgrade", "segment_entry", "tier_at_risk",
                         "tier_downgrade", "birthday", "reward_available", "statement", "points_expiring",
                         "confirmation")]


# The occurrence kind each trigger gives (flows/occurrences.py, flows/member_triggers.py), where
# the names differ; a milestone gives `points` (or `anniversary`).
_KIND_OF_TRIGGER = {"welcome": "signup", "milestone": "points", "reengagement": "segment_entry"}
DEFAULT_SAMPLE_KIND = "points"  # a milestone of 5,000 points: for an email no flow sends


def sample_occurrence(renderer: Renderer, email: str) -> dict[str, Any]:
    """The sample occurrence of the trigger of the first flow that sends `email`, as `preview`
    and the studio render it; a milestone of 5,000 points when no flow sends it or its trigger
    has no sample (an `event` trigger's data is `event`, which every sample carries)."""
    triggers = triggers_by_email(renderer.settings).get(email, [])
    kinds = [_KIND_OF_TRIGGER.get(trigger, trigger) for trigger in triggers]
    samples = {occurrence["kind"]: occurrence for occurrence in sample_occurrences(renderer)}
    kind = next((k for k in kinds if k in samples), DEFAULT_SAMPLE_KIND)
    return dict(samples[kind])


def _sample_rewards(renderer: Renderer) -> dict[str, Any]:
    """A reward_available occurrence's fields as the catalogue gives them: a balance of 1,200
    points (or the cheapest reward's cost), which rewards it just reached and affords, and the
    next one. Without a catalogue, a placeholder next reward so that every branch renders."""
    rewards = renderer.settings.rewards
    if not rewards:
        return {"balance": 1200, "newly": [], "affordable": [],
                "next": {"name": "sample_reward", "cost": 2000, "needed": 800}}
    balance = max(1200, rewards[0].cost)
    standing = renderer.settings.reward_standing(balance)
    return {"balance": balance, "newly": standing["affordable"][-1:], **standing}


def check_templates(renderer: Renderer, now: datetime) -> TemplateReport:
    report = TemplateReport()
    _check_syntax(renderer, report)
    if report.errors:
        return report
    report.errors.extend(_check_static(renderer))
    if report.errors:
        return report
    locales = renderer.settings.program.locales
    for email in renderer.catalog.names:
        # a file in a locale outside program.locales is still what members with that locale get
        extra = sorted(set(renderer.catalog.variants[email]) - set(locales))
        for locale in [*locales, *extra]:
            if locale in renderer.catalog.variants[email]:
                _check_variant(renderer, email, locale, now, report)
            else:
                report.warnings.append(_missing_translation(renderer, email, locale))
    for level in renderer.settings.tiers.levels:
        if isinstance(level.perks, dict):
            for locale in locales:
                if locale not in level.perks:
                    report.warnings.append(Problem(Location("config.yaml", 0), f"missing translation: "
                                                   f"tier '{level.name}' has no perks in {locale}"))
    report.errors = list(dict.fromkeys(report.errors))  # the same fault seen from several emails
    report.warnings = list(dict.fromkeys(report.warnings))  # a shared layout's, once
    return report


def missing_translations(renderer: Renderer, email: str) -> list[Problem]:
    """A warning for each of the program's locales `email` has no template in."""
    return [_missing_translation(renderer, email, locale) for locale in renderer.settings.program.locales
            if locale not in renderer.catalog.variants[email]]


def _missing_translation(renderer: Renderer, email: str, locale: str) -> Problem:
    variants = renderer.catalog.variants[email]
    default = renderer.settings.program.default_locale
    fallback_locale = default if default in variants else sorted(variants)[0]
    return Problem(Location(f"{TEMPLATES_DIR}/{email}/", 0),
                   f"missing translation: no {locale}.html, so members with locale {locale} get {fallback_locale}.html")


def check_email(renderer: Renderer, email: str, locale: str, now: datetime) -> TemplateReport:
    """`check` for one email in one locale: the static check of every variable in every branch,
    its files' lint, fallbacks and link lengths, and every sample member rendered with every
    sample occurrence."""
    report = TemplateReport()
    variant = renderer.variant(email, locale)
    root = renderer.catalog.root
    raw = {variant.html_path: read_program_text(root / variant.html_path, root.parent,
                                                f"{TEMPLATES_DIR}/{variant.html_path}", error=TemplateError)}
    report.errors.extend(check_static(renderer.html_env, renderer.settings, [variant], raw))
    _check_variant(renderer, email, locale, now, report)
    report.errors = list(dict.fromkeys(report.errors))
    report.warnings = list(dict.fromkeys(report.warnings))
    return report


def _check_syntax(renderer: Renderer, report: TemplateReport) -> None:
    root = renderer.catalog.root
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".html", ".txt") or not path.is_file():
            continue
        name = path.relative_to(root).as_posix()
        env = renderer.html_env if path.suffix == ".html" else renderer.text_env
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            report.errors.append(Problem(Location(f"{TEMPLATES_DIR}/{name}", exc.lineno or 1,
                                                  syntax_column(env, exc)),
                                         f"syntax error: {syntax_message(env, exc)}"))


def _check_static(renderer: Renderer) -> list[Problem]:
    variants = [v for email in renderer.catalog.names for v in renderer.catalog.variants[email].values()]
    return check_static(renderer.html_env, renderer.settings, variants, _raw_sources(renderer, variants))


def _raw_sources(renderer: Renderer, variants: list[Variant]) -> dict[str, str]:
    root = renderer.catalog.root
    return {v.html_path: read_program_text(root / v.html_path, root.parent, f"{TEMPLATES_DIR}/{v.html_path}",
                                           error=TemplateError) for v in variants}


def untriggered_problems(renderer: Renderer, email: str) -> list[Problem]:
    """What `email` (every locale) needs of its trigger's data: its problems when sent where the
    trigger's data is not in the context (a journey's step after a wait with no email before it)."""
    variants = list(renderer.catalog.variants.get(email, {}).values())
    return check_untriggered(renderer.html_env, variants, _raw_sources(renderer, variants))


def _rendered_lint(renderer: Renderer, variant: Variant) -> RenderedLint:
    env = renderer.html_env
    files = template_files(env, variant.html_path)
    sources = {name: env.loader.get_source(env, name)[0] for name in files}  # type: ignore[union-attr]
    base_url = renderer.settings.tracking.base_url
    return RenderedLint(variant, files, sources, base_url, is_production(base_url))


def _check_variant(renderer: Renderer, email: str, locale: str, now: datetime,
                   report: TemplateReport) -> None:
    try:
        compiled = renderer.compiled(email, locale)
    except LoyaltyMailError as exc:
        report.errors.extend(getattr(exc, "problems", [Problem(None, str(exc))]))
        return
    if compiled.fallback is not None:
        report.warnings.append(Problem(compiled.fallback.location,
                                       f"{PER_EMAIL}: {compiled.fallback.reason}"))
    report.warnings.extend(lint_files(renderer.html_env, compiled.variant))
    lint = _rendered_lint(renderer, compiled.variant)
    unsubscribe_url = renderer.links_for(PREVIEW_SEND_ID, tracked=False).unsubscribe_url
    seen: set[str] = set()
    occurrences = sample_occurrences(renderer)
    for index, member in enumerate(sample_members(renderer, locale, now)):
        for number, occurrence in enumerate(occurrences):
            flow = {"name": "sample_flow"}
            try:
                email_out = renderer.render(email, member, now=now, flow=flow, occurrence=occurrence,
                                            tracked=False, locale=locale)
                # premailer per email is slow: compare one occurrence per sample member.
                reference = None if (index + number) % len(occurrences) else renderer.reference_html(
                    email, member, now=now, flow=flow, occurrence=occurrence, locale=locale)
            except TemplateError as exc:
                for problem in exc.problems:
                    if str(problem) not in seen:
                        seen.add(str(problem))
                        report.errors.append(problem)
                if isinstance(exc, RenderLimitError):
                    return  # every sample would take as long
                continue
            report.rendered += 1
            _check_link_lengths(renderer, compiled.variant.html_path, email_out.html, email_out.text,
                                seen, report)
            report.warnings.extend(lint.check(email_out.html, email_out.subject, unsubscribe_url,
                                              str(member["member_id"]),
                                              _size_as_sent(renderer, email_out.html, email, member, now, flow,
                                                            occurrence, locale)))
            difference = reference and dom_difference(email_out.html, reference)
            if difference and "dom" not in seen:
                seen.add("dom")
                report.errors.append(Problem(
                    Location(f"{TEMPLATES_DIR}/{compiled.variant.html_path}", 1),
                    f"compile-time CSS inlining differs from inlining after rendering for "
                    f"{member['member_id']} ({difference}); please report this as a bug"))


def _size_as_sent(renderer: Renderer, html: str, email: str, member: dict[str, Any], now: datetime,
                  flow: dict[str, Any], occurrence: dict[str, Any], locale: str) -> int:
    """The size in bytes of the HTML part as it is sent: its links signed (a click URL is longer
    than the URL it carries) and the open pixel added. A preview that is well under the limit is
    measured as it is."""
    size = len(html.encode())
    if size <= HTML_LIMIT // 2 or renderer.signer is None:
        return size
    sent = renderer.render(email, member, now=now, flow=flow, occurrence=occurrence, locale=locale,
                           send_id="0" * 32)
    return len(sent.html.encode())


def _check_link_lengths(renderer: Renderer, html_path: str, html: str, text: str, seen: set[str],
                        report: TemplateReport) -> None:
    """Warn once per link whose click URL the tracking service would refuse or could not store."""
    links = [(number, url.strip()) for number, url in links_in(html)]
    links += [(TEXT_LINKS_FROM + n, m.group(0)) for n, m in enumerate(_TEXT_URL.finditer(text))]
    for link, url in links:
        if not url.lower().startswith(("http://", "https://")) or url[:200] in seen:
            continue
        token = _SIZER.sign(TokenClaims("click", "0" * 32, link, url))
        problems = []
        if len(url) > URL_LIMIT:
            problems.append(f"its clicks cannot be stored (URLs of more than {URL_LIMIT} characters "
                            "are kept aside in rejected_hits)")
        if len(token) > MAX_TOKEN_LENGTH:
            problems.append(f"its click URL would be refused (404): the signed token has {len(token)} "
                            f"characters, more than {MAX_TOKEN_LENGTH}")
        if problems:
            seen.add(url[:200])
            report.warnings.append(Problem(
                Location(f"{TEMPLATES_DIR}/{html_path}", _line_of(renderer, html_path, url)),
                f"a link of {len(url)} characters ({url[:60]}...): {'; '.join(problems)}; "
                "shorten it or mark it data-notrack"))


def _line_of(renderer: Renderer, html_path: str, url: str) -> int:
    """The line of the template where the link's beginning is written, else 1."""
    source = (renderer.catalog.root / html_path).read_text(encoding="utf-8")
    at = source.find(url[:40])
    return source.count("\n", 0, at) + 1 if at >= 0 else 1
