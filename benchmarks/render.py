"""Rendering speed: complete messages per second, our compiled path against the naive one.

    python benchmarks/render.py                 # 10,000 members, welcome + tier_upgrade + corpus
    python benchmarks/render.py --members 2000 --naive 100 --corpus DIR

Our path: the compiled template (CSS inlined once per template), signed click links and open
pixel, the RFC 5322 bytes. The naive path, on the same members in the same run: render the files
as written, run premailer once on each email, rewrite the links by parsing the HTML with lxml,
build the message with the standard library's EmailMessage. Both run on one core, in this
process, taking turns in ten rounds so that a change in the machine's speed touches both alike.

The example templates, then the public templates corpus (`--corpus DIR`; by default
tests/fixtures/email-templates), ported from Handlebars to Jinja with their
data read from the member's custom attributes. Each group reports its mean (messages over the
total time) and its slowest template.

Last, the per-email path: the welcome email with a framework-sized stylesheet (1,400 rules, as
Foundation for Emails ships) and a `:last-child` rule next to a loop, which is applied to each
rendered email (the other rules inlined once); the same email without that rule, compiled once;
and the naive path. The per-email path may be slower than compile-once, never by orders of
magnitude.

Then the templates that fall back to inlining per email, one per reason (data in a class, in an
id, in a style; a control block that opens a tag in one branch and closes it in another; a
`<style>` inside a condition; a macro called where a context selector styles it differently),
the first with the 1,400-rule framework stylesheet, the others with the layout's own. Each is
rendered to complete messages three ways, taking turns in rounds: premailer per email (the
reference inliner), css-inline per email (when the `css_inline` package is importable; it is not
a dependency) and our path (the stylesheet compiled once, applied to each rendered email:
`rendering/replay.py`), counted in messages per second of this process's CPU time, so that
waiting for a core on a shared machine is left out. The `<style>` in a condition also gets the
rate of compiling each branch once (its gold branch without the condition, compiled once). The
welcome email compiled once is measured in the same rounds, for ratios. Last, the 1,400-rule
email with its `:last-child` rule applied per email and the one compiled once, in CPU time too.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import lxml.html
import premailer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loyalty_mail.config import load_settings  # noqa: E402
from loyalty_mail.rendering import Renderer  # noqa: E402
from loyalty_mail.rendering.dom import dom_difference  # noqa: E402
from loyalty_mail.rendering.cascade import PREMAILER_OPTIONS  # noqa: E402
from loyalty_mail.rendering.inlining import parse_document  # noqa: E402
from loyalty_mail.rendering.text import html_to_text  # noqa: E402
from loyalty_mail.signing import TokenClaims, TokenSigner  # noqa: E402

CORPUS = REPO / "tests" / "fixtures" / "email-templates"
EXAMPLES = ("welcome", "tier_upgrade")
WIDTH = 48  # the template column: corpus file names are long
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
SECRET = "benchmark-secret-0123456789"
FIRST = ["Lan", "Minh", "Hương", "Tuấn", "Thảo", "Anh", "Emma", "Liam", "Olivia", "Noah", None]
LAST = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Smith", "Brown", None]
TIERS = [("member", 0), ("silver", 2000), ("gold", 8000), ("platinum", 25000)]


def members(count: int, seed: int = 11) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        points = int(rng.paretovariate(1.2) * 900)
        tier = max((t for t in TIERS if points >= t[1]), key=lambda t: t[1])[0]
        joined = NOW - timedelta(days=rng.randint(1, 900))
        out.append(dict(
            member_id=f"SV{index:07d}", email=f"member{index}@example.com",
            first_name=rng.choice(FIRST), last_name=rng.choice(LAST),
            locale="vi" if rng.random() < 0.7 else "en", timezone="Asia/Ho_Chi_Minh",
            joined_at=joined, joined_on=joined.date(), birthday=date(1990, 1, 1) + timedelta(days=index % 9000),
            points=points, tier=tier, total_spend=Decimal(points * 1000), purchase_count=rng.randint(1, 40),
            last_purchase_at=NOW - timedelta(days=rng.randint(1, 200)), nps_score=rng.randint(0, 10),
            subscribed=True, attributes={}))
    return out


def occurrence_for(template: str, member: dict[str, object]) -> dict[str, object]:
    if template == "tier_upgrade":
        return {"kind": "tier_upgrade", "key": f"tier:{member['tier']}", "old_tier": "member",
                "new_tier": member["tier"]}
    return {"kind": "signup", "key": "signup"}


def ours(renderer: Renderer, template: str, people: list[dict[str, object]]) -> tuple[float, int]:
    start, size = time.perf_counter(), 0
    for index, member in enumerate(people):
        message = renderer.render(template, member, now=NOW, send_id=f"{index:032x}",
                                  flow={"name": template}, occurrence=occurrence_for(template, member))
        size += len(message.to_bytes())
    return time.perf_counter() - start, size


def naive(renderer: Renderer, template: str, people: list[dict[str, object]]) -> float:
    """Render the original files, premailer each email, rewrite links with lxml, EmailMessage."""
    signer = TokenSigner(SECRET)
    base = renderer.settings.tracking.base_url
    start = time.perf_counter()
    for index, member in enumerate(people):
        send_id = f"{index:032x}"
        html = renderer.reference_html(template, member, now=NOW, flow={"name": template},
                                       occurrence=occurrence_for(template, member))  # premailer ran
        tree = lxml.html.document_fromstring(html)
        for number, anchor in enumerate(tree.iter("a")):
            href = anchor.get("href", "")
            if href.startswith(("http://", "https://")) and "/u/" not in href:
                anchor.set("href", f"{base}/c/{signer.sign(TokenClaims('click', send_id, number, href))}")
        pixel = lxml.html.fragment_fromstring(
            f'<img src="{base}/o/{signer.sign(TokenClaims("open", send_id))}.gif" width="1" height="1">')
        tree.find("body").append(pixel)
        html = lxml.html.tostring(tree, encoding="unicode", doctype="<!DOCTYPE html>")
        message = EmailMessage()
        message["From"] = f"{renderer.settings.program.sender_name} <{renderer.settings.program.sender_email}>"
        message["To"] = str(member["email"])
        message["Subject"] = "subject"
        message.set_content(html_to_text(html))
        message.add_alternative(html, subtype="html")
        message.as_bytes()
    return time.perf_counter() - start


def port_to_jinja(source: str) -> str:
    """Handlebars -> Jinja, the template's data read from the member's custom attributes."""
    def name(path: str) -> str:
        if path == "this" or path.startswith("this."):
            return path
        first, _, rest = path.partition(".")  # a subscript: `items` is also a dict method
        return f"member.attributes['{first}']" + (f".{rest}" if rest else "")

    def test(path: str) -> str:  # a missing field is false, as in Handlebars
        return f"{name(path)} is defined and {name(path)}"

    source = re.sub(r"\{\{#each ([\w.]+)\}\}", lambda m: f"{{% for this in {name(m.group(1))} %}}", source)
    source = source.replace("{{/each}}", "{% endfor %}")
    source = re.sub(r"\{\{#if ([\w.]+)\}\}", lambda m: f"{{% if {test(m.group(1))} %}}", source)
    source = re.sub(r"\{\{else if ([\w.]+)\}\}", lambda m: f"{{% elif {test(m.group(1))} %}}", source)
    source = source.replace("{{else}}", "{% else %}").replace("{{/if}}", "{% endif %}")
    return re.sub(r"\{\{\s*([\w.]+)\s*\}\}", lambda m: f"{{{{ {name(m.group(1))} }}}}", source)


def corpus_data(corpus: Path, path: Path, source: str) -> dict[str, object]:
    """The authors' sample data where they ship it; otherwise every field filled."""
    data_file = corpus / "data" / path.name.replace(".html", "_data.json")
    data: dict[str, object] = json.loads(data_file.read_text()) if data_file.exists() else {}
    for field in re.findall(r"member\.attributes\['(\w+)'\]", source):
        if field not in data:
            data[field] = (f"https://example.com/{field}?utm_source=email&utm_content={field}"
                           if field.endswith("url") else f"{field} sample")
    return data


