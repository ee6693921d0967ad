"""Hostile inputs: each is a clear error (exit 1), never an internal error (exit 2) or damage."""

from __future__ import annotations

import os
import socket

import pytest

from loyalty_mail.errors import ConfigError, shown
from loyalty_mail.yaml_source import load_yaml_text

from .flow_program import member


def test_daemon_and_worker_refuse_an_interval_out_of_range(program):
    for command in ("daemon", "worker"):
        for value in ("-5", "0", "nan", "inf", "1e300"):
            result = program.run(command, "--interval", value, "--max-ticks", "1")
            assert result.exit_code == 1 and "Invalid value for '--interval'" in result.output, (command, value)


@pytest.mark.parametrize("at", ["0001-01-01", "9999-12-31T23:59:59", "1899-12-31T23:00:00+00:00"])
def test_at_outside_the_years_segments_reach_is_refused(program, at):
    program.load("members", [member("M1")], at="2026-11-23T10:00:00+07:00")
    for args in (("explain", "M1"), ("run", "--dry-run"), ("segments", "list", "--count")):
        result = program.run(*args, "--at", at)
        assert result.exit_code == 1 and "is outside the years 1900 to 2200" in result.output, (args, result.output)


def test_rejects_never_replace_the_input_or_a_file_that_is_not_regular(program, tmp_path):
    source = tmp_path / "bad.csv"
    source.write_text("member_id,email\nM1,m1@example.com\nM2,not-an-email\n")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for target, why in ((fifo, "is not a regular file"), (source, "is the file being imported")):
        result = program.run("members", "import", str(source), "--skip-invalid", "--rejects", str(target))
        assert result.exit_code == 1 and why in result.stderr and "nothing was imported" in result.stderr
    assert fifo.is_fifo() and source.read_text().startswith("member_id,email\nM1,")
    assert program.run("members", "show", "M1").exit_code == 1       # nothing was imported


@pytest.mark.parametrize("line", [
    '{"member_id": "K1", "email": "k1@example.com", "attributes": {"x": NaN}}',
    '{"member_id": "K1", "email": "k1@example.com", "attributes": {"x": 1e400}}',
    '{"member_id": "K1", "email": "k1@example.com", "points": 1e400}',
    '{"member_id": "K1", "email": "k1@example.com", "nps_score": -Infinity}',
    '{"member_id": "K1", "email": "k1@example.com", "attributes": {"x": 123456789012345678901234567890}}',
    '{"member_id": "K1", "email": "k1@example.com", "lucky": -9223372036854775809}',
])
def test_non_finite_numbers_are_row_errors(program, tmp_path, line):
    path = tmp_path / "members.jsonl"
    path.write_text(line + "\n")
    result = program.run("members", "import", str(path))
    assert result.exit_code == 1 and "row 1" in result.stderr and "nothing was imported" in result.stderr, result.output


@pytest.mark.parametrize("value, column", [("2026-02-30", 33), ("2026-01-01T10:00:00+99:00", 33)])
def test_impossible_yaml_dates_are_located_errors(sqlite_program, value, column):
    segment = sqlite_program.dir / "segments" / "lapsed.yaml"
    segment.write_text(f"name: lapsed\ndescription: no purchase for 90 days\n"
                       f"days_since_last_purchase: {{gte: {value}}}\n")
    result = sqlite_program.run("check")
    assert result.exit_code == 1, result.output
    assert f'lapsed.yaml:3:{column}: "{value}" is not a real date or time' in result.stderr
    config = sqlite_program.dir / "config.yaml"
    config.write_text(config.read_text().replace("currency: VND", f"currency: {value}"))
    result = sqlite_program.run("check")
    assert result.exit_code == 1 and f'config.yaml:3:13: "{value}" is not a real date' in result.stderr


@pytest.mark.parametrize("text, message", [
    ("a: !!python/object x", 'f.yaml:1:4: unknown tag !!python/object on "x"'),
    ("a: !!int abc", 'f.yaml:1:4: "abc" is not a whole number'),
    ("a:\n  - !!bool maybe", 'f.yaml:2:5: "maybe" is not true or false'),
    ("a: " + "9" * 5000, 'f.yaml:1:4: "' + "9" * 60 + '..." has more digits than a number may have (4,300)'),
])
def test_yaml_values_their_tag_cannot_read_are_located_errors(text, message):
    with pytest.raises(ConfigError) as caught:
        load_yaml_text(text, "f.yaml")
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("command", ["serve", "api"])
def test_a_service_on_a_port_in_use_exits_5_saying_so(sqlite_program, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = sqlite_program.run(command, "--host", "127.0.0.1", "--port", str(port))
    assert result.exit_code == 5, result.output
    assert result.stderr == (f"Error: cannot listen on 127.0.0.1:{port}: the port is in use by another "
                             "process (stop it, or choose another --port)\n")
    result = sqlite_program.run(command, "--host", "no-such-host.invalid", "--port", str(port))
    assert result.exit_code == 5 and "the host name does not resolve (check --host)" in result.stderr


def test_long_values_the_user_typed_are_cut_short_in_messages(sqlite_program):
    huge = "X" * 5000
    for args in (("explain", huge), ("members", "show", huge), ("segments", "show", huge),
                 ("explain", "M1", "--at", huge)):
        result = sqlite_program.run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "'" + "X" * 80 + "...' (5,000 characters)" in result.stderr, (args, result.stderr)
        assert len(result.stderr) < 400, (args, len(result.stderr))


def test_values_are_quoted_back_as_plain_text_of_bounded_length():
    assert shown("two days") == "'two days'" and shown("a\x00b") == "'a\\x00b'"
    assert shown("x" * 100) == "'" + "x" * 80 + "...' (100 characters)"
    assert (shown([1]), shown({"a": 1}), shown(None), shown(True)) == ("a list", "a mapping", "null", "true")
    assert shown(10**100) == "a number of 101 digits"
    assert shown(10**5000) == "a number of more than 4,300 digits"  # Python refuses to write it out
