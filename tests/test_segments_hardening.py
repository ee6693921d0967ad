"""Hostile segment, config and template files: each is a typed error naming file and line, found in
bounded time and memory; segment queries stay within the databases' limits and their time limit."""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import jinja2
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loyalty_mail.config import load_settings
from loyalty_mail.errors import ConfigError, SegmentTimeout, TemplateError
from loyalty_mail.models import members_table
from loyalty_mail.rendering.catalog import FrontMatterLoader
from loyalty_mail.runtime import Runtime
from loyalty_mail.segments import context_for, count_members, load_catalog, segment_query
from loyalty_mail.segments.deadline import time_limit
from loyalty_mail.segments.spec import rule_size, segments_used

from .conftest import blank_member_row, FIXED_NOW, Cli

DIALECTS = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect()}


@pytest.fixture(autouse=True)
def _in_program(project, monkeypatch):
    monkeypatch.chdir(project)  # file names in messages are relative to the working directory


def write_segments(project: Path, files: dict[str, str | bytes]) -> None:
    folder = project / "segments"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        path = folder / f"{name}.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))


def problems_of(project: Path, files: dict[str, str | bytes]) -> list[str]:
    write_segments(project, files)
    _, problems = load_catalog(load_settings(project, environ={}))
    return [str(p) for p in problems]


def check(project: Path, tmp_path: Path) -> tuple[int, str]:
    result = Cli(project, f"sqlite:///{tmp_path / 'check.db'}")("check")
    return result.exit_code, result.output


# -- loading YAML ---------------------------------------------------------------------------------

def _block(key: str, depth: int) -> str:
    if key == "not":
        return "".join(" " * i + "not:\n" for i in range(depth)) + " " * depth + "tier: gold\n"
    return "all:\n" + "".join(" " * (2 * i) + "- all:\n" for i in range(depth)) + " " * (2 * depth) + "- tier: gold\n"


NESTED = {
    "block_not_600": (_block("not", 600), "segments/deep.yaml:100:100: nested more than 100 levels deep"),
    "block_all_400": (_block("all", 400), "segments/deep.yaml:51:101: nested more than 100 levels deep"),
    "flow_all_1000": ("all: " + "[{all: " * 1000 + "tier: gold" + "}]" * 1000 + "\n",
                      "segments/deep.yaml:1:356: nested more than 100 levels deep"),
    "flow_not_1000": ("not: " + "{not: " * 1000 + "{tier: gold}" + "}" * 1000 + "\n",
                      "segments/deep.yaml:1:595: nested more than 100 levels deep"),
}


@pytest.mark.parametrize("case", sorted(NESTED))
def test_deep_nesting_is_an_error_at_its_line(project, case):
    text, expected = NESTED[case]
    assert problems_of(project, {"deep": text}) == [expected]


def test_a_recursive_alias_is_an_error(project):
    assert problems_of(project, {"loop": "tier: gold\n", "alias": "any: &d [*d]\n"}) == [
        "segments/alias.yaml:1:6: an alias refers to the node that contains it (a recursive alias such as &a [*a])"]


