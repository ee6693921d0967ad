"""Rendering speed: complete messages per second, our compiled path against the naive one.

    python benchmarks/render.py                 # 10,000 members, welcome + tier_upgrade
    python benchmarks/render.py --members 2000 --naive 100

Our path: the compiled template (CSS inlined once per template), signed click links and open
pixel, the RFC 5322 bytes. The naive path, on the same members in the same run: render the files
as written, run premailer on each email, rewrite the links by parsing the HTML with lxml, build
the message with the standard library's EmailMessage. Both run on one core, in this process,
taking turns in ten rounds so that a change in the machine's speed touches both alike.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path

import lxml.html

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loyalty_mail.config import load_settings  # noqa: E402
from loyalty_mail.rendering import Renderer  # noqa: E402
from loyalty_mail.rendering.inlining import inline_css  # noqa: E402
from loyalty_mail.rendering.text import html_to_text  # noqa: E402
from loyalty_mail.signing import TokenClaims, TokenSigner  # noqa: E402

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
                                       occurrence=occurrence_for(template, member))
        tree = lxml.html.document_fromstring(inline_css(html))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--naive", type=int, default=300, help="emails per template on the naive path")
    args = parser.parse_args()
    settings = load_settings(REPO, environ={"LOYALTY_MAIL_SECRET": SECRET})
    renderer = Renderer.for_program(settings, signer=TokenSigner(SECRET))
    people = members(args.members)
    start = time.perf_counter()
    for template in ("welcome", "tier_upgrade"):
        for locale in ("vi", "en"):
            renderer.compiled(template, locale)
    print(f"compile 4 variants: {time.perf_counter() - start:.2f} s (once per process)")
    print(f"{'template':<14}{'emails':>8}{'ours/s':>10}{'KB/msg':>8}{'naive/s':>10}{'speed-up':>10}")
    total_ours, total_naive = [], []
    rounds = 10  # ours and naive take turns, so that both see the same machine (its speed drifts)
    for template in ("welcome", "tier_upgrade"):
        ours(renderer, template, people[:200])  # warm up
        elapsed = naive_elapsed = 0.0
        size = 0
        for turn in range(rounds):
            spent, written = ours(renderer, template, people[turn::rounds])
            elapsed, size = elapsed + spent, size + written
            naive_elapsed += naive(renderer, template, people[:args.naive][turn::rounds])
        rate, naive_rate = len(people) / elapsed, args.naive / naive_elapsed
        total_ours.append(elapsed)
        total_naive.append(naive_elapsed / args.naive)
        print(f"{template:<14}{len(people):>8}{rate:>10.0f}{size / len(people) / 1024:>8.1f}"
              f"{naive_rate:>10.1f}{rate / naive_rate:>9.1f}x")
    overall = 2 * len(people) / sum(total_ours)
    naive_overall = 2 / sum(total_naive)
    print(f"{'both':<14}{2 * len(people):>8}{overall:>10.0f}{'':>8}{naive_overall:>10.1f}"
          f"{overall / naive_overall:>9.1f}x")


if __name__ == "__main__":
    main()
