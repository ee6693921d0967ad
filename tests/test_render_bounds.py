"""Templates are bounded: a render past `rendering.timeout` or `rendering.max_bytes`, or one that
builds a huge value, recurses without end or overflows a number, is a template error with file and
line; delivery fails that send with the reason and goes on; a dispatcher stops on SIGTERM."""

from __future__ import annotations

import email
import email.policy
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from loyalty_mail.cli import cli
from loyalty_mail.config import load_settings

from .flow_program import SECRET, Program, member

AT = "2026-11-23T10:00:00+07:00"
JOINED = "2026-11-23T09:00:00+07:00"
SLOW = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
FAST_LIMITS = "rendering:\n  timeout: 1 second\n  max_bytes: 100000\n"

HOSTILE = {
    "range": ("{% for i in range(10**9) %}x{% endfor %}", "Range too big"),
    "repeat": ("{{ 'x' * 10**10 }}", "10,000,000,000 characters, more than rendering.max_bytes"),
    "macro": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursion too deep"),
    "number": ("{{ (10**400) | number }}", "a number too large (or not a number)"),
    "power": ("{{ 7 ** 100000 }}", "a number of about 84,510 digits"),
    "doubling": ("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
                 "{% endfor %}{{ ns.s }}", "a joined text would be"),
    "slow": (SLOW, "rendering took longer than rendering.timeout (1 s)"),
    "branching": ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
                  "rendering took longer than rendering.timeout (1 s)"),
}
BILLION_LAUGHS = "".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 9))


@pytest.fixture
def hostile_program(tmp_path: Path, monkeypatch):
    """The example program with 3 seeded members and fast limits; `put(body)` writes a body into
    templates/welcome/en.html at line 6."""
    monkeypatch.delenv("LOYALTY_MAIL_DATABASE_URL", raising=False)
    monkeypatch.delenv("LOYALTY_MAIL_SECRET", raising=False)
    target = tmp_path / "program"
    assert CliRunner().invoke(cli, ["init", str(target)]).exit_code == 0
    config = target / "config.yaml"
    config.write_text(config.read_text() + FAST_LIMITS)

    def run(*args: str):
        return CliRunner().invoke(cli, ["--project", str(target), *args], catch_exceptions=False)

    assert run("seed", "--members", "3", "--at", AT).exit_code == 0

    def put(body: str, front: str = "subject: Hello\n") -> None:
        (target / "templates/welcome/en.html").write_text(f"---\n{front}---\n<html><body>\n<p>hi</p>\n{body}\n"
                                                          "</body></html>\n", encoding="utf-8")
    member_id = sqlite3.connect(target / "loyalty_mail.db").execute(
        "select member_id from members order by member_id limit 1").fetchone()[0]
    return run, put, member_id


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_templates_are_template_errors_with_file_and_line(hostile_program, case):
    run, put, member_id = hostile_program
    body, reason = HOSTILE[case]
    put(body)
    started = time.monotonic()
    checked = run("check")
    assert checked.exit_code == 1, checked.output
    assert "templates/welcome/en.html:6: " in checked.stderr and reason in checked.stderr
    assert "Traceback" not in checked.output and "Internal error" not in checked.output
    preview = run("preview", "welcome", "--member", member_id, "--locale", "en")
    assert preview.exit_code == 1, preview.output
    assert "templates/welcome/en.html:6: " in preview.stderr and reason in preview.stderr
    assert "Traceback" not in preview.output and "Internal error" not in preview.output
    assert time.monotonic() - started < 60


def test_output_larger_than_max_bytes_is_a_template_error(hostile_program):
    run, put, member_id = hostile_program
    put("{% for i in range(100000) %}{% for j in range(100) %}0123456789{% endfor %}{% endfor %}")
    preview = run("preview", "welcome", "--member", member_id, "--locale", "en")
    assert preview.exit_code == 1
    assert "templates/welcome/en.html:" in preview.stderr
    assert "more than rendering.max_bytes (100,000)" in preview.stderr


def test_billion_laughs_front_matter_is_refused_with_file_and_line(hostile_program):
    run, put, _ = hostile_program
    put("<p>{{ subject }}</p>", front="l0: &l0 [lol]\n" + BILLION_LAUGHS + "subject: Hello\n")
    started = time.monotonic()
    checked = run("check")
    assert checked.exit_code == 1, checked.output
    assert "templates/welcome/en.html:" in checked.stderr and "aliases" in checked.stderr
    assert "Traceback" not in checked.output
    assert time.monotonic() - started < 30