def corpus_program(corpus: Path, into: Path) -> dict[str, tuple[str, dict[str, object]]]:
    """The example program plus one email per corpus template: {email: (file name, data)}."""
    shutil.copytree(REPO / "templates", into / "templates")
    shutil.copy(REPO / "config.yaml", into / "config.yaml")
    emails = {}
    for index, path in enumerate(sorted(corpus.glob("*.html"))):
        source = port_to_jinja(path.read_text(encoding="utf-8"))
        folder = into / "templates" / f"corpus{index}"
        folder.mkdir()
        (folder / "vi.html").write_text(f'---\nsubject: "{path.stem}"\n---\n{source}', encoding="utf-8")
        emails[f"corpus{index}"] = (path.stem, corpus_data(corpus, path, source))
    return emails


def measure(renderer: Renderer, template: str, people: list[dict[str, object]],
            naive_count: int) -> tuple[float, int, float]:
    """Seconds for ours on `people`, bytes written, seconds for naive on the first `naive_count`."""
    ours(renderer, template, people[:200])  # warm up
    elapsed = naive_elapsed = 0.0
    size = 0
    rounds = 10  # ours and naive take turns, so that both see the same machine (its speed drifts)
    for turn in range(rounds):
        spent, written = ours(renderer, template, people[turn::rounds])
        elapsed, size = elapsed + spent, size + written
        naive_elapsed += naive(renderer, template, people[:naive_count][turn::rounds])
    return elapsed, size, naive_elapsed


