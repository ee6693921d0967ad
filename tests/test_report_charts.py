"""Chart labels in the HTML report fit their chart: long flow and step names are not cut at the
left edge, and a label too long for any chart is shortened with its full text kept in a title."""
import json
import subprocess

import lxml.html

from loyalty_mail.reports import charts
from tests.test_reports import _chromium

PROBE = """<script>
document.body.setAttribute("data-probe", JSON.stringify(
  [...document.querySelectorAll("svg.chart")].map(s => Math.min(...[...s.querySelectorAll("text")]
    .map(t => t.getBBox().x)))));
</script>"""


def test_interval_chart_makes_room_for_long_labels():
    label = "welcome_series_long_name hello: b - a"
    svg = charts.interval_chart("Differences", [(label, -0.11, -0.33, 0.1, True)])
    texts = lxml.html.fromstring(str(svg)).xpath("//text")
    assert any(t.text == label for t in texts)           # shown whole, not clipped by a fixed width
    assert 7 * len(label) + 16 <= charts.room_for([label]) <= 320


def test_a_label_longer_than_any_chart_is_shortened_with_its_title():
    label = "x" * 80
    svg = lxml.html.fromstring(str(charts.interval_chart("D", [(label, 0.0, -0.1, 0.1, False)])))
    shown = svg.xpath("//text[title]")[0]
    assert shown.text.endswith("\u2026") and len(shown.text) < len(label)
    assert shown.xpath("title")[0].text == label
    bars = lxml.html.fromstring(str(charts.bar_chart("B", [label], [("sent", [1.0])])))
    assert bars.xpath("//text[title]")[0].xpath("title")[0].text == label


def test_labels_stay_inside_the_chart_in_chromium(tmp_path):
    page = tmp_path / "charts.html"
    body = (charts.interval_chart("Differences", [("welcome_series_journey hello: b - a", -0.11, -0.33, 0.1, True)])
            + charts.bar_chart("Rates", ["reward_available_for_gold_members", "x" * 80], [("open", [0.2, 0.1])]))
    page.write_text(f"<!DOCTYPE html><html><body>{body}{PROBE}</body></html>", encoding="utf-8")
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    lefts = json.loads(lxml.html.fromstring(dom.stdout).xpath("//body/@data-probe")[0])
    assert len(lefts) == 2 and min(lefts) >= 0
