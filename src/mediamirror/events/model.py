"""What every notification format is parsed into, and how events are ordered.

A parser turns one delivery (an HTTP body, an SQS message) into :class:`ObjectEvent`
values: which key, how new the news is (its sequencer) and, when the sender says it, the
object's size, etag and time. An event that carries them is applied from them; one that
does not is applied by reading the key back from the store.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from mediamirror.errors import MediamirrorError


class Outcome(StrEnum):
    """What became of a received event (the ``events.outcome`` column)."""

    APPLIED = "applied"  # the catalog now agrees with the store for this key
    DUPLICATE = "duplicate"  # the same sequencer was applied before
    STALE = "stale"  # a newer event for this key was applied before
    IGNORED = "ignored"  # no source mirrors this key, or its filters skip it
    TEST = "test"  # a test event (s3:TestEvent, SNS/MinIO checks): acknowledged
    CONFIRMED = "confirmed"  # an SNS subscription confirmed by fetching its SubscribeURL
    REJECTED = "rejected"  # malformed, oversized, unauthenticated or badly signed
    ERROR = "error"  # the store could not be read, again and again: given up
    PENDING = "pending"  # recorded, not applied yet (the answer says "recorded")


class Action(StrEnum):
    """What the sender says happened; applying looks at the store either way."""

    CREATED = "created"
    REMOVED = "removed"
    UPDATED = "updated"  # metadata changed (GCS OBJECT_METADATA_UPDATE)
    TEST = "test"
    OTHER = "other"  # restore, replication, tagging...: nothing the catalog mirrors


class EventRejected(MediamirrorError):
    """A delivery that cannot be accepted; ``status`` is the HTTP answer (400/401/413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    """One notification about one object (or a test)."""

    channel: str  # s3 | minio | sns | sqs | gcs
    event_type: str  # as sent: ObjectCreated:Put, OBJECT_FINALIZE, s3:TestEvent...
    action: Action
    bucket: str
    key: str  # decoded: exactly the object's key
    sequencer: str | None = None
    #: Why this one record of a delivery cannot be applied (it is recorded as
    #: ``rejected`` while the delivery's other records are applied), or None.
    invalid: str | None = None
    #: The object as the sender describes it (created events): size, etag normalised as
    #: the store lists it, and the time of the event. None when not sent.
    size: int | None = None
    etag: str | None = None
    time: datetime | None = None

    def with_channel(self, channel: str) -> ObjectEvent:
        return replace(self, channel=channel)


def invalid_event(channel: str, event_type: object, reason: str) -> ObjectEvent:
    """A record that cannot be applied; its bucket and key are not kept: they may be
    exactly what made it unusable (a NUL byte, a lone surrogate, 100 KB of text)."""
    return ObjectEvent(channel, storable(event_type)[:100], Action.OTHER, "", "", invalid=reason)


def storable(value: object) -> str:
    """``value`` if it is text the catalog can store, else "" (for what is only shown)."""
    try:
        return plain_text(value, "text")
    except EventRejected:
        return ""


#: Longest key a bucket can hold: S3 and GCS both allow 1,024 bytes of UTF-8.
MAX_KEY_BYTES = 1024


def object_key(key: str, what: str) -> str:
    """``key`` if a bucket could hold it and the catalog can store it, else rejected.

    Checked before the key reaches the store or the catalog: a key no bucket can hold
    would make the store answer an error on every redelivery, and a NUL byte or a lone
    surrogate (both valid in JSON) cannot be written to PostgreSQL or SQLite text."""
    if not key:
        raise EventRejected(f"{what} is empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise EventRejected(f"{what} is not valid Unicode text") from None
    if size > MAX_KEY_BYTES:
        raise EventRejected(f"{what} is longer than {MAX_KEY_BYTES} bytes")
    if "\x00" in key:
        raise EventRejected(f"{what} contains a NUL character")
    return key


def plain_text(value: object, what: str, limit: int = 1024) -> str:
    """A short name (bucket, event type) as sent, if the catalog can store it."""
    if not isinstance(value, str) or not value:
        raise EventRejected(f"{what} is missing or not a string")
    if len(value) > limit:
        raise EventRejected(f"{what} is longer than {limit} characters")
    return object_key(value, what)


def compare_sequencers(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b``.

    S3 sequencers are hexadecimal strings of varying length: AWS's rule is to compare
    them as strings after left-padding the shorter with zeros. GCS sequencers made by
    :func:`gcs_sequencer` are fixed-width decimal strings, so the same rule holds.
    """
    width = max(len(a), len(b))
    left, right = a.upper().rjust(width, "0"), b.upper().rjust(width, "0")
    return (left > right) - (left < right)


#: Longest S3 sequencer accepted. AWS sends 16-18 hexadecimal digits, MinIO and Ceph 16:
#: twice the longest seen leaves room for any S3-compatible store without letting an
#: event carry an "absurdly new" number longer than any real one.
MAX_SEQUENCER_CHARS = 32


def s3_sequencer(value: object) -> str | None:
    """A sequencer as sent, checked to be a bounded hexadecimal string; None if absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EventRejected(f"sequencer {str(value)[:40]!r} is not a hexadecimal string")
    text = value.strip()
    if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise EventRejected(f"sequencer {value[:40]!r} is not a hexadecimal string")
    if len(text) > MAX_SEQUENCER_CHARS:
        raise EventRejected(
            f"sequencer {value[:40]!r}... is longer than {MAX_SEQUENCER_CHARS} hexadecimal digits"
        )
    return text.upper()


#: Widths of the parts of a GCS ordering key: a number that does not fit is refused, as
#: a longer key would compare as newer than every fixed-width one.
GCS_GENERATION_DIGITS = 20
GCS_METAGENERATION_DIGITS = 12

#: Order of GCS notifications about one generation of an object.
GCS_PHASES = {"OBJECT_FINALIZE": 0, "OBJECT_METADATA_UPDATE": 1, "OBJECT_ARCHIVE": 2}
GCS_PHASE_DELETE = 3


def gcs_sequencer(generation: int, event_type: str, metageneration: int) -> str:
    """A fixed-width ordering key for a GCS notification.

    The generation orders writes of one object name; within one generation the object
    is created (FINALIZE, metageneration 1), then may have its metadata updated
    (metageneration 2, 3, ...), then is archived or deleted. Redelivery of the same
    message gives the same key, so it is recognised as a duplicate.
    """
    phase = GCS_PHASES.get(event_type, GCS_PHASE_DELETE)
    if not 0 <= generation < 10**GCS_GENERATION_DIGITS:
        raise EventRejected(f"generation {generation} is out of range")
    if not 0 <= metageneration < 10**GCS_METAGENERATION_DIGITS:
        raise EventRejected(f"metageneration {metageneration} is out of range")
    return f"{generation:020d}{phase}{metageneration:012d}"


def event_size(value: object) -> int | None:
    """An object size as sent (a JSON number or a decimal string), None if unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 2**63 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def event_etag(value: object) -> str | None:
    """An S3 ETag as the store's listing gives it: without quotes, lower case."""
    if not isinstance(value, str):
        return None
    text = value.strip().strip('"').lower()
    if not text or len(text) > 200 or not text.isascii() or not text.isprintable():
        return None
    return text


def md5_etag(value: object) -> str | None:
    """GCS's base64 ``md5Hash`` as the hexadecimal ETag its S3 listing shows."""
    if not isinstance(value, str) or not value:
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 16 else None


def event_time(value: object) -> datetime | None:
    """An ISO 8601 time as sent (``2024-05-01T12:00:00.123Z``), in UTC; None if unusable."""
    if not isinstance(value, str) or not 0 < len(value) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
