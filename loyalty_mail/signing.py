"""What the program signs with its secret: the tokens in public URLs, and coupon codes.

A token carries what a URL is about (kind, send id, link number, target URL) and an HMAC-SHA256
tag over it, truncated to 128 bits. It cannot be forged without the secret, and since send ids
are random it cannot be enumerated. Verification needs no database: the click redirect sends the
reader to the URL inside a token we signed, never to one from the query string.

A coupon code is `PREFIX-SUFFIX`, the suffix an HMAC of the prefix, the member and the email's
occurrence, in an alphabet readable on a till. The same member gets the same code for the same
occurrence every time; a different prefix gives a different suffix.

Secrets rotate: the first of the configured secrets signs, every one of them verifies, so links and
codes in emails already sent keep working while an older secret is still listed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import string
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Literal, NamedTuple

from .errors import shown

Kind = Literal["click", "open", "unsubscribe", "preferences", "view", "confirm"]
_KINDS = {"c": "click", "o": "open", "u": "unsubscribe", "p": "preferences", "v": "view", "k": "confirm"}
_CODES = {kind: code for code, kind in _KINDS.items()}
_TAG_BYTES = 16
MAX_TOKEN_LENGTH = 4096
MIN_SECRET_LENGTH = 16
COUPON_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: readable on a till
COUPON_LENGTHS = range(4, 25)
_COUPON_LETTERS = bytes(ord(COUPON_ALPHABET[b % len(COUPON_ALPHABET)]) for b in range(256))  # 256 = 8 x 32

Secrets = str | bytes | Sequence[str | bytes]
"""One secret, or several: the first signs, all verify."""


class BadToken(ValueError):
    """A token that was not signed by us, was altered, or is malformed."""


class TokenClaims(NamedTuple):  # a tuple: three times quicker to make than a frozen dataclass
    kind: Kind
    send_id: str
    link: int | None = None
    url: str | None = None


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_keys(secrets: Secrets) -> tuple[bytes, ...]:
    """The keys of one or more secrets (from the environment, never from a file), signing key first."""
    listed = [secrets] if isinstance(secrets, (str, bytes)) else list(secrets)
    keys = tuple(s.encode() if isinstance(s, str) else s for s in listed)
    if not keys:
        raise ValueError("no tracking secret is set")
    if any(len(key) < MIN_SECRET_LENGTH for key in keys):
        raise ValueError(f"the tracking secret must be at least {MIN_SECRET_LENGTH} characters long")
    return keys


class TokenSigner:
    """Signs tokens with the first secret and verifies them with any of the secrets."""

    def __init__(self, secrets: Secrets) -> None:
        # keyed HMACs, copied per token: no key setup each time
        self._keyed = [hmac.new(key, digestmod=hashlib.sha256) for key in signing_keys(secrets)]
        # OpenSSL's keyed state where hmac keeps one: copy, update and digest without hmac.py's
        # Python wrappers around them (the same tag); hmac.HMAC itself otherwise.
        self._signing: hmac.HMAC = getattr(self._keyed[0], "_hmac", None) or self._keyed[0]

    def _tag(self, payload: bytes, keyed: hmac.HMAC | None = None) -> bytes:
        mac = (keyed or self._keyed[0]).copy()
        mac.update(payload)
        return mac.digest()[:_TAG_BYTES]

    def sign(self, claims: TokenClaims) -> str:
        """`kind LF send_id [LF link LF url]`, base64url, then a dot and the tag."""
        if "\n" in claims.send_id or (claims.url is not None and "\n" in claims.url):
            raise ValueError("a token field cannot contain a line break")
        if claims.link is None and claims.url is None:
            payload = f"{_CODES[claims.kind]}\n{claims.send_id}".encode()
        else:
            link = "" if claims.link is None else claims.link
            payload = f"{_CODES[claims.kind]}\n{claims.send_id}\n{link}\n{claims.url or ''}".encode()
        mac = self._signing.copy()
        mac.update(payload)
        return f"{_b64(payload)}.{_b64(mac.digest()[:_TAG_BYTES])}"

    def verify(self, token: str, kind: Kind | None = None) -> TokenClaims:
        """The claims of a token we signed; BadToken for anything else."""
        if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
            raise BadToken("malformed token")
        body, tag = token.split(".")
        try:
            payload, given = _unb64(body), _unb64(tag)
        except (ValueError, TypeError) as exc:
            raise BadToken("malformed token") from exc
        if _b64(payload) != body or _b64(given) != tag:
            raise BadToken("malformed token")  # only the one canonical spelling is accepted
        if not hmac.compare_digest(given, self._tag(payload)) and not any(
                hmac.compare_digest(given, self._tag(payload, older)) for older in self._keyed[1:]):
            raise BadToken("bad signature")
        try:
            fields = payload.decode().split("\n")
            code, send_id = fields[0], fields[1]
            link, url = (fields[2], fields[3]) if len(fields) == 4 else (None, None)
            claims = TokenClaims(_KINDS[code], send_id, int(link) if link else None,  # type: ignore[arg-type]
                                 url or None)
        except (ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
            raise BadToken("malformed token") from exc
        if kind is not None and claims.kind != kind:
            raise BadToken(f"not a {kind} token")
        return claims

    def sign_form(self, send_id: str, issued: datetime) -> str:
        """A form token for the pages of one send (CSRF): `issued` as Unix seconds and a tag over
        it and the send. A form posted from elsewhere cannot carry one."""
        stamp = str(int(issued.timestamp()))
        tag = self._tag(f"f\n{send_id}\n{stamp}".encode())
        return f"{stamp}.{_b64(tag)}"

    def verify_form(self, token: str, send_id: str, now: datetime, max_age: timedelta) -> None:
        """BadToken unless `token` is a form token of this send issued within `max_age` of `now`."""
        stamp, dot, tag = (token or "").partition(".")
        if not dot or not stamp.isdigit() or len(token) > 100:
            raise BadToken("malformed form token")
        try:
            given = _unb64(tag)
        except (ValueError, TypeError) as exc:
            raise BadToken("malformed form token") from exc
        payload = f"f\n{send_id}\n{stamp}".encode()
        if not any(hmac.compare_digest(given, self._tag(payload, keyed)) for keyed in self._keyed):
            raise BadToken("bad signature")
        age = now.timestamp() - int(stamp)
        if not -60 <= age <= max_age.total_seconds():
            raise BadToken("expired form token")


def coupon_suffix(key: bytes, member_id: str, scope: str, prefix: str, length: int) -> str:
    """The signed part of a code: an HMAC of the prefix (a-z in capitals, as a till may read it
    either way), the length, the member and the scope (flow and occurrence), in COUPON_ALPHABET."""
    length = max(COUPON_LENGTHS.start, min(length, COUPON_LENGTHS.stop - 1))
    mac = _keyed(key).copy()
    mac.update(f"{ascii_upper(prefix)}\x00{length}\x00{member_id}\x00{scope}".encode())
    return mac.digest()[:length].translate(_COUPON_LETTERS).decode("ascii")


@lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def coupon_code(key: bytes, member_id: str, scope: str, prefix: str = "", length: int = 8) -> str:
    """The same code every time for this member, scope and prefix: `coupon('WB')` -> `WB-7KQ2M9XD`."""
    suffix = coupon_suffix(key, member_id, scope, prefix, length)
    return f"{prefix}-{suffix}" if prefix else suffix


_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def ascii_upper(text: str) -> str:
    """a-z in capitals, every other character as it is: Unicode case rules would read `ſ` as `S`
    and `ß` as `SS`, so a code with them would pass for another."""
    return text.translate(_ASCII_UPPER)


def parse_coupon(text: str) -> tuple[str, str]:
    """A code as a shop types it (any case, spaces around) as (prefix, suffix); ValueError saying
    what is wrong when it cannot be a code of ours."""
    code = ascii_upper(text.strip())
    if not code:
        raise ValueError("the code is empty")
    prefix, dash, suffix = code.rpartition("-")
    part = "the part after the last '-'" if dash else "the code"
    if len(suffix) not in COUPON_LENGTHS:
        raise ValueError(f"{part} has {len(suffix)} characters; "
                         f"codes have {COUPON_LENGTHS.start} to {COUPON_LENGTHS.stop - 1}")
    wrong = sorted(set(suffix) - set(COUPON_ALPHABET))
    if wrong:
        raise ValueError(f"{part} holds {', '.join(map(shown, wrong))}; "
                         f"codes use only {COUPON_ALPHABET} (no 0, O, 1 or I)")
    return prefix, suffix
