"""The shapes the API documents (OpenAPI) and what each field allows, in the importers' terms.

Bodies are parsed and validated by the importers themselves (see ingest.py); these models only
describe them at /docs and /openapi.json.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ALLOWED = {
    "member_id": "text, 1 to 64 characters",
    "email": "an email address (at most 254 characters)",
    "first_name": "text, at most 100 characters",
    "last_name": "text, at most 100 characters",
    "locale": "a locale such as en, vi, en_US, vi_VN",
    "timezone": "an IANA time zone such as Asia/Ho_Chi_Minh",
    "joined_at": "an ISO 8601 date or time, e.g. 2026-03-01T09:30:00+07:00",
    "birthday": "a date, YYYY-MM-DD, from 1900-01-01 up to today",
    "points": "a whole number from 0 to 2147483647",
    "total_spend": "an amount of at least 0, below 10^16",
    "purchase_count": "a whole number from 0 to 2147483647",
    "last_purchase_at": "an ISO 8601 date or time, e.g. 2026-03-01T09:30:00+07:00",
    "nps_score": "a whole number from 0 to 10",
    "subscribed": "true or false (true never re-subscribes someone who left)",
    "topics": "an object of topics from config.yaml, each true or false, e.g. {\"promotions\": false}",
    "event_id": "text, at most 128 characters, unique per event",
    "type": "an event type: lowercase letters, digits and _ (purchase, points_redeemed, signup, ...)",
    "occurred_at": "an ISO 8601 date or time, e.g. 2026-03-01T09:30:00+07:00",
    "amount": "an amount of at least 0, below 10^16 (required for a purchase)",
    "currency": "the program currency",
    "userId": "the member's id (anonymous visitors are not members)",
    "event": "the Segment event name",
    "": "a JSON object of fields",
}
OTHER = "a custom attribute: a name of letters, digits and _ (not starting with a digit), any JSON value"


def allowed_for(field: str) -> str:
    return ALLOWED.get(field, OTHER)


class MemberIn(BaseModel):
    """A member, as a row of `members import`: blank or missing fields keep what is stored; other
    names become custom attributes."""

    model_config = ConfigDict(extra="allow")

    member_id: str | None = Field(None, description="required in a batch; in PUT it is the path's")
    email: str | None = Field(None, description="required")
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    joined_at: str | None = None
    birthday: str | None = None
    points: int | None = None
    total_spend: float | str | None = None
    purchase_count: int | None = None
    last_purchase_at: str | None = None
    nps_score: int | None = None
    subscribed: bool | None = None
    topics: dict[str, bool] | None = Field(None, description="topics from config.yaml: true or false each")


class EventIn(BaseModel):
    """An event, as a row of `events import`: other names become the event's properties."""

    model_config = ConfigDict(extra="allow")

    event_id: str | None = Field(None, description="makes retries safe: a repeated id is not applied twice")
    member_id: str
    type: str
    occurred_at: str
    amount: float | str | None = None
    currency: str | None = None
    points: int | None = None
    email: str | None = Field(None, description="with ingest.create_unknown_members, creates the member")


class SegmentMessage(BaseModel):
    """A Segment-spec message (identify or track; page, screen, group and alias are ignored)."""

    model_config = ConfigDict(extra="allow")

    type: str | None = None
    userId: str | None = None
    messageId: str | None = None
    timestamp: str | None = None
    event: str | None = None
    traits: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None


def body_schema(schema: dict[str, Any], *, batch_key: str | None = None, one_or_many: bool = False) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON request body the route reads itself."""
    many = {"type": "array", "items": schema, "maxItems": 1000}
    if batch_key:
        body: dict[str, Any] = {"type": "object", "properties": {batch_key: many}, "required": [batch_key]}
    elif one_or_many:
        body = {"oneOf": [schema, many]}
    else:
        body = schema
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


class ErrorItem(BaseModel):
    """One bad item of a request, in the words of the file importers."""

    index: int | None = Field(description="the item's position in the batch (0 for a single item; null "
                                          "for a query parameter)")
    field: str = Field(description="the field at fault")
    found: Any = Field(description="what was sent (shortened when long)")
    allowed: str = Field(description="what the field allows")
    message: str


class ErrorDetail(BaseModel):
    status: int
    message: str
    errors: list[ErrorItem] | None = Field(default=None, description="with 409 and 422: one entry per problem")


class ErrorBody(BaseModel):
    """Every error the API answers, whatever its status."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in {
        400: "the body is not JSON, or not the JSON this endpoint takes",
        401: "no API key, or an unknown or revoked one",
        403: "the key lacks the endpoint's scope",
        404: "no such member",
        413: "the body is over api.max_body_bytes (it is not read)",
        422: "invalid items: one entry per problem; nothing applied unless ?partial=true",
        503: "the database is unavailable or busy; retry after Retry-After seconds",
    }.items()}
# what only a route that reads a body answers
BODY_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {415: {
    "model": ErrorBody,
    "description": "the Content-Type is not application/json (nor application/*+json); a missing one is read as JSON"}}
# what only a route that takes one event answers
EVENT_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {409: {
    "model": ErrorBody,
    "description": "the event's id (event_id, Segment's messageId) is recorded for another event: one entry per "
                   "field that differs (in a batch, or with ?partial=true, these entries are items' errors)"}}
