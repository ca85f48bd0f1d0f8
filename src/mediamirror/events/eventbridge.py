"""S3 events delivered through Amazon EventBridge.

A bucket with EventBridge notifications on sends each change to the account's default
event bus as one event (``source: aws.s3``) whose ``detail-type`` says what happened
(``Object Created``, ``Object Deleted``, ``Object Restore Completed``...) and whose
``detail`` names the bucket and the object (``key``, ``size``, ``etag``, ``sequencer``).
A rule forwards them to an SQS queue (the message body is the event) or to an API
destination (the POST body is the event). The key is URL-encoded the way S3
notifications encode it, and the sequencer orders the events of one key the same way,
so these events follow exactly the ordering and duplicate rules of direct notifications.
"""

from __future__ import annotations

from typing import Any

from mediamirror.events import s3
from mediamirror.events.model import (
    Action,
    EventRejected,
    ObjectEvent,
    event_etag,
    event_size,
    event_time,
    invalid_event,
    plain_text,
    s3_sequencer,
)

SOURCE = "aws.s3"
CHANNEL = "eventbridge"
_ACTIONS = {"Object Created": Action.CREATED, "Object Deleted": Action.REMOVED}


def is_event(body: Any) -> bool:
    """An EventBridge event (of any source): the envelope's fields are there."""
    return isinstance(body, dict) and "detail-type" in body and "detail" in body


def parse(body: Any, channel: str = CHANNEL) -> list[ObjectEvent]:
    """The event of one EventBridge delivery (already JSON-decoded), as a one-item list.

    Events of other sources are refused (a rule sending more than S3's events here is a
    set-up mistake worth seeing); S3 events other than created and deleted are kept as
    ``ignored`` (restores, tags, ACLs, storage classes change nothing mirrored)."""
    if not is_event(body):
        raise EventRejected("not an EventBridge event (no detail-type and detail)")
    if body.get("source") != SOURCE:
        raise EventRejected(f"EventBridge event from {str(body.get('source'))[:60]!r}, not aws.s3")
    detail_type = plain_text(body.get("detail-type"), "detail-type", limit=100)
    try:
        return [_event(body.get("detail"), detail_type, channel, body.get("time"))]
    except EventRejected as exc:
        # Recorded as rejected (with its reason), like an unusable record of an S3
        # notification; the sender gets a 200: sending it again cannot help.
        return [invalid_event(channel, detail_type, str(exc))]


def _event(detail: Any, detail_type: str, channel: str, sent: Any = None) -> ObjectEvent:
    if not isinstance(detail, dict):
        raise EventRejected("detail is not an object")
    bucket = detail.get("bucket")
    obj = detail.get("object")
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        raise EventRejected("detail has no bucket or object")
    bucket_name = plain_text(bucket.get("name"), "detail.bucket.name")
    raw_key = obj.get("key")
    if not isinstance(raw_key, str) or not raw_key:
        raise EventRejected("detail.object.key is missing or not a string")
    key = s3.decode_key(raw_key, "detail.object.key")
    try:
        sequencer = s3_sequencer(obj.get("sequencer"))
    except EventRejected as exc:
        raise EventRejected(f"detail.object.{exc}") from None
    action = _ACTIONS.get(detail_type, Action.OTHER)
    created = action is Action.CREATED
    return ObjectEvent(
        channel=channel,
        event_type=detail_type,
        action=action,
        bucket=bucket_name,
        key=key,
        sequencer=sequencer,
        size=event_size(obj.get("size")) if created else None,
        etag=event_etag(obj.get("etag")) if created else None,
        time=event_time(sent) if created else None,
    )
