"""Random and malicious YAML thrown at the segment language: only typed segment errors come out,
never a database error, and whatever parses runs as valid SQL."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_mail import db
from loyalty_mail.config import load_settings
from loyalty_mail.errors import ConfigError
from loyalty_mail.models import members_table
from loyalty_mail.segments import context_for, segment_query
from loyalty_mail.segments.fields import FIELDS
from loyalty_mail.segments.spec import SegmentCatalog, SegmentParser
from loyalty_mail.tiers import TierLadder
from loyalty_mail.yaml_source import load_yaml_text

NASTY = ["'; DROP TABLE members; --", "1 OR 1=1", "\" OR \"\"=\"", "members.id", "$.a", "{a,b}", "%", "_", "\\",
         "\x00", "ễ", "🙂", "$(rm -rf /)", "{{ 7*7 }}", "__class__", "1e309", "NaN", "-0", "9" * 40,
         "2026-02-30", "90 days ago; DROP", "999999 years ago", "0 days", "now()", "attributes.x')--",
         "0001-01-01", "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"]
KEYS = [*FIELDS, "all", "any", "not", "segment", "event", "purchases", "attributes.city", "attributes.a.b",
        "attributes.x')--", "type", "count", "sum", "within", "since", "until", "where", "as", "eq", "gte",
        "between", "in", "contains", "anniversary", "within_next", "at_least", "is_set", "members; --"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.sampled_from(NASTY), st.text(max_size=12))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=4)),
    max_leaves=14,
)


def test_any_yaml_gives_typed_errors_or_runnable_sql(database_url: str, project: Path):
    settings_ = load_settings(project, environ={})
    ladder = TierLadder.from_settings(settings_.tiers)
    engine = db.create_db_engine(database_url)
    ctx = context_for(settings_, SegmentCatalog({}), datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc),
                      engine.dialect.name)
    outcomes = {"rejected": 0, "ran": 0}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=documents, key=st.sampled_from(KEYS))
    def check(body, key):
        try:
            text = yaml.safe_dump({key: body}, allow_unicode=True)
        except yaml.YAMLError:
            return
        try:
            doc = load_yaml_text(text, "segments/fuzz.yaml")
        except ConfigError:
            outcomes["rejected"] += 1
            return
        parser = SegmentParser(doc, ladder)
        segment = parser.segment("fuzz")
        if parser.problems:
            assert segment is None
            assert all(p.location and p.location.file == "segments/fuzz.yaml" for p in parser.problems)
            outcomes["rejected"] += 1
            return
        assert segment is not None
        with engine.connect() as connection:  # must run: no database error for anything that parses
            connection.execute(segment_query(segment.rule, ctx)).all()
            # ... and nothing in it touched the data.
            assert connection.execute(sa.select(sa.func.count()).select_from(members_table)).scalar_one() == 0
        outcomes["ran"] += 1

    try:
        check()
    finally:
        engine.dispose()
    assert outcomes["rejected"] > 100 and outcomes["ran"] > 5, outcomes
