"""S3 events delivered through Amazon EventBridge: the parser, the push endpoint (an
EventBridge API destination) and the SQS consumer (an EventBridge rule targeting the
queue), with the ordering and duplicate rules of direct S3 notifications: one sequencer
orders and de-duplicates a key's events whatever format carried them."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from sqlalchemy import select

from helpers import S3Bucket, S3Server
from mediamirror.catalog.models import LEASES
from mediamirror.events import eventbridge, sns, sqs
from mediamirror.events.api import SQS_LEASE
from mediamirror.events.model import Action, EventRejected

from .eventbridge_payloads import eventbridge_event
from .support import Service, listed, next_sequencer, outcomes, s3_event, s3_record
from .test_sqs import consuming, in_flight, new_queue, sqs_client

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


# -- the parser ----------------------------------------------------------------------------------


def test_created_and_deleted_events_parse_like_s3_records() -> None:
    created = eventbridge_event("media", "a b/clip+1 (2).mp4", sequencer="0064d3901d00059242")
    deleted = eventbridge_event("media", "old.mov", "Object Deleted", sequencer="0064D39")

    [c] = eventbridge.parse(created)
    [d] = eventbridge.parse(deleted)

    assert (c.action, c.bucket, c.key, c.sequencer) == (
        Action.CREATED,
        "media",
        "a b/clip+1 (2).mp4",
        "0064D3901D00059242",
    )
    assert (c.channel, c.event_type) == ("eventbridge", "Object Created")
    assert (d.action, d.key, d.sequencer) == (Action.REMOVED, "old.mov", "0064D39")
    # Through an SQS queue, and through an SNS topic (its Message is the event).
    assert sqs.parse_message(json.dumps(created)) == [c.with_channel("sqs")]
    envelope = {"Type": "Notification", "TopicArn": "arn:t", "Message": json.dumps(deleted)}
    assert sns.unwrap(envelope, "sqs") == [d.with_channel("sqs")]


def test_other_s3_events_are_ignored_and_bad_ones_rejected() -> None:
    [restore] = eventbridge.parse(eventbridge_event("m", "k", "Object Restore Completed"))
    assert restore.action is Action.OTHER and restore.invalid is None
    # An unusable event is kept as invalid (recorded as rejected), never applied.
    [bad] = eventbridge.parse(eventbridge_event("m", "k", sequencer="not-hex"))
    assert bad.invalid is not None and "sequencer" in bad.invalid
    no_key = eventbridge_event("m", "k")
    del no_key["detail"]["object"]["key"]
    assert "key" in (eventbridge.parse(no_key)[0].invalid or "")
    with pytest.raises(EventRejected, match=r"aws\.ec2"):
        eventbridge.parse(eventbridge_event("m", "k", source="aws.ec2"))


# -- an API destination ----------------------------------------------------------------------


def test_pushed_events_follow_the_sequencer_rules(service: Service, s3_bucket: S3Bucket) -> None:
    source = service.add_bucket_source("src", s3_bucket)
    token = service.push_token("src")
    key = "clips/new clip+1.mp4"
    s3_bucket.put(key, b"fresh")
    info = listed(s3_bucket, key)
    older, seq = next_sequencer(), next_sequencer()
    event = eventbridge_event(
        s3_bucket.name, key, size=info["size"], etag=info["etag"], sequencer=seq
    )
    # An API destination authenticates with an API key header: the push token.
    header = {"X-Mediamirror-Token": token}

    first = service.post("eventbridge", event, headers=header)
    again = service.post("eventbridge", event, headers=header)
    # The same news as a direct S3 notification: the same sequencer, so a duplicate.
    direct = s3_event(s3_record(s3_bucket.name, key, sequencer=seq))
    as_s3 = service.post("s3", direct, token=token)
    stale = service.post(
        "eventbridge", eventbridge_event(s3_bucket.name, key, sequencer=older), headers=header
    )

    assert [outcomes(r) for r in (first, again, as_s3, stale)] == [
        ["applied"],
        ["duplicate"],
        ["duplicate"],
        ["stale"],
    ]
    assert service.items_of(source.id)[key].state == "present"

    s3_bucket.delete(key)
    gone = eventbridge_event(s3_bucket.name, key, "Object Deleted", sequencer=next_sequencer())
    assert outcomes(service.post("eventbridge", gone, headers=header)) == ["applied"]
    assert service.items_of(source.id)[key].state == "deleted"
    applied = [(e.channel, e.event_type) for e in service.events() if e.outcome == "applied"]
    assert applied == [("eventbridge", "Object Created"), ("eventbridge", "Object Deleted")]
    # Without the token the delivery is refused, as on every push endpoint.
    assert service.post("eventbridge", event).status_code == 401


# -- an SQS queue ----------------------------------------------------------------------------


def test_events_from_an_eventbridge_rule_through_sqs(
    catalog_url: str, start: Any, s3_server: S3Server, s3_bucket: S3Bucket
) -> None:
    queue = sqs_client(s3_server)
    url, _ = new_queue(queue)
    service = consuming(start, catalog_url, s3_server, url)
    service.add_bucket_source("src", s3_bucket)
    key = "drop/a.mp4"
    s3_bucket.put(key, b"12345")
    info = listed(s3_bucket, key)
    seq = next_sequencer()
    body = json.dumps(
        eventbridge_event(s3_bucket.name, key, size=info["size"], etag=info["etag"], sequencer=seq)
    )

    queue.send_message(QueueUrl=url, MessageBody=body)
    queue.send_message(QueueUrl=url, MessageBody=body)  # EventBridge delivers at least once

    item = service.wait_for(lambda: service.items().get(key), what="the item from SQS")
    assert (item.state, item.size) == ("present", 5)
    service.wait_for(lambda: in_flight(queue, url) == 0, what="the messages to be deleted")
    seen = sorted((e.channel, e.event_type, e.outcome) for e in service.events())
    assert seen == [
        ("sqs", "Object Created", "applied"),
        ("sqs", "Object Created", "duplicate"),
    ]
    # This process polls because it holds the SQS consumer lease.
    with service.catalog.read() as conn:
        owner = conn.execute(select(LEASES.c.owner).where(LEASES.c.name == SQS_LEASE)).scalar()
    assert owner is not None and owner.split(":")[1] == str(os.getpid())
