"""`loyalty-mail check` for templates: parse every file, render every email in every locale
against sample members, and compare compile-time inlining with per-email inlining.

Errors (the check fails): syntax errors, undefined variables, sandbox violations, a compiled
email whose DOM differs from rendering then inlining. Warnings (the check passes): missing
translations and templates that fall back to per-email inlining, each with file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import jinja2

from ..errors import LoyaltyMailError, Location, Problem, TemplateError
from .catalog import TEMPLATES_DIR
from .dom import dom_difference
from .renderer import Renderer


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
            "event": {"id": "sample", "type": "purchase", "occurred_at": "2026-01-15T09:30:00+00:00",
                      "amount": "1250000", "currency": renderer.settings.program.currency, "points": 1250,
                      "items": [{"sku": "sample", "quantity": 1}], "properties": {"store": "sample"}}}
    return [{**base, "kind": kind} for kind in ("signup", "points", "anniversary", "tier_upgrade",
                                                 "segment_entry")]


def check_templates(renderer: Renderer, now: datetime) -> TemplateReport:
    report = TemplateReport()
    _check_syntax(renderer, report)
    if report.errors:
        return report
    locales = renderer.settings.program.locales
    default = renderer.settings.program.default_locale
    for email in renderer.catalog.names:
        variants = renderer.catalog.variants[email]
        for locale in locales:
            if locale not in variants:
                fallback_locale = default if default in variants else sorted(variants)[0]
                report.warnings.append(Problem(
                    Location(f"{TEMPLATES_DIR}/{email}/", 0),
                    f"missing translation: no {locale}.html, so members with locale {locale} "
                    f"get {fallback_locale}.html"))
                continue
            _check_variant(renderer, email, locale, now, report)
    for level in renderer.settings.tiers.levels:
        if isinstance(level.perks, dict):
            for locale in locales:
                if locale not in level.perks:
                    report.warnings.append(Problem(Location("config.yaml", 0), f"missing translation: "
                                                   f"tier '{level.name}' has no perks in {locale}"))
    report.errors = list(dict.fromkeys(report.errors))  # the same fault seen from several emails
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
            report.errors.append(Problem(Location(f"{TEMPLATES_DIR}/{name}", exc.lineno or 1),
                                         f"syntax error: {exc.message}"))


def _check_variant(renderer: Renderer, email: str, locale: str, now: datetime,
                   report: TemplateReport) -> None:
    try:
        compiled = renderer.compiled(email, locale)
    except LoyaltyMailError as exc:
        report.errors.extend(getattr(exc, "problems", [Problem(None, str(exc))]))
        return
    if compiled.fallback is not None:
        report.warnings.append(Problem(compiled.fallback.location,
                                       f"CSS is inlined per email (slower): {compiled.fallback.reason}"))
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
                continue
            report.rendered += 1
            difference = reference and dom_difference(email_out.html, reference)
            if difference and "dom" not in seen:
                seen.add("dom")
                report.errors.append(Problem(
                    Location(f"{TEMPLATES_DIR}/{compiled.variant.html_path}", 1),
                    f"compile-time CSS inlining differs from inlining after rendering for "
                    f"{member['member_id']} ({difference}); please report this as a bug"))
