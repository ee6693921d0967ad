"""`run --once` when the provider fails: a run that delivered nothing says so at WARNING, with the
provider's reason, and exits 4; one that delivered some, or had nothing due, exits 0."""

from __future__ import annotations

import logging
import socket

from aiosmtpd.controller import Controller

from .flow_program import Program, member

AT = "2026-11-23T10:00:00+07:00"
JOINED = "2026-11-23T09:00:00+07:00"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def use_smtp(program: Program, port: int) -> None:
    config = (program.dir / "config.yaml").read_text().replace(
        "sending:\n", f"sending:\n  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {port}, security: none, "
                      "timeout: 5 seconds}\n  concurrency: 1\n")
    (program.dir / "config.yaml").write_text(config)


class LaterForSome:
    """aiosmtpd handler: 451 (try again later) for recipients named `later`, accepts the rest."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.startswith("later@"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        return "250 Message accepted"


def test_every_delivery_failing_transiently_warns_and_exits_4(sqlite_program, caplog):
    program = sqlite_program
    use_smtp(program, free_port())                       # nothing listens there: connection refused
    program.load("members", [member(f"M{n}", joined_at=JOINED) for n in range(3)], at=AT)
    with caplog.at_level(logging.INFO, logger="loyalty_mail"):
        result = program.run("run", "--once", at=AT)
    assert result.exit_code == 4, result.output
    assert "delivered 0, failed 0, to retry 3" in result.stdout
    assert "nothing was delivered: 3 send(s) were due" in result.stderr
    assert "SMTP connection" in result.stderr            # the provider's reason
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "loyalty_mail.run"]
    assert "0 delivered" in warning.getMessage() and "SMTP connection" in warning.getMessage()
    again = program.run("run", "--once", at=AT)          # nothing due (the retries wait): not a failure
    assert again.exit_code == 0, again.output
    assert "delivered 0, failed 0, to retry 0" in again.stdout


def test_some_delivered_and_some_to_retry_exits_0(sqlite_program, caplog):
    program = sqlite_program
    port = free_port()
    controller = Controller(LaterForSome(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        use_smtp(program, port)
        people = [member("M1", joined_at=JOINED), dict(member("LATER", joined_at=JOINED), email="later@example.com")]
        program.load("members", people, at=AT)
        with caplog.at_level(logging.INFO, logger="loyalty_mail"):
            result = program.run("run", "--once", at=AT)
    finally:
        controller.stop()
    assert result.exit_code == 0, result.output
    assert "delivered 1, failed 0, to retry 1" in result.stdout
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "loyalty_mail.run"]

