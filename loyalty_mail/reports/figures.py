"""Email performance by flow, journey step, segment, tier, locale or period, and lift against hold-out groups.

All figures are SQL aggregates over the send ledger, the tracking events and the members'
purchases; formatting lives at the edge (the CLI). Definitions:

    sent          sends in state `sent` scheduled in [since, until)
    bounced       sent with a bounce (hard or given-up soft), dropped or blocked event
    delivered     sent - bounced
    opens         sent with an open event (human: not a machine open, not a bot)
    clicks        sent with a click event (human: not a bot click)
    unsubscribed  sent with an unsubscribe event; spam: sent with a spam complaint
    converted     sent followed by a purchase by the member within the attribution window;
                  revenue is the amount of those purchases. In a journey a purchase counts for
                  the last of the journey's emails sent before it (within the window) alone, so
                  the journey's total counts it once and its steps add up to that total
    rates         open = opens / delivered, click = clicks / delivered, click-to-open =
                  clicks / opens (human figures), unsubscribe and spam = per delivered

`variant` is the A/B variant the send had (variants.py compares them);
`tier` and `locale` are the member's now; `segment` is the segment that targeted the send; `topic`
is the send's topic, a campaign's or its flow's in config.yaml (so unsubscribes and complaints
per topic); `step` is a journey's step id (the part of the occurrence key after `/`), or the
template of a one-email flow; `day`, `week` (starting Monday) and `month` are UTC dates of the send.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from ..models import events_table, members_table, sends_table, tier_changes_table, tracking_events_table
from .membership import membership_column

GROUPS = ("flow", "step", "variant", "topic", "segment", "tier", "locale", "day", "week", "month")
COLUMNS = ("sent", "delivered", "bounced", "opens_human", "opens_total", "clicks_human", "clicks_total",
           "unsubscribed", "spam", "converted", "revenue", "open_rate", "click_rate", "click_to_open_rate",
           "unsubscribe_rate", "spam_rate", "revenue_per_email")
SMALL_SAMPLE = 100

# The days a report may cover: the periods it compares (the one before, 90 days before) stay dates.
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(2999, 12, 31)


def _has(send_id: Any, kinds: tuple[str, ...], human: bool | None = None) -> sa.ColumnElement[int]:
    t = tracking_events_table
    where = [t.c.send_id == send_id, t.c.kind.in_(kinds)]
    if human:
        where += [t.c.machine.is_(False), t.c.bot.is_(False)]
    return sa.case((sa.exists(sa.select(t.c.id).where(*where)), 1), else_=0)


def _period(column: Any, unit: str, dialect: str) -> Any:
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.date_trunc(unit, column), "YYYY-MM-DD")
    formats = {"day": "%Y-%m-%d", "month": "%Y-%m-01"}
    if unit == "week":  # the Monday of the week
        return sa.func.date(column, "weekday 0", "-6 days")
    return sa.func.strftime(formats[unit], column)


def _step(dialect: str) -> Any:
    """A journey send's step id (`welcome/welcome_reminder` -> `welcome_reminder`), else the template."""
    s = sends_table
    slash = (sa.func.strpos if dialect == "postgresql" else sa.func.instr)(s.c.occurrence_key, "/")
    return sa.case((slash > 0, sa.func.substr(s.c.occurrence_key, slash + 1)), else_=s.c.template)


def _test(dialect: str) -> Any:
    """The A/B test a send belongs to: its flow's (or campaign's) name, or `<flow>.<step id>` for a
    journey's send (flows/journey_spec.ab_test_name)."""
    s = sends_table
    slash = (sa.func.strpos if dialect == "postgresql" else sa.func.instr)(s.c.occurrence_key, "/")
    return sa.case((slash > 0, s.c.flow + "." + sa.func.substr(s.c.occurrence_key, slash + 1)), else_=s.c.flow)


def send_topic(topics: Mapping[str, str] | None) -> sa.ColumnElement[Any]:
    """The topic of a send in SQL, as `Settings.send_topic` decides it: the one its occurrence
    recorded (a campaign's), else its flow's (`topics`: flow -> topic)."""
    s = sends_table
    flow_topic = (sa.case(dict(topics), value=s.c.flow, else_=sa.null()) if topics
                  else sa.literal(None, sa.String()))
    return sa.func.coalesce(s.c.occurrence["topic"].as_string(), flow_topic)


