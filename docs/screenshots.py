"""Render each example email and photograph it in headless Chromium, at desktop and mobile widths.

    python docs/screenshots.py [--chromium PATH] [--out docs/screenshots] [--report demo/report.html]
    python docs/screenshots.py --studio      # also each page of `loyalty-mail studio` (needs Playwright)

Needs Chromium (Debian: `apt-get install chromium`). The emails are rendered for a sample member
of the example program (untracked links), exactly as `loyalty-mail preview` shows them. With
--report, the HTML report (e.g. the one `loyalty-mail demo` writes) is photographed too. With --studio, a
studio runs on a copy of the example program in a scratch git repository (with `vip` edited after
the commit, so that the segment page shows a change) and on the database of a short
`loyalty-mail demo` (2,000 members, 30 simulated days: sends, an outbox and a report to show);
each of its pages is photographed at 1280 and 390 px as `studio-PAGE-WIDTH.png`.
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

from loyalty_mail.config import load_settings
from loyalty_mail.rendering import Renderer

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--report", type=Path, default=None, help="Also photograph this HTML report.")
    parser.add_argument("--studio", action="store_true", help="Also photograph the studio's pages.")
    args = parser.parse_args()
    if not args.chromium:
        print("Chromium not found: install it (apt-get install chromium) or pass --chromium PATH",
              file=sys.stderr)
        return 1
    renderer = Renderer.for_program(load_settings(ROOT, environ={}))
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
    if args.report:
        target = args.out / "report.png"
        subprocess.run([args.chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1150,2400", f"--screenshot={target}", args.report.resolve().as_uri()],
                       check=True, capture_output=True, timeout=60)
        print(f"wrote {target}")
    if args.studio:
        studio_screenshots(args.chromium, args.out)
    return 0


STUDIO_PAGES = {"emails": "/emails/welcome/vi", "segments": "/segments/vip", "flows": "/flows?member=LM0000007",
                "outbox": "/outbox", "reports": "/reports"}
STUDIO_WIDTHS = (1280, 390)


def studio_screenshots(chromium: str, out: Path) -> None:
    """Each studio page at each width, from a real studio process on a scratch program."""
    import re
    import socket

    from playwright.sync_api import sync_playwright

    from loyalty_mail.scaffold import init_program

    with tempfile.TemporaryDirectory() as scratch:
        program = Path(scratch) / "program"
        init_program(program)
        subprocess.run([sys.executable, "-m", "loyalty_mail", "--project", str(program), "demo", "--members", "2000",
                        "--days", "30", "--out", str(Path(scratch) / "demo")], check=True, capture_output=True,
                       timeout=900)
        for git in (["init", "-q"], ["add", "config.yaml", "segments", "templates"],
                    ["-c", "user.email=docs@example.com", "-c", "user.name=docs", "commit", "-qm", "program"]):
            subprocess.run(["git", "-C", str(program), *git], check=True, capture_output=True, timeout=60)
        vip = program / "segments" / "vip.yaml"
        vip.write_text(vip.read_text(encoding="utf-8").replace("at_least: gold", "at_least: silver"), encoding="utf-8")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        database = f"sqlite:///{Path(scratch) / 'demo' / 'demo.db'}"
        process = subprocess.Popen([sys.executable, "-m", "loyalty_mail", "--project", str(program), "--database",
                                    database, "studio", "--port", str(port)],
                                   stderr=subprocess.PIPE, text=True, cwd=scratch)
        try:
            url = None
            for line in process.stderr:  # type: ignore[union-attr]
                found = re.search(r"http://\S+token=\S+", line)
                if found:
                    url = found.group(0)
                    break
            if url is None:
                raise SystemExit("the studio printed no URL")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                for width in STUDIO_WIDTHS:
                    context = browser.new_context(viewport={"width": width, "height": 900})
                    page = context.new_page()
                    page.goto(url)
                    for name, path in STUDIO_PAGES.items():
                        page.goto(url.split("/?")[0] + path)
                        page.wait_for_load_state("networkidle")
                        target = out / f"studio-{name}-{width}.png"
                        page.screenshot(path=str(target), full_page=False)
                        print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
                    context.close()
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
