"""Is a coupon code genuine, and whose?

Codes are signed, never stored (`signing.coupon_code`). The send ledger says which emails went to
whom for which occurrence, so each of those emails' code is signed again, with every configured
secret, until one matches the code a shop was shown: one HMAC per email and secret, the ledger
read as a stream.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from .models import members_table, sends_table
from .signing import Secrets, coupon_suffix, parse_coupon, signing_keys

DELIVERED_STATES = ("sent", "sending", "unknown")  # emails that went, or may have gone, out
STREAM_ROWS = 10_000


@dataclass(frozen=True)
class CouponOwner:
    """The email a genuine code was printed in."""

    member_id: str
    flow: str
    occurrence_key: str
    state: str
    sent_at: datetime | None
    older_secret: bool  # signed with a secret listed after the first: it still verifies


def find_owner(engine: sa.Engine, secrets: Secrets, code: str) -> CouponOwner | None:
    """The email whose coupon this code is, or None. ValueError when the text cannot be a code
    at all (wrong characters or length after the prefix)."""
    prefix, suffix = parse_coupon(code)
    keys = signing_keys(secrets)
    s, m = sends_table, members_table
    query = (sa.select(m.c.member_id, s.c.flow, s.c.occurrence_key, s.c.state, s.c.sent_at)
             .join(m, m.c.id == s.c.member_ref).where(s.c.state.in_(DELIVERED_STATES))
             .execution_options(stream_results=True, yield_per=STREAM_ROWS))
    with engine.connect() as conn:
        for row in conn.execute(query):
            scope = f"{row.flow}:{row.occurrence_key}"  # as the renderer scopes `coupon()`
            for index, key in enumerate(keys):
                if hmac.compare_digest(coupon_suffix(key, row.member_id, scope, prefix, len(suffix)), suffix):
                    return CouponOwner(row.member_id, row.flow, row.occurrence_key, row.state,
                                       row.sent_at, older_secret=index > 0)
    return None
