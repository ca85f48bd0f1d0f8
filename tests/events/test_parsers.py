"""The parsers and the event order, on their own (no server needed)."""

from __future__ import annotations

import itertools
import json

import pytest

from mediamirror.events import gcs, s3, sns
from mediamirror.events.model import (
    Action,
    EventRejected,
    compare_sequencers,
    gcs_sequencer,
)
from mediamirror.events.sqs import parse_message

from .support import gcs_push, minio_event, s3_event, s3_record, s3_test_event


def test_sequencers_compare_after_left_padding() -> None:
    assert compare_sequencers("FF", "0100") == -1
    assert compare_sequencers("0100", "FF") == 1
    assert compare_sequencers("00FF", "FF") == 0
    assert compare_sequencers("0055aed6dcd90281e5", "55AED6DCD90281E5") == 0
    assert compare_sequencers("0055AED6DCD90281E6", "55AED6DCD90281E5") == 1


def test_gcs_order_within_and_across_generations() -> None:
    order = [
        gcs_sequencer(9, "OBJECT_FINALIZE", 1),
        gcs_sequencer(9, "OBJECT_METADATA_UPDATE", 2),
        gcs_sequencer(9, "OBJECT_METADATA_UPDATE", 10),
        gcs_sequencer(9, "OBJECT_ARCHIVE", 10),
        gcs_sequencer(9, "OBJECT_DELETE", 10),
        gcs_sequencer(10, "OBJECT_FINALIZE", 1),
        gcs_sequencer(1_700_000_000_000_000, "OBJECT_FINALIZE", 1),
    ]
    for older, newer in itertools.pairwise(order):
        assert compare_sequencers(older, newer) == -1


def test_s3_keys_are_form_decoded_exactly() -> None:
    assert s3.decode_key("a%2Fb%2Fclip+one.mp4") == "a/b/clip one.mp4"
    assert s3.decode_key("a/b/plus%2Bsign.mp4") == "a/b/plus+sign.mp4"
    assert s3.decode_key("p%2520.mp4") == "p%20.mp4"
    assert s3.decode_key("%C3%A9t%C3%A9.mov") == "été.mov"
    with pytest.raises(EventRejected):
        s3.decode_key("")


def test_s3_and_minio_records() -> None:
    (ev,) = s3.parse(s3_event(s3_record("bkt", "x y.mp4", sequencer="0A")))
    assert (ev.bucket, ev.key, ev.action, ev.sequencer) == ("bkt", "x y.mp4", Action.CREATED, "0A")
    body = minio_event(s3_record("bkt", "d/e.mp4", "ObjectRemoved:Delete", minio=True))
    (ev,) = s3.parse(body, "minio")
    assert (ev.event_type, ev.action, ev.channel) == (
        "s3:ObjectRemoved:Delete",
        Action.REMOVED,
        "minio",
    )
    other = s3.parse(s3_event(s3_record("b", "k", "ObjectTagging:Put")))
    assert other[0].action is Action.OTHER
    accessed = s3.parse(s3_event(s3_record("b", "k", "ObjectAccessed:Get", minio=True)))
    assert accessed[0].action is Action.OTHER
    (test,) = s3.parse(s3_test_event("bkt"))
    assert (test.action, test.bucket) == (Action.TEST, "bkt")


def test_sqs_bodies_direct_and_sns_wrapped() -> None:
    record = s3_record("bkt", "k.mp4", sequencer="01")
    (direct,) = parse_message(json.dumps(s3_event(record)))
    envelope = {
        "Type": "Notification",
        "MessageId": "1",
        "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "Message": json.dumps(s3_event(record)),
        "Timestamp": "2024-01-01T00:00:00.000Z",
    }
    (wrapped,) = parse_message(json.dumps(envelope))
    assert direct.key == wrapped.key == "k.mp4"
    assert wrapped.channel == "sqs"
    with pytest.raises(EventRejected):
        parse_message("{")


def test_sns_string_to_sign_skips_a_missing_subject() -> None:
    msg = {
        "Type": "Notification",
        "MessageId": "m",
        "TopicArn": "t",
        "Message": "hello",
        "Timestamp": "ts",
    }
    assert sns.string_to_sign(msg) == (
        b"Message\nhello\nMessageId\nm\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
    )
    with pytest.raises(EventRejected, match="without Token"):
        sns.string_to_sign({**msg, "Type": "SubscriptionConfirmation", "SubscribeURL": "u"})


def test_gcs_push_attributes() -> None:
    (ev,) = gcs.parse(gcs_push("b", "raw name+%20.mp4", "OBJECT_DELETE", 42, metageneration=3))
    assert (ev.bucket, ev.key, ev.action) == ("b", "raw name+%20.mp4", Action.REMOVED)
    assert ev.sequencer == gcs_sequencer(42, "OBJECT_DELETE", 3)


def test_a_bad_record_is_invalid_on_its_own() -> None:
    bad = s3_record("bkt", "k.mp4", sequencer="F" * 33)
    good = s3_record("bkt", "k.mp4", sequencer="F" * 32)
    first, second = s3.parse(s3_event(bad, good))
    assert first.invalid is not None
    assert "longer than 32 hexadecimal digits" in first.invalid
    assert (first.bucket, first.key, first.event_type) == ("", "", "ObjectCreated:Put")
    assert (second.invalid, second.sequencer) == (None, "F" * 32)
    # Nothing usable at all: the delivery is refused as a whole.
    with pytest.raises(EventRejected, match="longer than 32 hexadecimal digits"):
        s3.parse(s3_event(bad))
    number = s3_record("bkt", "k.mp4")
    number["s3"]["object"]["sequencer"] = 12345
    with pytest.raises(EventRejected, match="is not a hexadecimal string"):
        s3.parse(s3_event(number))


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("a%00b", "contains a NUL character"),
        ("\ud800", "is not valid Unicode text"),
        ("%E2%82", "is not UTF-8 once decoded"),
        ("k" * 1025, "longer than 1024 bytes"),
        ("%C3%A9" * 513, "longer than 1024 bytes"),  # 513 characters, 1,026 bytes
        ("%41" * 4000, "longer than 1024 bytes"),  # refused before decoding
    ],
)
def test_keys_no_bucket_could_hold_are_refused(raw: str, error: str) -> None:
    with pytest.raises(EventRejected, match=error):
        s3.decode_key(raw)


def test_keys_up_to_the_bucket_limit_are_accepted() -> None:
    assert s3.decode_key("%C3%A9" * 512) == "é" * 512
    assert s3.decode_key("k" * 1024) == "k" * 1024


def test_gcs_ordering_keys_keep_their_width() -> None:
    widest = gcs_sequencer(10**20 - 1, "OBJECT_DELETE", 10**12 - 1)
    assert len(widest) == len(gcs_sequencer(0, "OBJECT_FINALIZE", 0))
    for generation, metageneration in ((10**20, 1), (1, 10**12), (-1, 1)):
        with pytest.raises(EventRejected, match="out of range"):
            gcs_sequencer(generation, "OBJECT_FINALIZE", metageneration)


def test_a_test_event_names_only_a_storable_bucket() -> None:
    (ev,) = s3.parse({**s3_test_event("b"), "Bucket": "b\x00"})
    assert ev.bucket == ""
