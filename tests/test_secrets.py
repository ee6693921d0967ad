"""The tracking secret rotates: `tracking.secret` is one secret or a list, newest first; the first
signs, every one verifies. `check` warns when none is set."""

from __future__ import annotations

import asyncio
import email
import email.policy
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from loyalty_mail import db
from loyalty_mail.cli import cli
from loyalty_mail.config import load_settings
from loyalty_mail.errors import ConfigError
from loyalty_mail.signing import BadToken, TokenClaims, TokenSigner
from loyalty_mail.tracking.app import create_app

from .flow_program import SECRET, member

OLD = "the-old-secret-0123456789"
NEW = "the-new-secret-0123456789"
UNLISTED = "a-secret-nobody-listed-0123456789"
CLAIMS = TokenClaims("unsubscribe", "f" * 32)


def settings_with(tmp_path: Path, secret_yaml: str, environ: dict[str, str]):
    (tmp_path / "config.yaml").write_text(f"tracking:\n  secret: {secret_yaml}\n", encoding="utf-8")
    return load_settings(tmp_path, environ=environ)


def test_one_secret_or_a_list_newest_first(tmp_path):
    assert settings_with(tmp_path, "${S}", {"S": NEW}).tracking.secret == (NEW,)
    assert settings_with(tmp_path, "${S:-}", {}).tracking.secret == ()
    rotated = settings_with(tmp_path, '["${S}", "${OLD:-}", "${OLDER:-}"]', {"S": NEW, "OLDER": OLD})
    assert rotated.tracking.secret == (NEW, OLD)  # an unset `${VAR:-}` is left out


def test_a_bad_secret_is_reported_with_its_line(tmp_path):
    with pytest.raises(ConfigError) as short:
        settings_with(tmp_path, '\n    - "${S}"\n    - "${OLD}"', {"S": NEW, "OLD": "short"})
    assert str(short.value).endswith(
        "config.yaml:4:7: tracking.secret[1] (from environment variable OLD): the secret is too short (5 "
        "characters, at least 16 "
        "needed): use at least 32 random characters, e.g. from "
        "`python -c \"import secrets; print(secrets.token_urlsafe(32))\"`")
    with pytest.raises(ConfigError) as wrong:
        settings_with(tmp_path, "{key: value}", {})
    assert str(wrong.value).endswith(
        "config.yaml:2:11: tracking.secret: expected a secret (`${LOYALTY_MAIL_SECRET}`) or a list of them, "
        "newest first, found a mapping")


def test_the_first_secret_signs_and_every_listed_one_verifies(tmp_path):
    rotated = TokenSigner(settings_with(tmp_path, '["${NEW}", "${OLD}"]', {"NEW": NEW, "OLD": OLD}).tracking.secret)
    assert rotated.verify(TokenSigner(OLD).sign(CLAIMS)) == CLAIMS        # sent before the rotation
    assert TokenSigner(NEW).verify(rotated.sign(CLAIMS)) == CLAIMS        # signed with the new one
    with pytest.raises(BadToken, match="bad signature"):
        TokenSigner(OLD).verify(rotated.sign(CLAIMS))
    with pytest.raises(BadToken, match="bad signature"):
        rotated.verify(TokenSigner(UNLISTED).sign(CLAIMS))


def one_click(settings, url: str, unsubscribe_link: str) -> httpx.Response:
    """POST the one-click unsubscribe (RFC 8058) to the tracking app, in process."""
    engine = db.create_db_engine(url)
    app = create_app(settings, engine, clock=lambda: datetime(2026, 11, 24, tzinfo=timezone.utc))

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://t.test.example") as c:
            return await c.post(httpx.URL(unsubscribe_link).path, content=b"List-Unsubscribe=One-Click",
                                headers={"content-type": "application/x-www-form-urlencoded"})
    try:
        return asyncio.run(post())
    finally:
        engine.dispose()


def test_an_unsubscribe_link_sent_before_a_rotation_still_works(sqlite_program):
    at = "2026-11-23T10:00:00+07:00"
    sqlite_program.load("members", [member("M1", joined_at="2026-11-23T09:00:00+07:00")], at=at)
    assert sqlite_program.run("run", "--once", at=at).exit_code == 0   # signed with SECRET
    [path] = (sqlite_program.dir / "outbox").glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    link = str(message["List-Unsubscribe"]).split(",")[0].strip("<> ")
    config = sqlite_program.dir / "config.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace(
        "secret: ${LOYALTY_MAIL_SECRET:-}", 'secret: ["${NEW}", "${OLD}"]'), encoding="utf-8")

    dropped = load_settings(sqlite_program.dir, environ={"NEW": NEW, "OLD": UNLISTED})
    assert one_click(dropped, sqlite_program.url, link).status_code == 404
    rotated = load_settings(sqlite_program.dir, environ={"NEW": NEW, "OLD": SECRET})
    answer = one_click(rotated, sqlite_program.url, link)
    assert (answer.status_code, answer.text) == (200, "unsubscribed")


def test_check_warns_when_the_secret_is_not_set(sqlite_program):
    argv = ["--project", str(sqlite_program.dir), "--database", sqlite_program.url, "check"]
    unset = CliRunner(env={"LOYALTY_MAIL_SECRET": ""}).invoke(cli, argv, catch_exceptions=False)
    assert unset.exit_code == 0, unset.output
    warning = ("warning: tracking.secret is not set: sending (run --once, daemon, worker) and serve need it; "
               "export LOYALTY_MAIL_SECRET (use at least 32 random characters, e.g. from "
               "`python -c \"import secrets; print(secrets.token_urlsafe(32))\"`)\n")
    assert warning in unset.stderr
    set_ = CliRunner(env={"LOYALTY_MAIL_SECRET": SECRET}).invoke(cli, argv, catch_exceptions=False)
    assert set_.exit_code == 0, set_.output
    assert "tracking.secret" not in set_.stderr
