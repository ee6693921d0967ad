"""API keys: created, listed, revoked and checked here, the one writer of `api_keys`.

A key is `lm_` and 32 random bytes (secrets.token_urlsafe), shown once when it is created. Only
its SHA-256 digest is stored. A slow password hash (bcrypt, scrypt) protects secrets a person
chose, which an attacker holding the digests could guess; a 256-bit random key cannot be
guessed, so a fast digest protects it as well, and costs microseconds on every request instead of
the tens of milliseconds a password hash would. A request's key is hashed, looked up by digest,
and the digests compared with hmac.compare_digest (constant time). Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..errors import InputFileError, NotFound, shown
from ..models import api_keys_table

SCOPES = ("ingest", "read", "admin")
KEY_PREFIX = "lm_"
SHOWN_CHARS = 10  # of a key, kept to tell keys apart in `api-keys list`
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class KeyHolder:
    """Who a valid key belongs to."""

    name: str
    scope: str

    def allows(self, scope: str) -> bool:
        """admin may do everything; ingest and read only their own part."""
        return self.scope == "admin" or self.scope == scope


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create(conn: sa.Connection, name: str, scope: str, now: datetime) -> str:
    """Store a new key named `name` and return it (the only time it exists in clear)."""
    if not NAME.match(name):
        raise InputFileError(f"'{name}' is not a key name (letters, digits, '_', '.', '-'; at most 64)")
    if scope not in SCOPES:
        raise InputFileError(f"unknown scope '{scope}' (scopes: {', '.join(SCOPES)})")
    k = api_keys_table
    existing = conn.execute(sa.select(k.c.revoked_at).where(k.c.name == name)).first()
    if existing is not None:  # a revoked key keeps its name: `api-keys list` still shows it
        state = "a revoked key" if existing.revoked_at is not None else "a key"
        raise InputFileError(f"there is already {state} named '{name}' (names are never reused); choose "
                             f"another name, e.g. '{name}-2'")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute(k.insert().values(name=name, prefix=key[:SHOWN_CHARS], key_hash=digest(key), scope=scope,
                                   created_at=now))
    return key


def listing(conn: sa.Connection) -> list[dict[str, Any]]:
    k = api_keys_table
    query = sa.select(k.c.name, k.c.prefix, k.c.scope, k.c.created_at, k.c.revoked_at).order_by(k.c.name)
    return [dict(row) for row in conn.execute(query).mappings()]


def revoke(conn: sa.Connection, name: str, now: datetime) -> None:
    k = api_keys_table
    done = conn.execute(k.update().where(k.c.name == name, k.c.revoked_at.is_(None)).values(revoked_at=now))
    if not done.rowcount:
        if conn.execute(sa.select(k.c.id).where(k.c.name == name)).first() is None:
            raise NotFound(f"no API key named {shown(name)} (`loyalty-mail api-keys list` shows them)")


def holder(conn: sa.Connection, key: str) -> KeyHolder | None:
    """The holder of a valid, unrevoked key; None for anything else."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    wanted = digest(key)
    k = api_keys_table
    row = conn.execute(sa.select(k.c.name, k.c.scope, k.c.key_hash, k.c.revoked_at)
                       .where(k.c.key_hash == wanted)).first()
    if row is None or not hmac.compare_digest(row.key_hash, wanted) or row.revoked_at is not None:
        return None
    return KeyHolder(row.name, row.scope)
