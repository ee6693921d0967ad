"""A/B variants: stable assignment, the statistics against worked examples, the ledger, the
reports, and the winner switch at its threshold."""

from __future__ import annotations

import email
import email.policy
import json
import math
import os
import subprocess
import sys

import lxml.html
import pytest
import sqlalchemy as sa

from loyalty_mail.config import VariantSettings, WinnerRule
from loyalty_mail.flows.variants import assign
from loyalty_mail.models import variant_winners_table
from loyalty_mail.reports.variants import Arm, newcombe, pick_winner, verdict, wilson

from .conftest import CONFIG_ONLY
from .flow_program import REPO, member
from .test_reports import PROBE, _chromium

A_B = (VariantSettings(name="a", subject="A"), VariantSettings(name="b", subject="B", weight=3))


# -- assignment ------------------------------------------------------------------------------

def test_assignment_follows_the_weights_and_is_the_same_every_time():
    ids = [f"M{n:05d}" for n in range(10_000)]
    first = [assign("welcome", i, A_B).name for i in ids]
    assert first == [assign("welcome", i, A_B).name for i in ids]
    # b has weight 3 of 4: 7,500 expected, standard deviation sqrt(10,000 * 0.75 * 0.25) = 43.3
    assert abs(first.count("b") - 7500) < 4 * 43.3
    # Another test name is another, independent draw.
    other = [assign("winback", i, A_B).name for i in ids]
    assert 0.55 < sum(x == y for x, y in zip(first, other)) / len(ids) < 0.70  # 0.75^2 + 0.25^2 = 0.625


def test_assignment_is_the_same_in_another_process_with_another_hash_seed():
    ids = [f"M{n}" for n in range(300)]
    script = ("import json, sys; from loyalty_mail.config import VariantSettings as V; "
              "from loyalty_mail.flows.variants import assign; "
              "vs = (V(name='a', subject='A'), V(name='b', subject='B', weight=3)); "
              "print(json.dumps([assign('welcome', i, vs).name for i in json.load(sys.stdin)]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], input=json.dumps(ids), env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(result.stdout) == [assign("welcome", i, A_B).name for i in ids]


# -- the statistics against worked examples ----------------------------------------------------

@pytest.mark.parametrize(("x", "n", "low", "high"), [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Statistics in
    # Medicine 17:857-872, Table I, method 3 (score interval without continuity correction).
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_the_published_examples(x, n, low, high):
    assert wilson(x, n) == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2", "low", "high"), [
    # Newcombe (1998), "Interval estimation for the difference between independent proportions",
    # Statistics in Medicine 17:873-890, Table II, method 10 (hybrid score, no continuity correction).
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (6, 7, 2, 7, 0.0582, 0.8062),
    (5, 56, 0, 29, -0.0381, 0.1926),
])
def test_difference_interval_matches_the_published_examples(x1, n1, x2, n2, low, high):
    d, lo, hi = newcombe(x1, n1, x2, n2)
    assert d == pytest.approx(x1 / n1 - x2 / n2)
    assert (lo, hi) == pytest.approx((low, high), abs=5e-5)


def test_a_worked_example_by_hand():
    """120 of 1,000 converted with b, 80 of 1,000 with a, at 95% (z = 1.959964, z^2 = 3.841459).

    Wilson for b: centre = (120 + 1.920729) / 1003.841459 = 0.121454;
      half = 1.959964 * sqrt(120 * 880 / 1000 + 0.960365) / 1003.841459
           = 1.959964 * sqrt(106.560365) / 1003.841459 = 1.959964 * 10.322808 / 1003.841459 = 0.020155
      -> (0.101299, 0.141609)
    Wilson for a: centre = 81.920729 / 1003.841459 = 0.081607;
      half = 1.959964 * sqrt(73.6 + 0.960365) / 1003.841459 = 1.959964 * 8.634834 / 1003.841459 = 0.016859
      -> (0.064748, 0.098466)
    Difference 0.04: low = 0.04 - sqrt((0.12 - 0.101299)^2 + (0.098466 - 0.08)^2)
                         = 0.04 - sqrt(0.00034973 + 0.00034099) = 0.04 - 0.026281 = 0.013719
                    high = 0.04 + sqrt((0.141609 - 0.12)^2 + (0.08 - 0.064748)^2)
                         = 0.04 + sqrt(0.00046695 + 0.00023262) = 0.04 + 0.026449 = 0.066449
    """
    assert wilson(120, 1000) == pytest.approx((0.101299, 0.141609), abs=2e-6)
    assert wilson(80, 1000) == pytest.approx((0.064748, 0.098466), abs=2e-6)
    assert newcombe(120, 1000, 80, 1000) == pytest.approx((0.04, 0.013719, 0.066449), abs=2e-6)
    a, b = Arm("f", "a", 1000, 1000, 0, 0, 80), Arm("f", "b", 1000, 1000, 0, 0, 120)
    assert verdict(a, b, "conversion_rate", 0.013719, 0.066449) == \
        "b has the higher conversion rate (95% interval of the difference above 0)"
    small_a, small_b = Arm("f", "a", 99, 99, 0, 0, 1), Arm("f", "b", 99, 99, 0, 0, 50)
    assert verdict(small_a, small_b, "conversion_rate", 0.3, 0.6) == "no verdict: fewer than 100 sends per variant"


def test_the_winner_rule_waits_for_its_sends_and_for_a_clear_difference():
    rule = WinnerRule(metric="conversion_rate", after="2000 sends", confidence=0.95)
    a, b = Arm("f", "a", 1000, 1000, 0, 0, 80), Arm("f", "b", 999, 999, 0, 0, 120)
    assert pick_winner([a, b], rule) is None                                     # 1,999 sends
    b = Arm("f", "b", 1000, 1000, 0, 0, 120)
    won, figures = pick_winner([a, b], rule)                                     # 2,000 sends
    assert won.variant == "b" and figures["against"]["a"]["low"] == pytest.approx(0.0137, abs=1e-4)
    # At 99.9% the interval is wider: z = 3.2905 takes its lower end below 0.
    assert pick_winner([a, b], WinnerRule(after=2000, confidence=0.999)) is None
    assert math.isclose(newcombe(120, 1000, 80, 1000, 0.999)[1], -0.0043, abs_tol=5e-4)


# -- through the program: ledger, delivery, reports, the switch --------------------------------

VARIANT_WELCOME = """  - {name: welcome, trigger: welcome, template: welcome, priority: 100, lateness: 2 days,
     frequency_cap: false,
     variants: [{name: a, subject: "Variant A for {{ member.first_name }}"},
                {name: b, template: reengagement}],
     winner: {metric: conversion_rate, after: 20 sends, confidence: 0.95}}
"""


def with_variants(program) -> None:
    path = program.dir / "config.yaml"
    lines = path.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if "{name: welcome" in line)
    lines[start:start + 2] = [VARIANT_WELCOME]
    path.write_text("".join(lines))


