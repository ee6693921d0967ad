"""Tracking: signed tokens for public URLs (opens, clicks, unsubscribe)."""
