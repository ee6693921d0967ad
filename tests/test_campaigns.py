"""One-off campaigns: files checked at their lines, schedule and cancel, each member's own 09:00,
the throttle, suppression and exactly once, and the daemon sending what is due."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from loyalty_mail.campaigns import load_campaigns

from .conftest import CONFIG_ONLY
from .flow_program import SECRET, member

LOCAL_NINE = """\
description: December sale, at 09:00 wherever each member lives
template: reengagement
at: "2026-12-05 09:00"
local_time: true
topic: promotions
"""


def write_campaign(program, name: str, text: str) -> None:
    folder = program.dir / "campaigns"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(text, encoding="utf-8")


def campaign_sends(program, name: str) -> list[tuple]:
    return [row for row in program.sends() if row[0] == name]


@CONFIG_ONLY
def test_bad_campaign_files_are_reported_at_their_line_and_column(program):
    write_campaign(program, "bad", "template: reengagement\nat: tomorrow\nlocal_time: true\nsegmnt: lapsed\n")
    write_campaign(program, "no_template", "template: nowhere\nsegment: ghosts\nat: \"2026-12-05 09:00\"\n")
    _, problems = load_campaigns(program.dir)
    assert [str(p) for p in problems] == [
        "campaigns/bad.yaml:2:5: at: 'tomorrow' is not a date and time (expected \"YYYY-MM-DD HH:MM\", a wall "
        "time, or an ISO instant such as 2026-12-05T09:00+07:00)",
        "campaigns/bad.yaml:4:1: unknown key 'segmnt' in the top level (allowed: description, template, "
        "segment, at, local_time, topic, throttle, lateness, priority, quiet_hours, frequency_cap, holdout, "
        "variants, winner)",
    ]
    result = program.run("check")
    assert result.exit_code == 1
    assert "campaigns/bad.yaml:2:5: at: 'tomorrow' is not a date and time" in result.output
    (program.dir / "campaigns" / "bad.yaml").unlink()
    result = program.run("check")
    assert result.exit_code == 1
    assert "campaigns/no_template.yaml:1: unknown segment 'ghosts' (segments: lapsed)" in result.output
    assert "campaigns/no_template.yaml:1: no email template 'nowhere' in templates/" in result.output
    (program.dir / "campaigns" / "no_template.yaml").unlink()
    write_campaign(program, "with_offset", 'template: reengagement\nat: "2026-12-05T09:00+07:00"\nlocal_time: true\n')
    _, problems = load_campaigns(program.dir)
    assert [str(p) for p in problems] == [
        "campaigns/with_offset.yaml:3:13: local_time: true sends at a wall time in each member's zone: write "
        "`at:` without a UTC offset (e.g. \"2026-12-05 09:00\")"]


def test_a_local_time_campaign_reaches_each_member_at_their_own_nine(program):
    """Ho Chi Minh City is UTC+7 and New York UTC-5 in December: 09:00 local is 02:00 and 14:00
    UTC. An unsubscribed member is recorded as suppressed; each member gets it once."""
    program.load("members", [member("VN1", joined_at="2025-01-01T10:00:00+07:00"),
                             member("NY1", "America/New_York", joined_at="2025-01-01T10:00:00+07:00"),
                             member("OUT", joined_at="2025-01-01T10:00:00+07:00", subscribed=False)],
                 at="2025-01-01T10:00:00+07:00")
    write_campaign(program, "december_sale", LOCAL_NINE)
    assert program.run("check").exit_code == 0
    result = program.run("campaigns", "list", "--format", "json", at="2026-12-01T00:00:00Z")
    assert json.loads(result.stdout)[0]["state"] == "draft"
    scheduled = program.run("campaigns", "schedule", "december_sale", at="2026-12-01T00:00:00Z")
    assert scheduled.exit_code == 0, scheduled.output
    assert "december_sale: scheduled; sends at 2026-12-05 09:00 in each member's own time zone" in scheduled.output

    preview = json.loads(program.run("campaigns", "preview", "december_sale", "--format", "json",
                                     at="2026-12-01T00:00:00Z").stdout)
    assert {m["member_id"]: m["send_at"] for m in preview["first"]} == {
        "VN1": "2026-12-05T02:00:00+00:00", "NY1": "2026-12-05T14:00:00+00:00", "OUT": "2026-12-05T02:00:00+00:00"}
    # The dry run before anyone is due says who gets it when.
    early = {d["member_id"]: d for d in program.dry("2026-12-04T00:00:00Z", "december_sale")}
    assert early["NY1"]["reason"] == "not due until 2026-12-05 09:00 EST (delay 0 seconds)"

    at_vn_nine = {d["member_id"]: d for d in program.dry("2026-12-05T02:00:00Z", "december_sale")}
    assert at_vn_nine["VN1"]["decision"] == "send"
    assert at_vn_nine["VN1"]["reason"] == "campaign december_sale at 2026-12-05 09:00 +07"
    assert at_vn_nine["NY1"]["decision"] == "skip" and at_vn_nine["NY1"]["recorded_as"] is None
    assert at_vn_nine["OUT"]["reason"] == "unsubscribed"

    assert program.run("run", "--once", at="2026-12-05T01:59:00Z").exit_code == 0
    assert campaign_sends(program, "december_sale") == []
    assert program.run("run", "--once", at="2026-12-05T02:00:00Z").exit_code == 0
    assert sorted(campaign_sends(program, "december_sale")) == [
        ("december_sale", "campaign", "sent"), ("december_sale", "campaign", "suppressed")]
    assert program.run("run", "--once", at="2026-12-05T13:59:00Z").exit_code == 0
    assert len(campaign_sends(program, "december_sale")) == 2
    assert program.run("run", "--once", at="2026-12-05T14:00:00Z").exit_code == 0
    assert program.run("run", "--once", at="2026-12-05T15:00:00Z").exit_code == 0  # once per member
    assert sorted(campaign_sends(program, "december_sale")) == [
        ("december_sale", "campaign", "sent"), ("december_sale", "campaign", "sent"),
        ("december_sale", "campaign", "suppressed")]
    status = json.loads(program.run("campaigns", "status", "december_sale", "--format", "json",
                                    at="2026-12-06T00:00:00Z").stdout)
    assert (status[0]["state"], status[0]["sent"], status[0]["suppressed"]) == ("scheduled", 2, 1)
    report = json.loads(program.run("report", "--since", "2026-12-01", "--until", "2026-12-06",
                                    "--format", "json").stdout)
    assert [(r["flow"], r["sent"]) for r in report["rows"]] == [("december_sale", 2)]


def test_cancelled_before_its_time_nobody_gets_it(program):
    program.load("members", [member("VN1", joined_at="2025-01-01T10:00:00+07:00")], at="2025-01-01T10:00:00+07:00")
    write_campaign(program, "december_sale", LOCAL_NINE)
    assert program.run("campaigns", "schedule", "december_sale", at="2026-12-01T00:00:00Z").exit_code == 0
    cancelled = program.run("campaigns", "cancel", "december_sale", at="2026-12-04T00:00:00Z")
    assert cancelled.exit_code == 0, cancelled.output
    assert "december_sale: cancelled; 0 planned sends cancelled, 0 already sent" in cancelled.output
    assert program.run("run", "--once", at="2026-12-05T02:00:00Z").exit_code == 0
    assert campaign_sends(program, "december_sale") == []
    again = program.run("campaigns", "cancel", "december_sale", at="2026-12-05T03:00:00Z")
    assert again.exit_code == 0 and "campaign december_sale: already cancelled (at 2026-12-04 00:00 UTC)" in again.output
    rescheduled = program.run("campaigns", "schedule", "december_sale", at="2026-12-05T03:00:00Z")
    assert rescheduled.exit_code == 1 and "was cancelled" in rescheduled.output


def test_cancel_stops_sends_deferred_by_quiet_hours(program):
    """Due at 22:00 local, inside quiet hours: planned for 08:00; cancelling at 23:00 stops it."""
    program.load("members", [member("VN1", joined_at="2025-01-01T10:00:00+07:00")], at="2025-01-01T10:00:00+07:00")
    write_campaign(program, "late_news", 'template: reengagement\nat: "2026-12-05 22:00"\n')
    assert program.run("campaigns", "schedule", "late_news", at="2026-12-01T00:00:00Z").exit_code == 0
    assert program.run("run", "--once", at="2026-12-05T22:00:00+07:00").exit_code == 0
    assert campaign_sends(program, "late_news") == [("late_news", "campaign", "planned")]
    cancelled = program.run("campaigns", "cancel", "late_news", at="2026-12-05T23:00:00+07:00")
    assert "1 planned sends cancelled" in cancelled.output
    assert program.run("run", "--once", at="2026-12-06T08:00:00+07:00").exit_code == 0
    assert campaign_sends(program, "late_news") == [("late_news", "campaign", "cancelled")]


def test_the_throttle_spreads_the_audience_in_member_order(program):
    program.load("members", [member(f"T{n}", joined_at="2025-01-01T10:00:00+07:00") for n in range(5)],
                 at="2025-01-01T10:00:00+07:00")
    write_campaign(program, "news", 'template: reengagement\nat: "2026-12-05 10:00"\nthrottle: {max: 2, per: 1 hour}\n')
    assert program.run("campaigns", "schedule", "news", at="2026-12-01T00:00:00Z").exit_code == 0
    preview = json.loads(program.run("campaigns", "preview", "news", "--format", "json",
                                     at="2026-12-01T00:00:00Z").stdout)
    assert preview["by_time"] == {"2026-12-05 03:00 UTC": 2, "2026-12-05 04:00 UTC": 2, "2026-12-05 05:00 UTC": 1}
    assert program.run("run", "--once", at="2026-12-05T10:30:00+07:00").exit_code == 0
    assert len(campaign_sends(program, "news")) == 2
    assert program.run("run", "--once", at="2026-12-05T12:00:00+07:00").exit_code == 0
    assert len(campaign_sends(program, "news")) == 5


def test_the_frequency_cap_holds_a_campaign_back(program):
    """The flow program's cap is one marketing email a day: a member who had one waits."""
    program.load("members", [member("C1", joined_at="2025-01-01T10:00:00+07:00")], at="2025-01-01T10:00:00+07:00")
    write_campaign(program, "first", 'template: reengagement\nat: "2026-12-05 10:00"\n')
    write_campaign(program, "second", 'template: reengagement\nat: "2026-12-05 11:00"\n')
    for name in ("first", "second"):
        assert program.run("campaigns", "schedule", name, at="2026-12-01T00:00:00Z").exit_code == 0
    assert program.run("run", "--once", at="2026-12-05T10:00:00+07:00").exit_code == 0
    plan = {d["flow"]: d for d in program.dry("2026-12-05T11:00:00+07:00")}
    assert plan["second"]["reason"] == "frequency cap: 1 marketing emails within 1 day (max 1)"
    assert program.run("run", "--once", at="2026-12-06T10:30:00+07:00").exit_code == 0
    assert campaign_sends(program, "second") == [("second", "campaign", "sent")]


