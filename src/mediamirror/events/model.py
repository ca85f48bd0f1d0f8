"""What every notification format is parsed into, and how events are ordered.

A parser turns one delivery (an HTTP body, an SQS message) into :class:`ObjectEvent`
values. Applying an event never trusts its size or etag: the object is read back from the
store, so an event only says *which key to look at* and *how new the news is*
(its sequencer).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    ERROR = "error"  # the store could not be read: the sender should deliver it again


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

    def with_channel(self, channel: str) -> ObjectEvent:
        return ObjectEvent(
            channel, self.event_type, self.action, self.bucket, self.key, self.sequencer
        )


def compare_sequencers(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b``.

    S3 sequencers are hexadecimal strings of varying length: AWS's rule is to compare
    them as strings after left-padding the shorter with zeros. GCS sequencers made by
    :func:`gcs_sequencer` are fixed-width decimal strings, so the same rule holds.
    """
    width = max(len(a), len(b))
    left, right = a.upper().rjust(width, "0"), b.upper().rjust(width, "0")
    return (left > right) - (left < right)


def s3_sequencer(value: object) -> str | None:
    """A sequencer as sent, checked to be hexadecimal; None if absent."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if not text or len(text) > 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise EventRejected(f"sequencer {str(value)[:80]!r} is not a hexadecimal string")
    return text.upper()


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
    return f"{generation:020d}{phase}{metageneration:012d}"
