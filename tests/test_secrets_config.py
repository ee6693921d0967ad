"""Secrets in config.yaml: only from the environment, strong enough, never echoed; the webhook
verification key is checked when the file is loaded, so `check` and `serve` report it at its line."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from loyalty_mail.cli import cli
from loyalty_mail.config import load_settings
from loyalty_mail.errors import ConfigError
from loyalty_mail.secret_policy import check_signing_secret

from .conftest import TEST_CONFIG

STRONG = "Zq8-vR2kLw9xT4mNp7Yd"


@pytest.fixture(autouse=True)
def _in_program_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ=environ or {})
    return [str(p) for p in caught.value.problems]


def public_key(private: object) -> str:
    der = private.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def test_a_short_secret_is_refused_without_echoing_it(tmp_path):
    found = problems(tmp_path, "tracking:\n  secret: ${SECRET}\n", {"SECRET": "hunter2-Xy"})
    assert len(found) == 1
    assert found[0].startswith("config.yaml:2:11: tracking.secret (from environment variable SECRET): the secret is too short (10 characters, "
                               "at least 16 needed): use at least 32 random characters")
    assert "hunter2" not in found[0]


@pytest.mark.parametrize("weak", ["aaaaaaaaaaaaaaaa", "abababababababababab", "passwordpassword",
                                  "1234567890123456", "abcdefghijklmnopqrstu", "qwertyqwertyqwer"])
def test_obviously_weak_secrets_are_refused_with_advice(tmp_path, weak):
    [found] = problems(tmp_path, "tracking:\n  secret: ${SECRET}\n", {"SECRET": weak})
    assert found.startswith("config.yaml:2:11: tracking.secret (from environment variable SECRET): the secret "
                            "is too easy to guess (")
    assert "secrets.token_urlsafe(32)" in found and weak not in found


def test_random_secrets_pass():
    import secrets
    for _ in range(200):
        for value in (secrets.token_urlsafe(32), secrets.token_hex(8), secrets.token_urlsafe(12)):
            assert check_signing_secret(value) == value


def test_a_secret_of_the_wrong_type_is_not_echoed(tmp_path):
    text = "sending:\n  smtp:\n    password: [\"${PW}\"]\n"
    [found] = problems(tmp_path, text, {"PW": "s3cr3t-pw"})
    assert "password" in found and "s3cr3t-pw" not in found


@pytest.mark.parametrize("text,environ,where", [
    ("tracking:\n  secret: ${LOYALTY_MAIL_SECRET}\n", {"LOYALTY_MAIL_SECRET": "hunter2-Xy"},
     "config.yaml:2:11: tracking.secret (from environment variable LOYALTY_MAIL_SECRET): the secret is too short"),
    ('tracking:\n  secret:\n    - "${LOYALTY_MAIL_SECRET}"\n    - "${OLD_SECRET}"\n',
     {"LOYALTY_MAIL_SECRET": STRONG, "OLD_SECRET": "passwordpassword"},
     "config.yaml:4:7: tracking.secret[1] (from environment variable OLD_SECRET): the secret is too easy to guess"),
    ("sending:\n  smtp:\n    password: [\"${SMTP_PASSWORD}\"]\n", {"SMTP_PASSWORD": "s3cr3t-pw"},
     "config.yaml:3:15: sending.smtp.password (from environment variable SMTP_PASSWORD): "),
])
def test_a_bad_secret_names_the_environment_variable_it_came_from(tmp_path, text, environ, where):
    [found] = problems(tmp_path, text, environ)
    assert found.startswith(where), found
    assert not any(value in found for value in environ.values())


@pytest.mark.parametrize("field,text", [
    ("tracking.secret", f"tracking:\n  secret: {STRONG}\n"),
    ("tracking.secret", f"tracking:\n  secret: ${{LOYALTY_MAIL_SECRET:-{STRONG}}}\n"),
    ("sending.smtp.password", f"sending:\n  smtp:\n    password: {STRONG}\n"),
    ("sending.sendgrid.api_key", "sending:\n  sendgrid:\n    api_key: SG.abcdef\n"),
])
def test_a_secret_written_in_the_file_is_refused_with_advice(tmp_path, field, text):
    found = problems(tmp_path, text, {"LOYALTY_MAIL_SECRET": STRONG})
    literal = [p for p in found if "a secret is written in config.yaml" in p]
    assert len(literal) == 1, found
    variable = {"tracking.secret": "LOYALTY_MAIL_SECRET", "sending.smtp.password": "SMTP_PASSWORD",
                "sending.sendgrid.api_key": "SENDGRID_API_KEY"}[field]
    assert f": {field}: a secret is written in config.yaml (not shown); write `{field.split('.')[-1]}: " \
           f"${{{variable}}}` and set {variable} in the service's environment" in literal[0]
    assert STRONG not in "".join(found) and "SG.abcdef" not in "".join(found)


def test_secrets_referenced_from_the_environment_load(tmp_path):
    text = ("tracking:\n  secret: ${LOYALTY_MAIL_SECRET}\nsending:\n  smtp:\n    password: ${SMTP_PASSWORD:-}\n"
            "  sendgrid:\n    api_key: ${SENDGRID_API_KEY:-}\n")
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    settings = load_settings(tmp_path, environ={"LOYALTY_MAIL_SECRET": STRONG, "SMTP_PASSWORD": "pw"})
    assert (settings.tracking.secret, settings.sending.smtp.password, settings.sending.sendgrid.api_key) == (
        (STRONG,), "pw", "")


def test_a_valid_webhook_key_loads():
    key = public_key(ec.generate_private_key(ec.SECP256R1()))
    from loyalty_mail.config import TrackingSettings
    assert TrackingSettings(sendgrid_webhook_key=key).sendgrid_webhook_key == key


@pytest.mark.parametrize("key,why", [
    ("not-a-key", "not a public key"),
    (base64.b64encode(b"\x30\x03\x02\x01\x00").decode(), "not a public key"),
    (public_key(rsa.generate_private_key(65537, 2048)), "not an ECDSA P-256 key"),
    (public_key(ec.generate_private_key(ec.SECP384R1())), "not an ECDSA P-256 key"),
])
def test_an_invalid_webhook_key_is_a_config_error_at_its_line(tmp_path, key, why):
    [found] = problems(tmp_path, f"tracking:\n  base_url: https://t.example\n  sendgrid_webhook_key: {key}\n")
    assert found.startswith(f"config.yaml:3:25: tracking.sendgrid_webhook_key: {why}: expected the base64 "
                            "verification key shown under SendGrid's Mail Settings > Signed Event Webhook")


@pytest.mark.parametrize("command", [["check"], ["serve", "--port", "1"]])
def test_check_and_serve_report_an_invalid_webhook_key_as_a_config_error(tmp_path, command):
    (tmp_path / "config.yaml").write_text(
        TEST_CONFIG + "tracking:\n  secret: ${LOYALTY_MAIL_SECRET}\n  sendgrid_webhook_key: bm90IGEga2V5\n",
        encoding="utf-8")
    result = CliRunner(env={"LOYALTY_MAIL_SECRET": STRONG}).invoke(
        cli, ["--project", str(tmp_path), "--database", f"sqlite:///{tmp_path / 'db.sqlite'}", *command])
    assert result.exit_code == 1, result.output
    assert "config.yaml:17:25: tracking.sendgrid_webhook_key: not a public key" in result.stderr
    assert "Internal error" not in result.stderr


def test_a_list_of_secrets_names_each_once_and_has_no_empty_items(tmp_path):
    other = "Hq3-pL8sKd2xV7nBw4Zc"
    found = problems(tmp_path, 'tracking:\n  secret: ["${S}", "${OLD}", "${S2}"]\n',
                     {"S": STRONG, "OLD": other, "S2": STRONG})
    assert found == ["config.yaml:2:11: tracking.secret (from environment variables S, OLD, S2): the items [0] "
                     "and [2] are the same secret (not shown); list each secret once, newest first"]
    found = problems(tmp_path, 'tracking:\n  secret:\n    - ${S}\n    -\n    - ""\n', {"S": STRONG})
    assert found == [
        "config.yaml:4:6: tracking.secret[1]: an empty item; remove it, or write ${VARIABLE:-} for an "
        "older secret that may be unset",
        "config.yaml:5:7: tracking.secret[2]: an empty item; remove it, or write ${VARIABLE:-} for an "
        "older secret that may be unset"]


def test_a_long_secret_is_checked_in_linear_time():
    import random
    import string
    import time
    value = "".join(random.Random(1).choices(string.ascii_letters, k=1_000_000))
    started = time.perf_counter()
    assert check_signing_secret(value) == value
    assert time.perf_counter() - started < 5  # the quadratic check took over 10 s on this length
    with pytest.raises(ValueError, match="one short block repeated"):
        check_signing_secret(value[:50_000] * 20 + value[:7])