def ids_for(variant: str, count: int, prefix: str) -> list[str]:
    variants = (VariantSettings(name="a", subject="x"), VariantSettings(name="b", template="reengagement"))
    found = [f"{prefix}{n}" for n in range(1000) if assign("welcome", f"{prefix}{n}", variants).name == variant]
    return found[:count]


def ledger(program) -> dict[str, tuple[str | None, str, str]]:
    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT m.member_id, s.variant, s.template, s.state FROM sends s "
                                    "JOIN members m ON m.id = s.member_ref WHERE s.flow = 'welcome'")).all()
        winners = conn.execute(sa.select(variant_winners_table)).mappings().all()
    engine.dispose()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}, [dict(w) for w in winners]


def test_variants_are_recorded_sent_reported_and_a_winner_takes_over(program):
    with_variants(program)
    assert program.run("check").exit_code == 0, program.run("check").output
    a_ids, b_ids = ids_for("a", 10, "A"), ids_for("b", 9, "B")
    joined = "2026-11-20T10:00:00+07:00"
    program.load("members", [member(i, joined_at=joined) for i in a_ids + b_ids], at=joined)
    plan = [d for d in program.dry("2026-11-20T10:05:00+07:00", "welcome") if d["decision"] == "send"]
    assert {d["member_id"]: (d["variant"], d["template"]) for d in plan} == {
        **{i: ("a", "welcome") for i in a_ids}, **{i: ("b", "reengagement") for i in b_ids}}
    assert program.run("run", "--once", at="2026-11-20T10:05:00+07:00").exit_code == 0
    sends, winners = ledger(program)
    assert {i: s[:2] for i, s in sends.items()} == {
        **{i: ("a", "welcome") for i in a_ids}, **{i: ("b", "reengagement") for i in b_ids}}
    subjects = {}
    for path in (program.dir / "outbox").glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        subjects[str(message["To"]).split("<")[1].split("@")[0].upper()] = str(message["Subject"])
    assert {i for i, subject in subjects.items() if subject == "Variant A for Lan"} == set(a_ids)
    # Every b member buys within the attribution window; no a member does.
    program.load("events", [{"member_id": i, "type": "purchase", "occurred_at": "2026-11-21T10:00:00+07:00",
                             "amount": 10000, "currency": "VND", "event_id": f"p-{i}"} for i in b_ids],
                 at="2026-11-21T10:00:00+07:00")
    # 19 sends: below `after: 20 sends`, no winner however clear the difference.
    late_a = ids_for("a", 12, "A")[10:]
    program.load("members", [member(late_a[0], joined_at="2026-11-22T10:00:00+07:00")], at="2026-11-22T10:00:00+07:00")
    assert program.run("run", "--once", at="2026-11-22T10:05:00+07:00").exit_code == 0
    sends, winners = ledger(program)
    assert winners == [] and sends[late_a[0]][:2] == ("a", "welcome")
    # 20 sends: the next run records b as the winner before planning, and a member whose own
    # draw is a gets b.
    program.load("members", [member(late_a[1], joined_at="2026-11-23T10:00:00+07:00")], at="2026-11-23T10:00:00+07:00")
    result = program.run("run", "--once", at="2026-11-23T10:05:00+07:00")
    assert result.exit_code == 0
    assert "A/B test welcome: variant b wins on conversion_rate; new members get it" in result.output
    sends, winners = ledger(program)
    assert sends[late_a[1]][:2] == ("b", "reengagement")
    assert [(w["flow"], w["variant"], w["metric"], w["figures"]["sends"]) for w in winners] == \
        [("welcome", "b", "conversion_rate", 20)]
    assert sends[a_ids[0]][:2] == ("a", "welcome")  # what the ledger holds never changes

    report = json.loads(program.run("report", "--since", "2026-11-20", "--until", "2026-11-23", "--by", "variant",
                                    "--format", "json", at="2026-11-24T00:00:00+07:00").stdout)
    rows = {r["variant"]: r for r in report["variants"]["variants"]}
    assert (rows["a"]["sent"], rows["a"]["converted"], rows["b"]["sent"], rows["b"]["converted"]) == (11, 0, 10, 9)
    assert (rows["b"]["conversion_rate_low"], rows["b"]["conversion_rate_high"]) == \
        pytest.approx([round(v, 4) for v in wilson(9, 10)])
    [difference] = [d for d in report["variants"]["differences"] if d["metric"] == "conversion_rate"]
    assert difference["verdict"] == "no verdict: fewer than 100 sends per variant"
    assert report["variants"]["winners"][0]["variant"] == "b"
    table, html = program.variant_report("2026-11-20", "2026-11-23", at="2026-11-24T00:00:00+07:00")
    assert "welcome: variant b won on conversion_rate" in table
    assert 'id="variants-table"' in html and "variant <b>b</b> won on conversion rate" in html
    # Chromium lays out the variants chart with its error bar.
    probe_page = program.dir / "probe.html"
    probe_page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                          "--dump-dom", probe_page.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    probe = json.loads(lxml.html.fromstring(dom.stdout).xpath("//body/@data-probe")[0])
    sizes = {title: (width, height) for title, width, height in probe["charts"]}
    title = "Conversion rate difference against the first variant (percentage points, 95% CI)"
    assert sizes[title][0] > 300 and sizes[title][1] > 50
    assert probe["errorBars"] == 1 and probe["resources"] == [] and not probe["overflow"]
    cells = lxml.html.fromstring(html).xpath('//table[@id="variants-table"]//tr[td]')
    assert [[c.text_content() for c in row.xpath("td")][:3] for row in cells] == [["welcome", "a", "11"],
                                                                                   ["welcome", "b", "10"]]


