"""The demo-data profile is what calibrate.py derives from the real CDNOW purchases."""

from __future__ import annotations

import json

import pytest

from loyalty_mail.seeding.calibrate import PROFILE, build_profile

from .conftest import IN_CI, SHARED

CDNOW = SHARED / "corpus" / "datasets" / "lifetimes_cdnow" / "CDNOW_master.txt"


def test_committed_profile_matches_the_cdnow_data():
    if not CDNOW.exists():
        if IN_CI:
            pytest.fail(f"{CDNOW} is missing; CI has shared/ beside the clone")
        pytest.skip(f"{CDNOW} is not here (shared/ corpus not beside this checkout)")
    profile = build_profile(CDNOW)
    assert profile == json.loads(PROFILE.read_text())
    assert profile["customers"] == 23570
    assert sum(profile["orders_per_customer"].values()) == 23570
