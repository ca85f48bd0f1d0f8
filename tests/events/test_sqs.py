"""The SQS consumer that ``serve`` runs for config.yaml's ``sqs`` section, against moto's
SQS: the bucket itself sends its notifications to the queue (directly, or through an SNS
topic the queue subscribes to), exactly as AWS wires them."""

from __future__ import annotations

import json
import secrets
from typing import Any

import boto3
import pytest

from helpers import S3Bucket, S3Server

from .support import Service

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


def sqs_client(server: S3Server) -> Any:
    return boto3.client("sqs", endpoint_url=server.endpoint, region_name="us-east-1")


def new_queue(sqs: Any) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=f"mm-{secrets.token_hex(4)}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return url, arn["QueueArn"]


def in_flight(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def consuming(start: Any, catalog_url: str, server: S3Server, url: str) -> Service:
    queue = {
        "queue_url": url,
        "endpoint_url": server.endpoint,
        "region": "us-east-1",
        "wait_seconds": 1,
        "visibility_timeout": 5,
    }
    service: Service = start(catalog_url, sections={"sqs": [queue]})
    return service


EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]


def test_bucket_events_through_sqs(
    catalog_url: str, start: Any, s3_server: S3Server, s3_bucket: S3Bucket
) -> None:
    sqs = sqs_client(s3_server)
    url, arn = new_queue(sqs)
    service = consuming(start, catalog_url, s3_server, url)
    source = service.add_bucket_source("src", s3_bucket)
    s3_bucket.client.put_bucket_notification_configuration(
        Bucket=s3_bucket.name,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": EVENTS}]},
    )
    key = "drop/new clip+1.mp4"

    s3_bucket.put(key, b"fresh")

    item = service.wait_for(lambda: service.items().get(key), what="the item from SQS")
    assert (item.state, item.size) == ("present", 5)
    dataset = service.folder_of(source.id, key)
    assert dataset.path == "/src/drop/Video new clip+1.mp4"
    # Jobs are queued just after the item's transaction commits: wait, do not race it.
    service.wait_for(lambda: service.jobs_of(dataset.id), what="post-processing to be queued")
    service.wait_for(lambda: in_flight(sqs, url) == 0, what="the messages to be deleted")

    s3_bucket.delete(key)
    service.wait_for(lambda: service.items()[key].state == "deleted", what="the delete")
    service.wait_for(lambda: in_flight(sqs, url) == 0, what="the messages to be deleted")

    # A message that can never be parsed is recorded and deleted, not retried forever.
    sqs.send_message(QueueUrl=url, MessageBody="{not json")
    service.wait_for(
        lambda: any(e.outcome == "rejected" for e in service.events()), what="the rejection"
    )
    service.wait_for(lambda: in_flight(sqs, url) == 0, what="the bad message to be deleted")

    events = service.events()
    assert {e.channel for e in events} == {"sqs"}
    by_outcome = {e.outcome for e in events}
    assert {"test", "applied", "rejected"} <= by_outcome, by_outcome
    applied = [e for e in events if e.outcome == "applied"]
    assert [(e.event_type, e.key) for e in applied] == [
        ("ObjectCreated:Put", key),
        ("ObjectRemoved:Delete", key),
    ]


def test_sns_wrapped_events_through_sqs(
    catalog_url: str, start: Any, s3_server: S3Server, s3_bucket: S3Bucket
) -> None:
    sqs = sqs_client(s3_server)
    sns = boto3.client("sns", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    url, arn = new_queue(sqs)
    topic = sns.create_topic(Name=f"mm-{secrets.token_hex(4)}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    service = consuming(start, catalog_url, s3_server, url)
    service.add_bucket_source("src", s3_bucket, "cams")
    s3_bucket.client.put_bucket_notification_configuration(
        Bucket=s3_bucket.name,
        NotificationConfiguration={"TopicConfigurations": [{"TopicArn": topic, "Events": EVENTS}]},
    )

    s3_bucket.put("cams/a.mp4", b"a")
    s3_bucket.put("elsewhere/b.mp4", b"b")

    service.wait_for(lambda: "cams/a.mp4" in service.items(), what="the SNS-wrapped event")
    service.wait_for(lambda: in_flight(sqs, url) == 0, what="the messages to be deleted")
    assert set(service.items()) == {"cams/a.mp4"}
    ignored = service.wait_for(
        lambda: [e for e in service.events() if e.outcome == "ignored"], what="the other key"
    )
    assert ignored[0].key == "elsewhere/b.mp4"


def test_a_message_is_deleted_once_recorded_even_while_the_store_cannot_be_read(
    sqlite_url: str, start: Any, s3_server: S3Server, s3_bucket: S3Bucket
) -> None:
    """Recorded is durable: the message leaves the queue, the event waits in the catalog
    (pending, with the reason) until its key can be read."""
    sqs = sqs_client(s3_server)
    url, _ = new_queue(sqs)
    service = consuming(start, sqlite_url, s3_server, url)
    service.add_bucket_source("src", s3_bucket)
    s3_bucket.put("x/clip.mp4")
    body = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": s3_bucket.name}, "object": {"key": "x/clip.mp4"}},
            }
        ]
    }
    # The bucket vanishes before the event is read: the store cannot be listed.
    s3_bucket.drop()
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))

    waiting = service.wait_for(
        lambda: [e for e in service.events() if e.detail], 30, "the first failure"
    )
    assert waiting[0].outcome == "pending"
    assert "does not exist" in waiting[0].detail
    service.wait_for(lambda: in_flight(sqs, url) == 0, what="the message deleted")
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert "x/clip.mp4" not in service.items()


def test_a_poison_message_does_not_hold_back_the_queue(
    catalog_url: str, start: Any, s3_server: S3Server, s3_bucket: S3Bucket
) -> None:
    """Messages that once made the consumer fail (JSON nested beyond the parser's depth,
    a key the catalog cannot store) are rejected and deleted; the others are applied."""
    sqs = sqs_client(s3_server)
    url, _ = new_queue(sqs)
    service = consuming(start, catalog_url, s3_server, url)
    service.add_bucket_source("src", s3_bucket)
    s3_bucket.put("ok/clip.mp4")

    def record(key: str) -> dict[str, Any]:
        return {
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": s3_bucket.name}, "object": {"key": key}},
        }

    sqs.send_message(QueueUrl=url, MessageBody="[" * 100_000)
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Records": [record("a%00b.mp4")]}))
    both = {"Records": [record("bad%00clip.mp4"), record("ok/clip.mp4")]}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(both))

    service.wait_for(lambda: "ok/clip.mp4" in service.items(), what="the good record")
    service.wait_for(lambda: in_flight(sqs, url) == 0, what="every message to be deleted")
    assert set(service.items()) == {"ok/clip.mp4"}
    rejected = [e for e in service.events() if e.outcome == "rejected"]
    assert any("nested too deeply" in (e.detail or "") for e in rejected)
    assert any("contains a NUL character" in (e.detail or "") for e in rejected)
