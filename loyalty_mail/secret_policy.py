"""What a secret in the settings must look like. Messages never contain the secret itself.

- Secrets come from the environment: in config.yaml a secret field holds only `${ENV_VAR}`
  references (`${ENV_VAR:-}` for "unset"); a value or a non-empty fallback written in the file is
  refused, since the file is copied, committed and shown in previews.
- The tracking secret signs links and coupon codes, so it must be long and unpredictable: at least
  16 characters, at least 6 different ones, not one short block repeated, not mostly a run
  (`aaaa...`, `abcd...`, `1234...`). A list of secrets (newest first) names each secret once and
  has no empty items.
- The SendGrid webhook verification key is a public key, not a secret: it may be written in the
  file, but it must be the base64 DER of an ECDSA P-256 key.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

# Fields whose value is a secret, with the environment variable the advice names.
SECRET_FIELDS: dict[tuple[str, ...], str] = {
    ("tracking", "secret"): "LOYALTY_MAIL_SECRET",
    ("sending", "smtp", "password"): "SMTP_PASSWORD",
    ("sending", "sendgrid", "api_key"): "SENDGRID_API_KEY",
    ("sending", "bounces", "password"): "BOUNCES_IMAP_PASSWORD",
}
MIN_LENGTH = 16
MIN_DISTINCT = 6
ADVICE = ("use at least 32 random characters, e.g. from "
          "`python -c \"import secrets; print(secrets.token_urlsafe(32))\"`")
_ENV_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-([^}]*))?\}")


def is_secret_field(path: tuple[Any, ...]) -> bool:
    """True for a secret field's path, or a path inside one (a list of secrets)."""
    return any(tuple(path[:len(field)]) == field for field in SECRET_FIELDS)


def literal_secret_problem(path: tuple[str, ...], raw: Any) -> str | None:
    """Why the raw (unsubstituted) value of a secret field may not stand in config.yaml, or None."""
    values: Iterable[Any] = raw if isinstance(raw, list) else [raw]
    for value in values:
        if value is None or value == "":
            continue
        if isinstance(value, str) and not _ENV_REF.sub(
                lambda m: "" if not m.group(1) else m.group(0), value).strip():
            continue
        name = ".".join(path)
        variable = SECRET_FIELDS[path]
        return (f"{name}: a secret is written in config.yaml (not shown); write "
                f"`{path[-1]}: ${{{variable}}}` and set {variable} in the service's environment "
                "(an environment file only the service can read), never the value or a fallback")
    return None


def source_of(variables: Sequence[str]) -> str:
    """` (from environment variable NAME)`, or `` when the value was written in the file: what a
    message about a secret's value says of where it came from, never the value."""
    if not variables:
        return ""
    return f" (from environment variable{'s' if len(variables) > 1 else ''} {', '.join(variables)})"


def check_signing_secret(value: str) -> str:
    """The secret, when it is strong enough to sign links; ValueError (without the secret) if not."""
    if len(value) < MIN_LENGTH:
        raise ValueError(f"the secret is too short ({len(value)} characters, at least {MIN_LENGTH} "
                         f"needed): {ADVICE}")
    if len(set(value)) < MIN_DISTINCT:
        raise ValueError(f"the secret is too easy to guess ({len(set(value))} different characters, at "
                         f"least {MIN_DISTINCT} needed): {ADVICE}")
    if _repeats_a_block(value):
        raise ValueError(f"the secret is too easy to guess (one short block repeated): {ADVICE}")
    steps = [ord(b) - ord(a) for a, b in zip(value, value[1:])]
    if sum(step in (-1, 0, 1) for step in steps) * 4 >= len(steps) * 3:
        raise ValueError(f"the secret is too easy to guess (mostly runs such as 'aaaa' or 'abcd'): {ADVICE}")
    return value


def _repeats_a_block(value: str) -> bool:
    """True when `value` is a block of at most half its length repeated (the last copy may be cut
    short): its shortest period, from the prefix function, is at most half its length. Linear."""
    border = [0] * len(value)  # border[i]: longest proper prefix of value[:i+1] that is also its suffix
    for i in range(1, len(value)):
        k = border[i - 1]
        while k and value[i] != value[k]:
            k = border[k - 1]
        border[i] = k + (value[i] == value[k])
    return bool(value) and (len(value) - border[-1]) * 2 <= len(value)


def empty_items(raw: Any) -> list[int]:
    """The positions of items written empty (`-` alone, `""`) in a list of secrets in the file; an
    older secret that may be unset is written `${VAR:-}` instead."""
    if not isinstance(raw, list):
        return []
    return [i for i, item in enumerate(raw) if item is None or (isinstance(item, str) and not item.strip())]


def repeated_items(values: Iterable[str]) -> tuple[int, int] | None:
    """The positions of the first secret listed twice and of its first listing, or None."""
    first: dict[str, int] = {}
    for i, value in enumerate(values):
        if value and value in first:
            return first[value], i
        first.setdefault(value, i)
    return None


def load_webhook_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's Signed Event Webhook verification key (base64 DER, ECDSA P-256), or ValueError."""
    advice = ("expected the base64 verification key shown under SendGrid's Mail Settings > "
              "Signed Event Webhook (an ECDSA P-256 public key, e.g. 'MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE...')")
    try:
        der = base64.b64decode("".join(text.split()), validate=True)
        key = load_der_public_key(der)
    except (ValueError, binascii.Error, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"not a public key: {advice}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"not an ECDSA P-256 key: {advice}")
    return key
