"""The HTTP API (`loyalty-mail api`): members and events in, a member's state out.

    app.py           the routes (one list), authentication, errors as JSON
    ingest.py        items applied by the file importers, one transaction a request
    keys.py          API keys: the one writer of `api_keys`; only SHA-256 digests stored
    retries.py       an event id sent again: the same event (a retry) or another (an item error)
    segment_spec.py  Segment-spec identify/track/batch messages -> our rows (pure)
    docs_page.py     /docs: Swagger UI from files this process serves
    schemas.py       the documented shapes, and what each field allows
"""