def purchased_within(member_ref: Any, moment: Any, window: timedelta, dialect: str) -> list[sa.ColumnElement[bool]]:
    """The conditions on `events` of a conversion: a purchase by the member after `moment`, within
    the attribution window."""
    e = events_table
    return [e.c.member_ref == member_ref, e.c.type == "purchase", e.c.occurred_at > moment,
            e.c.occurred_at <= moment + sa.literal(window, sa.Interval()) if dialect == "postgresql"
            else e.c.occurred_at <= sa.func.strftime("%Y-%m-%d %H:%M:%f", moment,
                                                     f"+{int(window.total_seconds())} seconds")]


def _followed_in_journey(dialect: str) -> sa.ColumnElement[bool]:
    """For a purchase (`events`) after a journey's send (`sends`): whether another email of the
    same journey reached the member between them (sent later, before the purchase). The purchase
    then belongs to that later email alone: each purchase counts once in a journey, for the last
    of its emails before it. A one-email flow's send is never followed (every send whose window
    holds the purchase counts it, as before)."""
    s, e = sends_table, events_table
    later = sends_table.alias("later_send")
    find = sa.func.strpos if dialect == "postgresql" else sa.func.instr
    moment = sa.func.coalesce(s.c.sent_at, s.c.scheduled_for)
    then = sa.func.coalesce(later.c.sent_at, later.c.scheduled_for)
    return sa.and_(find(s.c.occurrence_key, "/") > 0, sa.exists(sa.select(later.c.id).where(
        later.c.member_ref == s.c.member_ref, later.c.flow == s.c.flow, later.c.state == "sent",
        find(later.c.occurrence_key, "/") > 0, later.c.id != s.c.id,
        sa.or_(then > moment, sa.and_(then == moment, later.c.id > s.c.id)), then < e.c.occurred_at)
        .correlate(s, e)))