def test_billion_laughs_is_refused_in_milliseconds(project):
    lines = ["a: &a [gold, gold, gold, gold, gold, gold, gold, gold, gold, gold]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(8)]
    started = time.perf_counter()
    problems = problems_of(project, {"laughs": "\n".join(lines) + "\n"})
    assert problems == ["segments/laughs.yaml:5:4: more than 100,000 values once aliases are expanded "
                        "(aliases repeat what they name)"]
    assert time.perf_counter() - started < 5


def test_many_alias_references_are_refused(project):
    text = "a: &a gold\nb: [" + ", ".join(["*a"] * 101) + "]\n"
    assert problems_of(project, {"aliases": text}) == [
        "segments/aliases.yaml:2:405: more than 100 alias references (*name) in one file"]


def test_a_file_over_the_size_limit_is_refused(project):
    text = "tier: [" + ", ".join(["gold"] * 50_000) + "]\n"
    assert problems_of(project, {"huge": text}) == [
        "segments/huge.yaml:1: is larger than 256,000 bytes, the limit for program files"]


def test_nul_byte_is_an_error_at_its_line(project):
    assert problems_of(project, {"nul": b"all:\n  - tier: go\x00ld\n"}) == [
        "segments/nul.yaml:2:13: invalid YAML: character U+0000 is not allowed (control characters such as "
        "NUL cannot appear in YAML)"]


def test_a_directory_named_like_a_segment_is_an_error(project):
    (project / "segments" / "p.yaml").mkdir(parents=True)
    assert problems_of(project, {}) == ["segments/p.yaml:1: is a directory; expected a regular file"]


def test_a_lone_surrogate_is_an_error_at_its_line(project):
    problems = problems_of(project, {"s": 'all:\n  - first_name: "\\ud800"\n'})
    assert problems == ["segments/s.yaml:2:17: text is not valid Unicode: '\\ud800' is half of a surrogate "
                        "pair; write the character itself, or \\U0001F600 for one beyond \\uFFFF"]


def test_check_reports_hostile_files_and_exits_1(project, tmp_path):
    write_segments(project, {"deep": NESTED["flow_all_1000"][0], "alias": "any: &d [*d]\n"})
    exit_code, output = check(project, tmp_path)
    assert exit_code == 1
    assert "segments/deep.yaml:1:356: nested more than 100 levels deep" in output
    assert "segments/alias.yaml:1:6: an alias refers to the node that contains it" in output
    assert "Traceback" not in output


def test_merge_keys_still_work(project):
    write_segments(project, {"merged": "all:\n  - &gold {tier: gold}\n  - {<<: *gold}\n"})
    catalog, problems = load_catalog(load_settings(project, environ={}))
    assert problems == [] and "merged" in catalog.segments


# -- limits on what one segment holds -------------------------------------------------------------

def test_a_huge_any_is_refused_at_the_first_condition_past_the_limit(project):
    text = "any:\n" + "".join(f"  - points: {i}\n" for i in range(2000))
    started = time.perf_counter()
    assert problems_of(project, {"wide": text}) == [
        "segments/wide.yaml:502:5: more than 500 conditions in one segment; use fewer (an in: list instead "
        "of many eq:, or a segment that others use)"]
    assert time.perf_counter() - started < 10


def test_too_many_event_conditions_are_refused(project):
    text = "any:\n" + "".join(f"  - purchases: {{count: {{gte: {i + 1}}}}}\n" for i in range(51))
    assert problems_of(project, {"busy": text}) == [
        "segments/busy.yaml:52:5: more than 50 event:, purchases: and emails: conditions in one segment; "
        "each one scans events, use fewer"]


def test_limits_count_the_segments_a_segment_uses(project):
    events = "any:\n" + "".join(f"  - purchases: {{count: {{gte: {i + 1}}}}}\n" for i in range(30))
    problems = problems_of(project, {"a": events, "b": events, "both": "all:\n  - segment: a\n  - segment: b\n"})
    assert problems == ["segments/both.yaml:1: segment 'both' has 60 event:, purchases: and emails: conditions "
                        "with the segments it uses; at most 50 are allowed"]


def test_too_many_values_are_refused(project):
    values = ", ".join(str(v) for v in range(1000))
    text = "any:\n" + "".join(f"  - points: [{values}]\n" for _ in range(25))
    assert problems_of(project, {"lists": text}) == [
        "segments/lists.yaml:1: segment 'lists' has too many values to compare with (weight 25,275, at most "
        "20,000: each condition counts 10, each value in a list 1, each anniversary 2000); use fewer or "
        "shorter lists"]


def test_a_chain_of_too_many_segments_is_refused(project):
    files = {f"s{i}": f"segment: s{i + 1}\n" for i in range(52)}
    files["s52"] = "tier: gold\n"
    problems = problems_of(project, files)
    assert "segments/s0.yaml:1: segment 's0' uses more than 50 other segments (segment: NAME, directly or " \
           "through others)" in problems
    assert "segments/s3.yaml:1: segment 's3' uses more than 50 other segments" not in " ".join(problems)


HEAVY = {
    "anniversary": "birthday: {anniversary: {within_next: 366 days}}\n",
    "joined": "joined_at: {anniversary: {within_next: 52 weeks}}\n",
    "lists": "all:\n  - tier: {in: [gold, platinum]}\n  - points: {not_in: [" + ", ".join(map(str, range(900))) + "]}\n",
    "events": "event: {type: visit, count: {between: [2, 9]}, within: 30 days, where: {store: {in: [a, b, c]},"
              " amount: {gte: 5}}}\n",
    "sums": "purchases: {sum: {amount: {between: [1, 5]}}, since: 2026-01-01, until: 1 day ago}\n",
    "emails": "emails: {action: opened, flow: welcome, count: 0, within: 60 days}\n",
    "values": "all:\n  - attributes.pet: {in: [cat, dog]}\n  - attributes.age: {as: number, between: [1, 9]}\n"
              "  - days_since_last_purchase: {in: [1, 2, 3]}\n  - nps: {not_in: [promoter]}\n",
}


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_the_weight_bounds_the_bound_parameters(project, dialect):
    write_segments(project, {**HEAVY, "every": "all:\n" + "".join(f"  - segment: {n}\n" for n in HEAVY)})
    settings = load_settings(project, environ={})
    catalog, problems = load_catalog(settings)
    assert problems == []
    for at in (datetime(2027, 2, 28, 12, tzinfo=timezone.utc), FIXED_NOW):
        ctx = context_for(settings, catalog, at, dialect)
        for name, segment in catalog.segments.items():
            compiled = segment_query(segment.rule, ctx, members_table.c.id).compile(
                dialect=DIALECTS[dialect], compile_kwargs={"render_postcompile": True})
            weight = sum((rule_size(catalog.get(used).rule) for used in segments_used(name, catalog.segments)),
                         rule_size(segment.rule)).weight
            assert len(compiled.params) <= weight, name


# -- segments used more than once compile once ------------------------------------------------------

def diamond(levels: int) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {f"s{i}": f"any:\n  - segment: s{i + 1}\n  - not: {{segment: s{i + 1}}}\n"
                                     for i in range(levels)}
    files[f"s{levels}"] = "nps: promoter\n"
    return files


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_a_diamond_of_segments_compiles_each_once(project, dialect):
    write_segments(project, diamond(9))  # the deepest check allows: 1,534 conditions once expanded
    settings = load_settings(project, environ={})
    catalog, problems = load_catalog(settings)
    assert problems == []
    ctx = context_for(settings, catalog, FIXED_NOW, dialect)
    sql = str(segment_query(catalog.get("s0").rule, ctx, members_table.c.id).compile(dialect=DIALECTS[dialect]))
    assert sql.count(" AS \n(SELECT members.id") == 9  # s1 .. s9, one common table expression each
    assert sql.count("members.nps_score") == 1
    assert len(sql) < 300 * 9


def test_a_diamond_that_doubles_past_the_limit_is_refused_and_the_rest_runs(project, database_url):
    """SQLite expands each use of a common table expression: a diamond 15 deep made 'too many
    references to members' at run time. `check` counts the conditions use by use instead."""
    write_segments(project, diamond(15))
    runtime = Runtime.load(project, database_url=database_url, clock=lambda: FIXED_NOW)
    try:
        catalog, problems = load_catalog(runtime.settings)
        assert [str(p) for p in problems] == [
            f"segments/s{i}.yaml:1: segment 's{i}' has more than 2,000 conditions once each use of a segment "
            "counts its conditions again (segments that use the same segment more than once, nested, double "
            "at each level); use each segment once, or write the shared conditions in one segment"
            for i in range(6)]  # s6 has 3 * 2^9 - 2 = 1,534
        engine = runtime.engine()
        with engine.begin() as connection:
            connection.execute(members_table.insert(), [member(1, nps_score=10), member(2, nps_score=3)])
        ctx = context_for(runtime.settings, catalog, FIXED_NOW, engine.dialect.name)
        with engine.connect() as connection:
            assert count_members(connection, catalog.get("s6"), ctx) == 2
    finally:
        runtime.close()


def test_a_segment_used_twice_keeps_its_meaning(database_url, tmp_path, project):
    write_segments(project, {**diamond(6), "answered_or_not": "any:\n  - segment: s6\n  - not: {segment: s6}\n",
                             "neither": "all:\n  - not: {segment: s6}\n  - not: {segment: promoters}\n",
                             "promoters": "nps: promoter\n"})
    runtime = Runtime.load(project, database_url=database_url, clock=lambda: FIXED_NOW)
    try:
        engine = runtime.engine()
        with engine.begin() as connection:
            connection.execute(members_table.insert(), [
                member(1, nps_score=10), member(2, nps_score=3), member(3, nps_score=None)])
        catalog, problems = load_catalog(runtime.settings)
        assert problems == []
        ctx = context_for(runtime.settings, catalog, FIXED_NOW, engine.dialect.name)
        with engine.connect() as connection:
            def ids(name: str) -> set[int]:
                return set(connection.execute(segment_query(catalog.get(name).rule, ctx)).scalars())
            assert ids("s0") == {1, 2, 3}  # a null nps is outside promoters, so `not` takes it
            assert ids("answered_or_not") == {1, 2, 3}
            assert ids("neither") == {2, 3}
            assert count_members(connection, catalog.get("s0"), ctx) == 3
    finally:
        runtime.close()


def member(ref: int, **values: object) -> dict:
    base: dict = blank_member_row()
    base.update({"id": ref, "member_id": f"M{ref:05d}", "email": f"m{ref}@example.com", "tier": "member",
                 "points": ref % 7000, "total_spend": Decimal(0), "purchase_count": 0, "subscribed": True,
                 "attributes": {}, "created_at": FIXED_NOW, "updated_at": FIXED_NOW})
    base.update(values)
    return base


# -- every segment query has a time limit -----------------------------------------------------------

def test_a_segment_query_past_its_time_limit_is_stopped(database_url, project):
    write_segments(project, diamond(9))  # the deepest diamond check allows
    runtime = Runtime.load(project, database_url=database_url, clock=lambda: FIXED_NOW)
    try:
        engine = runtime.engine()
        with engine.begin() as connection:
            connection.execute(members_table.insert(), [member(i, nps_score=i % 11) for i in range(1, 5001)])
        catalog, _ = load_catalog(runtime.settings)
        ctx = context_for(runtime.settings, catalog, FIXED_NOW, engine.dialect.name)
        assert ctx.timeout == 60
        with engine.connect() as connection:
            assert count_members(connection, catalog.get("s0"), ctx) == 5000
        hurried = dataclasses.replace(ctx, timeout=0.001)
        with engine.connect() as connection:
            with pytest.raises(SegmentTimeout) as stopped:
                count_members(connection, catalog.get("s0"), hurried)
        assert str(stopped.value).startswith("segment 's0' took longer than 0.001 s and was stopped; ")
        assert "segments.timeout" in str(stopped.value)
    finally:
        runtime.close()


SLOW = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 500000000) "
        "SELECT count(*) FROM n")