def report(group: str, renderer: Renderer, templates: dict[str, str],
           people_of: dict[str, list[dict[str, object]]], naive_count: int) -> None:
    """One line per template, then the group's mean and its slowest template."""
    rates: dict[str, float] = {}
    total_ours = total_naive = 0.0
    for template, label in templates.items():
        people = people_of[template]
        elapsed, size, naive_elapsed = measure(renderer, template, people, naive_count)
        rate, naive_rate = len(people) / elapsed, naive_count / naive_elapsed
        rates[label] = rate
        total_ours += elapsed / len(people)
        total_naive += naive_elapsed / naive_count
        print(f"{label:<{WIDTH}}{len(people):>8}{rate:>10.0f}{size / len(people) / 1024:>8.1f}"
              f"{naive_rate:>10.1f}{rate / naive_rate:>9.1f}x")
    mean, naive_mean = len(templates) / total_ours, len(templates) / total_naive
    print(f"{group + ' (mean)':<{WIDTH}}{'':>8}{mean:>10.0f}{'':>8}{naive_mean:>10.1f}{mean / naive_mean:>9.1f}x")
    slowest = min(rates, key=rates.__getitem__)
    print(f"{group + ' slowest: ' + slowest:<{WIDTH + 8}}{rates[slowest]:>10.0f}")


FRAMEWORK_RULES = 1400


def framework_emails(into: Path) -> dict[str, str]:
    """Two copies of the welcome email with a framework-sized stylesheet: one whose
    `.perk:last-child` rule next to a loop forces per-email inlining, one without it."""
    rules = "\n".join(f".fw-row .fw-col-{i % 12}.fw-{i} td.fw-cell-{i % 40} {{ padding: {i % 20}px; "
                       f"color: #{(i * 2654435761) % 0xFFFFFF:06x} }}" for i in range(FRAMEWORK_RULES))
    welcome = (REPO / "templates" / "welcome" / "vi.html").read_text(encoding="utf-8")
    perks = ('<ul class="perks">{% for perk in tier.perks %}<li class="perk">{{ perk }}</li>{% endfor %}</ul>')
    emails = {}
    for email, extra in (("framework_per_email", "\n.perk:last-child { border-bottom: 0 }"),
                         ("framework_once", "")):
        style = f"<style>{rules}\n.perk {{ border-bottom: 1px solid #ddd }}{extra}</style>"
        folder = into / "templates" / email
        folder.mkdir(parents=True)
        (folder / "vi.html").write_text(
            welcome.replace("{% block content %}", "{% block content %}" + style + perks, 1), encoding="utf-8")
        emails[email] = f"welcome + {FRAMEWORK_RULES} rules, " + ("per email" if extra else "compiled once")
    return emails


