"""Is a hit a person? Flags, never filters: machine opens and scanner clicks are stored too.

- machine open: SendGrid's `sg_machine_open`, or Apple Mail Privacy Protection's proxy (Apple's
  documented fetcher identifies itself as a Mozilla agent without a browser token; we match the
  proxy's known form and Google's image proxy for completeness).
- bot click: a known scanner user agent, a click within `bot_click_seconds` of delivery, or
  several links of one email clicked within the same second.
"""

from __future__ import annotations

import re

_SCANNERS = re.compile(
    r"(bot|crawler|spider|scanner|preview|barracuda|proofpoint|mimecast|symantec|messagelabs|"
    r"trendmicro|fortiguard|safelinks|urldefense|python-requests|curl/|wget/|go-http-client|"
    r"headlesschrome|phantomjs|slurp)", re.IGNORECASE)
_MAIL_PROXIES = re.compile(r"(GoogleImageProxy|YahooMailProxy|^Mozilla/5\.0$)", re.IGNORECASE)


def is_scanner(user_agent: str | None) -> bool:
    return not user_agent or bool(_SCANNERS.search(user_agent))


def is_machine_open(user_agent: str | None) -> bool:
    """Opens fetched by a mail provider's proxy rather than a person's mail client."""
    return bool(user_agent) and bool(_MAIL_PROXIES.search(user_agent or ""))