@CONFIG_ONLY
def test_bad_variants_are_reported_at_their_line(program):
    path = program.dir / "config.yaml"
    original = path.read_text()
    path.write_text(original.replace("frequency_cap: false}", "frequency_cap: false, variants: [{name: a}]}", 1))
    result = program.run("check")
    assert result.exit_code == 1
    assert ("config.yaml:24:38: flows[0].variants: needs two or more variants (e.g. a and b); "
            "variant 'a' changes nothing: give it a `template:` and/or a `subject:`") in result.output
    path.write_text(original.replace("frequency_cap: false}", "frequency_cap: false,\n     variants: [{name: a, "
                                     "subject: A}, {name: b, subject: B}], winner: {metric: opens}}", 1))
    result = program.run("check")
    assert result.exit_code == 1
    assert ("config.yaml:25:81: flows[0].winner.metric: Input should be 'conversion_rate', 'click_rate' or "
            "'open_rate' (found 'opens')") in result.output
    path.write_text(original.replace("frequency_cap: false}", "frequency_cap: false,\n     variants: [{name: a, "
                                     "subject: \"Hi {{ member.first_name\"}, {name: b, subject: B}]}", 1))
    result = program.run("check")
    assert result.exit_code == 1
    assert "config.yaml:25:36: variant 'a' subject: syntax error: unexpected end of template" in result.output
    path.write_text(original.replace("frequency_cap: false}", "frequency_cap: false,\n     variants: [{name: a, "
                                     "subject: \"{{ member.points | pionts }}\"}, {name: b, subject: B}]}", 1))
    result = program.run("check")
    assert result.exit_code == 1
    assert ("config.yaml:25:36: variant 'a' subject: syntax error: no filter named 'pionts' (did you mean points?); "
            "the filters are listed in the README's \"Template context\"") in result.output


