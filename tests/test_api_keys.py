"""API keys from the command line: shown once, stored only as a digest, listed, revoked."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from loyalty_mail import db
from loyalty_mail.api import keys
from loyalty_mail.models import api_keys_table


def _stored(database_url: str) -> list[dict]:
    engine = db.create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(api_keys_table)).mappings()]
    finally:
        engine.dispose()


def test_create_prints_the_key_once_and_stores_only_its_digest(run, database_url):
    result = run("api-keys", "create", "shop", "--scope", "ingest")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("lm_") and len(key) >= 40
    [row] = _stored(database_url)
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(row.values()) and row["scope"] == "ingest"
    listing = run("api-keys", "list", "--format", "json")
    assert key not in listing.output and '"name": "shop"' in listing.output


def test_holder_checks_the_key_and_revocation(run, database_url):
    key = run("api-keys", "create", "shop").stdout.strip()
    engine = db.create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            assert keys.holder(conn, key) == keys.KeyHolder("shop", "ingest")
            assert keys.holder(conn, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
            assert keys.holder(conn, "") is None
        assert run("api-keys", "revoke", "shop").exit_code == 0
        with engine.connect() as conn:
            assert keys.holder(conn, key) is None
    finally:
        engine.dispose()


def test_scopes():
    assert keys.KeyHolder("a", "admin").allows("read") and keys.KeyHolder("a", "admin").allows("ingest")
    assert keys.KeyHolder("r", "read").allows("read") and not keys.KeyHolder("r", "read").allows("ingest")
    assert not keys.KeyHolder("i", "ingest").allows("read")


def test_mistakes_are_clear(run):
    run("api-keys", "create", "shop")
    again = run("api-keys", "create", "shop")
    assert again.exit_code == 1 and "already a key named 'shop'" in again.output
    assert "choose another name, e.g. 'shop-2'" in again.output and "revoke it" not in again.output
    run("api-keys", "revoke", "shop")   # revoking does not free the name: the list still shows it
    revoked = run("api-keys", "create", "shop")
    assert revoked.exit_code == 1 and "already a revoked key named 'shop'" in revoked.output
    bad = run("api-keys", "create", "no spaces")
    assert bad.exit_code == 1 and "is not a key name" in bad.output
    missing = run("api-keys", "revoke", "nobody")
    assert missing.exit_code == 1 and "no API key named 'nobody'" in missing.output
