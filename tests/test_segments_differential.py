"""The compiled SQL and the plain-Python reference agree, on random members, events, emails
(sends and their opens and clicks), rules and instants (around DST changes and leap days), on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_mail import db
from loyalty_mail.config import load_settings
from loyalty_mail.errors import ConfigError
from loyalty_mail.models import events_table, members_table, sends_table, tracking_events_table
from loyalty_mail.segments import context_for, segment_query
from loyalty_mail.segments.spec import SegmentCatalog, SegmentParser
from loyalty_mail.tiers import TierLadder
from loyalty_mail.yaml_source import load_yaml_text

from .reference import EmailFacts, EventFacts, HitFacts, MemberFacts, matching_ids


ZONES = [None, "Asia/Ho_Chi_Minh", "America/New_York", "Europe/London", "Australia/Sydney",
         "Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"]
TIERS = ["member", "silver", "gold", "platinum"]
# Instants near the edges: DST changes in New York, London and Sydney, leap days, year ends.
EDGES = [datetime(2026, 3, 8, 7, 0), datetime(2026, 11, 1, 6, 0), datetime(2026, 3, 29, 1, 0),
         datetime(2026, 10, 4, 16, 0), datetime(2028, 2, 29, 12, 0), datetime(2028, 2, 28, 23, 30),
         datetime(2027, 2, 28, 10, 0), datetime(2026, 12, 31, 23, 0), datetime(2026, 11, 23, 3, 0)]

instants = st.builds(lambda base, minutes: (base + timedelta(minutes=minutes)).replace(tzinfo=timezone.utc),
                     st.sampled_from(EDGES), st.integers(-36 * 60, 36 * 60))
offsets = st.integers(-800, 800)  # days around `at` for member timestamps
birthdays = st.one_of(st.none(), st.sampled_from([date(1992, 2, 29), date(1990, 2, 28), date(2000, 3, 1),
                                                  date(1985, 11, 23), date(1999, 12, 31)]),
                      st.dates(date(1950, 1, 1), date(2010, 12, 31)))
attribute_values = st.one_of(st.none(), st.sampled_from(["Hà Nội", "Huế", "Đà Nẵng", "hue", "12", "-3.5", "1.2.3", "",
                                                         "true", "false"]),
                             st.integers(-5, 40), st.booleans(), st.sampled_from([2.5, 10.0]))


@st.composite
def members_and_events(draw):
    at = draw(instants)
    members, events, emails = [], [], []
    for ref in range(1, draw(st.integers(3, 9)) + 1):
        zone = draw(st.sampled_from(ZONES))
        joined = draw(st.one_of(st.none(), offsets.map(lambda d: at - timedelta(days=abs(d), minutes=draw(
            st.integers(0, 1439))))))
        last = draw(st.one_of(st.none(), offsets.map(lambda d: at - timedelta(days=d, hours=draw(st.integers(0, 23))))))
        attributes = {}
        for key in ("city", "visits", "vip"):
            value = draw(attribute_values)
            if value is not None:
                attributes[key] = value
        purchases = draw(st.integers(0, 6))
        members.append(MemberFacts(
            id=ref, member_id=f"M{ref}", email=f"m{ref}@example.com", tier=draw(st.sampled_from(TIERS)),
            first_name=draw(st.sampled_from([None, "Lan", "Lâm", "Olivia"])),
            locale=draw(st.sampled_from([None, "vi", "en"])), timezone=zone,
            points=draw(st.integers(0, 30000)), total_spend=Decimal(draw(st.integers(0, 40_000_000))),
            purchase_count=purchases, joined_at=joined,
            joined_on=joined.astimezone(ZoneInfo(zone or "Asia/Ho_Chi_Minh")).date() if joined else None,
            last_purchase_at=last, unsubscribed_at=draw(st.one_of(st.none(), offsets.map(lambda d: at - timedelta(days=d)))),
            birthday=draw(birthdays), nps_score=draw(st.one_of(st.none(), st.integers(0, 10))),
            subscribed=draw(st.booleans()), attributes=attributes,
        ))
        for _ in range(draw(st.integers(0, 5))):
            events.append(EventFacts(
                member_ref=ref, type=draw(st.sampled_from(["purchase", "purchase", "signup", "review_written"])),
                occurred_at=at - timedelta(days=draw(st.integers(-5, 400)), minutes=draw(st.integers(0, 1439))),
                amount=Decimal(draw(st.integers(0, 5_000_000))), currency="VND",
                points=draw(st.one_of(st.none(), st.integers(0, 500))),
                properties={k: v for k, v in {"store": draw(st.sampled_from([None, "Q1", "Q3", 7])),
                                               "qty": draw(st.sampled_from([None, 1, 3, "2"]))}.items()
                            if v is not None},
            ))
        for number in range(draw(st.integers(0, 3))):
            state = draw(st.sampled_from(["sent", "sent", "sent", "failed", "planned"]))
            sent_at = at - timedelta(days=draw(st.integers(-3, 90)), hours=draw(st.integers(0, 23)))
            hits = [HitFacts(kind=draw(st.sampled_from(["open", "open", "click", "delivered"])),
                             occurred_at=sent_at + timedelta(days=draw(st.integers(0, 40)), minutes=draw(st.integers(0, 59))),
                             machine=draw(st.booleans()), bot=draw(st.booleans()))
                    for _ in range(draw(st.integers(0, 3)))]
            emails.append(EmailFacts(member_ref=ref, send_id=f"s{ref}x{number}", flow=draw(st.sampled_from(["welcome", "winback"])),
                                     state=state, sent_at=sent_at if state == "sent" or draw(st.booleans()) else None,
                                     hits=hits))
    return at, members, events, emails


times = st.sampled_from(["90 days ago", "1 week ago", "now", "today", "2026-03-08", "2026-11-01T05:30:00",
                         "2 months ago", "1 year ago", "36 hours ago"])
durations = st.sampled_from(["1 day", "7 days", "30 days", "2 weeks", "1 month", "1 year", "12 hours"])
small = st.integers(0, 40)


def number_condition(values):
    return st.one_of(
        st.builds(lambda op, v: {op: v}, st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]), values),
        st.builds(lambda a, b: {"between": sorted([a, b])}, values, values),
        st.builds(lambda vs: {"in": vs}, st.lists(values, min_size=1, max_size=3)),
        st.builds(lambda vs: {"not_in": vs}, st.lists(values, min_size=1, max_size=3)),
        st.sampled_from([{"is_set": True}, {"is_null": True}, {"is_set": False}]),
    )


member_rules = st.one_of(
    st.builds(lambda c: {"points": c}, number_condition(st.sampled_from([0, 999, 1000, 5000, 20000]))),
    st.builds(lambda c: {"total_spend": c}, number_condition(st.sampled_from([0, 10_000_000, 25_000_000]))),
    st.builds(lambda c: {"nps_score": c}, number_condition(st.integers(0, 10))),
    st.builds(lambda c: {"days_since_last_purchase": c}, number_condition(st.sampled_from([0, 1, 30, 90, 365]))),
    st.builds(lambda c: {"membership_days": c}, number_condition(st.sampled_from([0, 7, 365, 730]))),
    st.builds(lambda c: {"average_order_value": c}, number_condition(st.sampled_from([0, 1_000_001, 7_500_000.5]))),
    st.builds(lambda c: {"clv": c}, number_condition(st.sampled_from([1_000_000.5, 30_000_000.5]))),
    st.builds(lambda c: {"points_to_next_tier": c}, number_condition(st.sampled_from([0, 500, 4000]))),
    st.builds(lambda op, t: {"tier": {op: t}}, st.sampled_from(["eq", "ne", "at_least", "at_most", "above", "below"]),
              st.sampled_from(TIERS)),
    st.builds(lambda v: {"tier": v}, st.lists(st.sampled_from(TIERS), min_size=1, max_size=2)),
    st.builds(lambda v: {"nps": v}, st.sampled_from(["promoter", "passive", "detractor"])),
    st.builds(lambda v: {"nps": {"ne": v}}, st.sampled_from(["promoter", "detractor"])),
    st.builds(lambda v: {"locale": v}, st.sampled_from(["vi", "en"])),
    st.builds(lambda v: {"timezone": {"in": v}}, st.lists(st.sampled_from([z for z in ZONES if z]), min_size=1, max_size=3)),
    st.builds(lambda op, v: {"first_name": {op: v}}, st.sampled_from(["contains", "starts_with", "eq", "ne"]),
              st.sampled_from(["L", "La", "Lâ", "an", "O"])),
    st.builds(lambda v: {"subscribed": v}, st.booleans()),
    st.builds(lambda field, op, t: {field: {op: t}}, st.sampled_from(["joined_at", "last_purchase_at", "unsubscribed_at"]),
              st.sampled_from(["before", "after", "since"]), times),
    st.builds(lambda field, op, d: {field: {op: d}}, st.sampled_from(["joined_at", "last_purchase_at"]),
              st.sampled_from(["within", "older_than"]), durations),
    st.builds(lambda a, b: {"joined_at": {"between": [a, b]}}, st.sampled_from(["2 years ago", "2026-01-01"]),
              st.sampled_from(["now", "1 week ago"])),
    st.just({"joined_at": {"anniversary": "today"}}),
    st.builds(lambda n: {"birthday": {"anniversary": {"within_next": f"{n} days"}}}, st.sampled_from([0, 1, 3, 7, 30])),
    st.just({"birthday": {"anniversary": "today"}}),
    st.builds(lambda op, v: {"birthday": {op: v}}, st.sampled_from(["before", "after", "since"]),
              st.sampled_from(["1992-02-29", "18 years ago", "2000-03-01"])),
    st.builds(lambda v: {"attributes.city": v}, st.sampled_from(["Huế", "hue", "12", ""])),
    st.builds(lambda op, v: {"attributes.city": {op: v}}, st.sampled_from(["contains", "starts_with", "ne"]),
              st.sampled_from(["H", "uế", "à"])),
    st.builds(lambda c: {"attributes.visits": c}, number_condition(st.sampled_from([0, 2.5, 12, -3.5]))),
    st.builds(lambda v: {"attributes.vip": v}, st.booleans()),
    st.sampled_from([{"attributes.visits": {"is_set": True, "as": "number"}}, {"attributes.city": {"is_null": True}}]),
)

event_rules = st.one_of(
    st.builds(lambda kind, c, within: {"event": {"type": kind, "count": c, **({"within": within} if within else {})}},
              st.sampled_from(["purchase", "signup", "review_written"]), number_condition(st.integers(0, 3)).filter(
                  lambda c: not any(k in c for k in ("is_set", "is_null", "in", "not_in"))),
              st.one_of(st.none(), durations)),
    st.builds(lambda c, since: {"purchases": {"sum": {"amount": c}, "since": since}},
              st.sampled_from([{"gte": 1_000_000}, {"lt": 2_500_000}, {"between": [0, 4_000_000]}]), times),
    st.builds(lambda store, c: {"purchases": {"where": {"store": store}, "count": c}},
              st.sampled_from(["Q1", 7, {"in": ["Q1", "Q3"]}]), st.sampled_from([1, {"gte": 2}, 0])),
    st.builds(lambda c: {"purchases": {"sum": {"qty": c}}}, st.sampled_from([{"gte": 3}, {"eq": 0}])),
    st.builds(lambda c: {"event": {"type": "purchase", "where": {"amount": c}}},
              st.sampled_from([{"gte": 2_000_000}, {"lt": 100}])),
)
email_rules = st.builds(
    lambda action, flow, count, within, automated: {"emails": {
        "action": action, **({"flow": flow} if flow else {}), **({"count": count} if count is not None else {}),
        **({"within": within} if within else {}), **({"include_automated": automated} if automated is not None else {})}},
    st.sampled_from(["received", "opened", "clicked"]), st.sampled_from([None, "winback"]),
    st.one_of(st.none(), st.sampled_from([0, 1, 2, {"gte": 2}, {"lt": 2}, {"between": [1, 2]}])),
    st.one_of(st.none(), st.sampled_from(["7 days", "30 days", "60 days"])), st.one_of(st.none(), st.booleans()))
# one_of flattens nested one_of's into one uniform choice, which would give the single email
# rule 1 draw in 30: pick the kind first (member 3 : events 2 : emails 1), then the rule.
field_rules = st.sampled_from([member_rules] * 3 + [event_rules] * 2 + [email_rules]).flatmap(lambda kind: kind)

rules = st.recursive(
    field_rules,
    lambda inner: st.one_of(
        st.builds(lambda items: {"all": items}, st.lists(inner, min_size=1, max_size=3)),
        # Member conditions beside event conditions: the events are probed per candidate member.
        st.builds(lambda item, events: {"all": [item, *events]}, inner, st.lists(event_rules, min_size=1, max_size=2)),
        st.builds(lambda items: {"any": items}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda item: {"not": item}, inner),
    ),
    max_leaves=6,
)


def parse_rule(rule: dict, ladder: TierLadder):
    doc = load_yaml_text(yaml.safe_dump({"name": "random", **rule}, allow_unicode=True), "segments/random.yaml")
    parser = SegmentParser(doc, ladder)
    segment = parser.segment("random")
    assert not parser.problems, parser.problems
    return segment


def insert(engine: sa.Engine, members: list[MemberFacts], events: list[EventFacts],
           emails: Sequence[EmailFacts] = ()) -> None:
    with engine.begin() as connection:
        connection.execute(tracking_events_table.delete())
        connection.execute(sends_table.delete())
        connection.execute(events_table.delete())
        connection.execute(members_table.delete())
        connection.execute(members_table.insert(), [{
            "id": m.id, "member_id": m.member_id, "email": m.email, "first_name": m.first_name, "locale": m.locale,
            "timezone": m.timezone, "tier": m.tier, "points": m.points, "total_spend": m.total_spend,
            "purchase_count": m.purchase_count, "joined_at": m.joined_at, "joined_on": m.joined_on,
            "last_purchase_at": m.last_purchase_at, "unsubscribed_at": m.unsubscribed_at, "birthday": m.birthday,
            "nps_score": m.nps_score, "subscribed": m.subscribed, "attributes": m.attributes,
            "created_at": datetime(2020, 1, 1, tzinfo=timezone.utc), "updated_at": datetime(2020, 1, 1, tzinfo=timezone.utc),
        } for m in members])
        if events:
            connection.execute(events_table.insert(), [{
                "member_ref": e.member_ref, "type": e.type, "occurred_at": e.occurred_at, "amount": e.amount,
                "currency": e.currency, "points": e.points, "properties": e.properties,
                "created_at": datetime(2020, 1, 1, tzinfo=timezone.utc),
            } for e in events])
        if emails:
            made = datetime(2020, 1, 1, tzinfo=timezone.utc)
            connection.execute(sends_table.insert(), [{
                "send_id": m.send_id, "member_ref": m.member_ref, "flow": m.flow, "occurrence_key": m.send_id,
                "template": "welcome", "state": m.state, "reason": "test", "occurrence": {}, "occurred_at": made,
                "scheduled_for": made, "created_at": made, "sent_at": m.sent_at} for m in emails])
            hits = [{"send_id": m.send_id, "kind": h.kind, "source": "tracker", "occurred_at": h.occurred_at,
                     "machine": h.machine, "bot": h.bot, "detail": {}} for m in emails for h in m.hits]
            if hits:
                connection.execute(tracking_events_table.insert(), hits)


@pytest.mark.slow
def test_sql_matches_the_reference(database_url: str, project: Path):
    settings_ = load_settings(project, environ={})
    ladder = TierLadder.from_settings(settings_.tiers)
    engine = db.create_db_engine(database_url)
    catalog = SegmentCatalog({})
    seen = {"examples": 0, "partial": 0}

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(data=members_and_events(), rule=rules)
    def check(data, rule):
        at, members, events, emails = data
        segment = parse_rule(rule, ladder)
        ctx = context_for(settings_, catalog, at, engine.dialect.name)
        insert(engine, members, events, emails)
        with engine.connect() as connection:
            from_sql = {row[0] for row in connection.execute(segment_query(segment.rule, ctx))}
        expected = matching_ids(segment.rule, members, events, ctx, emails)
        assert from_sql == expected, (rule, at)
        seen["examples"] += 1
        seen["partial"] += 0 < len(expected) < len(members)

    try:
        check()
    finally:
        engine.dispose()
    # Not vacuous: many examples select some members but not all of them.
    assert seen["partial"] >= seen["examples"] // 5, seen


def test_parse_rule_rejects_nothing_the_strategies_make():
    """The generated rules are all valid segment YAML (otherwise the test above would skip them)."""
    ladder = TierLadder.from_settings(load_settings(Path(__file__).parent.parent, environ={}).tiers)

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(rule=rules)
    def check(rule):
        try:
            parse_rule(rule, ladder)
        except ConfigError as exc:  # pragma: no cover - shown on failure
            raise AssertionError(str(exc)) from None

    check()


PROBED_COUNTS = [{op: n} for op in ("gte", "gt", "eq", "ne", "lt", "lte") for n in range(5)] + [
    {"between": [1, 3]}, {"between": [0, 0]}, {"between": [4, 9]}, {"gte": 2, "lte": 3}]
PROBED_SUMS = [{"gte": 2_000_000}, {"gt": 2_000_000}, {"lt": 1_000_000}, {"between": [1_000_000, 3_000_000]},
               {"eq": 0}]


def test_event_probes_at_their_thresholds(database_url: str, project: Path):
    """An event condition beside a member condition is probed member by member; counts stop
    early. Members with 0 to 4 purchases in the window (and one just outside it), at every
    threshold around those numbers, give the reference's answer."""
    at = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
    settings_ = load_settings(project, environ={})
    ladder = TierLadder.from_settings(settings_.tiers)
    members = [MemberFacts(
        id=ref, member_id=f"M{ref}", email=f"m{ref}@example.com", tier="member" if ref == 6 else "gold",
        first_name=None, locale=None, timezone="UTC", points=0, total_spend=Decimal(0), purchase_count=0,
        joined_at=None, joined_on=None, last_purchase_at=None, unsubscribed_at=None, birthday=None, nps_score=None,
        subscribed=True, attributes={}) for ref in range(1, 7)]
    events = [EventFacts(member_ref=ref, type="purchase", occurred_at=at - timedelta(days=29, hours=n),
                         amount=Decimal(1_000_000), currency="VND", points=None, properties={})
              for ref in range(1, 7) for n in range(ref - 1)]
    events += [EventFacts(member_ref=ref, type=kind, occurred_at=at - timedelta(days=days), amount=Decimal(1_000_000),
                          currency="VND", points=None, properties={})
               for ref in range(1, 7) for kind, days in (("purchase", 31), ("signup", 1))]
    engine = db.create_db_engine(database_url)
    insert(engine, members, events)
    ctx = context_for(settings_, SegmentCatalog({}), at, engine.dialect.name)
    rules = [{"purchases": {"count": count, "within": "30 days"}} for count in PROBED_COUNTS]
    rules += [{"purchases": {"sum": {"amount": total}, "within": "30 days"}} for total in PROBED_SUMS]
    try:
        with engine.connect() as connection:
            for rule in rules:
                segment = parse_rule({"all": [{"tier": {"at_least": "silver"}}, rule]}, ladder)
                from_sql = {row[0] for row in connection.execute(segment_query(segment.rule, ctx))}
                assert from_sql == matching_ids(segment.rule, members, events, ctx), rule
    finally:
        engine.dispose()
    # the data spans the thresholds: member n has n - 1 purchases in the window
    assert matching_ids(parse_rule({"all": [{"tier": "gold"}, rules[3]]}, ladder).rule, members, events, ctx) == {4, 5}
