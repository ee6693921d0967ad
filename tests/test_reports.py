"""Reports: a small history built by hand, every figure checked against values worked out here."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from decimal import Decimal

import pytest

from loyalty_mail.models import events_table, members_table, sends_table, tracking_events_table

from .conftest import FIXED_NOW

T0 = FIXED_NOW - timedelta(days=10)   # 2026-11-13 03:00 UTC: every send goes out then


def build(engine) -> None:
    members = ["A", "B", "C", "D", "E", "F", "G", "H"]
    tiers = {"A": "gold", "B": "gold", "C": "member", "D": "member", "E": "silver", "F": "silver",
             "G": "member", "H": "member"}
    with engine.begin() as conn:
        for ref, name in enumerate(members, start=1):
            conn.execute(members_table.insert().values(
                id=ref, member_id=name, email=f"{name.lower()}@example.com", tier=tiers[name], points=0,
                total_spend=0, purchase_count=0, subscribed=True, locale="vi" if ref % 2 else "en",
                attributes={}, created_at=FIXED_NOW, updated_at=FIXED_NOW))
        sends = [("A", "welcome", "sent"), ("B", "welcome", "sent"), ("C", "welcome", "sent"),
                 ("D", "winback", "sent"), ("E", "winback", "sent"), ("F", "winback", "sent"),
                 ("G", "winback", "held_out"), ("H", "winback", "held_out")]
        for name, flow, state in sends:
            conn.execute(sends_table.insert().values(
                send_id=f"s{name}", member_ref=members.index(name) + 1, flow=flow, occurrence_key="k",
                template=flow, segment="lapsed" if flow == "winback" else None, state=state, reason="t",
                occurrence={}, occurred_at=T0, scheduled_for=T0, created_at=T0,
                sent_at=T0 if state == "sent" else None))

        def hit(send: str, kind: str, hours: float, machine: bool = False, bot: bool = False) -> None:
            conn.execute(tracking_events_table.insert().values(
                send_id=send, kind=kind, source="tracker", occurred_at=T0 + timedelta(hours=hours),
                machine=machine, bot=bot, detail={}))

        hit("sA", "open", 1)
        hit("sA", "open", 2)                  # a second open of the same email: still one
        hit("sA", "click", 2)
        hit("sB", "open", 1, machine=True)    # machine open only: total, not human
        hit("sB", "click", 0.001, bot=True)   # scanner click only: total, not human
        hit("sC", "bounce", 0.1)
        hit("sD", "open", 3)
        hit("sD", "unsubscribe", 3)
        hit("sE", "spam_complaint", 5)

        def purchase(name: str, days: float, amount: int) -> None:
            conn.execute(events_table.insert().values(
                member_ref=members.index(name) + 1, type="purchase", occurred_at=T0 + timedelta(days=days),
                amount=Decimal(amount), currency="VND", points=0, properties={}, created_at=FIXED_NOW))

        purchase("A", 1, 500_000)             # within 7 days: converts, 500,000
        purchase("A", 2, 250_000)             # also within: revenue 750,000
        purchase("B", 9, 100_000)             # after the window: not attributed
        purchase("B", -1, 100_000)            # before the send: not attributed
        purchase("D", 3, 300_000)             # winback sent converts
        purchase("G", 2, 200_000)             # held-out converts too


@pytest.fixture
def history(runtime):
    build(runtime.engine())
    return runtime


def test_every_figure_by_flow(history, run):
    result = run("report", "--since", "2026-11-01", "--until", "2026-11-23", "--by", "flow", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    welcome, winback = report["rows"]
    assert welcome == {
        "flow": "welcome", "sent": 3, "delivered": 2, "bounced": 1, "opens_human": 1, "opens_total": 2,
        "clicks_human": 1, "clicks_total": 2, "unsubscribed": 0, "spam": 0, "converted": 1,
        "revenue": 750000.0, "open_rate": 0.5, "click_rate": 0.5, "click_to_open_rate": 1.0,
        "unsubscribe_rate": 0.0, "spam_rate": 0.0, "revenue_per_email": 250000.0}
    assert winback == {
        "flow": "winback", "sent": 3, "delivered": 3, "bounced": 0, "opens_human": 1, "opens_total": 1,
        "clicks_human": 0, "clicks_total": 0, "unsubscribed": 1, "spam": 1, "converted": 1,
        "revenue": 300000.0, "open_rate": round(1 / 3, 4), "click_rate": 0.0, "click_to_open_rate": 0.0,
        "unsubscribe_rate": round(1 / 3, 4), "spam_rate": round(1 / 3, 4), "revenue_per_email": 100000.0}
    [lift] = report["lift"]
    p1, p0 = 1 / 3, 1 / 2
    spread = 1.96 * math.sqrt(p1 * (1 - p1) / 3 + p0 * (1 - p0) / 2)
    assert lift["flow"] == "winback" and (lift["sent"], lift["held_out"]) == (3, 2)
    assert (lift["sent_converted"], lift["held_out_converted"]) == (1, 1)
    assert lift["absolute_lift"] == round(p1 - p0, 4)
    assert lift["ci95_low"] == round(p1 - p0 - spread, 4) and lift["ci95_high"] == round(p1 - p0 + spread, 4)
    assert lift["relative_lift"] == round((p1 - p0) / p0, 4)
    assert lift["note"].startswith("small sample")


def test_days_out_of_range_are_refused(run):
    for args in (("--until", "9999-12-31"), ("--until", "0001-01-05"), ("--since", "1000-01-01")):
        result = run("report", *args)
        assert result.exit_code == 1 and f"{args[1]} is out of range (a day from 1900-01-01 to 2999-12-31)" in \
            result.output, args


def test_groups_and_formats_agree(history, run):
    by_tier = json.loads(run("report", "--since", "2026-11-01", "--until", "2026-11-23", "--by", "tier",
                             "--format", "json").stdout)["rows"]
    assert {r["tier"]: (r["sent"], r["converted"]) for r in by_tier} == {
        "gold": (2, 1), "member": (2, 1), "silver": (2, 0)}   # A converts; D (member) converts
    total = json.loads(run("report", "--since", "2026-11-01", "--until", "2026-11-23", "--by", "none",
                           "--format", "json").stdout)["rows"]
    assert [(r["sent"], r["revenue"]) for r in total] == [(6, 1050000.0)]
    csv_text = run("report", "--since", "2026-11-01", "--until", "2026-11-23", "--by", "segment,day",
                   "--format", "csv").stdout.splitlines()
    assert csv_text[0].startswith("segment,day,sent,delivered,bounced,opens_human")
    assert sorted(csv_text[1:]) == sorted([
        ",2026-11-13,3,2,1,1,2,1,2,0,0,1,750000.0,0.5,0.5,1.0,0.0,0.0,250000.0",
        "lapsed,2026-11-13,3,3,0,1,1,0,0,1,1,1,300000.0,0.3333,0.0,0.0,0.3333,0.3333,100000.0"])
    outside = json.loads(run("report", "--since", "2026-11-14", "--until", "2026-11-23", "--format", "json").stdout)
    assert outside["rows"] == [] and outside["lift"] == []
    bad = run("report", "--by", "colour")
    assert bad.exit_code == 1 and "unknown group colour" in bad.stderr
    twice = run("report", "--by", "flow,step,flow")   # one column named twice, in every format
    assert twice.exit_code == 1 and "group flow given twice" in twice.stderr and "Traceback" not in twice.stderr


def test_program_health(history, run):
    from loyalty_mail.models import members_table, tier_changes_table

    engine = history.engine()
    with engine.begin() as conn:
        # purchases: A 2 orders 750,000; B 1 order 100,000 (plus one before), D 1, G 1
        for name, count, spend, score in (("A", 2, 750_000, 10), ("B", 2, 200_000, 9), ("D", 1, 300_000, 3),
                                          ("G", 1, 200_000, None)):
            conn.execute(members_table.update().where(members_table.c.member_id == name).values(
                purchase_count=count, total_spend=spend, nps_score=score,
                joined_at=FIXED_NOW - timedelta(days=365), last_purchase_at=FIXED_NOW - timedelta(days=5)))
        conn.execute(members_table.update().where(members_table.c.member_id == "C").values(
            nps_score=7, purchase_count=1, total_spend=50_000, joined_at=FIXED_NOW - timedelta(days=365),
            last_purchase_at=FIXED_NOW - timedelta(days=200)))
        conn.execute(tier_changes_table.insert().values(member_ref=1, from_tier="silver", to_tier="gold",
                                                        changed_at=T0, reason="t"))
        for ref in (1, 3):  # A and C bought in October; only A buys again in November
            conn.execute(events_table.insert().values(
                member_ref=ref, type="purchase", occurred_at=FIXED_NOW - timedelta(days=30), amount=Decimal(1),
                currency="VND", points=0, properties={}, created_at=FIXED_NOW))
    report = json.loads(run("report", "--since", "2026-11-01", "--until", "2026-11-23", "--format", "json").stdout)
    health = report["program"]
    assert health["members_by_tier"] == {"gold": 2, "member": 4, "silver": 2}
    assert health["tier_movements"] == [{"from": "silver", "to": "gold", "members": 1}]
    assert health["active"] == 4                     # A, B, D, G have purchase events between 1 and 23 November
    assert health["lapsed"] == 1                     # C: last purchase 200 days ago
    assert health["repeat_purchase_rate"] == round(2 / 5, 4)
    assert health["average_order_value"] == round(1_500_000 / 7, 2)
    # One year of membership: CLV = spend per year x 3 years (segments.clv_years default)
    assert health["clv_by_tier"]["gold"] == round((750_000 + 200_000) / 2 * 3 * 365.25 / 365, 2)
    assert health["nps"] == round(100 * (2 - 1) / 4, 1)   # promoters A, B; detractor D; passive C
    assert health["nps_distribution"]["10"] == 1 and health["nps_distribution"]["7"] == 1
    assert health["retention_cohort"] == 2 and health["retention_rate"] == 0.5   # A came back, C did not


def test_segments_membership_at_send_time_or_now(history, run, project):
    """B's last purchase was 85 days before the send (not lapsed then, lapsed by the end of the
    period); E's was 100 days before (lapsed both times). --segments groups by that in/out."""
    (project / "segments").mkdir()
    (project / "segments" / "lapsed_90_days.yaml").write_text(
        "name: lapsed_90_days\ndescription: nothing bought for 90 days\ndays_since_last_purchase: {gte: 90}\n")
    with history.engine().begin() as conn:
        for name, days in (("B", 85), ("E", 100)):
            conn.execute(members_table.update().where(members_table.c.member_id == name).values(
                last_purchase_at=T0 - timedelta(days=days), purchase_count=1))

    def rows(when: str) -> dict[tuple[str, str], tuple[int, int, int, float]]:
        result = run("report", "--since", "2026-11-01", "--until", "2026-11-23", "--by", "flow",
                     "--segments", "lapsed_90_days", "--membership", when, "--format", "json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["by"] == ["flow", "in_lapsed_90_days"] and report["membership"] == when
        return {(r["flow"], r["in_lapsed_90_days"]): (r["sent"], r["delivered"], r["converted"], r["revenue"])
                for r in report["rows"]}

    assert rows("send") == {("welcome", "out"): (3, 2, 1, 750000.0),        # A, B, C
                            ("winback", "in"): (1, 1, 0, 0.0),               # E
                            ("winback", "out"): (2, 2, 1, 300000.0)}         # D, F
    assert rows("now") == {("welcome", "in"): (1, 1, 0, 0.0),                # B lapsed since
                           ("welcome", "out"): (2, 1, 1, 750000.0),          # A, C (C bounced)
                           ("winback", "in"): (1, 1, 0, 0.0),
                           ("winback", "out"): (2, 2, 1, 300000.0)}
    unknown = run("report", "--segments", "nope")
    assert unknown.exit_code == 1 and "unknown segment nope in --segments" in unknown.stderr


def _chromium() -> str:
    import os
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("Chromium is not installed (.ci/run installs it with apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium) to check the HTML report")
    return found


PROBE = """<script>
const svgs = [...document.querySelectorAll("svg.chart")];
const bars = [...document.querySelectorAll("svg.chart rect.bar")].map(r => r.getBBox().width);
document.body.setAttribute("data-probe", JSON.stringify({
  charts: svgs.map(s => [s.querySelector("title").textContent, Math.round(s.getBoundingClientRect().width),
                         Math.round(s.getBoundingClientRect().height)]),
  bars: bars.length, widest: Math.max(...bars), errorBars: document.querySelectorAll("line.error-bar").length,
  resources: performance.getEntriesByType("resource").map(e => e.name),
  overflow: document.documentElement.scrollWidth > window.innerWidth + 1,
}));
</script>"""


def test_html_report_in_headless_chromium(history, run, tmp_path):
    """The page is one self-contained file: Chromium lays out every chart with real sizes, draws
    the bars and the lift error bar, fetches nothing, and shows the same figures as --format json."""
    import re
    import subprocess

    import lxml.html

    out = tmp_path / "report.html"
    result = run("report", "--since", "2026-11-01", "--until", "2026-11-23", "--format", "html", "--out", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(|<script|<link""", page, re.I)
    tree = lxml.html.fromstring(page)
    by_flow = [[cell.text_content() for cell in row.xpath("td")] for row in tree.xpath('//table[@id="by-flow"]//tr[td]')]
    assert [row[:5] for row in by_flow] == [["welcome", "3", "2", "1", "1"], ["winback", "3", "3", "0", "1"]]
    assert tree.xpath('//table[@id="lift-table"]//td/text()')[:5] == ["winback", "3", "1", "2", "1"]
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                          "--dump-dom", probe_page.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    probe = json.loads(lxml.html.fromstring(dom.stdout).xpath("//body/@data-probe")[0])
    titles = {title for title, width, height in probe["charts"] if width > 300 and height > 50}
    assert {"Open and click rate by flow", "Open and click rate by targeting segment", "Members by tier",
            "Conversion lift against hold-out (percentage points, 95% CI)"} <= titles
    assert probe["bars"] >= 8 and probe["widest"] > 100 and probe["errorBars"] == 1
    assert probe["resources"] == [] and not probe["overflow"]
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,1600", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