def test_rendering_settings_are_validated_with_the_duration_grammar(hostile_program, tmp_path):
    run, _, _ = hostile_program
    program = tmp_path / "program"
    settings = load_settings(program)
    assert settings.rendering.timeout == timedelta(seconds=1)
    assert settings.rendering.max_bytes == 100_000
    (program / "config.yaml").write_text((program / "config.yaml").read_text().replace(
        "timeout: 1 second\n  max_bytes: 100000", "timeout: soon\n  max_bytes: 100000"))
    checked = run("check")
    assert checked.exit_code == 1 and "config.yaml:" in checked.stderr and "rendering.timeout" in checked.stderr


# -- delivery ---------------------------------------------------------------------------------

def _configure(program: Program, extra: str) -> None:
    config = (program.dir / "config.yaml").read_text().replace(
        'quiet_hours: {start: "21:00", end: "08:00"}', "quiet_hours: null")
    (program.dir / "config.yaml").write_text(config + extra)


def _welcome_with(program: Program, member_templates: dict[str, str]) -> None:
    path = program.dir / "templates/welcome/vi.html"
    branches = "".join(f"{{% if member.member_id == '{ref}' %}}{body}{{% endif %}}"
                       for ref, body in member_templates.items())
    path.write_text(path.read_text().replace("{% block content %}", "{% block content %}" + branches, 1))


def _rows(program: Program) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(program.url.removeprefix("sqlite:///")) as conn:
        return {ref: (state, error) for ref, state, error in conn.execute(
            "select m.member_id, s.state, s.last_error from sends s join members m on m.id = s.member_ref")}


def test_a_send_past_a_render_limit_fails_with_the_reason_and_the_batch_is_delivered(sqlite_program):
    program = sqlite_program
    _configure(program, FAST_LIMITS)
    _welcome_with(program, {"SLOW": SLOW, "BIG": "{% for i in range(100000) %}0123456789{% endfor %}"})
    program.load("members", [member(ref, joined_at=JOINED) for ref in ("A1", "SLOW", "A2", "BIG", "A3")], at=AT)
    env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database",
                             program.url, "run", "--once", "--at", AT], env=env, capture_output=True, text=True,
                            timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 1 and "2 sends failed" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    rows = _rows(program)
    assert {ref: state for ref, (state, _) in rows.items()} == {
        "A1": "sent", "A2": "sent", "A3": "sent", "SLOW": "failed", "BIG": "failed"}
    assert rows["SLOW"][1].startswith("template: templates/welcome/vi.html:")
    assert "rendering took longer than rendering.timeout (1 s)" in rows["SLOW"][1]
    assert "more than rendering.max_bytes (100,000)" in rows["BIG"][1]
    assert len(list((program.dir / "outbox").glob("*.eml"))) == 3


@pytest.mark.slow
def test_a_dispatcher_rendering_slow_templates_stops_on_sigterm(sqlite_program):
    program = sqlite_program
    _configure(program, FAST_LIMITS)
    now = datetime.now(timezone.utc)
    refs = [f"SLOW{n}" for n in range(8)]
    _welcome_with(program, {ref: SLOW for ref in refs})
    program.load("members", [member(ref, joined_at=(now - timedelta(hours=1)).isoformat()) for ref in refs],
                 at=now.isoformat())
    env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
    command = [sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database",
               program.url, "daemon", "--interval", "60"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "sending" not in {s for s, _ in _rows(program).values()}:
            time.sleep(0.1)
        assert "sending" in {s for s, _ in _rows(program).values()}
        time.sleep(0.5)  # inside the first render
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        _, stderr = process.communicate(timeout=20)
        assert time.monotonic() - stopped < 10, "the dispatcher must stop within two render timeouts"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, stderr
    states = [state for state, _ in _rows(program).values()]
    assert "sending" not in states and "unknown" not in states
    assert 1 <= states.count("failed") < len(refs) and states.count("failed") + states.count("retry") == len(refs)


PER_EMAIL_STYLE = ("<style>" + "".join(f"ul.perks li.perk {{ padding-left: {i}px }}\n" for i in range(200))
                   + ".odd { border-bottom: 0 }</style>")
# a class written by data: which rules match is known only per email, so the CSS is inlined on each one
PERKS = ("{% set n = 20000 if member.member_id == 'HUGE' else 3 %}"
         '<ul class="perks">{% for i in range(n) %}<li class="perk {{ \'odd\' if i % 2 else \'even\' }}">{{ i }}</li>'
         "{% endfor %}</ul>")


def test_css_inlined_per_email_past_the_timeout_fails_that_send_and_the_batch_goes_on(sqlite_program):
    """The per-email path (the compiled stylesheet applied to each rendered email) is inside the
    render's deadline: 20,000 list items under 200 matching rules take it several seconds (4,000,000
    selector matches), though the document is within max_bytes and Jinja renders it at once."""
    program = sqlite_program
    error = _one_of_three_too_slow(program, PER_EMAIL_STYLE + PERKS)
    assert error.startswith("template: templates/welcome/vi.html:"), error
    assert "rendering took longer than rendering.timeout (1 s): inlining CSS per email did not finish" in error, error
    assert "-character email; it is inlined per email because" in error
    sent = list((program.dir / "outbox").glob("*.eml"))
    assert len(sent) == 2
    for eml in sent:  # inlined per email, as before
        html = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default).get_body(("html",))
        assert 'padding-left:199px">0</li>' in html.get_content()