def test_the_database_stops_the_query_itself(database_url):
    from loyalty_mail import db

    engine = db.create_db_engine(database_url)
    try:
        started = time.perf_counter()
        with engine.connect() as connection:
            with pytest.raises(SegmentTimeout):
                with time_limit(connection, 0.3, "slow"):
                    connection.exec_driver_sql(SLOW)
        assert time.perf_counter() - started < 30
        if engine.dialect.name == "postgresql":
            with engine.connect() as observer:
                running = observer.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'WITH RECURSIVE n(x)%'"
                )).scalar_one()
            assert running == 0
        with engine.connect() as connection:  # the limit ends with its block
            with time_limit(connection, 60, "quick"):
                assert connection.exec_driver_sql("SELECT 1").scalar_one() == 1
            assert connection.exec_driver_sql("SELECT 2").scalar_one() == 2
    finally:
        engine.dispose()


def test_segments_timeout_is_configurable(project):
    config = project / "config.yaml"
    config.write_text(config.read_text() + "segments:\n  timeout: 5 seconds\n")
    settings = load_settings(project, environ={})
    assert context_for(settings, load_catalog(settings)[0], FIXED_NOW, "sqlite").timeout == 5
    config.write_text(config.read_text().replace("5 seconds", "0"))
    with pytest.raises(ConfigError, match="segments.timeout"):
        load_settings(project, environ={})