FRAMEWORK_SHEET = "\n".join(
    f".fw-row .fw-col-{i % 12}.fw-{i} td.fw-cell-{i % 40} {{ padding: {i % 20}px; "
    f"color: #{(i * 2654435761) % 0xFFFFFF:06x} }}" for i in range(FRAMEWORK_RULES))

# One template per reason to fall back: (email, label, style put in the content, markup).
FALLBACKS = (
    ("fallback_class", f"data in a class, {FRAMEWORK_RULES:,} rules",
     f"<style>{FRAMEWORK_SHEET}\n.tier-gold {{ color: #b8860b }} .tier-silver {{ color: #777 }}</style>",
     '<p class="copy tier-{{ member.tier }}">{{ tier.label }}</p>'),
    ("fallback_id", "data in an id", "<style>#m-SV0000001 { font-weight: bold } p#intro { margin: 0 }</style>",
     '<p id="m-{{ member.member_id }}" class="copy">{{ member.member_id }}</p>'),
    ("fallback_style", "data in a style", "<style>.bar { height: 8px; background-color: #c8102e }</style>",
     '<table role="presentation" width="100%"><tr><td class="bar" '
     'style="width: {{ [member.points // 100, 100] | min }}%"></td><td></td></tr></table>'),
    ("fallback_uneven", "uneven control blocks", "<style>.vip { border: 2px solid #b8860b; padding: 8px }</style>",
     '{% if member.points > 8000 %}<div class="vip">{% endif %}<p class="copy">{{ tier.label }}</p>'
     '{% if member.points > 8000 %}</div>{% endif %}'),
    ("fallback_style_if", "<style> inside a condition", "",
     "{% if member.tier == 'gold' %}<style>.stat { color: #b8860b } .copy { font-size: 17px }</style>{% endif %}"
     '<p class="copy">{{ tier.label }}</p>'),
    ("fallback_macro", "macro call sites", "<style>.box .v { color: #c8102e } .v { font-weight: bold }</style>",
     '{% macro cell(v) %}<span class="v">{{ v }}</span>{% endmacro %}'
     '<div class="box">{{ cell(member.points) }}</div><p>{{ cell(member.tier) }}</p>'),
)


def fallback_emails(into: Path) -> dict[str, str]:
    """The welcome email with each reason to fall back added to its content, and, for the
    `<style>` in a condition, the same email with the condition always true (one branch)."""
    welcome = (REPO / "templates" / "welcome" / "vi.html").read_text(encoding="utf-8")
    emails = {}
    for email, label, style, markup in FALLBACKS:
        contents = {email: style + markup}
        if "<style>" in markup:  # the gold members' branch, as compiling per branch would compile it
            contents[email + "_branch"] = markup.replace("{% if member.tier == 'gold' %}", "").replace(
                "{% endif %}", "", 1)
        for name, content in contents.items():
            folder = into / "templates" / name
            folder.mkdir(parents=True)
            (folder / "vi.html").write_text(
                welcome.replace("{% block content %}", "{% block content %}" + content, 1), encoding="utf-8")
        emails[email] = label
    return emails


class PremailerPerEmail:
    """premailer on each rendered email, where our path applies the compiled stylesheet."""

    def transform(self, document: str) -> tuple[Any, Any]:
        _, page, root = parse_document(document)
        premailer.Premailer(page, **PREMAILER_OPTIONS).transform()
        return page, root


class CssInlinePerEmail:
    """css-inline (Rust) on each rendered email, parsed again for the links."""

    def __init__(self, module: Any) -> None:
        self._inliner = module.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)

    def transform(self, document: str) -> tuple[Any, Any]:
        _, page, root = parse_document(self._inliner.inline(document))
        return page, root