@CONFIG_ONLY
def test_a_variant_subject_with_an_unknown_field_is_reported_at_its_line(program):
    path = program.dir / "config.yaml"
    original = path.read_text()
    path.write_text(original.replace("frequency_cap: false}", "frequency_cap: false,\n     variants: [{name: a, "
                                     "subject: A}, {name: b, subject: \"Hi {{ member.nosuch_field }}\"}]}", 1))
    result = program.run("check")
    assert result.exit_code == 1
    assert ("config.yaml:25:59: variant 'b' subject: undefined variable: member has no field 'nosuch_field' "
            "(member has: attributes, birthday,") in result.output
    path.write_text(original)
    folder = program.dir / "campaigns"
    folder.mkdir()
    (folder / "sale.yaml").write_text('template: reengagement\nat: "2026-12-05 09:00"\nvariants:\n'
                                      '  - {name: a, subject: "{{ occurrence.campaign }}"}\n'
                                      '  - {name: b, subject: "{{ occurrence.threshold }}"}\n')
    result = program.run("check")
    assert result.exit_code == 1
    assert ("campaigns/sale.yaml:5:24: variant 'b' subject: undefined variable: occurrence has no field "
            "'threshold' (occurrence has: campaign, key, kind, topic; flows with trigger campaign give these "
            "fields)") in result.output
    assert "variant 'a'" not in result.output
    assert program.run("campaigns", "schedule", "sale").exit_code == 1
    (folder / "sale.yaml").write_text('template: reengagement\nat: "2026-12-05 09:00"\nvariants:\n'
                                      '  - {name: a, subject: "{{ occurrence.campaign | nosuch }}"}\n'
                                      '  - {name: b, subject: B}\n')
    for args in (("check",), ("campaigns", "schedule", "sale")):   # a subject that does not parse: its line
        result = program.run(*args)
        assert result.exit_code == 1 and ("campaigns/sale.yaml:4:24: variant 'a' subject: syntax error: no filter "
                                          "named 'nosuch'; the filters are listed") in result.output, result.output


def test_a_winner_must_beat_every_configured_variant_including_one_with_no_sends():
    rule = WinnerRule(metric="conversion_rate", after="2000 sends", confidence=0.95)
    a, b = Arm("f", "a", 1000, 1000, 0, 0, 160), Arm("f", "b", 1000, 1000, 0, 0, 80)
    assert pick_winner([a, b], rule, offered={"a", "b", "c"}) is None   # c has no sends yet
    won, _ = pick_winner([a, b], rule, offered={"a", "b"})
    assert won.variant == "a"


def test_a_winner_belongs_to_the_test_it_ended(database_url):
    from datetime import datetime, timezone

    from loyalty_mail import db
    from loyalty_mail.flows.variants import Winner, choose, record_winner, variant_set, winners

    engine = db.create_db_engine(database_url)
    first = (VariantSettings(name="a", subject="A"), VariantSettings(name="b", subject="B"))
    later = (VariantSettings(name="a", subject="A"), VariantSettings(name="b", subject="Other B"))
    at = datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert record_winner(engine, Winner("welcome", "b", "conversion_rate", {"variant_set": variant_set(first)}, at))
    with engine.connect() as conn:
        decided = winners(conn, at)
    ids = [f"M{n}" for n in range(40)]
    assert {choose("welcome", i, first, decided).name for i in ids} == {"b"}
    assert {choose("welcome", i, later, decided).name for i in ids} == {"a", "b"}  # a new test: by weight
    assert not record_winner(engine, Winner("welcome", "a", "conversion_rate", {"variant_set": variant_set(first)}, at))
    assert record_winner(engine, Winner("welcome", "a", "conversion_rate", {"variant_set": variant_set(later)}, at))
    with engine.connect() as conn:
        assert winners(conn, at)["welcome"].variant == "a"
    engine.dispose()
