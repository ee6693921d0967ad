"""Tracking: the public routes of signed tokens (opens, clicks, unsubscribe) and provider webhooks."""