# -- program files are regular files inside the program --------------------------------------------

SECRET = "LOYALTY_MAIL_SECRET=s3cret-value-that-must-not-leak"


def test_a_symlinked_partial_is_an_error_and_leaks_nothing(tmp_path):
    program = tmp_path / "example"
    created = Cli(tmp_path, None)("init", str(program))
    assert created.exit_code == 0, created.output
    (program / ".env").write_text(SECRET + "\n")
    partial = program / "templates" / "_partials" / "blocks.html"
    partial.unlink()
    partial.symlink_to(Path("..") / ".." / ".env")
    exit_code, output = check(program, tmp_path)
    assert exit_code == 1
    assert "templates/_partials/blocks.html:1: is a symbolic link (to ../../.env); program files must be " \
           "regular files inside the program directory" in output
    assert "s3cret" not in output
    loader = FrontMatterLoader(str(program / "templates"))
    with pytest.raises(TemplateError, match="templates/_partials/blocks.html:1: is a symbolic link"):
        loader.get_source(jinja2.Environment(), "_partials/blocks.html")
    with pytest.raises(jinja2.TemplateNotFound):
        loader.get_source(jinja2.Environment(), "_partials/missing.html")


def test_a_symlinked_email_or_folder_is_an_error(tmp_path):
    program = tmp_path / "example"
    assert Cli(tmp_path, None)("init", str(program)).exit_code == 0
    welcome = program / "templates" / "welcome"
    welcome.rename(tmp_path / "elsewhere")
    welcome.symlink_to(tmp_path / "elsewhere")
    exit_code, output = check(program, tmp_path)
    assert exit_code == 1
    assert "templates/welcome/en.html:1: is in 'templates/welcome', which is a symbolic link" in output


