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

from mediamirror.events.model import Action, EventRejected, ObjectEvent, gcs_sequencer

ACTIONS = {
    "OBJECT_FINALIZE": Action.CREATED,
    "OBJECT_METADATA_UPDATE": Action.UPDATED,
    "OBJECT_DELETE": Action.REMOVED,
    "OBJECT_ARCHIVE": Action.REMOVED,  # the live version became noncurrent
}
MAX_KEY_CHARS = 4096


def _int(value: Any, what: str) -> int:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        raise EventRejected(f"{what} {str(value)[:40]!r} is not an integer") from None
    if number < 0 or number >= 10**20:
        raise EventRejected(f"{what} {number} is out of range")
    return number


def _resource(message: dict[str, Any]) -> dict[str, Any]:
    data = message.get("data")
    if data in (None, ""):
        return {}
    try:
        decoded = base64.b64decode(str(data), validate=True)
        resource = json.loads(decoded)
    except (binascii.Error, ValueError):
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
    event_type = attributes.get("eventType")
    bucket = attributes.get("bucketId")
    key = attributes.get("objectId")
    for name, value in (("eventType", event_type), ("bucketId", bucket), ("objectId", key)):
        if not isinstance(value, str) or not value:
            raise EventRejected(f"message.attributes.{name} is missing")
    assert isinstance(event_type, str) and isinstance(bucket, str) and isinstance(key, str)
    if len(key) > MAX_KEY_CHARS:
        raise EventRejected("objectId is too long")
    resource = _resource(message)
    generation = _int(
        attributes.get("objectGeneration", resource.get("generation")), "objectGeneration"
    )
    meta = resource.get("metageneration")
    metageneration = _int(meta, "metageneration") if meta is not None else 0
    return [
        ObjectEvent(
            channel="gcs",
            event_type=event_type[:100],
            action=ACTIONS.get(event_type, Action.OTHER),
            bucket=bucket,
            key=key,
            sequencer=gcs_sequencer(generation, event_type, metageneration),
        )
    ]
