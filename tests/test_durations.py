"""One duration grammar: config.yaml and segments accept the same words and mean what the README says."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from loyalty_mail.config import Settings, load_settings
from loyalty_mail.durations import Duration, format_span, parse_duration, parse_span
from loyalty_mail.errors import ConfigError
from loyalty_mail.segments.spec import SegmentParser
from loyalty_mail.tiers import TierLadder
from loyalty_mail.yaml_source import load_yaml_text

ALLOWED = "seconds, minutes, hours, days, weeks, months, years"
INPUTS = ["30 seconds", "1 second", "90 minutes", "1 hour", "36 hours", "3 days", "1 day", "2 weeks",
          "1 month", "6 months", "1 year", "2 years", "0 days", "45days", "  7 days  ", "2 Weeks", "100 years"]
BAD = ["3 fortnights", "two days", "1.5 hours", "-3 days", "3", "days", "101 years", "", "1 month ago"]


@pytest.fixture(autouse=True)
def _in_program_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def config_lateness(tmp_path: Path, text: str) -> timedelta:
    """`text` as a flow's lateness in config.yaml: the timedelta, or ValueError with the problem."""
    (tmp_path / "config.yaml").write_text(
        f"flows:\n  - name: welcome\n    trigger: welcome\n    template: welcome\n    lateness: {text!r}\n",
        encoding="utf-8")
    try:
        return load_settings(tmp_path, environ={}).flows[0].lateness
    except ConfigError as exc:
        [problem] = exc.problems
        raise ValueError(str(problem)) from None


def segment_within(text: str) -> Duration:
    """`text` as `within:` in a segment file: the Duration, or ValueError with the problem."""
    ladder = TierLadder.from_settings(Settings().tiers)
    parser = SegmentParser(load_yaml_text(f"name: s\nlast_purchase_at: {{within: {text!r}}}\n",
                                          "segments/s.yaml"), ladder)
    segment = parser.segment("s")
    if parser.problems:
        [problem] = parser.problems
        raise ValueError(str(problem))
    assert segment is not None
    [op] = segment.rule.ops  # a single field condition
    return op.value


def test_months_and_years_are_accepted_in_config(tmp_path):
    assert config_lateness(tmp_path, "1 month") == timedelta(days=30)
    assert config_lateness(tmp_path, "2 months") == timedelta(days=60)
    assert config_lateness(tmp_path, "1 year") == timedelta(days=365)


@pytest.mark.parametrize("text", INPUTS)
def test_config_and_segments_read_the_same_words_the_same_way(tmp_path, text):
    duration = segment_within(text)
    assert duration == parse_duration(text)
    assert config_lateness(tmp_path, text) == duration.span() == parse_span(text)


@pytest.mark.parametrize("text", BAD)
def test_config_and_segments_refuse_the_same_words_with_the_same_reason(tmp_path, text):
    with pytest.raises(ValueError) as in_config:
        config_lateness(tmp_path, text)
    with pytest.raises(ValueError) as in_segment:
        segment_within(text)
    with pytest.raises(ValueError) as alone:
        parse_duration(text)
    assert str(in_config.value).startswith("config.yaml:5:15: flows[0].lateness: ")
    assert str(in_segment.value).startswith("segments/s.yaml:2:28: field 'last_purchase_at': within: ")
    assert str(in_config.value).endswith(str(alone.value))
    assert str(in_segment.value).endswith(str(alone.value))


def test_a_bad_unit_names_the_unit_and_lists_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError) as caught:
        config_lateness(tmp_path, "3 fortnights")
    assert str(caught.value) == (f"config.yaml:5:15: flows[0].lateness: unknown unit 'fortnights' in "
                                 f"'3 fortnights' (expected one of: {ALLOWED})")
    with pytest.raises(ValueError) as caught:
        segment_within("two days")
    assert str(caught.value) == (f"segments/s.yaml:2:28: field 'last_purchase_at': within: expected a duration "
                                 f"such as '30 minutes', '2 weeks' or '1 month' (a whole number and one of: "
                                 f"{ALLOWED}), found 'two days'")
    with pytest.raises(ValueError, match=r"^'101 years' is longer than 100 years$"):
        parse_duration("101 years")


