"""The schema comes from migrations, matches the models, and outdated databases are refused."""

from __future__ import annotations

import warnings

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from loyalty_mail import db
from loyalty_mail.errors import DatabaseError
from loyalty_mail.models import SQLModel


def test_migrations_build_exactly_the_models(database_url):
    engine = db.create_db_engine(database_url)
    assert db.current_revision(engine) == db.head_revision()
    with engine.connect() as connection, warnings.catch_warnings():
        # The anniversary expression indexes live only in migration 0003 (tested below).
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
        expression_indexes = {"ix_members_joined_on_month_day", "ix_members_birthday_month_day"}
        context = MigrationContext.configure(connection, opts={
            "compare_type": True,
            "include_object": lambda obj, name, kind, *_: not (kind == "index" and name in expression_indexes),
        })
        assert compare_metadata(context, SQLModel.metadata) == []
    engine.dispose()


def query_plan(engine: sa.Engine, compiled: object) -> str:
    """The database's plan for a compiled query, as one line of text."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            return " ".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
        connection.exec_driver_sql("SET enable_seqscan = off")  # an empty table: ask whether it *can*
        return " ".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {compiled}"))


def test_anniversary_segments_use_the_month_day_indexes(database_url, project):
    from datetime import datetime, timezone

    from loyalty_mail.config import load_settings
    from loyalty_mail.models import members_table
    from loyalty_mail.segments import context_for, segment_query
    from loyalty_mail.segments.spec import SegmentCatalog, SegmentParser
    from loyalty_mail.tiers import TierLadder
    from loyalty_mail.yaml_source import load_yaml_text

    settings = load_settings(project, environ={})
    engine = db.create_db_engine(database_url)
    parser = SegmentParser(load_yaml_text("joined_at: {anniversary: today}\n", "s.yaml"),
                           TierLadder.from_settings(settings.tiers))
    segment = parser.segment("s")
    ctx = context_for(settings, SegmentCatalog({}), datetime(2026, 11, 23, tzinfo=timezone.utc), engine.dialect.name)
    query = segment_query(segment.rule, ctx, members_table.c.id)
    compiled = query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    plan = query_plan(engine, compiled)
    engine.dispose()
    assert "ix_members_joined_on_month_day" in plan, plan


@pytest.mark.parametrize("rule", [
    "purchases: {count: {gte: 3}, within: 30 days}\n",
    "all:\n  - tier: gold\n  - purchases: {count: 0, within: 90 days}\n",
])
def test_event_window_segments_use_the_event_indexes(database_url, project, rule):
    from datetime import datetime, timezone

    from loyalty_mail.config import load_settings
    from loyalty_mail.models import members_table
    from loyalty_mail.segments import context_for, segment_query
    from loyalty_mail.segments.spec import SegmentCatalog, SegmentParser
    from loyalty_mail.tiers import TierLadder
    from loyalty_mail.yaml_source import load_yaml_text

    settings = load_settings(project, environ={})
    engine = db.create_db_engine(database_url)
    segment = SegmentParser(load_yaml_text(rule, "s.yaml"), TierLadder.from_settings(settings.tiers)).segment("s")
    ctx = context_for(settings, SegmentCatalog({}), datetime(2026, 11, 23, tzinfo=timezone.utc), engine.dialect.name)
    compiled = segment_query(segment.rule, ctx, members_table.c.id).compile(
        dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    plan = query_plan(engine, compiled)
    engine.dispose()
    # (type, occurred_at, member_ref) or (member_ref, type, occurred_at): never a scan of events
    assert "ix_events_type_time_member" in plan or "ix_events_member_type_time" in plan, plan


def test_each_migration_upgrades_from_the_previous_revision(database_url):
    """Step down one revision at a time to empty, then up one at a time to head."""
    from pathlib import Path

    from alembic.script import ScriptDirectory

    engine = db.create_db_engine(database_url)
    script = ScriptDirectory(str(Path(db.__file__).parent / "migrations"))
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert revisions[-1] == db.head_revision() and len(revisions) >= 6
    for previous, revision in reversed(list(zip([None, *revisions[:-1]], revisions))):
        db.downgrade(engine, previous or "base")
        assert db.current_revision(engine) == previous
    for revision in revisions:
        db.upgrade(engine, revision)
        assert db.current_revision(engine) == revision
    engine.dispose()


def test_downgrade_to_empty_and_upgrade_again(database_url):
    engine = db.create_db_engine(database_url)
    assert db.downgrade(engine, "base") == (db.head_revision(), "")
    with engine.connect() as connection:
        assert set(sa.inspect(connection).get_table_names()) <= {"alembic_version"}
    assert db.upgrade(engine) == (None, db.head_revision())
    engine.dispose()


def test_db_upgrade_and_status_commands(run, database_url):
    engine = db.create_db_engine(database_url)
    db.downgrade(engine, "base")
    engine.dispose()
    status = run("db", "status")
    assert status.exit_code == 1 and "revision none (empty)" in status.stdout
    assert "run `loyalty-mail db upgrade`" in status.stderr
    upgraded = run("db", "upgrade")
    assert upgraded.exit_code == 0 and f"upgraded from an empty database to revision {db.head_revision()}" in upgraded.stdout
    assert "already at revision" in run("db", "upgrade").stdout
    assert run("db", "status").exit_code == 0


def test_an_outdated_schema_is_refused_with_advice(database_url):
    engine = db.create_db_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0000_older'"))
    with pytest.raises(DatabaseError, match=r"schema is at revision 0000_older.*Run `loyalty-mail db upgrade`"):
        db.ensure_schema(engine)
    with engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE alembic_version SET version_num = '{db.head_revision()}'"))
    engine.dispose()


def test_a_foreign_database_is_not_taken_over(tmp_path):
    engine = db.create_db_engine(f"sqlite:///{tmp_path / 'other.db'}")
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE invoices (id integer)"))
    with pytest.raises(DatabaseError, match="already holds tables that are not loyalty-mail's"):
        db.ensure_schema(engine)
    engine.dispose()


def test_unreachable_and_malformed_urls_are_user_errors(tmp_path):
    with pytest.raises(DatabaseError, match="is not a database URL"):
        db.create_db_engine("not a url")
    with pytest.raises(DatabaseError, match="unsupported database 'mysql'"):
        db.create_db_engine("mysql://localhost/x")
    engine = db.create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(DatabaseError, match=r"cannot open the database postgresql\+psycopg://nobody@127.0.0.1:1/none"):
        db.ensure_schema(engine)


@pytest.mark.postgres
def test_postgres_sessions_run_without_jit_and_without_stale_generic_plans(postgres_url):
    """JIT compiling (~0.2 s) costs more than sub-second segment and planner queries gain from it."""
    engine = db.create_db_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW jit").scalar() == "off"
        assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"
    engine.dispose()


def test_needed_to_keep_tier_reads_the_members_with_a_period_from_their_index(database_url, project):
    """`needed_to_keep_tier` reads the measures kept on the member from ix_members_period, not the
    rows of every member (nor, without events after the instant, any event)."""
    import dataclasses
    from datetime import datetime, timezone

    from loyalty_mail.config import load_settings
    from loyalty_mail.models import members_table
    from loyalty_mail.segments import context_for, segment_query
    from loyalty_mail.segments.spec import SegmentCatalog, SegmentParser
    from loyalty_mail.tiers import TierLadder
    from loyalty_mail.yaml_source import load_yaml_text

    settings = load_settings(project, environ={})
    engine = db.create_db_engine(database_url)
    segment = SegmentParser(load_yaml_text("needed_to_keep_tier: {gte: 1000}\n", "s.yaml"),
                            TierLadder.from_settings(settings.tiers)).segment("s")
    ctx = dataclasses.replace(context_for(settings, SegmentCatalog({}), datetime(2026, 11, 23, tzinfo=timezone.utc),
                                          engine.dialect.name), qualification="points_earned")
    query = segment_query(segment.rule, ctx, members_table.c.id)
    plan = query_plan(engine, query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    engine.dispose()
    assert "ix_members_period" in plan, plan
