"""Google Cloud Storage notifications delivered by a Pub/Sub push subscription.

The push body is ``{"message": {"attributes": {...}, "data": base64, "messageId": ...},
"subscription": ...}``. The attributes name the event (``eventType``), the bucket
(``bucketId``), the object (``objectId``, not URL-encoded) and its generation
(``objectGeneration``); ``data`` is the object resource as JSON (payload format
``JSON_API_V1``) with ``size``, ``md5Hash``, ``etag``, ``updated``, ``generation`` and
``metageneration``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from mediamirror.events.model import (
    GCS_GENERATION_DIGITS,
    GCS_METAGENERATION_DIGITS,
    Action,
    EventRejected,
    ObjectEvent,
    event_size,
    event_time,
    gcs_sequencer,
    md5_etag,
    object_key,
    plain_text,
)

ACTIONS = {
    "OBJECT_FINALIZE": Action.CREATED,
    "OBJECT_METADATA_UPDATE": Action.UPDATED,
    "OBJECT_DELETE": Action.REMOVED,
    "OBJECT_ARCHIVE": Action.REMOVED,  # the live version became noncurrent
}


def _int(value: Any, what: str, digits: int) -> int:
    """A non-negative decimal number of at most ``digits`` digits, as GCS sends them
    (a JSON string or number); anything else is refused before it becomes an order."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not text.isascii() or not text.isdigit():
        raise EventRejected(f"{what} {str(value)[:40]!r} is not an integer")
    if len(text.lstrip("0")) > digits:
        raise EventRejected(f"{what} {text[:40]}... is out of range")
    return int(text)


def _resource(message: dict[str, Any]) -> dict[str, Any]:
    data = message.get("data")
    if data in (None, ""):
        return {}
    try:
        decoded = base64.b64decode(str(data), validate=True)
        resource = json.loads(decoded)
    except (binascii.Error, ValueError, RecursionError):
        # RecursionError: a few hundred kilobytes of "[[[[" inside the base64.
        raise EventRejected("message.data is not base64-encoded JSON") from None
    if not isinstance(resource, dict):
        raise EventRejected("message.data is not a JSON object")
    return resource


def parse(body: Any) -> list[ObjectEvent]:
    """The event of one Pub/Sub push delivery."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise EventRejected("a Pub/Sub push body must be a JSON object with a message")
    message: dict[str, Any] = body["message"]
    attributes = message.get("attributes")
    if not isinstance(attributes, dict):
        raise EventRejected("message.attributes is missing")
    for name in ("eventType", "bucketId", "objectId"):
        if not isinstance(attributes.get(name), str) or not attributes[name]:
            raise EventRejected(f"message.attributes.{name} is missing")
    event_type = plain_text(attributes["eventType"], "message.attributes.eventType")
    bucket = plain_text(attributes["bucketId"], "message.attributes.bucketId")
    key = object_key(attributes["objectId"], "message.attributes.objectId")
    resource = _resource(message)
    generation = _int(
        attributes.get("objectGeneration", resource.get("generation")),
        "objectGeneration",
        GCS_GENERATION_DIGITS,
    )
    meta = resource.get("metageneration")
    metageneration = (
        _int(meta, "metageneration", GCS_METAGENERATION_DIGITS) if meta is not None else 0
    )
    action = ACTIONS.get(event_type, Action.OTHER)
    # What the bucket's S3 listing shows: the MD5 as ETag (composite objects have none:
    # the store is read instead), the object's ``updated`` time as LastModified.
    described = action in (Action.CREATED, Action.UPDATED)
    return [
        ObjectEvent(
            channel="gcs",
            event_type=event_type[:100],
            action=action,
            bucket=bucket,
            key=key,
            sequencer=gcs_sequencer(generation, event_type, metageneration),
            size=event_size(resource.get("size")) if described else None,
            etag=md5_etag(resource.get("md5Hash")) if described else None,
            time=event_time(resource.get("updated") or attributes.get("eventTime"))
            if described
            else None,
        )
    ]
