"""Coupon codes: the prefix is signed, and `coupons verify` tells a shop whether a code is genuine
and whose, with the current or an older secret; exit 0 genuine, 3 not, 1 when it cannot tell."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from click.testing import CliRunner, Result

from loyalty_mail.cli import cli
from loyalty_mail.signing import coupon_code, parse_coupon

from .flow_program import SECRET, Program, member

AT = "2026-11-23T10:00:00+07:00"
NEW_SECRET = "the-next-secret-0123456789"
UNLISTED = "a-secret-nobody-listed-0123456789"


def test_the_prefix_is_signed():
    key = SECRET.encode()
    hello = coupon_code(key, "SV000123", "welcome:welcome", "HELLO")
    back = coupon_code(key, "SV000123", "welcome:welcome", "BACK20")
    assert hello.startswith("HELLO-") and back.startswith("BACK20-")
    assert hello.split("-")[1] != back.split("-")[1]
    assert coupon_code(key, "SV000123", "welcome:welcome", "hello").upper() == hello  # as a till reads it


def test_parse_coupon_says_what_cannot_be_a_code():
    assert parse_coupon(" hello-7kq2m9xd ") == ("HELLO", "7KQ2M9XD")
    assert parse_coupon("BACK-20-7KQ2M9XD") == ("BACK-20", "7KQ2M9XD")
    with pytest.raises(ValueError, match=r"^the part after the last '-' holds '0', 'O'; codes use only"):
        parse_coupon("HELLO-7KQ2M90O")
    with pytest.raises(ValueError, match=r"^the part after the last '-' has 3 characters; codes have 4 to 24$"):
        parse_coupon("HELLO-7KQ")


def verify(program: Program, code: str, *secrets: str) -> Result:
    """`coupons verify CODE` with tracking.secret listing these secrets, newest first."""
    env = {f"LM_SECRET_{n}": secret for n, secret in enumerate(secrets)}
    listed = ", ".join(f'"${{{name}}}"' for name in env)
    config = (program.dir / "config.yaml").read_text(encoding="utf-8")
    config = re.sub(r"(?m)^  secret: .*$", f"  secret: [{listed}]", config)
    (program.dir / "config.yaml").write_text(config, encoding="utf-8")
    return CliRunner(env=env).invoke(cli, ["--project", str(program.dir), "--database", program.url,
                                           "coupons", "verify", code], catch_exceptions=False)


def sent_codes(program: Program) -> dict[str, str]:
    """The HELLO code in each sent welcome email, by recipient."""
    codes = {}
    for path in (program.dir / "outbox").glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        html = message.get_body(("html",)).get_content()
        codes[message["To"].addresses[0].addr_spec] = re.search(r"HELLO-[A-Z2-9]{8}", html).group(0)
    return codes


@pytest.fixture
def sent(program: Program) -> dict[str, str]:
    program.load("members", [member(f"M{n}", joined_at="2026-11-23T09:00:00+07:00") for n in (1, 2)], at=AT)
    result = program.run("run", "--once", at=AT)
    assert result.exit_code == 0, result.output
    return sent_codes(program)


def test_a_genuine_code_names_its_member_and_email(program, sent):
    code = sent["m1@example.com"]
    result = verify(program, code, SECRET)
    assert (result.exit_code, result.output) == (
        0, f"{code} is genuine: member M1, flow welcome (occurrence welcome), email sent 2026-11-23 03:00 UTC\n")
    typed = verify(program, f"  {code.lower()} ", SECRET)
    assert (typed.exit_code, typed.output) == (0, result.output)


def test_a_code_signed_with_an_older_secret_verifies_after_rotation(program, sent):
    code = sent["m2@example.com"]
    result = verify(program, code, NEW_SECRET, SECRET)
    assert (result.exit_code, result.output) == (
        0, f"{code} is genuine: member M2, flow welcome (occurrence welcome), email sent 2026-11-23 03:00 UTC; "
           "signed with an older secret still listed in tracking.secret\n")
    dropped = verify(program, code, NEW_SECRET, UNLISTED)
    assert (dropped.exit_code, dropped.output) == (
        3, f"{code} is not genuine: no email in the send ledger carries this code under the 2 secret(s) "
           "listed in tracking.secret (a code signed with a secret no longer listed cannot be verified)\n")


def test_codes_that_are_not_genuine_exit_3(program, sent):
    suffix = sent["m1@example.com"].split("-")[1]
    other = "2" if suffix[-1] != "2" else "3"
    for code in (f"BACK20-{suffix}", f"HELLO-{suffix[:-1]}{other}", f"HELLO-{suffix[:4]}"):
        result = verify(program, code, SECRET)
        assert (result.exit_code, result.output) == (
            3, f"{code} is not genuine: no email in the send ledger carries this code under the 1 "
               "secret(s) listed in tracking.secret (a code signed with a secret no longer listed cannot be "
               "verified)\n")
    malformed = verify(program, "hello-7kq2m9x0", SECRET)
    assert (malformed.exit_code, malformed.output) == (
        3, "HELLO-7KQ2M9X0 is not genuine: the part after the last '-' holds '0'; codes use only "
           "ABCDEFGHJKLMNPQRSTUVWXYZ23456789 (no 0, O, 1 or I)\n")


def test_a_code_without_a_dash_or_empty_is_named_as_such(program):
    plain = verify(program, "hello", SECRET)
    assert (plain.exit_code, plain.output) == (
        3, "HELLO is not genuine: the code holds 'O'; codes use only ABCDEFGHJKLMNPQRSTUVWXYZ23456789 "
           "(no 0, O, 1 or I)\n")
    empty = verify(program, "  ", SECRET)
    assert (empty.exit_code, empty.output) == (3, "'  ' is not genuine: the code is empty\n")


def test_verify_needs_the_secret(program):
    result = verify(program, "HELLO-7KQ2M9XD")
    assert result.exit_code == 1
    assert result.stderr == ("Error: tracking.secret is not set: export LOYALTY_MAIL_SECRET (the secret the "
                             "emails were sent with) to verify coupon codes\n")


def test_only_a_to_z_are_read_in_either_case():
    """Unicode case rules read `ſ` (long s) as `S` and `ß` as `SS`: a code with them is another code."""
    key = SECRET.encode()
    assert parse_coupon("sale-7kq2m9xd") == ("SALE", "7KQ2M9XD")
    assert parse_coupon("ſale-7kq2m9xd") == ("ſALE", "7KQ2M9XD")
    assert coupon_code(key, "SV000123", "welcome:welcome", "ſale").split("-")[1] != \
        coupon_code(key, "SV000123", "welcome:welcome", "SALE").split("-")[1]
    with pytest.raises(ValueError, match=r"^the part after the last '-' holds 'ſ'; codes use only"):
        parse_coupon("SALE-7KQ2M9Xſ")


def test_a_long_s_is_not_read_as_s(program, sent):
    code = sent["m1@example.com"]
    forged = code.split("-")[0] + "-" + code.split("-")[1].replace("S", "ſ")[:7] + "ſ"
    result = verify(program, forged, SECRET)
    assert (result.exit_code, result.output) == (
        3, f"{forged} is not genuine: the part after the last '-' holds 'ſ'; codes use "
           "only ABCDEFGHJKLMNPQRSTUVWXYZ23456789 (no 0, O, 1 or I)\n")
