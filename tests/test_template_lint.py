"""`check` warnings a marketer needs, `check --strict`, and `preview`'s sample member, locale and
`--set` checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from loyalty_mail.cli import cli
from loyalty_mail.errors import Location, Problem
from loyalty_mail.rendering.lint import is_production

ROOT = Path(__file__).resolve().parents[1]
SECRET = "k3J9xQ2mV7pL0wZ8rT5yB1nC6dF4gH2j"
LONG_SUBJECT = "Lan, your exclusive members-only weekend sale starts now with double points on everything"


def program(tmp_path: Path, files: dict[str, str], *, base_url: str = "https://t.senvang.vn") -> Path:
    """The example program served from `base_url`, its links on senvang.vn, plus these files."""
    target = tmp_path / "program"
    shutil.copytree(ROOT / "templates", target / "templates")
    shutil.copytree(ROOT / "segments", target / "segments")
    config = (ROOT / "config.yaml").read_text(encoding="utf-8")
    (target / "config.yaml").write_text(config.replace("https://t.senvang.example", base_url), encoding="utf-8")
    for path in (target / "templates").rglob("*.html"):
        path.write_text(path.read_text(encoding="utf-8").replace("senvang.example", "senvang.vn"), encoding="utf-8")
    for name, text in files.items():
        path = target / "templates" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def invoke(target: Path, *args: str):
    return CliRunner().invoke(cli, ["--project", str(target), *args], catch_exceptions=False,
                              env={"LOYALTY_MAIL_SECRET": SECRET})


PROMO = (f'---\nsubject: "{LONG_SUBJECT}"\n---\n'
         '{% extends "_layouts/vi.html" %}\n{% block content %}\n'
         '<img src="https://cdn.senvang.vn/sale.png">\n'
         '<p><a href="http://senvang.vn/sale">Sale</a> <a href="https://localhost:8000/try">Try</a></p>\n'
         '<p>{{ member.first_name | safe }}</p>\n'
         '{% endblock %}\n')
BARE = '---\nsubject: "Hi"\npreheader: "A note"\n---\n<html><body><p>' + "x" * 105_000 + '</p></body></html>\n'

EXPECTED_WARNINGS = [
    "warning: templates/bare/vi.html:1: the HTML part is 103 KB (for SAMPLE000); Gmail clips messages over "
    "102 KB and hides the rest, unsubscribe link included: keep it under 100 KB",
    "warning: templates/bare/vi.html:1: no unsubscribe link in the body: add "
    "<a href=\"{{ unsubscribe_url }}\">Unsubscribe</a> (a layout's footer is a good place)",
    "warning: templates/promo/vi.html:8: CSS is inlined per email (slower: each rendered email is parsed and "
    "styled again, 4-5x the CPU time of an email compiled once): `| safe` prints markup, whose elements only "
    "exist after rendering, so only then can CSS rules style them",
    "warning: templates/promo/vi.html:2: no preheader: add `preheader:` to the front matter (inboxes show "
    "it after the subject; without it they show the first text of the body)",
    "warning: templates/promo/vi.html:6: <img> without alt: add alt=\"...\" (a description, or alt=\"\" for "
    "decoration); many clients block images and show the alt text instead",
    "warning: templates/promo/vi.html:8:27: `| safe` on member data prints it unescaped: a name like "
    "<b>Lan</b> becomes markup; remove `| safe`",
    f"warning: templates/promo/vi.html:2: the subject is {len(LONG_SUBJECT)} characters (for SAMPLE000); "
    f"inboxes cut it after about 80: \"{LONG_SUBJECT}\"",
    "warning: templates/promo/vi.html:7:13: insecure link http://senvang.vn/sale: use https://",
    "warning: templates/promo/vi.html:7:55: link to a test host in a production program: "
    "https://localhost:8000/try",
    "warning: templates/promo/: missing translation: no en.html, so members with locale en get vi.html",
]


def test_check_warns_about_what_marketers_need_and_strict_makes_it_fail(tmp_path):
    target = program(tmp_path, {"promo/vi.html": PROMO, "bare/vi.html": BARE, "bare/en.html": BARE})
    result = invoke(target, "check")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: templates/")]
    assert warnings == EXPECTED_WARNINGS[:2] + [w.replace("bare/vi", "bare/en") for w in EXPECTED_WARNINGS[:2]] \
        + EXPECTED_WARNINGS[2:]
    assert "12 warnings)" in result.stdout
    strict = invoke(target, "check", "--strict")
    assert strict.exit_code == 1
    assert [line for line in strict.stderr.splitlines() if line.startswith("warning: templates/")] == warnings
    assert strict.stderr.splitlines()[-1] == f"Error: {len(warnings)} warnings (--strict makes warnings errors)"
    assert strict.stderr.count("Error:") == 1


def test_a_warning_about_a_whole_file_or_folder_has_no_line():
    assert str(Problem(Location("templates/promo/", 0), "missing translation")) == "templates/promo/: missing translation"
    assert str(Problem(Location("config.yaml", 0), "x")) == "config.yaml: x"
    assert str(Problem(Location("config.yaml", 3), "x")) == "config.yaml:3: x"


def test_the_example_program_passes_strict():
    result = CliRunner().invoke(cli, ["--project", str(ROOT), "check", "--strict"], catch_exceptions=False,
                                env={"LOYALTY_MAIL_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    assert "0 warnings)" in result.stdout


def test_links_to_test_hosts_are_allowed_until_the_program_is_in_production(tmp_path):
    target = program(tmp_path, {"promo/vi.html": PROMO.replace("| safe", "")}, base_url="https://t.senvang.example")
    result = invoke(target, "check")
    assert result.exit_code == 0
    assert "insecure link" not in result.stderr and "test host" not in result.stderr


@pytest.mark.parametrize(("url", "production"), [
    ("https://t.senvang.vn", True), ("https://mail.example.com.vn", True),
    ("http://127.0.0.1:8025", False), ("http://localhost:8025", False), ("https://t.senvang.example", False),
    ("https://example.com", False), ("https://t.shop.test", False), ("http://[::1]:8025", False),
])
def test_production_means_a_public_tracking_host(url, production):
    assert is_production(url) is production


# -- preview ------------------------------------------------------------------------------

AT = "2026-11-23T10:00:00+07:00"


def preview(*args: str):
    return CliRunner().invoke(cli, ["--project", str(ROOT), "--database", "sqlite:////nonexistent/dir/x.db",
                                    "preview", *args, "--at", AT], catch_exceptions=False)


def test_preview_sample_renders_without_a_database():
    result = preview("welcome", "--sample", "--locale", "en", "--format", "text")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Subject: Welcome to Sen Vàng Rewards, Lan!")
    assert "Your member code: SAMPLE000." in result.stdout


def test_preview_refuses_an_unknown_locale_or_set_key_and_needs_one_member():
    locale = preview("welcome", "--sample", "--locale", "fr")
    assert locale.exit_code == 1
    assert "Invalid value for --locale: unknown locale 'fr' (program.locales: vi, en)" in locale.stderr
    key = preview("milestone", "--sample", "--set", "foo=bar")
    assert key.exit_code == 1
    assert ("Invalid value for --set: unknown occurrence field 'foo' (fields: affordable, age, balance, before, "
            "birthday, campaign, days_before, downgrade_to, earned, entry, expired, expires_at, expires_on, expiring, "
            "expiring_until, grace_until, "
            "key, kind, measure, month, needed, new_tier, newly, next, next_tier, old_tier, period_end, period_start, "
            "points, redeemed, review_at, segment, threshold, tier, to_next_tier, to_regain, topic, why, years)") in key.stderr
    kind = preview("milestone", "--sample", "--set", "kind=holiday")
    assert kind.exit_code == 1
    assert ("unknown kind 'holiday' (kinds: signup, points, anniversary, tier_upgrade, segment_entry, tier_at_risk, "
            "tier_downgrade, birthday, reward_available, statement, points_expiring, confirmation)"
            in kind.stderr)
    neither = preview("welcome")
    assert neither.exit_code == 1 and "give either --member ID or --sample" in neither.stderr


def test_preview_sample_rewards_come_from_the_catalogue():
    result = preview("reward_available", "--sample", "--locale", "en", "--format", "text")
    assert result.exit_code == 0, result.output
    assert "With 1,200 points you can now redeem A free coffee." in result.stdout
    assert "Next up: 100,000 VND voucher, only 800 points away." in result.stdout


def test_preview_set_values_are_typed_and_rewards_follow_the_balance():
    richer = preview("reward_available", "--sample", "--locale", "en", "--format", "text", "--set", "balance=12000")
    assert richer.exit_code == 0, richer.output
    assert "\n\n- A free coffee\n- 100,000 VND voucher\n- A spa day for two\n\n" in richer.stdout
    assert "Next up" not in richer.stdout
    listed = preview("reward_available", "--sample", "--locale", "en", "--format", "text",
                     "--set", "affordable=coffee,spa_day", "--set", "next=voucher_100k")
    assert listed.exit_code == 0, listed.output
    assert "\n\n- A free coffee\n- A spa day for two\n\n" in listed.stdout
    assert "Next up: 100,000 VND voucher, only 800 points away." in listed.stdout
    for value, message in [("balance=lots", "balance: 'lots' is not a whole number"),
                           ("years=2.5", "years: '2.5' is not a whole number"),
                           ("affordable=coffee,caviar",
                            "affordable: unknown reward 'caviar' (rewards: coffee, voucher_100k, spa_day)"),
                           ("next=caviar", "next: unknown reward 'caviar' (rewards: coffee, voucher_100k, spa_day)"),
                           ("threshold=-5", "threshold: '-5' is below 0 (a whole number, 0 or more)"),
                           ("new_tier=diamond", "new_tier: unknown tier 'diamond' (tiers: member, silver, gold, platinum)"),
                           ("next_tier=diamond",
                            "next_tier: unknown tier 'diamond' (tiers: member, silver, gold, platinum, or none at the top)"),
                           ("measure=visits", "measure: 'visits' is not a measure (measures: spend, points_earned)"),
                           ("month=2026-13", "month: '2026-13' is not a month written YYYY-MM (e.g. 2026-11)")]:
        wrong = preview("reward_available", "--sample", "--set", value)
        assert wrong.exit_code == 1, value
        assert f"Invalid value for --set: {message}" in wrong.stderr, wrong.stderr


def test_preview_warns_when_years_contradicts_the_join_date():
    wrong = preview("milestone", "--sample", "--locale", "en", "--format", "text",
                    "--set", "kind=anniversary", "--set", "years=3")
    assert wrong.exit_code == 0
    assert wrong.stderr == "warning: --set years=3, but SAMPLE000 joined on 2025-11-22: 1 year on 2026-11-23\n"
    assert wrong.stdout.startswith("Subject: Happy 3-year anniversary, Lan!")
    right = preview("milestone", "--sample", "--set", "kind=anniversary", "--set", "years=1")
    assert right.exit_code == 0 and right.stderr == ""


def test_the_size_warning_measures_the_html_part_as_sent_with_its_links_signed(tmp_path):
    # 94 KB as previewed; each of the 100 links grows by about 130 bytes once signed for the send
    links = "".join(f'<p><a href="https://senvang.vn/p/{n}?utm_source=email">Item {n}</a></p>' for n in range(100))
    body = ('---\nsubject: "Hi"\npreheader: "A note"\n---\n<html><body><p>' + "x" * 88_000 + "</p>" + links
            + '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>\n')
    result = invoke(program(tmp_path, {"catalogue/vi.html": body, "catalogue/en.html": body}), "check")
    assert result.exit_code == 0, result.output
    assert "warning: templates/catalogue/vi.html:1: the HTML part is 104 KB (for SAMPLE000)" in result.stderr


def test_member_data_inside_autoescape_false_is_printed_unescaped_like_safe(tmp_path):
    body = ('---\nsubject: "Hi"\npreheader: "A note"\n---\n{% extends "_layouts/vi.html" %}\n{% block content %}\n'
            '<p>{% autoescape false %}{{ program.name }}\n{{ member.first_name }}{% endautoescape %}</p>\n'
            '<p>{% autoescape true %}{{ member.first_name }}{% endautoescape %}'
            '{{ event.properties.note | default("") | safe }}</p>\n{% endblock %}\n')
    result = invoke(program(tmp_path, {"note/vi.html": body, "note/en.html": body}), "check")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "unescaped" in line and "note/vi" in line]
    assert warnings == [
        "warning: templates/note/vi.html:9:108: `| safe` on member data prints it unescaped: a name like "
        "<b>Lan</b> becomes markup; remove `| safe`",
        "warning: templates/note/vi.html:7:7: `{% autoescape false %}` prints member data unescaped (line 8): "
        "a name like <b>Lan</b> becomes markup; print member data outside the block"]


OUTLOOK_AND_BACKGROUNDS = (
    '<html><body>\n'
    '<!--[if mso]><a href="http://shop.senvang.vn/mso">Shop</a>'
    '<v:roundrect href="https://localhost/vml"></v:roundrect><v:fill src="http://cdn.senvang.vn/fill.png"/>'
    '<![endif]-->\n'
    '<table background="http://cdn.senvang.vn/bg.png"><tr><td>x</td></tr></table>\n'
    '<p><a href="http://shop.senvang.vn/p?a=1&amp;b=2">Shop</a></p>\n'
    '<!--[if mso]><a href="https://t.senvang.vn/u/x">Unsubscribe</a><![endif]-->\n'
    '</body></html>\n')


def test_links_in_outlook_comments_and_backgrounds_are_linted_where_they_are_written():
    from loyalty_mail.rendering.catalog import Variant
    from loyalty_mail.rendering.lint import RenderedLint

    variant = Variant("promo", "vi", "promo/vi.html", None, "Hi", "A note", 2)
    source = "---\nsubject: Hi\n---\n" + OUTLOOK_AND_BACKGROUNDS
    lint = RenderedLint(variant, ["promo/vi.html"], {"promo/vi.html": source}, "https://t.senvang.vn", True)
    found = [str(p) for p in lint.check(OUTLOOK_AND_BACKGROUNDS, "Hi", "https://t.senvang.vn/u/x", "SAMPLE000")]
    assert found == [
        # Outlook reads only its conditional comment: the other clients see no unsubscribe link
        "templates/promo/vi.html:1: no unsubscribe link in the body: add <a href=\"{{ unsubscribe_url }}\">"
        "Unsubscribe</a> (a layout's footer is a good place)",
        "templates/promo/vi.html:5:23: insecure link http://shop.senvang.vn/mso: use https://",
        "templates/promo/vi.html:5:78: link to a test host in a production program: https://localhost/vml",
        "templates/promo/vi.html:5:128: insecure link http://cdn.senvang.vn/fill.png: use https://",
        "templates/promo/vi.html:6:20: insecure link http://cdn.senvang.vn/bg.png: use https://",
        "templates/promo/vi.html:7:13: insecure link http://shop.senvang.vn/p?a=1&b=2: use https://",
    ]


def test_check_renders_an_email_file_in_a_locale_outside_program_locales(tmp_path):
    # members with locale fr get welcome/fr.html, so check renders it like the others
    broken = ('---\nsubject: "Salut"\npreheader: "Une note"\n---\n{% extends "_layouts/en.html" %}\n'
              '{% block content %}\n<p>{{ member.points / 0 }}</p>\n{% endblock %}\n')
    result = invoke(program(tmp_path, {"welcome/fr.html": broken}), "check")
    assert result.exit_code == 1, result.output
    assert "Error: templates/welcome/fr.html:7: ZeroDivisionError: division by zero" in result.stderr


def test_a_test_host_link_is_warned_about_once_where_it_is_written(tmp_path):
    layout = ('<html><body><p><a href="https://shop.example/">Shop</a></p>{% block content %}{% endblock %}'
              '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>\n')
    email = ('---\nsubject: "Hi"\npreheader: "A note"\n---\n{% extends "_layouts/shop.html" %}\n'
             '{% block content %}\n<p><a href="https://shop.example/sale">Sale</a></p>\n'
             '<p><a href="https://shop.example/me?m={{ member.member_id }}">Me</a></p>\n{% endblock %}\n')
    target = program(tmp_path, {"_layouts/shop.html": layout, "promo/vi.html": email, "promo/en.html": email})
    result = invoke(target, "check")
    warnings = [line for line in result.stderr.splitlines() if "test host" in line]
    assert warnings == [
        "warning: templates/_layouts/shop.html:1:25: link to a test host in a production program: https://shop.example/",
        "warning: templates/promo/vi.html:7:13: link to a test host in a production program: https://shop.example/sale",
        "warning: templates/promo/vi.html:8:13: link to a test host in a production program: "
        "https://shop.example/me?m=SAMPLE000",
        "warning: templates/promo/en.html:7:13: link to a test host in a production program: https://shop.example/sale",
        "warning: templates/promo/en.html:8:13: link to a test host in a production program: "
        "https://shop.example/me?m=SAMPLE000"], result.stderr


def test_a_link_escaped_twice_is_a_warning_where_it_is_written_in_any_program(tmp_path):
    # `&amp;` in a Jinja string is escaped again when printed: the href holds `&amp;` as text
    source = ('---\nsubject: "Sale"\npreheader: "Double points"\n---\n{% extends "_layouts/vi.html" %}\n'
              '{% from "_partials/blocks.html" import button %}\n{% block content %}\n'
              "{{ button('https://shop.senvang.vn/sale?utm_source=email&amp;member=' ~ member.member_id, 'Shop') }}\n"
              '<p><a href="https://shop.senvang.vn/p?a=1&amp;b=2">Written as HTML</a></p>\n'
              '{% endblock %}\n')
    for base_url in ("https://t.senvang.vn", "https://t.senvang.example"):
        result = invoke(program(tmp_path / base_url[8:], {"sale/vi.html": source, "sale/en.html": source},
                                base_url=base_url), "check")
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if "&amp;" in line]
        assert warnings == [
            f"warning: templates/sale/{locale}.html:8:12: the link https://shop.senvang.vn/sale?utm_source=email"
            "&amp;member=SAMPLE000 holds `&amp;` as text (it was escaped twice: `&amp;` written in a Jinja "
            "string is escaped again when printed); write `&` in Jinja strings, `&amp;` only in an href "
            "written as HTML" for locale in ("vi", "en")], result.stderr


def test_check_reads_an_email_whose_include_ignore_missing_names_no_file(tmp_path):
    email = ('---\nsubject: "Hi"\npreheader: "A note"\n---\n{% extends "_layouts/en.html" %}\n'
             '{% block content %}{% include "_partials/seasonal.html" ignore missing %}<p>Hi</p>{% endblock %}\n')
    target = program(tmp_path, {"note/en.html": email, "note/vi.html": email.replace("/en.html", "/vi.html")})
    result = invoke(target, "check", "--strict")
    assert result.exit_code == 0, result.output