def test_the_daemon_sends_a_due_campaign(program):
    now = datetime.now(timezone.utc)
    program.load("members", [member("D1", joined_at="2025-01-01T10:00:00+07:00", timezone="UTC")],
                 at=now.isoformat())
    config = (program.dir / "config.yaml").read_text().replace(
        'quiet_hours: {start: "21:00", end: "08:00"}', "quiet_hours: null")
    (program.dir / "config.yaml").write_text(config)
    due = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    write_campaign(program, "flash", f'template: reengagement\nat: "{due}"\n')
    assert program.run("campaigns", "schedule", "flash").exit_code == 0
    env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
    daemon = subprocess.run([sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database",
                             program.url, "daemon", "--interval", "0.2", "--max-ticks", "2", "--no-wake"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert daemon.returncode == 0, daemon.stderr
    assert campaign_sends(program, "flash") == [("flash", "campaign", "sent")]


def test_a_wake_up_for_one_member_keeps_their_place_in_the_throttle(program):
    """The daemon's wake-up plans only the members an import touched: a throttled campaign still
    counts the whole audience, so the last of five members stays two periods late."""
    import sqlalchemy as sa

    from loyalty_mail.flows import build_planner
    from loyalty_mail.models import members_table
    from loyalty_mail.runtime import Runtime

    program.load("members", [member(f"T{n}", joined_at="2025-01-01T10:00:00+07:00") for n in range(5)],
                 at="2025-01-01T10:00:00+07:00")
    write_campaign(program, "news", 'template: reengagement\nat: "2026-12-05 10:00"\nthrottle: {max: 2, per: 1 hour}\n')
    assert program.run("campaigns", "schedule", "news", at="2026-12-01T00:00:00Z").exit_code == 0
    runtime = Runtime.load(program.dir, database_url=program.url)
    try:
        engine = runtime.engine()
        with engine.connect() as conn:
            last = conn.execute(sa.select(members_table.c.id).where(members_table.c.member_id == "T4")).scalar_one()
        planner = build_planner(runtime.settings, engine.dialect.name)
        now = datetime(2026, 12, 5, 3, 30, tzinfo=timezone.utc)
        plan = planner.plan_in(engine, now, members=[last], flows=[], campaigns=True)
        [skip] = plan.skips
        assert skip.occurrence.member_id == "T4" and skip.occurrence.due_at == datetime(2026, 12, 5, 5, 0, tzinfo=timezone.utc)
        assert plan.sends == []
    finally:
        runtime.close()


def test_a_campaign_time_outside_1900_to_2200_is_refused_at_its_line(program):
    write_campaign(program, "ancient", 'template: reengagement\nat: "0001-01-01 00:00"\n')
    write_campaign(program, "far", 'template: reengagement\nat: "9999-12-31T20:00+07:00"\n')
    _, problems = load_campaigns(program.dir)
    assert [str(p) for p in problems] == [
        "campaigns/ancient.yaml:2:5: at: '0001-01-01 00:00' is outside the years 1900 to 2200",
        "campaigns/far.yaml:2:5: at: '9999-12-31T20:00+07:00' is outside the years 1900 to 2200"]
    assert program.run("campaigns", "schedule", "ancient").exit_code == 1


def _store_definition(program, name: str, **changes) -> None:
    """Change a scheduled campaign's stored copy as an older version could have stored it."""
    import sqlalchemy as sa

    from loyalty_mail.models import campaign_schedules_table as c

    engine = sa.create_engine(program.url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        definition = dict(conn.execute(sa.select(c.c.definition).where(c.c.name == name)).scalar_one())
        conn.execute(c.update().where(c.c.name == name).values(definition={**definition, **changes}))
    engine.dispose()


def test_a_stored_campaign_that_cannot_be_planned_does_not_stop_the_flows(program):
    """A copy scheduled before `at:` was checked (year 1): the campaign is left out with a
    warning; the welcome flow still plans and sends."""
    program.load("members", [member("W1", joined_at="2026-12-05T09:00:00+07:00")], at="2026-12-05T09:00:00+07:00")
    write_campaign(program, "news", 'template: reengagement\nat: "2026-12-05 10:00"\n')
    assert program.run("campaigns", "schedule", "news", at="2026-12-01T00:00:00Z").exit_code == 0
    _store_definition(program, "news", at="0001-01-01T00:00:00")
    dry = program.run("run", "--dry-run", "--format", "json", at="2026-12-05T10:00:00+07:00")
    assert dry.exit_code == 0, dry.output
    assert [d["flow"] for d in json.loads(dry.stdout)] == ["welcome"]
    assert "warning: campaign 'news' is skipped: its scheduled copy is not valid" in dry.stderr
    once = program.run("run", "--once", at="2026-12-05T10:00:00+07:00")
    assert once.exit_code == 0, once.output
    assert [r for r in program.sends() if r[0] == "welcome"] == [("welcome", "welcome", "sent")]
    assert program.run("explain", "W1", at="2026-12-05T10:00:00+07:00").exit_code == 0


def test_a_throttle_beyond_2300_is_refused_and_its_members_skipped(program):
    """Three members, one every 100 years: the third would be due in 2226 + ... past 2300.
    `schedule` refuses it; a copy stored anyway skips that member with the reason, and the run
    sends to the first and records nothing half-done."""
    program.load("members", [member(f"T{n}", joined_at="2025-01-01T10:00:00+07:00") for n in range(3)],
                 at="2025-01-01T10:00:00+07:00")
    write_campaign(program, "slow", 'template: reengagement\nat: "2150-12-05 10:00"\n'
                                    'throttle: {max: 1, per: 100 years}\nlateness: 100 years\n')
    preview = program.run("campaigns", "preview", "slow", "--format", "json", at="2026-12-01T00:00:00Z")
    assert preview.exit_code == 0, preview.output
    assert json.loads(preview.stdout)["by_time"] == {
        "2150-12-05 03:00 UTC": 1, "2250-11-11 03:00 UTC": 1, "skipped: throttled beyond 2300-01-01": 1}
    refused = program.run("campaigns", "schedule", "slow", at="2026-12-01T00:00:00Z")
    assert refused.exit_code == 1
    assert ("campaign 'slow': its throttle (1 per 36500 days) puts members of its audience after 2300-01-01; "
            "raise throttle.max or shorten throttle.per") in refused.output
    write_campaign(program, "slow", 'template: reengagement\nat: "2150-12-05 10:00"\n'
                                    'throttle: {max: 2, per: 100 years}\nlateness: 100 years\n')
    assert program.run("campaigns", "schedule", "slow", at="2026-12-01T00:00:00Z").exit_code == 0
    _store_definition(program, "slow", throttle={"max": 1, "per": "100 years"})
    dry = {d["member_id"]: d for d in program.dry("2150-12-05T10:00:00+07:00", "slow")}
    assert dry["T2"]["reason"] == "throttled beyond 2300-01-01: member 3 of the audience, 1 per 36500 days"
    once = program.run("run", "--once", at="2150-12-05T10:00:00+07:00")
    assert once.exit_code == 0, once.output
    assert sorted(campaign_sends(program, "slow")) == [("slow", "campaign", "sent"), ("slow", "campaign", "skipped")]


def test_a_throttle_past_what_dates_can_hold_gives_no_time():
    from loyalty_mail.campaigns import Campaign

    campaign = Campaign.model_validate({"template": "t", "at": "2200-12-31 20:00",
                                        "throttle": {"max": 1, "per": "5 years"}})
    assert campaign.throttled(datetime(2200, 12, 31, tzinfo=timezone.utc), 10_000_000) is None  # OverflowError
    assert campaign.last_send("UTC", 10_000_000) is None
    assert campaign.last_send("UTC", 1) == datetime(2200, 12, 31, 20, 0, tzinfo=timezone.utc)


def test_a_campaign_whose_template_was_removed_fails_its_sends_and_the_rest_go(program):
    """Both sends are planned for 08:00 (quiet hours); the campaign's email is then removed. The
    dry run warns; the run marks its send failed with the reason, never leaving one `sending`,
    and the welcome email of the same batch goes."""
    import shutil

    shutil.copytree(program.dir / "templates" / "reengagement", program.dir / "templates" / "flash_sale")
    program.load("members", [member("W1", joined_at="2026-12-05T22:00:00+07:00")], at="2026-12-05T22:00:00+07:00")
    write_campaign(program, "flash", 'template: flash_sale\nat: "2026-12-05 22:00"\n')
    assert program.run("campaigns", "schedule", "flash", at="2026-12-01T00:00:00Z").exit_code == 0
    assert program.run("run", "--once", at="2026-12-05T22:00:00+07:00").exit_code == 0
    assert sorted(program.sends()) == [("flash", "campaign", "planned"), ("welcome", "welcome", "planned")]
    shutil.rmtree(program.dir / "templates" / "flash_sale")
    dry = program.run("run", "--dry-run", at="2026-12-05T22:30:00+07:00")
    assert dry.exit_code == 0, dry.output
    assert ("warning: campaign 'flash' is skipped: no email template 'flash_sale' in templates/ (restore it, or "
            "`loyalty-mail campaigns cancel flash`)") in dry.stderr
    once = program.run("run", "--once", at="2026-12-06T08:00:00+07:00")
    assert once.exit_code == 1 and "1 send failed;" in once.output
    assert sorted(program.sends()) == [("flash", "campaign", "failed"), ("welcome", "welcome", "sent")]


def test_a_campaign_in_the_past_warns_and_its_members_show_as_too_late(program):
    program.load("members", [member("P1", joined_at="2019-01-01T10:00:00+07:00")], at="2019-01-01T10:00:00+07:00")
    write_campaign(program, "old", 'template: reengagement\nat: "2020-01-01 09:00"\nlateness: 0 days\n')
    _, problems = load_campaigns(program.dir)
    assert [str(p) for p in problems] == [
        "campaigns/old.yaml:3:11: lateness: must be a positive duration (e.g. 1 day): a member due at the "
        "campaign's time is sent to until then"]
    write_campaign(program, "old", 'template: reengagement\nat: "2020-01-01 09:00"\n')
    warning = ("warning: campaign 'old': its send time 2020-01-01 02:00 UTC plus its lateness (1 day) has passed: "
               "nobody due by then will get it")
    check = program.run("check", at="2026-12-01T00:00:00Z")
    assert check.exit_code == 0 and warning in check.stderr
    scheduled = program.run("campaigns", "schedule", "old", at="2026-12-01T00:00:00Z")
    assert scheduled.exit_code == 0 and warning in scheduled.stderr
    [late] = program.dry("2026-12-01T00:00:00Z", "old")
    assert (late["member_id"], late["decision"], late["recorded_as"]) == ("P1", "skip", None)
    assert late["reason"] == "too late: due 2020-01-01 09:00 +07, more than 1 day ago (the flow's lateness)"
    assert program.run("run", "--once", at="2026-12-01T00:00:00Z").exit_code == 0
    assert campaign_sends(program, "old") == []


def test_a_campaign_whose_segment_was_deleted_is_reported(program):
    program.load("members", [member("S1", joined_at="2025-01-01T10:00:00+07:00")], at="2025-01-01T10:00:00+07:00")
    segment = program.dir / "segments" / "everyone.yaml"
    segment.write_text("name: everyone\ndescription: every member\npoints: {gte: 0}\n")
    write_campaign(program, "news", 'template: reengagement\nsegment: everyone\nat: "2026-12-05 10:00"\n')
    assert program.run("campaigns", "schedule", "news", at="2026-12-01T00:00:00Z").exit_code == 0
    segment.unlink()
    (program.dir / "campaigns" / "news.yaml").unlink()
    warning = ("campaign 'news' is skipped: its segment 'everyone' is no longer in segments/ (restore it, or "
               "`loyalty-mail campaigns cancel news`)")
    dry = program.run("run", "--dry-run", at="2026-12-05T10:00:00+07:00")
    assert dry.exit_code == 0 and f"warning: {warning}" in dry.stderr
    status = program.run("campaigns", "status", "--format", "json", at="2026-12-05T10:00:00+07:00")
    assert json.loads(status.stdout)[0]["warning"] == warning


def test_an_unquoted_wall_time_is_a_wall_time():
    """YAML reads `at: 2026-12-05 09:00:00` unquoted as a datetime without an offset."""
    from loyalty_mail.yaml_source import load_yaml_text
    from loyalty_mail.campaigns import parse_campaign

    doc = load_yaml_text("template: t\nat: 2026-12-05 09:00:00\nlocal_time: true\n", "campaigns/sale.yaml")
    campaign, problems = parse_campaign(doc, "sale")
    assert problems == [] and campaign is not None
    assert campaign.send_time("America/New_York") == datetime(2026, 12, 5, 14, 0, tzinfo=timezone.utc)
    doc = load_yaml_text("template: t\nat: 2026-12-05 09:00:00+07:00\nlocal_time: true\n", "campaigns/sale.yaml")
    assert [p.message for p in parse_campaign(doc, "sale")[1]] == [
        "local_time: true sends at a wall time in each member's zone: write `at:` without a UTC offset "
        "(e.g. \"2026-12-05 09:00\")"]