def cpu_seconds(render_one: Callable[[int, dict[str, object]], None], people: list[dict[str, object]]) -> float:
    """This process's CPU time for rendering each of `people` to a complete message: on a
    shared machine, time spent waiting for a core is not counted."""
    gc.collect()  # the previous way's garbage is not collected on this one's time
    start = time.process_time()
    for index, member in enumerate(people):
        render_one(index, member)
    return time.process_time() - start


def complete_message(renderer: Renderer, email: str) -> Callable[[int, dict[str, object]], None]:
    """Render one member's email (a variant of welcome) to the bytes of a complete message."""
    def one(index: int, member: dict[str, object]) -> None:
        renderer.render(email, member, now=NOW, send_id=f"{index:032x}", flow={"name": email},
                        occurrence=occurrence_for("welcome", member)).to_bytes()
    return one


def applied_report(renderer: Renderer, framework: dict[str, str], people: list[dict[str, object]]) -> None:
    """Messages per CPU second for the 1,400-rule email whose `:last-child` rule next to a loop
    is applied to each email, and the same email without it (compiled once), taking turns."""
    print("a rule a loop changes, applied per email (compiled once otherwise), messages per CPU second")
    rounds = 5
    spent = dict.fromkeys(framework, 0.0)
    for email in framework:
        cpu_seconds(complete_message(renderer, email), people[:50])  # compiled and warm
    for turn in range(rounds):
        for email in framework:
            spent[email] += cpu_seconds(complete_message(renderer, email), people[turn::rounds])
    for email, label in framework.items():
        print(f"{label:<{WIDTH}}{len(people) / spent[email]:>10.0f}")


def fallback_report(renderer: Renderer, emails: dict[str, str], people: list[dict[str, object]],
                    slow_count: int) -> None:
    """Messages per CPU second for premailer, css-inline and our path on each fallback
    template, and the welcome email compiled once, taking turns in rounds."""
    try:
        import css_inline  # type: ignore[import-not-found]
    except ImportError:
        css_inline = None
    print("per email (fallback), messages per CPU second; `same DOM`: as render, then premailer")
    print(f"{'template':<{WIDTH}}{'premailer':>10}{'css-inline':>11}{'ours':>7}{'welcome':>8}"
          f"{'/prem.':>8}{'/welcome':>9}{'same DOM':>9}")

    def message(email: str) -> Callable[[int, dict[str, object]], None]:
        return complete_message(renderer, email)

    rounds = 5
    cpu_seconds(message("welcome"), people[:50])  # compiled and warm
    for email, label in emails.items():
        compiled = renderer.compiled(email, "vi")
        assert compiled.fallback is not None, email
        ways: dict[str, Any] = {"premailer": PremailerPerEmail(), "ours": compiled.inliner}
        if css_inline is not None:
            ways["css-inline"] = CssInlinePerEmail(css_inline)
        same = {}
        for way, inliner in ways.items():  # each way's email against "render, then premailer"
            compiled.inliner = inliner
            html = renderer.render(email, people[0], now=NOW, tracked=False,
                                   occurrence=occurrence_for("welcome", people[0])).html
            reference = renderer.reference_html(email, people[0], now=NOW,
                                                occurrence=occurrence_for("welcome", people[0]))
            same[way] = "yes" if dom_difference(html, reference) is None else "no"
        counts = {"premailer": 3 if "rules" in label else slow_count, "css-inline": len(people), "ours": len(people)}
        spent = dict.fromkeys([*ways, "welcome"], 0.0)
        done = dict.fromkeys([*ways, "welcome"], 0)
        for turn in range(rounds):
            for way, inliner in ways.items():
                compiled.inliner = inliner
                share = people[:counts[way]][turn::rounds]
                spent[way] += cpu_seconds(message(email), share)
                done[way] += len(share)
            share = people[turn::rounds]
            spent["welcome"] += cpu_seconds(message("welcome"), share)
            done["welcome"] += len(share)
        compiled.inliner = ways["ours"]
        rates = {way: done[way] / spent[way] for way in spent}
        css = f"{rates['css-inline']:>11.0f}" if "css-inline" in rates else f"{'-':>11}"
        print(f"{label:<{WIDTH}}{rates['premailer']:>10.1f}{css}{rates['ours']:>7.0f}{rates['welcome']:>8.0f}"
              f"{rates['ours'] / rates['premailer']:>7.1f}x{rates['ours'] / rates['welcome']:>9.2f}"
              f"{same['ours']:>9}" + (f"  (css-inline: {same['css-inline']})" if "css-inline" in same else ""))
        branch = email + "_branch"
        if branch in renderer.catalog.variants:
            assert renderer.compiled(branch, "vi").fallback is None
            cpu_seconds(message(branch), people[:50])
            print(f"{'  each branch compiled once (the gold branch)':<{WIDTH}}{'':>21}"
                  f"{len(people) / cpu_seconds(message(branch), people):>7.0f}")


