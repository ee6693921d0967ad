"""What a segment may refer to: the whitelist of member fields, derived fields and operators.

Plain data: the spec checks names against it, the compiler and the reference evaluator read it.
Nothing outside this table is reachable from YAML.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_OPS = ("eq", "ne", "in", "not_in", "contains", "starts_with", "is_set", "is_null")
NUMBER_OPS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "is_set", "is_null")
TIME_OPS = ("before", "after", "since", "within", "older_than", "between", "is_set", "is_null")
# A time that lies ahead (a review, an expiry) also takes within_next: from now up to N ahead.
FUTURE_TIME_OPS = TIME_OPS + ("within_next",)
DATE_OPS = ("before", "after", "since", "between", "anniversary", "is_set", "is_null")
BOOL_OPS = ("eq", "is_set", "is_null")
TIER_OPS = ("eq", "ne", "in", "not_in", "at_least", "at_most", "above", "below")
EXPIRY_TIME_OPS = ("before", "after", "since", "between", "within_next", "is_set", "is_null")
EXPIRING_OPS = ("within", "eq", "ne", "gt", "gte", "lt", "lte", "between")
CATEGORY_OPS = ("eq", "ne", "in", "not_in", "is_set", "is_null")

NPS_CATEGORIES = {"promoter": (9, 10), "passive": (7, 8), "detractor": (0, 6)}


@dataclass(frozen=True)
class FieldSpec:
    """One name a segment may use, its kind, and the operators it allows."""

    name: str
    kind: str  # text | number | time | date | bool | tier | category | days_since | derived_number
    #            | expiry_time | points_expiring
    operators: tuple[str, ...]
    column: str | None = None  # the members column it reads, when it reads one directly
    description: str = ""

    @property
    def stored(self) -> str:
        """The members column of a field that reads one directly (all but the derived ones)."""
        if self.column is None:
            raise ValueError(f"{self.name} is derived: it reads no single column")
        return self.column


def _f(name: str, kind: str, ops: tuple[str, ...], column: str | None, description: str) -> FieldSpec:
    return FieldSpec(name, kind, ops, column, description)


FIELDS: dict[str, FieldSpec] = {f.name: f for f in [
    _f("member_id", "text", TEXT_OPS, "member_id", "the loyalty code"),
    _f("email", "text", TEXT_OPS, "email", "email address"),
    _f("first_name", "text", TEXT_OPS, "first_name", "first name"),
    _f("last_name", "text", TEXT_OPS, "last_name", "last name"),
    _f("locale", "text", TEXT_OPS, "locale", "locale, e.g. vi or en (null: program default)"),
    _f("timezone", "text", TEXT_OPS, "timezone", "IANA time zone (null: program default)"),
    _f("tier", "tier", TIER_OPS, "tier", "tier name; at_least/at_most/above/below follow tier order"),
    _f("points", "number", NUMBER_OPS, "points", "points balance"),
    _f("total_spend", "number", NUMBER_OPS, "total_spend", "lifetime spend"),
    _f("purchase_count", "number", NUMBER_OPS, "purchase_count", "number of purchases"),
    _f("nps_score", "number", NUMBER_OPS, "nps_score", "NPS answer, 0 to 10"),
    _f("joined_at", "time", TIME_OPS + ("anniversary",), "joined_at",
       "when the member joined; anniversary in the member's time zone"),
    _f("last_purchase_at", "time", TIME_OPS, "last_purchase_at", "time of the latest purchase"),
    _f("unsubscribed_at", "time", TIME_OPS, "unsubscribed_at", "when the member unsubscribed"),
    _f("birthday", "date", DATE_OPS, "birthday", "date of birth; anniversary in the member's time zone"),
    _f("subscribed", "bool", BOOL_OPS, "subscribed", "receives email (unsubscribed from all: false)"),
    _f("nps", "category", CATEGORY_OPS, "nps_score",
       "NPS category: promoter (9-10), passive (7-8), detractor (0-6)"),
    _f("days_since_last_purchase", "days_since", NUMBER_OPS, "last_purchase_at",
       "whole days since the latest purchase"),
    _f("membership_days", "days_since", NUMBER_OPS, "joined_at", "whole days since joining"),
    _f("average_order_value", "derived_number", NUMBER_OPS, None, "total_spend / purchase_count"),
    _f("clv", "derived_number", NUMBER_OPS, None,
       "customer lifetime value: average order value x purchases per year x segments.clv_years"),
    _f("points_to_next_tier", "derived_number", NUMBER_OPS, None,
       "points (or spend, with tiers.basis: spend) still needed for the next tier; with "
       "tiers.qualification, the spend (or points earned) over the period ending now; null at the top"),
    _f("tier_review_at", "time", FUTURE_TIME_OPS, "tier_review_at",
       "when the member's tier is next reviewed (tiers.qualification); null at the lowest tier; "
       "within_next: 30 days is from now to 30 days ahead"),
    _f("needed_to_keep_tier", "derived_number", NUMBER_OPS, None,
       "spend (or points earned) still needed by the review to keep the tier; 0 once re-qualified"),
    _f("affordable_rewards", "derived_number", NUMBER_OPS, None,
       "how many rewards of the catalogue (rewards:) the points balance affords"),
    _f("points_expiring", "points_expiring", EXPIRING_OPS, None,
       "points expiring from now until `within` ahead: {within: 30 days, gte: 500} (default: gte 1)"),
    _f("next_points_expiry_at", "expiry_time", EXPIRY_TIME_OPS, None,
       "when the member's next points expire (after now); null when none will"),
]}

EVENT_KEYS = ("type", "count", "sum", "within", "since", "until", "where")
EVENT_COLUMNS = {"amount": "number", "points": "number", "currency": "text"}
ATTRIBUTE_TYPES = ("text", "number", "boolean")
COMBINATORS = ("all", "any", "not")
