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

from mediamirror.events.model import Action, EventRejected, ObjectEvent, s3_sequencer

MAX_KEY_CHARS = 4096
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


def decode_key(raw: str) -> str:
    """The object key of an event record: form-URL-decoded, exactly."""
    key = unquote_plus(raw, errors="strict")
    if not key or len(key) > MAX_KEY_CHARS:
        raise EventRejected(f"object key {raw[:80]!r} is empty or too long")
    return key


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise EventRejected(f"{what} is missing or not a string")
    return value


def is_test(body: dict[str, Any]) -> bool:
    return body.get("Event") == "s3:TestEvent"


def test_event(body: dict[str, Any], channel: str) -> ObjectEvent:
    bucket = body.get("Bucket")
    return ObjectEvent(
        channel, "s3:TestEvent", Action.TEST, bucket if isinstance(bucket, str) else "", ""
    )


def parse(body: Any, channel: str = "s3") -> list[ObjectEvent]:
    """Events of one S3/MinIO notification document (already JSON-decoded)."""
    if not isinstance(body, dict):
        raise EventRejected("an S3 event notification must be a JSON object")
    if is_test(body):
        return [test_event(body, channel)]
    records = body.get("Records")
    if not isinstance(records, list) or not records:
        raise EventRejected("no Records in the S3 event notification")
    return [_record(r, i, channel) for i, r in enumerate(records)]


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
    raw_key = _text(obj.get("key"), f"{where}.s3.object.key")
    try:
        key = decode_key(raw_key)
    except UnicodeDecodeError:
        raise EventRejected(f"{where}.s3.object.key is not UTF-8 once decoded") from None
    return ObjectEvent(
        channel=channel,
        event_type=name[:100],
        action=action_of(name),
        bucket=bucket_name,
        key=key,
        sequencer=s3_sequencer(obj.get("sequencer")),
    )