def per_send(since: datetime, until: datetime, window: timedelta, dialect: str,
             states: tuple[str, ...] = ("sent",), membership: sa.Table | None = None,
             segments: tuple[str, ...] = (), topics: Mapping[str, str] | None = None) -> sa.Subquery:
    """One row per send with its outcome flags: the base of every figure. With a `membership`
    table (see membership.py), one more column `in_<segment>` ('in' or 'out') per segment.
    `topics`: each flow's topic (flow -> topic), for the `topic` column."""
    s, m, e = sends_table, members_table, events_table
    member_of = ([membership_column(membership, name, s.c.send_id).label(f"in_{name}") for name in segments]
                 if membership is not None else [])
    purchases = [*purchased_within(s.c.member_ref, sa.func.coalesce(s.c.sent_at, s.c.scheduled_for), window, dialect),
                 ~_followed_in_journey(dialect)]
    topic = send_topic(topics)
    return (sa.select(
        s.c.send_id, s.c.flow, _step(dialect).label("step"), s.c.variant, _test(dialect).label("test"), topic.label("topic"), s.c.segment,
        s.c.state, m.c.tier, m.c.locale,
        _period(s.c.scheduled_for, "day", dialect).label("day"),
        _period(s.c.scheduled_for, "week", dialect).label("week"),
        _period(s.c.scheduled_for, "month", dialect).label("month"),
        _has(s.c.send_id, ("bounce", "soft_bounce", "dropped", "blocked")).label("bounced"),
        _has(s.c.send_id, ("open",), human=True).label("open_human"),
        _has(s.c.send_id, ("open",)).label("open_total"),
        _has(s.c.send_id, ("click",), human=True).label("click_human"),
        _has(s.c.send_id, ("click",)).label("click_total"),
        _has(s.c.send_id, ("unsubscribe",)).label("unsubscribed"),
        _has(s.c.send_id, ("spam_complaint",)).label("spam"),
        sa.case((sa.exists(sa.select(e.c.id).where(*purchases)), 1), else_=0).label("converted"),
        sa.select(sa.func.coalesce(sa.func.sum(e.c.amount), 0)).where(*purchases).scalar_subquery().label("revenue"),
        *member_of,
    ).join(m, m.c.id == s.c.member_ref)
        .where(s.c.state.in_(states), s.c.scheduled_for >= since, s.c.scheduled_for < until)
        .subquery())


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def performance(conn: sa.Connection, since: datetime, until: datetime, by: list[str],
                window: timedelta, membership: sa.Table | None = None,
                topics: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Figures per group (see module docstring); `by` from GROUPS, or `in_<segment>` for a segment
    in the `membership` table; no grouping: one total row. `topics`: flow -> topic."""
    segments = tuple(name[3:] for name in by if name.startswith("in_"))
    base = per_send(since, until, window, conn.dialect.name, membership=membership, segments=segments,
                    topics=topics)
    keys = [base.c[name] for name in by]
    total = sa.func.sum
    query = sa.select(
        *keys, sa.func.count().label("sent"), total(base.c.bounced).label("bounced"),
        total(base.c.open_human).label("opens_human"), total(base.c.open_total).label("opens_total"),
        total(base.c.click_human).label("clicks_human"), total(base.c.click_total).label("clicks_total"),
        total(base.c.unsubscribed).label("unsubscribed"), total(base.c.spam).label("spam"),
        total(base.c.converted).label("converted"), total(base.c.revenue).label("revenue"),
    ).group_by(*keys).order_by(*keys)
    rows = []
    for row in conn.execute(query).mappings():
        values = {name: row[name] for name in by}
        counts = {k: int(row[k] or 0) for k in ("sent", "bounced", "opens_human", "opens_total", "clicks_human",
                                               "clicks_total", "unsubscribed", "spam", "converted")}
        delivered = counts["sent"] - counts["bounced"]
        revenue = float(row["revenue"] or 0)
        rows.append({**values, "sent": counts["sent"], "delivered": delivered, "bounced": counts["bounced"],
                     "opens_human": counts["opens_human"], "opens_total": counts["opens_total"],
                     "clicks_human": counts["clicks_human"], "clicks_total": counts["clicks_total"],
                     "unsubscribed": counts["unsubscribed"], "spam": counts["spam"],
                     "converted": counts["converted"], "revenue": round(revenue, 2),
                     "open_rate": _ratio(counts["opens_human"], delivered),
                     "click_rate": _ratio(counts["clicks_human"], delivered),
                     "click_to_open_rate": _ratio(counts["clicks_human"], counts["opens_human"]),
                     "unsubscribe_rate": _ratio(counts["unsubscribed"], delivered),
                     "spam_rate": _ratio(counts["spam"], delivered),
                     "revenue_per_email": round(revenue / counts["sent"], 2) if counts["sent"] else None})
    return rows


@dataclass(frozen=True)
class Lift:
    flow: str
    sent: int
    sent_converted: int
    held_out: int
    held_out_converted: int

    @property
    def sent_rate(self) -> float | None:
        return self.sent_converted / self.sent if self.sent else None

    @property
    def held_out_rate(self) -> float | None:
        return self.held_out_converted / self.held_out if self.held_out else None

    def as_row(self) -> dict[str, Any]:
        p1, p0 = self.sent_rate, self.held_out_rate
        row: dict[str, Any] = {"flow": self.flow, "sent": self.sent, "sent_converted": self.sent_converted,
                               "held_out": self.held_out, "held_out_converted": self.held_out_converted,
                               "sent_conversion_rate": None if p1 is None else round(p1, 4),
                               "held_out_conversion_rate": None if p0 is None else round(p0, 4),
                               "absolute_lift": None, "ci95_low": None, "ci95_high": None, "relative_lift": None}
        if p1 is not None and p0 is not None:
            difference = p1 - p0
            spread = 1.96 * math.sqrt(p1 * (1 - p1) / self.sent + p0 * (1 - p0) / self.held_out)
            row.update(absolute_lift=round(difference, 4), ci95_low=round(difference - spread, 4),
                       ci95_high=round(difference + spread, 4),
                       relative_lift=round(difference / p0, 4) if p0 else None)
        small = min(self.sent, self.held_out) < SMALL_SAMPLE
        row["note"] = ("small sample: fewer than 100 members in a group, do not conclude" if small else
                       "significant" if row["ci95_low"] is not None and (row["ci95_low"] > 0 or row["ci95_high"] < 0)
                       else "not significant (the interval includes 0)")
        return row


def lift(conn: sa.Connection, since: datetime, until: datetime, window: timedelta) -> list[Lift]:
    """Conversion of sent against held-out members, per flow that has a hold-out group. A held-out
    member's clock starts when the email would have gone out (scheduled_for)."""
    base = per_send(since, until, window, conn.dialect.name, states=("sent", "held_out"))
    query = (sa.select(base.c.flow, base.c.state, sa.func.count(), sa.func.sum(base.c.converted))
             .group_by(base.c.flow, base.c.state))
    figures: dict[str, dict[str, tuple[int, int]]] = {}
    for flow, state, count, converted in conn.execute(query):
        figures.setdefault(flow, {})[state] = (int(count), int(converted or 0))
    return [Lift(flow, *groups.get("sent", (0, 0)), *groups["held_out"])
            for flow, groups in sorted(figures.items()) if "held_out" in groups]


def program_health(conn: sa.Connection, since: datetime, until: datetime, clv_years: float) -> dict[str, Any]:
    """How the loyalty program itself is doing; all SQL aggregates over members, events and the
    tier history.

    active: a purchase in [since, until); lapsed: members who have bought before but not in the 90
    days before `until`; repeat-purchase rate: buyers with 2+ purchases among buyers; retention: of
    members active in the equally long period before `since`, the share active again in this one;
    CLV: average order value x purchases per year of membership x `segments.clv_years`;
    NPS: % promoters (9-10) - % detractors (0-6) among members who answered.
    """
    m, e, t = members_table, events_table, tier_changes_table
    buyers_in = (lambda start, end: sa.select(e.c.member_ref).where(
        e.c.type == "purchase", e.c.occurred_at >= start, e.c.occurred_at < end).distinct())
    by_tier: dict[str, int] = dict(conn.execute(sa.select(m.c.tier, sa.func.count()).group_by(m.c.tier)).all())
    movements = [{"from": f, "to": to, "members": n} for f, to, n in conn.execute(
        sa.select(t.c.from_tier, t.c.to_tier, sa.func.count())
        .where(t.c.changed_at >= since, t.c.changed_at < until, t.c.from_tier.is_not(None))
        .group_by(t.c.from_tier, t.c.to_tier).order_by(t.c.from_tier, t.c.to_tier))]
    active = conn.execute(sa.select(sa.func.count()).select_from(buyers_in(since, until).subquery())).scalar_one()
    lapsed = conn.execute(sa.select(sa.func.count()).where(
        m.c.last_purchase_at.is_not(None), m.c.last_purchase_at < until - timedelta(days=90))).scalar_one()
    buyers = conn.execute(sa.select(sa.func.count()).where(m.c.purchase_count >= 1)).scalar_one()
    repeat = conn.execute(sa.select(sa.func.count()).where(m.c.purchase_count >= 2)).scalar_one()
    before = buyers_in(since - (until - since), since).subquery()
    returning = conn.execute(sa.select(sa.func.count()).select_from(before).where(
        before.c.member_ref.in_(buyers_in(since, until)))).scalar_one()
    previous = conn.execute(sa.select(sa.func.count()).select_from(before)).scalar_one()
    spend, orders = conn.execute(sa.select(sa.func.sum(m.c.total_spend), sa.func.sum(m.c.purchase_count))).one()
    clv_rows = conn.execute(sa.select(m.c.tier, m.c.total_spend, m.c.purchase_count, m.c.joined_at)
                            .where(m.c.purchase_count >= 1)).all()
    clv: dict[str, list[float]] = {}
    for tier, total, count, joined in clv_rows:
        years = max(((until - joined).days if joined else 365) / 365.25, 1 / 12)
        clv.setdefault(tier, []).append(float(total) / count * (count / years) * clv_years)
    scores: dict[int, int]
    scores = dict(conn.execute(sa.select(m.c.nps_score, sa.func.count()).where(m.c.nps_score.is_not(None))
                               .group_by(m.c.nps_score)).all())
    answered = sum(scores.values())
    promoters = sum(n for s, n in scores.items() if s >= 9)
    detractors = sum(n for s, n in scores.items() if s <= 6)
    return {
        "members_by_tier": by_tier,
        "tier_movements": movements,
        "active": active,
        "lapsed": lapsed,
        "repeat_purchase_rate": _ratio(repeat, buyers),
        "retention_rate": _ratio(returning, previous),
        "retention_cohort": previous,
        "average_order_value": round(float(spend) / int(orders), 2) if orders else None,
        "clv_by_tier": {tier: round(sum(v) / len(v), 2) for tier, v in sorted(clv.items())},
        "nps": round(100 * (promoters - detractors) / answered, 1) if answered else None,
        "nps_distribution": {str(score): scores.get(score, 0) for score in range(11)},
    }
