"""The SMTP transport against real aiosmtpd servers: pipelined (RFC 2920) where the server offers
PIPELINING, one command at a time where it does not; refusals reported per message either way."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from loyalty_mail.config import SmtpSettings
from loyalty_mail.message import Address, RenderedEmail
from loyalty_mail.transports.smtp import SmtpTransport

from .test_delivery import SmtpSink, free_port


class PipeliningSink(SmtpSink):
    """The test sink, offering PIPELINING in its EHLO answer as most relays do."""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


class Recording(SMTP):
    """aiosmtpd's server, keeping each chunk of bytes as it arrives from the client."""

    chunks: list[bytes]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        super().data_received(data)


class RecordingController(Controller):
    def __init__(self, handler, **kwargs) -> None:  # noqa: ANN001
        super().__init__(handler, **kwargs)
        self.chunks: list[bytes] = []

    def factory(self) -> SMTP:
        server = Recording(self.handler, **self.SMTP_kwargs)
        server.chunks = self.chunks
        return server


@pytest.fixture
def server(request):
    sink = request.param()
    sink.port = free_port()
    controller = RecordingController(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink, controller.chunks
    controller.stop()


def _email(n: int, to: str) -> RenderedEmail:
    return RenderedEmail(send_id=f"{n:032x}", sender=Address("rewards@test.example", "Rewards"),
                         to=Address(to, "Lan"), subject=f"Hello {n}", text=".a line with a leading dot\nbye",
                         html="<p>hi</p>", date=datetime(2026, 11, 23, tzinfo=timezone.utc))


def _transport(port: int, concurrency: int = 1) -> SmtpTransport:
    return SmtpTransport(SmtpSettings(host="127.0.0.1", port=port, security="none"), concurrency=concurrency)


BATCH = ["a@example.com", "bounce@example.com", "b@example.com", "later@example.com", "c@example.com"]


def _check_outcomes(results, sink) -> None:  # noqa: ANN001
    outcomes = {r.send_id: (r.outcome, r.detail) for r in results}
    assert [outcomes[f"{n:032x}"][0] for n in range(5)] == ["sent", "failed", "sent", "retry", "sent"]
    assert outcomes[f"{1:032x}"][1] == "SMTP 550: 5.1.1 no such user"
    assert outcomes[f"{3:032x}"][1] == "SMTP 451: 4.3.0 try again later"
    assert sorted(sink.send_ids()) == [f"{n:032x}" for n in (0, 2, 4)]
    first = next(m for m in sink.messages if m["X-Loyalty-Mail-Send-Id"] == f"{0:032x}")
    assert first["Subject"] == "Hello 0"
    assert first.get_body(("plain",)).get_content().startswith(".a line with a leading dot")
    assert len(sink.sessions) == 1                      # one connection throughout, refusals included


@pytest.mark.parametrize("server", [PipeliningSink], indirect=True)
def test_a_server_offering_pipelining_gets_the_envelope_in_one_write(server):
    sink, chunks = server
    transport = _transport(sink.port)
    results = transport.send([_email(n, to) for n, to in enumerate(BATCH)])
    transport.close()
    _check_outcomes(results, sink)
    envelopes = [c for c in chunks if c.startswith(b"MAIL FROM:")]
    assert len(envelopes) == 5
    assert all(b"\r\nRCPT TO:<" in c and c.endswith(b"\r\nDATA\r\n") for c in envelopes), envelopes
    assert envelopes[0].startswith(b"MAIL FROM:<rewards@test.example> SIZE=")
    assert sum(c.lower() == b"rset\r\n" for c in chunks) == 2   # after each refused recipient


@pytest.mark.parametrize("server", [SmtpSink], indirect=True)
def test_a_server_without_pipelining_gets_one_command_at_a_time(server):
    sink, chunks = server
    transport = _transport(sink.port)
    results = transport.send([_email(n, to) for n, to in enumerate(BATCH)])
    transport.close()
    _check_outcomes(results, sink)
    assert not any(b"RCPT TO:" in c for c in chunks if c.startswith(b"MAIL FROM:"))


@pytest.mark.parametrize("server", [PipeliningSink], indirect=True)
def test_pipelined_connections_in_parallel_deliver_each_message_once(server):
    sink, _ = server
    transport = _transport(sink.port, concurrency=4)
    results = transport.send([_email(n, f"m{n}@example.com") for n in range(40)])
    transport.close()
    assert [r.outcome for r in results] == ["sent"] * 40
    assert sorted(sink.send_ids()) == [f"{n:032x}" for n in range(40)]
    assert len(sink.sessions) <= 4


class HangsUpAfterData(SmtpSink):
    """Keeps the message, then drops the connection instead of answering the end of DATA."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        await super().handle_DATA(server, session, envelope)
        server.transport.close()
        return "250 never seen"


class PipeliningHangsUpAfterData(PipeliningSink, HangsUpAfterData):
    pass


@pytest.mark.parametrize("server", [PipeliningHangsUpAfterData, HangsUpAfterData], indirect=True)
def test_a_connection_lost_after_the_message_was_written_is_not_sent_again_at_once(server):
    """The server may have taken it: the send waits for a later attempt (retry) rather than being
    written again on a new connection straight away."""
    sink, _ = server
    transport = _transport(sink.port)
    (result,) = transport.send([_email(0, "a@example.com")])
    assert result.outcome == "retry" and result.detail.startswith("SMTP server disconnected"), result
    assert sink.send_ids() == [f"{0:032x}"]
    (result,) = transport.send([_email(1, "b@example.com")])   # a fresh connection for the next one
    assert result.outcome == "retry"
    assert sink.send_ids() == [f"{0:032x}", f"{1:032x}"]
    transport.close()


class FailsWhileTakingTheMessage(SmtpSink):
    """Raises while taking the message to `boom@`: aiosmtpd answers 500 and, unlike RFC 5321
    asks, keeps the transaction open (the next MAIL FROM would get 503 nested MAIL command)."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if envelope.rcpt_tos == ["boom@example.com"]:
            raise OSError("the mailbox directory is missing")
        return await super().handle_DATA(server, session, envelope)


class PipeliningFailsWhileTakingTheMessage(PipeliningSink, FailsWhileTakingTheMessage):
    pass


@pytest.mark.parametrize("server", [PipeliningFailsWhileTakingTheMessage, FailsWhileTakingTheMessage],
                         indirect=True)
def test_a_message_refused_after_data_leaves_the_connection_ready_for_the_next(server):
    sink, chunks = server
    transport = _transport(sink.port)
    results = transport.send([_email(0, "boom@example.com"), _email(1, "a@example.com")])
    (later,) = transport.send([_email(2, "b@example.com")])   # the kept connection, a tick later
    transport.close()
    assert results[0].outcome == "failed" and results[0].detail.startswith("SMTP 500"), results[0]
    assert [results[1].outcome, later.outcome] == ["sent", "sent"], (results, later)
    assert sorted(sink.send_ids()) == [f"{1:032x}", f"{2:032x}"]
    assert len(sink.sessions) == 1
    assert sum(c.lower() == b"rset\r\n" for c in chunks) == 1
