"""Render each example email and photograph it in headless Chromium, at desktop and mobile widths.

    python docs/screenshots.py [--chromium PATH] [--out docs/screenshots] [--report demo/report.html]

Needs Chromium (Debian: `apt-get install chromium`). The emails are rendered for a sample member
of the example program (untracked links), exactly as `loyalty-mail preview` shows them. The
preference centre is the page the tracking service serves at /p/..., for the same member and the
example program's topics (preferences-vi.png). With --report, the HTML report (e.g. the one
`loyalty-mail demo` writes) is photographed too.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

from loyalty_mail.config import Settings, load_settings
from loyalty_mail.rendering import Renderer
from loyalty_mail.tracking import pages

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
WIDTHS = {"desktop": (900, 1500), "mobile": (390, 1900)}
EMAILS = {
    "welcome": ("vi", {"kind": "signup", "key": "signup"}),
    "milestone": ("en", {"kind": "points", "threshold": 5000, "key": "points:5000"}),
    "tier_upgrade": ("vi", {"kind": "tier_upgrade", "old_tier": "silver", "new_tier": "gold", "key": "t"}),
    "reengagement": ("en", {"kind": "segment_entry", "segment": "lapsed_90_days", "key": "r"}),
}


def sample_member(locale: str) -> dict[str, object]:
    return dict(member_id="SV000123", email="lan.nguyen@example.com", first_name="Lan",
                last_name="Nguyễn", locale=locale, timezone="Asia/Ho_Chi_Minh",
                joined_at=datetime(2024, 11, 22, 20, tzinfo=timezone.utc), joined_on=date(2024, 11, 23),
                birthday=None, points=8450, tier="gold", total_spend=Decimal("8450000"),
                purchase_count=12, last_purchase_at=datetime(2026, 8, 1, tzinfo=timezone.utc),
                nps_score=9, subscribed=True, attributes={})


def preferences_html(settings: Settings, locale: str) -> str:
    """The preference centre as the tracking service serves it to the sample member: the example
    program's topics, receipts turned off, not paused."""
    chosen = {topic.name: topic.name != "receipts" for topic in settings.topics}
    page = pages.Page(locale, settings.program.name, "lan.nguyen@example.com")
    response = pages.preferences_page(page, "/p/sample", "0.sample", settings.topics, chosen, None,
                                      settings.program.default_locale, note="saved")
    return bytes(response.body).decode("utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--report", type=Path, default=None, help="Also photograph this HTML report.")
    args = parser.parse_args()
    if not args.chromium:
        print("Chromium not found: install it (apt-get install chromium) or pass --chromium PATH",
              file=sys.stderr)
        return 1
    settings = load_settings(ROOT, environ={})
    renderer = Renderer.for_program(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for email, (locale, occurrence) in EMAILS.items():
            rendered = renderer.render(email, sample_member(locale), now=NOW, tracked=False,
                                       occurrence=occurrence, flow={"name": email})
            page = Path(scratch) / f"{email}.html"
            page.write_text(rendered.html, encoding="utf-8")
            for label, (width, height) in WIDTHS.items():
                target = args.out / f"{email}-{locale}-{label}.png"
                subprocess.run(
                    [args.chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                     "--hide-scrollbars", f"--window-size={width},{height}",
                     f"--screenshot={target}", page.as_uri()],
                    check=True, capture_output=True, timeout=60)
                print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
        page = Path(scratch) / "preferences.html"
        page.write_text(preferences_html(settings, "vi"), encoding="utf-8")
        target = args.out / "preferences-vi.png"
        subprocess.run([args.chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=600,760", f"--screenshot={target}", page.as_uri()],
                       check=True, capture_output=True, timeout=60)
        print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    if args.report:
        target = args.out / "report.png"
        subprocess.run([args.chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1150,2400", f"--screenshot={target}", args.report.resolve().as_uri()],
                       check=True, capture_output=True, timeout=60)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
