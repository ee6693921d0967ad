"""Tracking: the public routes of signed tokens (opens, clicks, unsubscribe, the preference centre,
view in browser, double opt-in confirmation) and provider webhooks.

    app.py       the route table
    pages.py     the member-facing HTML pages (vi, en), plain forms with signed form tokens
    store.py     what the routes write: hits by group commit, webhook events, consent changes
    webhooks.py  SendGrid's Event Webhook: verify, then parse (no I/O)
    bots.py      machine opens and scanner clicks
"""