def test_a_deadline_stops_python_that_swallows_exceptions_and_never_fires_after_its_block():
    from loyalty_mail.rendering import watchdog

    def stubborn() -> int:  # as a library that catches every Exception would
        count = 0
        while True:
            try:
                count += 1
            except Exception:  # noqa: BLE001
                pass

    started = time.monotonic()
    with pytest.raises(watchdog.Overtime):
        with watchdog.deadline(started + 0.2):
            stubborn()
    assert 0.2 <= time.monotonic() - started < 5
    for _ in range(20):  # blocks ending just around their deadline: nothing surfaces afterwards
        try:
            with watchdog.deadline(time.monotonic() + 0.001):
                sum(range(20_000))
        except watchdog.Overtime:
            pass
    time.sleep(0.05)
    assert sum(range(100)) == 4950


def test_checks_reference_inlining_is_bounded_too(hostile_program, tmp_path):
    """An email compiled once can still be slow to inline as `check` does to compare (premailer on
    each rendered sample): that too stops at rendering.timeout, as an error naming the template."""
    run, put, _ = hostile_program
    config = tmp_path / "program" / "config.yaml"
    config.write_text(config.read_text().replace("max_bytes: 100000", "max_bytes: 1000000"))
    style = "<style>" + "".join(f"ul.perks li.perk {{ padding-left: {i}px }}\n" for i in range(160)) + "</style>"
    put(style + '<ul class="perks">{% for i in range(12000) %}<li class="perk">{{ i }}</li>{% endfor %}</ul>')
    started = time.monotonic()
    checked = run("check")
    assert checked.exit_code == 1, checked.output
    assert "templates/welcome/en.html:1: rendering took longer than rendering.timeout (1 s): inlining CSS per " \
           "email did not finish" in checked.stderr, checked.stderr
    assert "`check` inlines a sample this way to compare it with the compiled email" in checked.stderr
    assert "CSS is inlined per email" not in checked.output   # compiled once: only check's comparison
    assert time.monotonic() - started < 60


def test_rules_a_loop_changes_past_the_timeout_fail_that_send_and_the_batch_goes_on(sqlite_program):
    """The per-email restyling (a `:last-child` rule beside a loop, applied to each rendered
    email) is inside the render's deadline too."""
    style = ("<style>" + "".join(f"ul.perks li.perk {{ padding-left: {i}px }}\n" for i in range(40))
             + ".perk:last-child { border-bottom: 0 } li + li { margin-top: 1px } li ~ li.perk { color: #111 }"
             + " ul.perks > li:first-child { margin: 0 } .perk:nth-child(2) { color: #222 }</style>")
    perks = ("{% set n = 99000 if member.member_id == 'HUGE' else 3 %}"
             '{% for j in range(4) %}<ul class="perks">{% for i in range(n) %}<li class="perk">{{ i }}</li>{% endfor %}</ul>'
             "{% endfor %}")
    error = _one_of_three_too_slow(sqlite_program, style + perks, max_bytes=50_000_000)
    assert "rules that a loop changes are applied to each email" in error, error


def _one_of_three_too_slow(program, content: str, max_bytes: int | None = None) -> str:
    """`content` put in the welcome email, a one-second render timeout and three members, of whom
    HUGE gets the long email: `run --once` fails HUGE's send alone. Its recorded error."""
    _configure(program, "rendering:\n  timeout: 1 second\n" + (f"  max_bytes: {max_bytes}\n" if max_bytes else ""))
    path = program.dir / "templates/welcome/vi.html"
    path.write_text(path.read_text().replace("{% block content %}", "{% block content %}" + content, 1))
    program.load("members", [member(ref, joined_at=JOINED) for ref in ("A1", "HUGE", "A2")], at=AT)
    env = {**os.environ, "LOYALTY_MAIL_SECRET": SECRET}
    result = subprocess.run([sys.executable, "-m", "loyalty_mail", "--project", str(program.dir), "--database",
                             program.url, "run", "--once", "--at", AT], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "1 send failed;" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    rows = _rows(program)
    assert {ref: state for ref, (state, _) in rows.items()} == {"A1": "sent", "HUGE": "failed", "A2": "sent"}
    return rows["HUGE"][1]