def test_a_symlinked_templates_folder_is_an_error(tmp_path):
    program = tmp_path / "example"
    assert Cli(tmp_path, None)("init", str(program)).exit_code == 0
    (program / "templates").rename(tmp_path / "shared_templates")
    (program / "templates").symlink_to(tmp_path / "shared_templates")
    exit_code, output = check(program, tmp_path)
    assert exit_code == 1
    assert "templates/welcome/en.html:1: is in 'templates', which is a symbolic link" in output


def test_symlinked_segments_and_config_are_errors(project, tmp_path):
    outside = tmp_path / "outside.yaml"
    outside.write_text("tier: gold\n")
    (project / "segments").mkdir()
    (project / "segments" / "linked.yaml").symlink_to(outside)
    assert problems_of(project, {}) == [
        f"segments/linked.yaml:1: is a symbolic link (to {outside}); program files must be regular files "
        "inside the program directory: copy the file instead of linking it"]
    (project / "segments" / "linked.yaml").unlink()
    config = project / "config.yaml"
    os.replace(config, tmp_path / "config.yaml")
    config.symlink_to(tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="config.yaml:1: is a symbolic link"):
        load_settings(project, environ={})


def test_values_in_messages_read_as_plain_text_not_python(project):
    cases = {
        "segment: [a, b]": "2:10: segment: takes a segment name, found a list",
        "tier: {eq: {x: 1}}": "2:12: field 'tier': eq: expected a tier (member, silver, gold, platinum), "
                              "found a mapping",
        "points: {gte: 2026-02-28}": "2:15: field 'points': gte: expected a number, found 2026-02-28",
        "tier: {eq: '" + "x" * 500 + "'}": "2:12: field 'tier': eq: unknown tier '" + "x" * 80 + "...' "
                                          "(500 characters) (tiers: member, silver, gold, platinum)",
        "tier: {eq: \"gold\\tx\"}": "2:12: field 'tier': eq: unknown tier 'gold\\tx' (tiers: member, "
                                   "silver, gold, platinum)",
    }
    for rule, message in cases.items():
        assert problems_of(project, {"odd": f"name: odd\n{rule}\n"}) == [f"segments/odd.yaml:{message}"]
