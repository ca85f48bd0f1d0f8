"""S3 event notifications (AWS S3 and S3-compatible stores such as MinIO).

AWS sends ``{"Records": [...]}`` with ``eventName`` like ``ObjectCreated:Put``; MinIO's
webhook target sends the same records (``eventName`` with an ``s3:`` prefix) plus
top-level ``EventName`` and ``Key``. Object keys in records are URL-encoded the way
HTML forms are (``a%2Fb%2Fclip+one.mp4`` is ``a/b/clip one.mp4``). A bucket's
notification set-up is acknowledged with ``{"Event": "s3:TestEvent", ...}``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from mediamirror.events.model import (
    MAX_KEY_BYTES,
    Action,
    EventRejected,
    ObjectEvent,
    event_etag,
    event_size,
    event_time,
    invalid_event,
    object_key,
    plain_text,
    s3_sequencer,
    storable,
)

#: A key of 1,024 bytes is at most 3 * 1,024 characters once percent-encoded.
MAX_RAW_KEY_CHARS = 3 * MAX_KEY_BYTES
_REMOVED = ("ObjectRemoved:", "LifecycleExpiration:Delete", "ReducedRedundancyLostObject")


def action_of(event_name: str) -> Action:
    name = event_name.removeprefix("s3:")
    if name.startswith("ObjectCreated:"):
        return Action.CREATED
    if name.startswith(_REMOVED):
        return Action.REMOVED
    if name == "TestEvent":
        return Action.TEST
    return Action.OTHER


def decode_key(raw: str, what: str = "object key") -> str:
    """The object key of an event record: form-URL-decoded, exactly."""
    if len(raw) > MAX_RAW_KEY_CHARS:
        raise EventRejected(f"{what} is longer than {MAX_KEY_BYTES} bytes")
    try:
        key = unquote_plus(raw, errors="strict")
    except UnicodeDecodeError:
        raise EventRejected(f"{what} is not UTF-8 once decoded") from None
    return object_key(key, what)


def _text(value: Any, what: str) -> str:
    return plain_text(value, what)


def is_test(body: dict[str, Any]) -> bool:
    return body.get("Event") == "s3:TestEvent"


def test_event(body: dict[str, Any], channel: str) -> ObjectEvent:
    return ObjectEvent(channel, "s3:TestEvent", Action.TEST, storable(body.get("Bucket")), "")


def parse(body: Any, channel: str = "s3") -> list[ObjectEvent]:
    """Events of one S3/MinIO notification document (already JSON-decoded).

    A record that cannot be used (a bad key or sequencer) becomes an invalid event, so
    the delivery's other records are still applied; a delivery without any usable
    record is refused as a whole."""
    if not isinstance(body, dict):
        raise EventRejected("an S3 event notification must be a JSON object")
    if is_test(body):
        return [test_event(body, channel)]
    records = body.get("Records")
    if not isinstance(records, list) or not records:
        raise EventRejected("no Records in the S3 event notification")
    events = [_checked(r, i, channel) for i, r in enumerate(records)]
    first_invalid = next((e.invalid for e in events if e.invalid is not None), None)
    if first_invalid is not None and all(e.invalid is not None for e in events):
        raise EventRejected(first_invalid)
    return events


def _checked(record: Any, index: int, channel: str) -> ObjectEvent:
    try:
        return _record(record, index, channel)
    except EventRejected as exc:
        name = record.get("eventName") if isinstance(record, dict) else None
        return invalid_event(channel, name, str(exc))


def _record(record: Any, index: int, channel: str) -> ObjectEvent:
    where = f"Records[{index}]"
    if not isinstance(record, dict):
        raise EventRejected(f"{where} is not an object")
    name = _text(record.get("eventName"), f"{where}.eventName")
    s3 = record.get("s3")
    if not isinstance(s3, dict):
        raise EventRejected(f"{where}.s3 is missing")
    bucket = s3.get("bucket")
    obj = s3.get("object")
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        raise EventRejected(f"{where}.s3 has no bucket or object")
    bucket_name = _text(bucket.get("name"), f"{where}.s3.bucket.name")
    raw_key = obj.get("key")
    if not isinstance(raw_key, str) or not raw_key:
        raise EventRejected(f"{where}.s3.object.key is missing or not a string")
    key = decode_key(raw_key, f"{where}.s3.object.key")
    action = action_of(name)
    created = action is Action.CREATED
    return ObjectEvent(
        channel=channel,
        event_type=name[:100],
        action=action,
        bucket=bucket_name,
        key=key,
        sequencer=_sequencer(obj.get("sequencer"), where),
        size=event_size(obj.get("size")) if created else None,
        etag=event_etag(obj.get("eTag", obj.get("etag"))) if created else None,
        time=event_time(record.get("eventTime")) if created else None,
    )


def _sequencer(value: Any, where: str) -> str | None:
    try:
        return s3_sequencer(value)
    except EventRejected as exc:
        raise EventRejected(f"{where}.s3.object.{exc}") from None