@pytest.mark.parametrize("text", ["1 second", "30 seconds", "90 minutes", "1 hour", "3 days", "2 weeks",
                                  "1 month", "18 months", "1 year", "0 seconds"])
def test_a_duration_is_written_back_as_it_was_read(text):
    assert str(parse_duration(text)) == text
    assert parse_duration(str(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("span, text", [
    (timedelta(0), "0 seconds"), (timedelta(seconds=1), "1 second"), (timedelta(seconds=90), "90 seconds"),
    (timedelta(minutes=90), "90 minutes"), (timedelta(hours=36), "36 hours"), (timedelta(days=1), "1 day"),
    (timedelta(days=30), "30 days"), (timedelta(days=14), "2 weeks"), (timedelta(days=365), "365 days"),
    (timedelta(days=-2), "-2 days"),
])
def test_a_span_is_written_in_the_largest_exact_unit_and_reads_back(span, text):
    assert format_span(span) == text
    assert parse_span(text.lstrip("-")) == abs(span)


@pytest.mark.parametrize("text", INPUTS)
def test_format_of_parse_round_trips_for_every_accepted_word(text):
    span = parse_span(text)
    assert parse_span(format_span(span)) == span
    assert format_span(parse_span(format_span(span))) == format_span(span)


def test_zero_needs_no_unit_and_booleans_are_not_numbers(tmp_path):
    assert parse_span(0) == timedelta(0)
    assert config_lateness(tmp_path, "0 days") == timedelta(0)
    with pytest.raises(ValueError):
        parse_duration(False)
    with pytest.raises(ValueError):
        parse_duration(5)


def test_segments_count_calendar_months_and_config_fixed_lengths():
    end_of_march = datetime(2026, 3, 31, 12, 0, tzinfo=timezone.utc)
    assert parse_duration("1 month").before(end_of_march) == datetime(2026, 2, 28, 12, 0, tzinfo=timezone.utc)
    assert parse_duration("1 year").before(datetime(2028, 2, 29, tzinfo=timezone.utc)) == \
        datetime(2027, 2, 28, tzinfo=timezone.utc)
    assert parse_duration("2 weeks").before(end_of_march) == end_of_march - timedelta(days=14)
    assert parse_span("1 month") == timedelta(days=30)
    assert parse_span("1 year") == timedelta(days=365)


@pytest.mark.parametrize("text", ["٣ days", "３ days", "1٠ minutes"])
def test_digits_of_other_scripts_are_refused_the_same_way_everywhere(tmp_path, text):
    with pytest.raises(ValueError) as in_config:
        config_lateness(tmp_path, text)
    with pytest.raises(ValueError) as in_segment:
        segment_within(text)
    assert str(in_config.value).endswith(f"write the number with the digits 0-9, found '{text}'")
    assert str(in_segment.value).endswith(f"write the number with the digits 0-9, found '{text}'")


def test_a_large_amount_is_judged_by_its_length_not_its_digits(tmp_path):
    assert config_lateness(tmp_path, "99999999 seconds") == timedelta(seconds=99999999)
    assert segment_within("99999999 seconds") == Duration(99999999, "second")
    assert parse_duration("0000000000000000000005 days") == Duration(5, "day")
    for text in ("3200000000 seconds", "1" + "0" * 5000 + " days"):
        with pytest.raises(ValueError, match="is longer than 100 years$"):
            parse_duration(text)


def test_zero_quoted_or_not_is_the_same_duration(tmp_path):
    assert parse_duration("0") == parse_duration(0) == parse_duration(" 0 ") == Duration(0, "second")
    assert config_lateness(tmp_path, "0") == timedelta(0)
    assert segment_within("0") == Duration(0, "second")
    (tmp_path / "config.yaml").write_text(
        "flows:\n  - name: welcome\n    trigger: welcome\n    template: welcome\n    lateness: 0\n",
        encoding="utf-8")
    assert load_settings(tmp_path, environ={}).flows[0].lateness == timedelta(0)