def other_sections(renderer: Renderer, emails: dict[str, tuple[str, dict[str, object]]], framework: dict[str, str],
                   people: list[dict[str, object]], args: argparse.Namespace) -> None:
    """The example templates, the corpus and the framework-sized stylesheet."""
    start = time.perf_counter()
    variants = [(template, locale) for template in EXAMPLES for locale in ("vi", "en")]
    variants += [(email, "vi") for email in emails]
    for template, locale in variants:
        renderer.compiled(template, locale)
    print(f"compile {len(variants)} variants: {time.perf_counter() - start:.2f} s (once per process)")
    fallbacks = [emails[e][0] for e in emails if renderer.compiled(e, "vi").fallback]
    if fallbacks:
        print(f"inlined per email (fallback): {', '.join(fallbacks)}")
    print(f"{'template':<{WIDTH}}{'emails':>8}{'ours/s':>10}{'KB/msg':>8}{'naive/s':>10}{'speed-up':>10}")
    report("examples", renderer, {t: t for t in EXAMPLES}, {t: people for t in EXAMPLES}, args.naive)
    if emails:
        with_data = {email: [{**member, "attributes": data} for member in people]
                     for email, (_, data) in emails.items()}
        report("corpus", renderer, {email: name for email, (name, _) in emails.items()}, with_data,
               args.naive)
    compiled = renderer.compiled("framework_per_email", "vi")
    if compiled.fallback is not None:
        print(f"per email because: {compiled.fallback}")
    else:
        print("applied per email: " + ", ".join(f"'{rule}' ({at})" for rule, at in compiled.dynamic))
    report("framework", renderer, framework, {e: people[:max(args.members // 10, 200)] for e in framework},
           max(args.naive // 10, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--naive", type=int, default=300, help="emails per template on the naive path")
    parser.add_argument("--fallback-only", action="store_true",
                        help="only the templates inlined per email (and the welcome email, for ratios)")
    parser.add_argument("--corpus", type=Path, default=CORPUS if CORPUS.is_dir() else None,
                        help="a folder of public HTML email templates (default: the public templates in tests/fixtures)")
    args = parser.parse_args()
    people = members(args.members)
    with tempfile.TemporaryDirectory() as scratch:
        emails = corpus_program(args.corpus, Path(scratch)) if args.corpus else {}
        if not emails:
            shutil.copytree(REPO / "templates", Path(scratch) / "templates")
            shutil.copy(REPO / "config.yaml", Path(scratch) / "config.yaml")
        framework = framework_emails(Path(scratch))
        per_email = fallback_emails(Path(scratch))
        project = Path(scratch)
        settings = load_settings(project, environ={"LOYALTY_MAIL_SECRET": SECRET})
        renderer = Renderer.for_program(settings, signer=TokenSigner(SECRET))
        # premailer on the 1,400-rule email takes seconds an email: past the 2 s rendering.timeout
        renderer.limits.timeout = 600.0
        if not args.fallback_only:
            other_sections(renderer, emails, framework, people, args)
        start = time.perf_counter()
        for email in per_email:
            renderer.compiled(email, "vi")
        print(f"compile {len(per_email)} templates inlined per email: {time.perf_counter() - start:.2f} s")
        fallback_report(renderer, per_email, people[:max(args.members // 5, 200)], max(args.naive // 5, 10))
        applied_report(renderer, framework, people[:max(args.members // 5, 200)])


if __name__ == "__main__":
    main()
